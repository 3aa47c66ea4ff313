package agent

import (
	"errors"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// NativePlaceMax: an entry that places at most this many paths (changed
// and new files, symlinks and directories) is placed by the agent itself,
// without rsync: each staged file or symlink renamed into place, each new
// directory made. The staging tree is on the volume, so a rename moves
// the verified staged inode (mode, mtime, content record and all) into
// the live tree atomically, and nothing is copied. rsync's fixed cost —
// start-up, and its exit, which polls for its children in 20 ms sleeps,
// about 45 ms a run, 60–100 ms for a 1% delta on a loaded host — was most
// of a small delta's apply. Larger entries keep the rsync passes (one
// copy pass, split in two runs from SplitCopyFiles files, and one link
// pass), whose cost per file is lower than a rename's on a loaded disk
// and whose writes overlap the flusher.
const NativePlaceMax = 1024

// placer puts staged paths into the live tree by rename, the way the
// rsync passes do in their jail, but with no program and no path ever
// resolved through the live tree: every live directory is opened one
// component at a time from the mount's descriptor with O_NOFOLLOW and
// checked to be on the mount's filesystem, so a symlink swapped in for a
// directory (by whoever may write the served tree) fails the open instead
// of leading anywhere, and a rename happens in the directory that was
// opened. Missing directories are made; every directory on the way gets
// the staged directory's mode and owner, as rsync's implied directories
// do (the manifest's mode where it has one).
type placer struct {
	root    int // the mount
	staging int // the staging tree of the entry
	dev     uint64
	dirs    map[string]int // live directories opened, by path relative to the mount
}

func newPlacer(root int, staging string) (*placer, error) {
	dev, err := devOf(root)
	if err != nil {
		return nil, retryable("fstat the mount: %v", err)
	}
	fd, err := openDir(staging)
	if err != nil {
		return nil, retryable("%v", err)
	}
	return &placer{root: root, staging: fd, dev: dev, dirs: map[string]int{}}, nil
}

func (pl *placer) close() {
	for _, fd := range pl.dirs {
		unix.Close(fd)
	}
	unix.Close(pl.staging)
}

// place puts the staged path rel (a file, a symlink or a directory) in
// place: a file or symlink is renamed over whatever file or symlink is
// there (atomically: readers see the old or the new one), a directory is
// made when missing.
func (pl *placer) place(rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pl.staging, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return retryable("staged %s: %v", rel, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		_, err := pl.dir(rel)
		return err
	}
	parent, err := pl.dir(filepath.Dir(rel))
	if err != nil {
		return err
	}
	if err := unix.Renameat(pl.staging, rel, parent, filepath.Base(rel)); err != nil {
		if isNoSpace(err) {
			return retryable("disk full placing %s: %v", rel, err)
		}
		// A directory where the plan saw a file or nothing: changed since
		// the plan; the next apply plans again.
		return retryable("place %s: %v (the tree changed while the entry was applied)", rel, err)
	}
	return nil
}

// dir returns the live directory rel, opened (and made when missing),
// with the staged directory's mode and owner.
func (pl *placer) dir(rel string) (int, error) {
	if rel == "." || rel == "" {
		return pl.root, nil
	}
	if fd, ok := pl.dirs[rel]; ok {
		return fd, nil
	}
	parent, err := pl.dir(filepath.Dir(rel))
	if err != nil {
		return -1, err
	}
	var want unix.Stat_t
	if err := unix.Fstatat(pl.staging, rel, &want, unix.AT_SYMLINK_NOFOLLOW); err != nil || want.Mode&unix.S_IFMT != unix.S_IFDIR {
		return -1, retryable("staged directory %s is missing (%v)", rel, err)
	}
	name := filepath.Base(rel)
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(parent, name, flags, 0)
	if errors.Is(err, unix.ENOENT) {
		if err := unix.Mkdirat(parent, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			if isNoSpace(err) {
				return -1, retryable("disk full making directory %s: %v", rel, err)
			}
			return -1, retryable("make directory %s: %v", rel, err)
		}
		fd, err = unix.Openat(parent, name, flags, 0)
	}
	if err != nil {
		// ELOOP, ENOTDIR: a symlink or a file where the plan saw a
		// directory; it is never followed.
		return -1, retryable("open directory %s: %v (the tree changed while the entry was applied)", rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, retryable("stat %s: %v", rel, err)
	}
	if st.Dev != pl.dev {
		unix.Close(fd)
		return -1, &mountPointError{rel: rel}
	}
	if st.Uid != want.Uid || st.Gid != want.Gid {
		if err := unix.Fchown(fd, int(want.Uid), int(want.Gid)); err != nil {
			unix.Close(fd)
			return -1, retryable("chown %s: %v", rel, err)
		}
	}
	if st.Mode&0o7777 != want.Mode&0o7777 {
		if err := unix.Fchmod(fd, want.Mode&0o7777); err != nil {
			unix.Close(fd)
			return -1, retryable("chmod %s: %v", rel, err)
		}
	}
	pl.dirs[rel] = fd
	return fd, nil
}

// placeNative places the copies and links of a prepared entry with a
// placer (see NativePlaceMax): the changed files first, then the
// deletions, then the new paths, each checked afterwards like the rsync
// passes.
func (a *applyRun) placeNative(root int, pe *preparedEntry, ph *phases) error {
	p := pe.plan
	pl, err := newPlacer(root, pe.staging)
	if err != nil {
		return err
	}
	defer pl.close()
	for _, c := range p.copies {
		if err := pl.place(c); err != nil {
			return err
		}
	}
	if err := verifyPlaced(root, a.cfg.MountPath, p.copies, pe.want, p); err != nil {
		return err
	}
	ph.mark("place")
	for _, d := range p.deletes {
		if err := removePath(root, d); err != nil {
			return retryable("delete %s: %w", d, err)
		}
	}
	ph.mark("delete")
	for _, l := range p.links {
		if err := pl.place(l); err != nil {
			return err
		}
	}
	if err := verifyPlaced(root, a.cfg.MountPath, p.links, pe.want, p); err != nil {
		return err
	}
	if len(p.links) > 0 {
		ph.mark("link")
	}
	// What placing wrote (directories, renames) and what staging wrote
	// since its last background flush reach the volume now, on the
	// apply's flusher: a writeback error fails this entry, named, before
	// the checkpoint (the rsync passes flush under them for the same
	// reason). The checkpoint's own syncfs then finds little left.
	if err := a.flush.syncfs("flush after placing"); err != nil {
		return err
	}
	ph.mark("flush")
	return nil
}

// placesNatively says whether the agent places pe itself (see
// NativePlaceMax).
func (a *applyRun) placesNatively(pe *preparedEntry) bool {
	n := len(pe.plan.copies) + len(pe.plan.links)
	return n > 0 && n <= a.placeNativeMax
}
