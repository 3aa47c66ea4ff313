package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/volsd/volsd/events"
)

// ErrInput marks bad input from the operator: a hostile or invalid path, a
// symlink or special file in a tree (exit code 2).
var ErrInput = errors.New("bad input")

// localFile is one regular file to push.
type localFile struct {
	abs     string // where it is on this machine
	rel     string // its content path under the destination ("" for a single file)
	size    int64
	mode    uint32 // permission bits
	modTime time.Time
	ctime   time.Time // status change time, to notice a rewrite that restores mtime
	stat    fileStat  // what the hash index compares
	sha256  string
	// special is the setuid, setgid and sticky bits the file had; volsd
	// writes plain permission bits only, so they are dropped (with a warning).
	special fs.FileMode
	// sparse says the file has holes (fewer blocks allocated than its
	// size); it is uploaded and written dense (with a warning).
	sparse bool
}

// newLocalFile describes a regular file from its FileInfo.
func newLocalFile(abs, rel string, fi fs.FileInfo) localFile {
	f := localFile{abs: abs, rel: rel, size: fi.Size(), mode: uint32(fi.Mode().Perm()), modTime: fi.ModTime(),
		special: fi.Mode() & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), stat: statOf(fi)}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		f.ctime = time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
		f.sparse = st.Blocks*512 < fi.Size()
	}
	return f
}

// maxWarnings is how many warnings of one kind the CLI prints.
const maxWarnings = 10

// warnings says what the push changes silently otherwise: special mode bits
// dropped and sparse files made dense, at most maxWarnings paths each.
func warnings(files []localFile) []string {
	var special, sparse []string
	for _, f := range files {
		if f.special != 0 {
			special = append(special, fmt.Sprintf("%s: %s dropped (volsd writes plain permission bits, %#o)", f.abs, specialNames(f.special), f.mode))
		}
		if f.sparse {
			sparse = append(sparse, fmt.Sprintf("%s is sparse: uploaded and written dense (%d bytes on every server)", f.abs, f.size))
		}
	}
	var out []string
	for _, ws := range [][]string{special, sparse} {
		if len(ws) > maxWarnings {
			ws = append(ws[:maxWarnings], fmt.Sprintf("… and %d more like it", len(ws)-maxWarnings))
		}
		out = append(out, ws...)
	}
	return out
}

func specialNames(m fs.FileMode) string {
	var names []string
	for _, b := range []struct {
		bit  fs.FileMode
		name string
	}{{fs.ModeSetuid, "setuid"}, {fs.ModeSetgid, "setgid"}, {fs.ModeSticky, "sticky"}} {
		if m&b.bit != 0 {
			names = append(names, b.name)
		}
	}
	return strings.Join(names, "+")
}

func inputErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInput, fmt.Sprintf(format, args...))
}

// RootDest is the only spelling of the root as a DEST.
const RootDest = "/"

// dest is an operator's DEST, parsed by parseDest.
type dest struct {
	raw  string
	rel  string // the content path; "" for the root
	root bool   // written as "/"
	dir  bool   // ends in "/" (or is the root): "into this directory" for a put
}

// parseDest is the one DEST rule of push and delete: the root is a target
// only when written as "/". Every other spelling that names the root
// without saying so ("", ".", "./", "//", "/.", "a/..") is refused, because a
// sync to the root replaces every file on every server. Other DESTs lose
// their leading slashes (the content tree has no other root) and must then
// be clean content paths (events.ValidatePath) with at most one trailing
// slash.
func parseDest(raw string) (dest, error) {
	if raw == RootDest {
		return dest{raw: raw, root: true, dir: true}, nil
	}
	if path.Clean("/"+raw) == "/" {
		return dest{}, inputErr(`DEST %q names the root without saying so: the root is a target only when written as %q `+
			`(a sync there replaces every file of the pool); name a directory, or write %q`, raw, RootDest, RootDest)
	}
	d := dest{raw: raw, rel: strings.TrimLeft(raw, "/")}
	if strings.HasSuffix(d.rel, "/") {
		d.dir, d.rel = true, d.rel[:len(d.rel)-1]
	}
	if err := events.ValidatePath("DEST", d.rel); err != nil {
		return dest{}, inputErr("%v", err)
	}
	return d, nil
}

// target is the content path op works on: a put into a directory ("dir/"
// or "/") takes the local file's name; a sync of "/" is events.RootPath;
// the root cannot be deleted.
func (d dest) target(op events.Op, localName string) (string, error) {
	switch {
	case op == events.OpPut && d.dir:
		p := path.Join(d.rel, localName)
		if err := events.ValidatePath("DEST", p); err != nil {
			return "", inputErr("%v", err)
		}
		return p, nil
	case d.root && op == events.OpSync:
		return events.RootPath, nil
	case d.root:
		return "", inputErr("DEST %q: the root cannot be deleted; push an empty directory to %q to empty the pool", d.raw, RootDest)
	}
	return d.rel, nil
}

// scan lists what LOCAL holds: one file (a put) or a directory tree (a
// sync): its regular files, and (other) its directories with their modes,
// the root "." included, and its symlinks. Without copyLinks a symlink is
// carried as a link when its target is relative and resolves inside the
// tree (dangling and looping in-tree links too, as rsync -a carries them);
// an absolute or escaping one is refused, naming path and target. With
// copyLinks every symlink is followed, as rsync -L does: its target's
// content is pushed as a file or directory, and a dangling link or a
// directory loop is refused. Special files are refused, as are paths
// volsd would refuse. Nothing is read but metadata: all of this happens
// before anything is hashed or uploaded.
func scan(local string, copyLinks bool) (events.Op, []localFile, []events.ManifestEntry, error) {
	info, err := os.Stat(local) // the argument itself may be a symlink
	if err != nil {
		return "", nil, nil, inputErr("%v", err)
	}
	if info.Mode().IsRegular() {
		abs, _ := filepath.Abs(local)
		f, err := fileOf(abs, "", info)
		return events.OpPut, []localFile{f}, nil, err
	}
	if !info.IsDir() {
		return "", nil, nil, inputErr("%s is neither a regular file nor a directory", local)
	}
	root, err := filepath.EvalSymlinks(local)
	if err != nil {
		return "", nil, nil, inputErr("%v", err)
	}
	root, _ = filepath.Abs(root)
	w := &treeWalk{copyLinks: copyLinks, links: map[string]string{}, onPath: map[fileID]bool{}}
	w.other = append(w.other, events.ManifestEntry{Path: events.RootPath, Type: events.TypeDir, Mode: uint32(info.Mode().Perm())})
	if err := w.dir(root, "", info); err != nil {
		return "", nil, nil, err
	}
	for _, e := range w.other {
		if e.Type != events.TypeLink {
			continue
		}
		if why := events.LinkEscapes(e.Path, e.Target, w.links); why != "" {
			return "", nil, nil, inputErr("%s is a symlink to %q, which %s; volsd carries only relative links that stay inside the tree (push with --copy-links to send what links point to instead, as rsync -L does)",
				filepath.Join(root, e.Path), e.Target, why)
		}
	}
	return events.OpSync, w.files, w.other, nil
}

// treeWalk collects a tree for scan.
type treeWalk struct {
	copyLinks bool
	files     []localFile
	other     []events.ManifestEntry // dirs and links
	links     map[string]string      // link path → target
	onPath    map[fileID]bool        // directories being walked (loops, with copyLinks)
}

type fileID struct{ dev, ino uint64 }

// dir walks the directory abs (content path rel, "" for the root) whose
// stat is info.
func (w *treeWalk) dir(abs, rel string, info fs.FileInfo) error {
	id := idOf(info)
	if w.onPath[id] {
		return inputErr("%s: following symlinks (--copy-links) leads into a directory loop", abs)
	}
	w.onPath[id] = true
	defer delete(w.onPath, id)
	ents, err := os.ReadDir(abs)
	if err != nil {
		return inputErr("%v", err)
	}
	for _, de := range ents {
		p := filepath.Join(abs, de.Name())
		r := de.Name()
		if rel != "" {
			r = rel + "/" + de.Name()
		}
		if rel == "" && de.Name() == events.ReservedDir {
			return inputErr("%s: the directory %s is reserved for volsd's own state and cannot be pushed", p, events.ReservedDir)
		}
		if err := events.ValidatePath("path", r); err != nil {
			return inputErr("%s: %v", p, err)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return inputErr("%v", err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return inputErr("%v", err)
			}
			if !w.copyLinks {
				if err := events.ValidateLinkTarget("target", target); err != nil {
					return inputErr("%s is a symlink to %q: %v", p, target, err)
				}
				w.links[r] = target
				w.other = append(w.other, events.ManifestEntry{Path: r, Type: events.TypeLink, Target: target})
				continue
			}
			if fi, err = os.Stat(p); err != nil {
				return inputErr("%s is a symlink to %q, which leads nowhere (%v); --copy-links pushes what links point to, so each must lead to a file or directory", p, target, errors.Unwrap(err))
			}
		}
		switch {
		case fi.Mode().IsRegular():
			f, err := fileOf(p, r, fi)
			if err != nil {
				return err
			}
			w.files = append(w.files, f)
		case fi.IsDir():
			w.other = append(w.other, events.ManifestEntry{Path: r, Type: events.TypeDir, Mode: uint32(fi.Mode().Perm())})
			if err := w.dir(p, r, fi); err != nil {
				return err
			}
		default:
			return inputErr("%s is a special file (%s); volsd pushes regular files, directories and symlinks only", p, fi.Mode().Type())
		}
	}
	return nil
}

// fileOf is the regular file at abs (content path rel) whose stat is fi.
func fileOf(abs, rel string, fi fs.FileInfo) (localFile, error) {
	if err := events.ValidateMtime("mtime", fi.ModTime().Unix()); err != nil {
		return localFile{}, inputErr("%s: modification time %s: %v (set it with touch)", abs, fi.ModTime().UTC().Format(time.RFC3339), err)
	}
	return newLocalFile(abs, rel, fi), nil
}

func idOf(fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{dev: uint64(st.Dev), ino: st.Ino}
	}
	return fileID{}
}

// hashFiles computes the sha256 of every file the index does not vouch
// for, GOMAXPROCS files at a time, and returns how many it read.
func hashFiles(ctx context.Context, files []localFile, ix *hashIndex) (int, error) {
	var todo []int
	for i, f := range files {
		if sha, ok := ix.lookup(f.rel, f.stat); ok {
			files[i].sha256 = sha
		} else {
			todo = append(todo, i)
		}
	}
	var hashes errgroup.Group // no shared context: every file is hashed, the first error is returned
	hashes.SetLimit(runtime.GOMAXPROCS(0))
	for _, i := range todo {
		if ctx.Err() != nil {
			break
		}
		hashes.Go(func() error {
			sum, err := hashFile(files[i].abs)
			files[i].sha256 = sum
			return err
		})
	}
	if err := hashes.Wait(); err != nil {
		return 0, err
	}
	return len(todo), ctx.Err()
}

func hashFile(p string) (string, error) {
	f, err := openLocal(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// openLocal opens a file to push. A file this user may not read is bad
// input (exit 2) naming the path: pushing again will not help.
func openLocal(p string) (*os.File, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrPermission) {
		return nil, inputErr("%s is not readable by this user (%v): fix its permissions, or leave it out of LOCAL", p, err)
	}
	return f, err
}

// unchanged reports whether a file still has the size, modification time
// and status change time it had when it was scanned (a rewrite that
// restores the mtime still moves the ctime).
func (f localFile) unchanged() bool {
	fi, err := os.Stat(f.abs)
	if err != nil {
		return false
	}
	now := newLocalFile(f.abs, f.rel, fi)
	return now.size == f.size && now.modTime.Equal(f.modTime) && now.ctime.Equal(f.ctime)
}

// buildManifest returns the manifest of files and other (dirs and links),
// its canonical form and its sha256.
func buildManifest(files []localFile, other []events.ManifestEntry) (events.Manifest, []byte, string, error) {
	m := events.Manifest{Version: events.ManifestVersion, Entries: make([]events.ManifestEntry, 0, len(files)+len(other))}
	for _, f := range files {
		m.Entries = append(m.Entries, events.ManifestEntry{Path: f.rel, Type: events.TypeFile, SHA256: f.sha256, Size: f.size, Mode: f.mode, Mtime: f.modTime.Unix()})
	}
	m.Entries = append(m.Entries, other...)
	if err := m.Validate(); err != nil {
		return m, nil, "", inputErr("%v", err)
	}
	raw, err := m.Canonical()
	if err != nil {
		return m, nil, "", err
	}
	sum := sha256.Sum256(raw)
	return m, raw, hex.EncodeToString(sum[:]), nil
}

// baseName is the last element of a local path, for a put into a directory.
func baseName(local string) string { return path.Base(filepath.ToSlash(filepath.Clean(local))) }
