package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The rsync jail. rsync places content, but it resolves the paths it
// writes through the live tree like any program: a directory swapped for
// a symlink while a pass runs (by whoever may write the served tree)
// redirects its writes wherever the link points. So rsync runs chrooted
// into runDir/jail: a read-only tmpfs holding read-only binds of the
// system directories rsync needs (/usr, /lib, ...) and the volume,
// bound at /v. A symlink in the tree can then only lead into the volume
// itself or into something rsync cannot write: an absolute link names the
// jail's read-only tree, a relative one cannot climb above the jail's
// root. The jail lives for one apply (set up before its first pass, torn
// down at its end, and by the next apply or release after a crash); its
// tmpfs is a private mount, so nothing propagates to other namespaces.
const (
	jailDir   = "jail"
	jailMount = "/v" // the volume inside the jail
)

// jailSystemDirs are bound read-only into the jail when they exist: rsync
// and the libraries it loads.
var jailSystemDirs = []string{"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"}

func (a *Agent) jailPath() string { return filepath.Join(a.cfg.RunDir, jailDir) }

// setUpJail builds the jail for the mount; teardown removes it.
func (a *Agent) setUpJail() (teardown func(), err error) {
	jail := a.jailPath()
	a.tearDownJail() // a crashed apply's
	fail := func(err error) (func(), error) {
		a.tearDownJail()
		return func() {}, retryable("confine rsync: %v", err)
	}
	if err := os.MkdirAll(jail, 0o700); err != nil {
		return fail(err)
	}
	if err := unix.Mount("volsd-jail", jail, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0755"); err != nil {
		return fail(fmt.Errorf("mount tmpfs at %s: %w", jail, err))
	}
	if err := unix.Mount("", jail, "", unix.MS_PRIVATE, ""); err != nil {
		return fail(fmt.Errorf("make %s private: %w", jail, err))
	}
	bind := func(src, dst string, ro bool) error {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s at %s: %w", src, dst, err)
		}
		if err := unix.Mount("", dst, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("make %s private: %w", dst, err)
		}
		if ro {
			if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				return fmt.Errorf("make %s read-only: %w", dst, err)
			}
		}
		return nil
	}
	for _, d := range jailSystemDirs {
		fi, err := os.Lstat(d)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return fail(err)
		case fi.Mode()&os.ModeSymlink != 0: // merged /usr: /bin -> usr/bin
			target, err := os.Readlink(d)
			if err != nil {
				return fail(err)
			}
			if err := os.Symlink(target, filepath.Join(jail, d)); err != nil {
				return fail(err)
			}
		case fi.IsDir():
			if err := bind(d, filepath.Join(jail, d), true); err != nil {
				return fail(err)
			}
		}
	}
	if err := bind(a.cfg.MountPath, filepath.Join(jail, jailMount), false); err != nil {
		return fail(err)
	}
	if err := unix.Mount("", jail, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0755"); err != nil {
		return fail(fmt.Errorf("make %s read-only: %w", jail, err))
	}
	return a.tearDownJail, nil
}

// tearDownJail detaches the jail and everything mounted in it (lazily: a
// killed rsync may still hold it; its mounts go with it) and removes
// the directory.
func (a *Agent) tearDownJail() {
	jail := a.jailPath()
	if err := unix.Unmount(jail, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		a.log.Warn("unmount the rsync jail", "jail", jail, "err", err)
	}
	_ = os.Remove(jail)
}
