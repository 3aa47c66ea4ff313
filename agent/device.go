package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ebsLinkPrefix is the udev by-id name of an EBS NVMe device; the volume ID
// follows without its dash.
const ebsLinkPrefix = "nvme-Amazon_Elastic_Block_Store_"

// volSerial is the NVMe serial of an EBS volume: "vol" + the ID without
// its dash.
func volSerial(volumeID string) string { return strings.ReplaceAll(volumeID, "-", "") }

func (a *Agent) readSerial(dev string) (string, error) {
	b, err := os.ReadFile(filepath.Join(a.cfg.SysfsRoot, "class", "block", dev, "device", "serial"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// probeFS says what the device holds: blkid -p (low-level probing of every
// signature util-linux knows: filesystems, partition tables, RAID, LVM) is
// the authority. A device where blkid finds nothing is formatted only when
// its first MiB is also all zeros, the state of a new blank EBS volume;
// anything else is refused rather than risk formatting data.
func probeFS(ctx context.Context, dev string) (fsType string, blank bool, err error) {
	cmd := exec.CommandContext(ctx, "blkid", "-p", "-o", "export", dev)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		vals := map[string]string{}
		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				vals[k] = v
			}
		}
		switch {
		case vals["TYPE"] != "":
			return vals["TYPE"], false, nil
		case vals["PTTYPE"] != "":
			return "partition table " + vals["PTTYPE"], false, nil
		default:
			return "unknown signature (" + strings.Join(strings.Fields(out.String()), " ") + ")", false, nil
		}
	case errors.As(err, &ee) && ee.ExitCode() == 2: // nothing found
	default:
		return "", false, retryable("blkid -p %s: %v: %s", dev, err, strings.TrimSpace(stderr.String()))
	}
	zero, err := leadingZeros(dev, 1<<20)
	if err != nil {
		return "", false, retryable("read %s: %v", dev, err)
	}
	if !zero {
		return "data without a known signature", false, nil
	}
	return "", true, nil
}

func leadingZeros(dev string, n int) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, n)
	m, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, err
	}
	for _, b := range buf[:m] {
		if b != 0 {
			return false, nil
		}
	}
	return true, nil
}

// mkfs formats a blank device.
func mkfs(ctx context.Context, fsType, dev string) error {
	var args []string
	switch fsType {
	case "ext4":
		args = []string{"mkfs.ext4", "-q", "-L", "volsd", dev}
	case "xfs":
		args = []string{"mkfs.xfs", "-q", "-L", "volsd", dev}
	}
	return runTool(ctx, args...)
}

// runTool runs a system program (argument list, no shell).
func runTool(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return retryable("%s: %v: %s", strings.Join(args, " "), err, lastLines(string(out), 3))
	}
	return nil
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	dev   uint64 // st_dev of the mounted filesystem
	point string
	src   string
}

func readMounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(fields[2], "%d:%d", &maj, &min); err != nil {
			continue
		}
		src := ""
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				src = fields[i+2]
				break
			}
		}
		out = append(out, mountInfo{dev: unix.Mkdev(maj, min), point: unescapeMount(fields[4]), src: src})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountDevice mounts dev at the mount path (noatime) unless it is already
// mounted there. The device mounted elsewhere, or something else mounted
// at the mount path, is an error.
func (a *Agent) mountDevice(ctx context.Context, dev string) error {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return retryable("stat %s: %v", dev, err)
	}
	mounts, err := readMounts()
	if err != nil {
		return retryable("read mounts: %v", err)
	}
	for _, m := range mounts {
		switch {
		case m.dev == st.Rdev && m.point == a.cfg.MountPath:
			a.log.Info("already mounted", "device", dev, "mount", m.point)
			return nil
		case m.dev == st.Rdev:
			return notReady("device %s is already mounted at %s, not at %s", dev, m.point, a.cfg.MountPath)
		case m.point == a.cfg.MountPath:
			return notReady("%s already has another filesystem mounted (%s)", a.cfg.MountPath, m.src)
		}
	}
	if err := os.MkdirAll(a.cfg.MountPath, 0o755); err != nil {
		return retryable("create mount point %s: %v", a.cfg.MountPath, err)
	}
	if err := a.growUnmounted(ctx, dev); err != nil {
		// The content is usable at the old size; the mounted filesystem
		// is grown online after the mount, or the next up tries again.
		a.log.Warn("could not grow the filesystem before mounting it", "device", dev, "err", err)
	}
	if err := unix.Mount(dev, a.cfg.MountPath, a.cfg.FSType, unix.MS_NOATIME, ""); err != nil {
		return retryable("mount %s (%s) at %s: %v", dev, a.cfg.FSType, a.cfg.MountPath, err)
	}
	a.log.Info("mounted", "device", dev, "mount", a.cfg.MountPath, "fsType", a.cfg.FSType)
	return nil
}

// deviceBytes is the size of a block device.
func deviceBytes(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// fsBytes reads the filesystem's own size from its superblock: ext4
// s_blocks_count (lo at 1024+4, hi at 1024+0x150 with the 64bit feature)
// times 1024<<s_log_block_size; XFS sb_dblocks times sb_blocksize (big
// endian, at 8 and 4).
func fsBytes(dev, fsType string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	switch fsType {
	case "ext4":
		sb := make([]byte, 1024)
		if _, err := f.ReadAt(sb, 1024); err != nil {
			return 0, err
		}
		if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
			return 0, fmt.Errorf("%s: no ext4 superblock", dev)
		}
		blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
		if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
			blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
		}
		return int64(blocks) * (1024 << binary.LittleEndian.Uint32(sb[0x18:])), nil
	case "xfs":
		sb := make([]byte, 16)
		if _, err := f.ReadAt(sb, 0); err != nil {
			return 0, err
		}
		if string(sb[:4]) != "XFSB" {
			return 0, fmt.Errorf("%s: no XFS superblock", dev)
		}
		return int64(binary.BigEndian.Uint64(sb[8:])) * int64(binary.BigEndian.Uint32(sb[4:])), nil
	}
	return 0, fmt.Errorf("unsupported filesystem %s", fsType)
}

// needsGrow reports whether the device is larger than its filesystem (the
// volume was modified to a bigger size, or created larger than its
// snapshot), with both sizes.
func (a *Agent) needsGrow(dev string) (grow bool, devSize, fsSize int64, err error) {
	if devSize, err = deviceBytes(dev); err != nil {
		return false, 0, 0, retryable("size of %s: %v", dev, err)
	}
	if fsSize, err = fsBytes(dev, a.cfg.FSType); err != nil {
		return false, 0, 0, retryable("filesystem size on %s: %v", dev, err)
	}
	// Less than a MiB of slack is alignment, not growth.
	return devSize-fsSize >= 1<<20, devSize, fsSize, nil
}

// growUnmounted grows an ext4 filesystem before it is mounted: the
// offline resize needs no online-resize support (EXT4_IOC_RESIZE_FS, which
// needs CAP_SYS_RESOURCE) but a checked filesystem, so e2fsck -f -p runs
// first. XFS grows only mounted (growIfNeeded).
func (a *Agent) growUnmounted(ctx context.Context, dev string) error {
	if a.cfg.FSType != "ext4" {
		return nil
	}
	grow, devSize, fsSize, err := a.needsGrow(dev)
	if err != nil || !grow {
		return err
	}
	a.log.Info("growing the filesystem before mounting it", "device", dev, "from", fmtBytes(fsSize), "to", fmtBytes(devSize))
	fsck := exec.CommandContext(ctx, "e2fsck", "-f", "-p", dev)
	fsck.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := fsck.CombinedOutput()
	var ee *exec.ExitError
	// Exit 1: errors were corrected; the filesystem is fine to resize.
	if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 1) {
		return retryable("e2fsck -f -p %s: %v: %s", dev, err, lastLines(string(out), 3))
	}
	return runTool(ctx, "resize2fs", dev)
}

// growMounted grows the mounted volume's filesystem when its device grew
// (reconcile's ModifyVolume): every apply — the timer's and each
// command's — checks, so the new space is used without a reboot. A
// failure is logged; the content is fine at the old size.
func (a *Agent) growMounted(ctx context.Context) {
	v, ok := a.readVolumeInfo()
	if !ok || v.Device == "" {
		return
	}
	if err := a.growIfNeeded(ctx, v.Device); err != nil {
		a.log.Warn("could not grow the filesystem online; going on at its current size", "device", v.Device, "err", err)
	}
}

// fillSpace puts the mounted filesystem's size, used and free bytes into r.
func (a *Agent) fillSpace(r *Report) {
	var st unix.Statfs_t
	if err := unix.Statfs(a.cfg.MountPath, &st); err != nil {
		return
	}
	r.SizeBytes, r.FreeBytes = int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
	r.UsedBytes = int64(st.Blocks-st.Bfree) * st.Bsize
}

// growIfNeeded grows the mounted filesystem online when the device is
// larger. The periodic apply and every command's apply call it, so a
// volume that reconcile grew in place is used without a reboot.
func (a *Agent) growIfNeeded(ctx context.Context, dev string) error {
	grow, devSize, fsSize, err := a.needsGrow(dev)
	if err != nil || !grow {
		return err
	}
	a.log.Info("growing the filesystem online", "device", dev, "from", fmtBytes(fsSize), "to", fmtBytes(devSize))
	switch a.cfg.FSType {
	case "ext4":
		return runTool(ctx, "resize2fs", dev)
	default:
		return runTool(ctx, "xfs_growfs", a.cfg.MountPath)
	}
}
