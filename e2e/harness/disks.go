package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DeviceTree is where one simulated instance sees its block devices: the
// by-id directory (agent's deviceRoot) and the sysfs root (sysfsRoot), as in
// docs/contracts.md "Agent configuration".
type DeviceTree struct {
	DeviceRoot string
	SysfsRoot  string
	// NodeDir is the instance's /dev: attached volumes appear there as
	// NVMe namespaces (nvme1n1, nvme2n1, … block nodes of their loop
	// devices) and the by-id links point at them relatively (../../nvme1n1),
	// as on a Nitro instance. Empty: the links point at the loop devices.
	NodeDir string
}

// ByIDName is the name of a volume's link in the by-id directory, as udev
// names NVMe EBS devices on Nitro instances.
func ByIDName(volumeID string) string {
	return "nvme-Amazon_Elastic_Block_Store_" + Serial(volumeID)
}

// Serial is the NVMe serial number EBS gives a volume: "vol" and the ID
// without its dash.
func Serial(volumeID string) string { return strings.Replace(volumeID, "-", "", 1) }

// Disks stands for EBS storage: every volume is a sparse image file of the
// volume's full size (only written blocks take space), every snapshot a
// sparse copy of its volume's image. Attaching a volume to an instance sets
// up a loop device over its image and publishes it in the instance's device
// tree the way udev and the NVMe driver do for EBS.
type Disks struct {
	dir string

	mu       sync.Mutex
	attached map[string]attachment // volume ID → loop device
}

type attachment struct {
	loop  string // /dev/loopN
	tree  DeviceTree
	timer *time.Timer // pending publication (AttachAfter)
	node  string      // the published device's name (nvmeNn1 or loopN)
}

// NewDisks keeps images under dir (created if missing).
func NewDisks(dir string) (*Disks, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Disks{dir: dir, attached: map[string]attachment{}}, nil
}

func (d *Disks) volumePath(id string) string   { return filepath.Join(d.dir, id+".img") }
func (d *Disks) snapshotPath(id string) string { return filepath.Join(d.dir, id+".img") }

// VolumeImage returns the image file of a volume.
func (d *Disks) VolumeImage(id string) string { return d.volumePath(id) }

// HasVolume reports whether the volume has an image.
func (d *Disks) HasVolume(id string) bool {
	_, err := os.Stat(d.volumePath(id))
	return err == nil
}

func (d *Disks) hasSnapshot(id string) bool {
	_, err := os.Stat(d.snapshotPath(id))
	return err == nil
}

// CreateVolume makes the image of a new volume: a copy of the snapshot's
// image when fromSnapshot is set, else blank; either way sizeGiB large.
func (d *Disks) CreateVolume(volumeID string, sizeGiB int64, fromSnapshot string) error {
	dst := d.volumePath(volumeID)
	tmp := dst + ".tmp"
	if fromSnapshot != "" {
		if err := copySparse(d.snapshotPath(fromSnapshot), tmp); err != nil {
			return fmt.Errorf("volume %s from snapshot %s: %w", volumeID, fromSnapshot, err)
		}
	} else {
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return err
	}
	if size := sizeGiB << 30; st.Size() < size {
		if err := os.Truncate(tmp, size); err != nil {
			return err
		}
	}
	return os.Rename(tmp, dst)
}

// GrowVolume makes a volume's image sizeGiB large (EBS's ModifyVolume)
// and, when it is attached, tells its loop device the new size (losetup
// -c), so the instance sees a larger block device as on EC2.
func (d *Disks) GrowVolume(volumeID string, sizeGiB int64) error {
	path := d.volumePath(volumeID)
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() >= sizeGiB<<30 {
		return nil
	}
	if err := os.Truncate(path, sizeGiB<<30); err != nil {
		return err
	}
	if loop, ok := d.Loop(volumeID); ok {
		if out, err := exec.Command("losetup", "-c", loop).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup -c %s: %v: %s", loop, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// DeleteVolume removes a volume's image. An attached volume cannot be
// deleted.
func (d *Disks) DeleteVolume(volumeID string) error {
	d.mu.Lock()
	_, busy := d.attached[volumeID]
	d.mu.Unlock()
	if busy {
		return fmt.Errorf("volume %s is attached", volumeID)
	}
	err := os.Remove(d.volumePath(volumeID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Snapshot copies a volume's image into the snapshot's image. The copy is
// taken from the image file, which the loop driver writes through the page
// cache, so everything the filesystem flushed (fsfreeze does) is in it.
func (d *Disks) Snapshot(volumeID, snapshotID string) error {
	dst := d.snapshotPath(snapshotID)
	if err := copySparse(d.volumePath(volumeID), dst+".tmp"); err != nil {
		return fmt.Errorf("snapshot %s of %s: %w", snapshotID, volumeID, err)
	}
	return os.Rename(dst+".tmp", dst)
}

// DeleteSnapshot removes a snapshot's image.
func (d *Disks) DeleteSnapshot(snapshotID string) error {
	err := os.Remove(d.snapshotPath(snapshotID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Attach sets up a loop device over the volume's image and publishes it in
// tree: <DeviceRoot>/nvme-Amazon_Elastic_Block_Store_vol… → /dev/loopN and
// <SysfsRoot>/class/block/loopN/device/serial = vol…. It returns the loop
// device. Attaching an attached volume returns its device.
func (d *Disks) Attach(volumeID string, tree DeviceTree) (string, error) {
	return d.AttachAfter(volumeID, tree, 0)
}

// AttachAfter is Attach with the device appearing in the tree only after
// delay, as an EBS attachment completes some time after AttachVolume.
func (d *Disks) AttachAfter(volumeID string, tree DeviceTree, delay time.Duration) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.attached[volumeID]; ok {
		return a.loop, nil
	}
	img := d.volumePath(volumeID)
	if _, err := os.Stat(img); err != nil {
		return "", fmt.Errorf("volume %s has no image: %w", volumeID, err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup %s: %v: %s", img, err, strings.TrimSpace(string(out)))
	}
	loop := strings.TrimSpace(string(out))
	a := attachment{loop: loop, tree: tree}
	if delay <= 0 {
		node, err := publish(volumeID, loop, tree)
		if err != nil {
			_ = exec.Command("losetup", "-d", loop).Run()
			return "", err
		}
		a.node = node
	} else {
		a.timer = time.AfterFunc(delay, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if cur, ok := d.attached[volumeID]; ok && cur.loop == loop {
				if node, err := publish(volumeID, loop, tree); err == nil {
					cur.node = node
					d.attached[volumeID] = cur
				}
			}
		})
	}
	d.attached[volumeID] = a
	return loop, nil
}

// publish makes an attached volume appear in tree as the NVMe driver and
// udev make an EBS volume appear: the block device (a node of the loop
// device in NodeDir, named like the next free NVMe namespace), its sysfs
// serial and dev attributes, then the by-id link, renamed into place as
// udev does. It returns the device's name.
func publish(volumeID, loop string, tree DeviceTree) (string, error) {
	name, target := filepath.Base(loop), loop
	if tree.NodeDir != "" {
		var err error
		if name, err = makeNVMeNode(tree.NodeDir, loop); err != nil {
			return "", err
		}
		if target, err = filepath.Rel(tree.DeviceRoot, filepath.Join(tree.NodeDir, name)); err != nil {
			return "", err
		}
	}
	serialDir := filepath.Join(tree.SysfsRoot, "class", "block", name, "device")
	if err := os.MkdirAll(serialDir, 0o755); err != nil {
		return "", err
	}
	// The NVMe serial attribute is the 20-byte serial, space padded.
	if err := os.WriteFile(filepath.Join(serialDir, "serial"), []byte(fmt.Sprintf("%-20s\n", Serial(volumeID))), 0o644); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err == nil {
		dev := fmt.Sprintf("%d:%d\n", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		if err := os.WriteFile(filepath.Join(tree.SysfsRoot, "class", "block", name, "dev"), []byte(dev), 0o644); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(tree.DeviceRoot, 0o755); err != nil {
		return "", err
	}
	link := filepath.Join(tree.DeviceRoot, ByIDName(volumeID))
	for _, l := range []string{link, link + "_1"} { // systemd ≥ 252 adds the namespace link
		tmp := filepath.Join(tree.DeviceRoot, ".#"+filepath.Base(l))
		_ = os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, l); err != nil {
			return "", err
		}
	}
	return name, nil
}

// makeNVMeNode makes the block node of loop in nodeDir under the first
// free name nvme1n1, nvme2n1, … (nvme0n1 is the root volume).
func makeNVMeNode(nodeDir, loop string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		return "", err
	}
	if err := os.MkdirAll(nodeDir, 0o755); err != nil {
		return "", err
	}
	for i := 1; i < 64; i++ {
		name := fmt.Sprintf("nvme%dn1", i)
		err := unix.Mknod(filepath.Join(nodeDir, name), unix.S_IFBLK|0o660, int(st.Rdev))
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("mknod %s: %w", filepath.Join(nodeDir, name), err)
		}
	}
	return "", fmt.Errorf("no free NVMe name in %s", nodeDir)
}

// PublishRoot shows the instance's root volume in tree as udev does on
// Nitro (nvme0n1, its partition and namespace links), so agents see the
// EBS devices a real instance has at boot. The root device is an empty
// file: nothing may open it.
func PublishRoot(volumeID string, tree DeviceTree) error {
	if tree.NodeDir == "" {
		return nil
	}
	for _, d := range []string{tree.NodeDir, tree.DeviceRoot, filepath.Join(tree.SysfsRoot, "class", "block", "nvme0n1", "device")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, n := range []string{"nvme0n1", "nvme0n1p1"} {
		if err := os.WriteFile(filepath.Join(tree.NodeDir, n), nil, 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tree.SysfsRoot, "class", "block", "nvme0n1", "device", "serial"), []byte(fmt.Sprintf("%-20s\n", Serial(volumeID))), 0o644); err != nil {
		return err
	}
	link := filepath.Join(tree.DeviceRoot, ByIDName(volumeID))
	for l, node := range map[string]string{link: "nvme0n1", link + "_1": "nvme0n1", link + "-part1": "nvme0n1p1"} {
		target, err := filepath.Rel(tree.DeviceRoot, filepath.Join(tree.NodeDir, node))
		if err != nil {
			return err
		}
		_ = os.Remove(l)
		if err := os.Symlink(target, l); err != nil {
			return err
		}
	}
	return nil
}

// Loop returns the loop device of an attached volume.
func (d *Disks) Loop(volumeID string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.attached[volumeID]
	return a.loop, ok
}

// Attached lists the attached volume IDs.
func (d *Disks) Attached() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.attached))
	for id := range d.attached {
		ids = append(ids, id)
	}
	return ids
}

// Mounted reports whether the volume's loop device is mounted anywhere, and
// where.
func (d *Disks) Mounted(volumeID string) ([]string, error) {
	loop, ok := d.Loop(volumeID)
	if !ok {
		return nil, nil
	}
	return mountPointsOf(loop)
}

// Detach removes the volume from its device tree and frees the loop device.
// With force, a mounted filesystem is lazily unmounted first (the device
// disappears under it, as with a forced EBS detach); without, a mounted
// volume is an error (the caller keeps it "busy").
func (d *Disks) Detach(volumeID string, force bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.attached[volumeID]
	if !ok {
		return nil
	}
	mps, err := mountPointsOf(a.loop)
	if err != nil {
		return err
	}
	if len(mps) > 0 {
		if !force {
			return fmt.Errorf("volume %s (%s) is mounted at %s", volumeID, a.loop, strings.Join(mps, ", "))
		}
		for _, mp := range mps {
			// A frozen filesystem cannot be unmounted; thaw it first.
			_ = exec.Command("fsfreeze", "--unfreeze", mp).Run()
			if out, err := exec.Command("umount", "-l", mp).CombinedOutput(); err != nil {
				return fmt.Errorf("umount %s: %v: %s", mp, err, strings.TrimSpace(string(out)))
			}
		}
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	link := filepath.Join(a.tree.DeviceRoot, ByIDName(volumeID))
	_ = os.Remove(link)
	_ = os.Remove(link + "_1")
	if a.node != "" {
		_ = os.RemoveAll(filepath.Join(a.tree.SysfsRoot, "class", "block", a.node))
		if a.tree.NodeDir != "" {
			_ = os.Remove(filepath.Join(a.tree.NodeDir, a.node))
		}
	}
	if out, err := exec.Command("losetup", "-d", a.loop).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup -d %s: %v: %s", a.loop, err, strings.TrimSpace(string(out)))
	}
	delete(d.attached, volumeID)
	return nil
}

// Close force-detaches every volume (unmounting what is mounted).
func (d *Disks) Close() error {
	var errs []error
	for _, id := range d.Attached() {
		if err := d.Detach(id, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mountPointsOf lists where the block device dev is mounted, from
// /proc/self/mountinfo (matched by major:minor, so any path to the device
// counts).
func mountPointsOf(dev string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dev, err)
	}
	want := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[2] == want {
			mps = append(mps, unescapeMountinfo(fields[4]))
		}
	}
	return mps, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for space …) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// copySparse copies src to dst keeping holes: only the data extents
// (SEEK_DATA/SEEK_HOLE) are copied, and dst gets src's size.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Truncate(st.Size()); err != nil {
		return fail(err)
	}
	fd := int(in.Fd())
	var off int64
	for off < st.Size() {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // no data after off
				break
			}
			return fail(fmt.Errorf("seek data in %s: %w", src, err))
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fail(fmt.Errorf("seek hole in %s: %w", src, err))
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return fail(err)
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return fail(err)
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return fail(fmt.Errorf("copy %s: %w", src, err))
		}
		off = hole
	}
	if err := out.Sync(); err != nil {
		return fail(err)
	}
	return out.Close()
}
