package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
)

// Names inside the mount that belong to volsd, not to the content.
const (
	stateDirName = events.ReservedDir // <mount>/.volsd
	lostFound    = "lost+found"       // made by mkfs.ext4 at the root; kept
	rsyncTmpName = ".~tmp~"           // rsync's --delay-updates holding directory
)

// contentXattr records, on each file the agent places, what it holds:
// "v1 <sha256> <size> <mtime ns>". It is trusted only while the file's size
// and mtime still match it, so a file changed behind the agent's back is
// hashed again instead of reused. It is a trusted.* attribute: only a
// process with CAP_SYS_ADMIN can set (or read) it, so whoever may write a
// served file cannot forge its record. Records in the user.* namespace
// (agents before this one wrote user.volsd.content, which anyone who can
// write the file can set) are never read: such files are hashed once and
// get a trusted record.
const contentXattr = "trusted.volsd.content"

// recordVouches says a content record may vouch for the file whose lstat
// is st: it is owned by the agent's user and not writable by group or
// others. The owner can set any mtime; a file others may write is not
// the agent's alone to describe.
func recordVouches(st *unix.Stat_t) bool {
	return st.Mode&0o022 == 0 && st.Uid == agentUID
}

var agentUID = uint32(os.Geteuid())

// probe is what lies at a relative path inside the mount, found without
// following any symlink.
type probe struct {
	// blocker is the first parent component that exists but is not a
	// directory (a symlink, a file, ...); "" when there is none.
	blocker string
	// missing is true when a parent directory does not exist.
	missing bool
	// exists says the final component exists (only when blocker == "" and
	// !missing); st is its lstat.
	exists bool
	st     unix.Stat_t
}

func (p probe) isRegular() bool { return p.exists && p.st.Mode&unix.S_IFMT == unix.S_IFREG }
func (p probe) isDir() bool     { return p.exists && p.st.Mode&unix.S_IFMT == unix.S_IFDIR }

// probePath looks at rel (a validated relative path) under the directory
// fd root: each parent is opened with O_NOFOLLOW|O_DIRECTORY, so a symlink
// anywhere on the way stops the walk instead of leading out of the mount.
//
// Nothing beyond the root's filesystem is in the tree: a directory on the
// way, or at rel, where another filesystem is mounted is a
// *mountPointError (like rsync -x, volsd never crosses a mount).
func probePath(root int, rel string) (probe, error) {
	var p probe
	dev, err := devOf(root)
	if err != nil {
		return p, err
	}
	parts := strings.Split(rel, "/")
	fd, err := unix.Dup(root)
	if err != nil {
		return p, err
	}
	defer func() { unix.Close(fd) }()
	for i, part := range parts[:len(parts)-1] {
		next, err := unix.Openat(fd, part, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case errors.Is(err, unix.ENOENT):
			p.missing = true
			return p, nil
		case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
			p.blocker = strings.Join(parts[:i+1], "/")
			return p, nil
		case err != nil:
			return p, fmt.Errorf("open %s: %w", strings.Join(parts[:i+1], "/"), err)
		}
		unix.Close(fd)
		fd = next
		if d, err := devOf(fd); err != nil || d != dev {
			return p, &mountPointError{rel: strings.Join(parts[:i+1], "/")}
		}
	}
	err = unix.Fstatat(fd, parts[len(parts)-1], &p.st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return p, nil
	case err != nil:
		return p, fmt.Errorf("lstat %s: %w", rel, err)
	}
	if p.st.Dev != dev {
		return p, &mountPointError{rel: rel}
	}
	p.exists = true
	return p, nil
}

// mountPointError is a directory inside the volume where another
// filesystem is mounted (rel, relative to the mount): the agent never
// places or deletes across it. applyEntry reports it as bad input.
type mountPointError struct{ rel string }

func (e *mountPointError) Error() string { return e.rel + " is a mount point of another filesystem" }

// devOf returns the device of the filesystem of the open file fd.
func devOf(fd int) (uint64, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st.Dev, err
}

// content is what a file placed by the agent holds.
type content struct {
	SHA256 string
	Size   int64
	Mtime  int64 // ns since the epoch
}

func (c content) xattr() []byte {
	return []byte(fmt.Sprintf("v1 %s %d %d", c.SHA256, c.Size, c.Mtime))
}

// readContent returns the trusted content record of the regular file at
// abs whose lstat is st: ok only when the file may be vouched for
// (recordVouches), the xattr exists and it still matches the file's size
// and mtime.
func readContent(abs string, st *unix.Stat_t) (content, bool) {
	if !recordVouches(st) {
		return content{}, false
	}
	var buf [128]byte
	n, err := unix.Lgetxattr(abs, contentXattr, buf[:])
	if err != nil {
		return content{}, false
	}
	// "v1 <sha256> <size> <mtime>", as content.xattr writes it; checked
	// field by field without allocating (the walk reads one per file).
	rec := buf[:n]
	var f [4][]byte
	for i := range f {
		j := bytes.IndexByte(rec, ' ')
		if i == len(f)-1 {
			j = len(rec)
		}
		if j < 0 {
			return content{}, false
		}
		f[i], rec = rec[:j], rec[min(j+1, len(rec)):]
	}
	if string(f[0]) != "v1" {
		return content{}, false
	}
	size, err1 := strconv.ParseInt(string(f[2]), 10, 64)
	mtime, err2 := strconv.ParseInt(string(f[3]), 10, 64)
	if err1 != nil || err2 != nil || size != st.Size || mtime != st.Mtim.Nano() {
		return content{}, false
	}
	sha := string(f[1])
	if events.ValidateSHA256("xattr", sha) != nil {
		return content{}, false
	}
	return content{SHA256: sha, Size: size, Mtime: mtime}, true
}

// hashFile returns the sha256 of the file at abs, opened without following
// a final symlink.
func hashFile(abs string) (string, int64, error) {
	f, err := os.OpenFile(abs, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// liveSHA256 says whether the regular file at abs (lstat st) holds sha: from
// its trusted xattr, else by hashing it when the size matches. A file found
// right by hashing gets its xattr (best effort) so the next look is cheap.
func liveSHA256(abs string, st *unix.Stat_t, sha string, size int64) bool {
	if st.Size != size {
		return false
	}
	if c, ok := readContent(abs, st); ok {
		return c.SHA256 == sha
	}
	got, n, err := hashFile(abs)
	if err != nil || n != size || got != sha {
		return false
	}
	_ = unix.Lsetxattr(abs, contentXattr, content{SHA256: sha, Size: size, Mtime: st.Mtim.Nano()}.xattr(), 0)
	return true
}

// mkdirAll creates dir and its parents with mode 0755 whatever the umask.
// It is only used inside the agent's own staging tree.
func mkdirAll(dir string) error {
	if st, err := os.Lstat(dir); err == nil && st.IsDir() {
		return nil
	}
	if err := mkdirAll(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := unix.Mkdir(dir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return &os.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	return os.Chmod(dir, 0o755)
}

// finishFile gives the new staged file f its mode, content record and
// mtime (in that order: the xattr does not change the mtime), all through
// its descriptor: no path lookups, and the file cannot be swapped.
func finishFile(f *os.File, mode uint32, c content) error {
	if err := f.Chmod(os.FileMode(mode)); err != nil {
		return err
	}
	fd := int(f.Fd())
	if err := unix.Fsetxattr(fd, contentXattr, c.xattr(), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("set %s on %s: %w", contentXattr, f.Name(), err)
	}
	if err := futimens(fd, c.Mtime); err != nil {
		return fmt.Errorf("set mtime of %s: %w", f.Name(), err)
	}
	return nil
}

// futimens sets the access and modification times of the open file fd to
// ns (utimensat with a NULL path, which x/sys/unix does not expose).
func futimens(fd int, ns int64) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// removePath removes rel (a file, a symlink itself, or a whole tree)
// under the directory fd root. Every directory on the way is opened with
// O_NOFOLLOW and every removal is an unlinkat relative to a descriptor, so
// no symlink, even one swapped in meanwhile, leads out of the mount. A
// path behind a symlink or a file is not in the tree: nothing to do.
//
// It never leaves the root's filesystem: a mount point on the way or
// inside the tree is a *mountPointError, and nothing beneath it is
// touched.
func removePath(root int, rel string) error {
	dev, err := devOf(root)
	if err != nil {
		return err
	}
	parts := strings.Split(rel, "/")
	fd, err := unix.Dup(root)
	if err != nil {
		return err
	}
	defer func() { unix.Close(fd) }()
	for i, part := range parts[:len(parts)-1] {
		next, err := unix.Openat(fd, part, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
			return nil
		case err != nil:
			return fmt.Errorf("open %s: %w", part, err)
		}
		unix.Close(fd)
		fd = next
		if d, err := devOf(fd); err != nil || d != dev {
			return &mountPointError{rel: strings.Join(parts[:i+1], "/")}
		}
	}
	err = removeAt(fd, parts[len(parts)-1], dev)
	var mp *mountPointError
	if errors.As(err, &mp) {
		if dir := strings.Join(parts[:len(parts)-1], "/"); dir != "" {
			mp.rel = dir + "/" + mp.rel
		}
	}
	return err
}

// removeAt removes name in the directory dirfd, recursively for a
// directory, never following a symlink, and never into a directory of
// another filesystem than dev (a *mountPointError naming it relative to
// dirfd).
func removeAt(dirfd int, name string, dev uint64) error {
	err := unix.Unlinkat(dirfd, name, 0)
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM):
		return fmt.Errorf("unlink %s: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("open %s: %w", name, err)
	}
	dir := os.NewFile(uintptr(fd), name)
	defer dir.Close()
	if d, err := devOf(fd); err != nil || d != dev {
		return &mountPointError{rel: name}
	}
	for {
		names, err := dir.Readdirnames(1024)
		for _, n := range names {
			if err := removeAt(fd, n, dev); err != nil {
				var mp *mountPointError
				if errors.As(err, &mp) {
					mp.rel = name + "/" + mp.rel
					return mp
				}
				return fmt.Errorf("%s/%w", name, err)
			}
		}
		if err == io.EOF || len(names) == 0 {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", name, err)
	}
	return nil
}

// openDir opens a directory for *at calls.
func openDir(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// reopenDir opens the directory open at fd again: its own descriptor with
// its own offset (a dup shares the offset, so a second read of the listing
// would find it at its end).
func reopenDir(fd int) (int, error) {
	return unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// syncDir fsyncs a directory so a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeTemp writes data with mode to a new temp file beside path (fsynced
// when sync) and returns its name; the caller renames it over path.
func writeTemp(path string, data []byte, mode os.FileMode, sync bool) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// writeFileAtomic writes data to path: temp file, fsync, rename, fsync dir.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode, true)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op after the rename
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// isNoSpace reports ENOSPC or EDQUOT anywhere in err.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// freeBytes returns the bytes available to the agent on the filesystem of
// path.
func freeBytes(path string) (int64, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return 0, err
	}
	return int64(s.Bavail) * int64(s.Bsize), nil
}

// mtimeOf is the mtime the agent gives the files an entry places: the
// entry's creation time, so that every volume that applies the same
// history ends with the same mtimes.
func mtimeOf(e events.JournalEntry) int64 {
	if e.CreatedAt.IsZero() {
		return time.Unix(0, 0).UnixNano()
	}
	// Whole seconds: a filesystem with one-second timestamps (ext4 with
	// 128-byte inodes) keeps the mtime the content record names, and HTTP
	// dates have no finer resolution anyway.
	return e.CreatedAt.Truncate(time.Second).UnixNano()
}

// openDirAt opens the directory rel ("." : root itself) under the
// directory fd root, every component with O_NOFOLLOW: a symlink anywhere
// on the way fails it (ELOOP, ENOTDIR) instead of leading out.
func openDirAt(root int, rel string) (int, error) {
	if rel == events.RootPath {
		return reopenDir(root)
	}
	fd, err := unix.Dup(root)
	if err != nil {
		return -1, err
	}
	for _, part := range strings.Split(rel, "/") {
		next, err := unix.Openat(fd, part, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", part, err)
		}
		fd = next
	}
	return fd, nil
}

// chmodDir gives the directory rel under root the permission bits mode,
// through its own descriptor (never a symlink's target).
func chmodDir(root int, rel string, mode uint32) error {
	fd, err := openDirAt(root, rel)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchmod(fd, mode)
}

// readlinkPath reads the symlink rel under root, its parents opened
// without following symlinks.
func readlinkPath(root int, rel string) (string, error) {
	dir, name := ".", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		dir, name = rel[:i], rel[i+1:]
	}
	fd, err := openDirAt(root, dir)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return readlinkAt(fd, name)
}
