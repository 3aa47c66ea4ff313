package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/internal/testenv"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func newDisks(t *testing.T) (*Disks, DeviceTree) {
	testenv.RequireRoot(t, "the harness's EBS volumes (loop devices, mount)")
	dir := t.TempDir()
	d, err := NewDisks(filepath.Join(dir, "ebs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close disks: %v", err)
		}
	})
	return d, DeviceTree{DeviceRoot: filepath.Join(dir, "dev"), SysfsRoot: filepath.Join(dir, "sys")}
}

func TestDisksAttachPublishesByIDLinkAndSerial(t *testing.T) {
	d, tree := newDisks(t)
	const vol = "vol-0123456789abcdef0"
	if err := d.CreateVolume(vol, 1, ""); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(d.VolumeImage(vol), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 1<<30 || st.Blocks != 0 {
		t.Errorf("image size %d with %d blocks; want a sparse 1 GiB file", st.Size, st.Blocks)
	}
	loop, err := d.Attach(vol, tree)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(tree.DeviceRoot, "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0")
	target, err := os.Readlink(link)
	if err != nil || target != loop {
		t.Fatalf("by-id link %s → %q (%v); want %s", link, target, err, loop)
	}
	serial, err := os.ReadFile(filepath.Join(tree.SysfsRoot, "class", "block", filepath.Base(loop), "device", "serial"))
	if err != nil || strings.TrimSpace(string(serial)) != "vol0123456789abcdef0" {
		t.Fatalf("serial %q (%v); want vol0123456789abcdef0", serial, err)
	}
	again, err := d.Attach(vol, tree)
	if err != nil || again != loop {
		t.Errorf("second attach gave %q, %v; want the same device %s", again, err, loop)
	}
	if err := d.DeleteVolume(vol); err == nil {
		t.Error("deleting an attached volume succeeded")
	}
	if err := d.Detach(vol, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("by-id link still there after detach: %v", err)
	}
	if out, _ := exec.Command("losetup", "--list", "--noheadings", "--output", "BACK-FILE", loop).Output(); strings.Contains(string(out), d.VolumeImage(vol)) {
		t.Errorf("%s still backs %s after detach", loop, d.VolumeImage(vol))
	}
}

func TestDisksSnapshotCopiesContentAndVolumeFromSnapshot(t *testing.T) {
	d, tree := newDisks(t)
	const vol, snap, vol2 = "vol-00000000000000001", "snap-00000000000000001", "vol-00000000000000002"
	if err := d.CreateVolume(vol, 1, ""); err != nil {
		t.Fatal(err)
	}
	loop, err := d.Attach(vol, tree)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", loop)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", loop, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "before.txt"), []byte("in the snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "fsfreeze", "-f", mnt)
	err = d.Snapshot(vol, snap)
	run(t, "fsfreeze", "-u", mnt)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "after.txt"), []byte("not in the snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	if mps, err := d.Mounted(vol); err != nil || len(mps) != 1 || mps[0] != mnt {
		t.Errorf("Mounted = %v, %v; want [%s]", mps, err, mnt)
	}
	if err := d.Detach(vol, false); err == nil || !strings.Contains(err.Error(), "mounted") {
		t.Errorf("detaching a mounted volume without force: %v; want a 'mounted' error", err)
	}
	if err := d.Detach(vol, true); err != nil {
		t.Fatalf("forced detach: %v", err)
	}

	if err := d.CreateVolume(vol2, 2, snap); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(d.VolumeImage(vol2)); st.Size() != 2<<30 {
		t.Errorf("volume from snapshot is %d bytes; want the requested 2 GiB", st.Size())
	}
	loop2, err := d.Attach(vol2, tree)
	if err != nil {
		t.Fatal(err)
	}
	mnt2 := filepath.Join(t.TempDir(), "mnt2")
	if err := os.MkdirAll(mnt2, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", loop2, mnt2)
	defer func() { _ = exec.Command("umount", mnt2).Run() }()
	if b, err := os.ReadFile(filepath.Join(mnt2, "before.txt")); err != nil || string(b) != "in the snapshot" {
		t.Errorf("before.txt on the restored volume: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(mnt2, "after.txt")); !os.IsNotExist(err) {
		t.Errorf("after.txt (written after the snapshot) is on the restored volume: %v", err)
	}
}

func TestCopySparseKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("head"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("middle"), 32<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := copySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if string(a) != string(b) {
		t.Fatal("copy differs from the source")
	}
	var st unix.Stat_t
	if err := unix.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("copy uses %d bytes of disk for 10 bytes of data; holes were filled", st.Blocks*512)
	}
}

// TestDisksPublishLikeNitro: with an instance /dev (NodeDir) an attached
// volume appears as Nitro shows EBS: a block node nvme1n1 of the loop
// device, by-id links ../../nvme1n1 (and the _1 namespace link), a sysfs
// serial and dev; the root volume as nvme0n1 with its partition link; a
// second volume as nvme2n1; a detach removes its node, links and sysfs.
func TestDisksPublishLikeNitro(t *testing.T) {
	d, tree := newDisks(t)
	tree.NodeDir = filepath.Dir(tree.DeviceRoot)
	tree.DeviceRoot = filepath.Join(tree.NodeDir, "disk", "by-id")
	const root, vol, vol2 = "vol-0aaaaaaaaaaaaaaa1", "vol-0123456789abcdef0", "vol-0fedcba9876543210"
	if err := PublishRoot(root, tree); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{vol, vol2} {
		if err := d.CreateVolume(v, 1, ""); err != nil {
			t.Fatal(err)
		}
	}
	loop, err := d.Attach(vol, tree)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Attach(vol2, tree); err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{
		"nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaa1":       "../../nvme0n1",
		"nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaa1-part1": "../../nvme0n1p1",
		"nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0":       "../../nvme1n1",
		"nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0_1":     "../../nvme1n1",
		"nvme-Amazon_Elastic_Block_Store_vol0fedcba9876543210":       "../../nvme2n1",
	} {
		if got, err := os.Readlink(filepath.Join(tree.DeviceRoot, link)); err != nil || got != want {
			t.Errorf("%s → %q (%v); want %s", link, got, err, want)
		}
	}
	var lst, nst unix.Stat_t
	if err := unix.Stat(loop, &lst); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(tree.NodeDir, "nvme1n1"), &nst); err != nil || nst.Mode&unix.S_IFMT != unix.S_IFBLK || nst.Rdev != lst.Rdev {
		t.Fatalf("nvme1n1 is not a block node of %s (%v)", loop, err)
	}
	for name, want := range map[string]string{"nvme0n1/device/serial": "vol0aaaaaaaaaaaaaaa1", "nvme1n1/device/serial": "vol0123456789abcdef0",
		"nvme1n1/dev": fmt.Sprintf("%d:%d", unix.Major(lst.Rdev), unix.Minor(lst.Rdev))} {
		b, err := os.ReadFile(filepath.Join(tree.SysfsRoot, "class", "block", name))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("sysfs %s = %q (%v); want %s", name, b, err, want)
		}
	}
	if err := d.Detach(vol, false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(tree.NodeDir, "nvme1n1"), filepath.Join(tree.SysfsRoot, "class", "block", "nvme1n1"),
		filepath.Join(tree.DeviceRoot, "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"), filepath.Join(tree.DeviceRoot, "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0_1")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after detach (%v)", p, err)
		}
	}
}
