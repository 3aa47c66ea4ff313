package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// volume is a loop-mounted ext4 filesystem on a sparse image file, the
// same kind of filesystem the agent formats on a blank pool volume
// (mkfs.ext4 -q -L volsd, mounted noatime), but with its inode tables and
// journal initialised at mkfs time (lazy_itable_init=0,lazy_journal_init=0)
// so that no background initialisation writes while a run is timed.
type volume struct {
	img, loop, mount string
}

// newVolume creates a sparse image of sizeGiB under dir, attaches it to a
// loop device, formats it and mounts it at dir/mnt-<name>. Formatting is
// timed apart: it returns how long mkfs and mount took.
func newVolume(ctx context.Context, dir, name string, sizeGiB int) (*volume, time.Duration, error) {
	v := &volume{img: filepath.Join(dir, name+".img"), mount: filepath.Join(dir, "mnt-"+name)}
	f, err := os.Create(v.img)
	if err != nil {
		return nil, 0, err
	}
	if err := f.Truncate(int64(sizeGiB) << 30); err != nil {
		f.Close()
		return nil, 0, err
	}
	f.Close()
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", v.img).CombinedOutput()
	if err != nil {
		os.Remove(v.img)
		return nil, 0, fmt.Errorf("losetup %s: %v: %s", v.img, err, strings.TrimSpace(string(out)))
	}
	v.loop = strings.TrimSpace(string(out))
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-L", "volsd", "-E", "lazy_itable_init=0,lazy_journal_init=0", v.loop).CombinedOutput(); err != nil {
		v.close()
		return nil, 0, fmt.Errorf("mkfs.ext4 %s: %v: %s", v.loop, err, strings.TrimSpace(string(out)))
	}
	if err := os.MkdirAll(v.mount, 0o755); err != nil {
		v.close()
		return nil, 0, err
	}
	if err := unix.Mount(v.loop, v.mount, "ext4", unix.MS_NOATIME, ""); err != nil {
		v.close()
		return nil, 0, fmt.Errorf("mount %s at %s: %w", v.loop, v.mount, err)
	}
	return v, time.Since(start), nil
}

// syncFS flushes the filesystem mounted at dir (syncfs), as the agent
// does before it moves its watermark.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// close unmounts, detaches and removes the image.
func (v *volume) close() error {
	var errs []error
	if v.mount != "" {
		if err := unix.Unmount(v.mount, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			if err2 := unix.Unmount(v.mount, unix.MNT_DETACH); err2 != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", v.mount, err))
			}
		}
		os.Remove(v.mount)
	}
	if v.loop != "" {
		if out, err := exec.Command("losetup", "-d", v.loop).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("losetup -d %s: %v: %s", v.loop, err, strings.TrimSpace(string(out))))
		}
	}
	if err := os.Remove(v.img); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// rsyncCopy runs plain `rsync -a src/ dst/` and then syncfs on the
// filesystem at mount. It returns the time rsync took and the time until
// the data was on the volume (rsync + syncfs).
func rsyncCopy(ctx context.Context, src, dst, mount string) (plain, synced time.Duration, err error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, "rsync", "-a", src+"/", dst+"/")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("rsync -a %s/ %s/: %v: %s", src, dst, err, tail(string(out), 400))
	}
	plain = time.Since(start)
	if err := syncFS(mount); err != nil {
		return 0, 0, fmt.Errorf("syncfs %s: %w", mount, err)
	}
	return plain, time.Since(start), nil
}

// settle writes back everything dirty and lets the writeback finish, so
// a timed section pays only for its own writes.
func settle() {
	unix.Sync()
	time.Sleep(200 * time.Millisecond)
}
