package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
)

// entryPlan is what applying one journal entry changes in the live tree.
// All paths are relative to the mount; the staging tree has the same
// layout.
type entryPlan struct {
	deletes   []string    // stale files and trees, and whatever is in the way (removed by the agent, no symlink followed)
	copies    []string    // existing regular files to replace (rsync copy pass)
	links     []string    // files (and a sync's target directory) that do not exist yet (rsync link pass)
	stage     []stageItem // content to put into the staging tree before any pass
	unchanged int         // files already right
}

// stageItem is one file of the staging tree.
type stageItem struct {
	path string
	blob events.Blob
	from string // absolute path of a local file with the same content; "" = fetch from the origin
}

// bytesToStage and bytesToCopy size the disk-space check.
func (p *entryPlan) bytesToStage() (n int64) {
	for _, s := range p.stage {
		n += s.blob.Size
	}
	return n
}

// planPut plans putting one file.
func planPut(root int, mount string, e events.JournalEntry) (*entryPlan, error) {
	p := &entryPlan{}
	at, err := probePath(root, e.Path)
	if err != nil {
		return nil, retryable("look at %s: %v", e.Path, err)
	}
	abs := filepath.Join(mount, e.Path)
	item := stageItem{path: e.Path, blob: *e.Blob}
	switch {
	case at.blocker != "":
		// A symlink or file where a directory must be: replace it, never
		// follow it.
		p.deletes = append(p.deletes, at.blocker)
		p.links = append(p.links, e.Path)
	case !at.exists:
		p.links = append(p.links, e.Path)
	case at.isRegular():
		if liveSHA256(abs, &at.st, e.Blob.SHA256, e.Blob.Size) {
			if at.st.Mode&0o7777 == e.Blob.Mode {
				p.unchanged = 1
				return p, nil
			}
			item.from = abs // same content, new mode: copy locally
		}
		p.copies = append(p.copies, e.Path)
	default:
		p.deletes = append(p.deletes, e.Path) // a directory, symlink or device in the way
		p.links = append(p.links, e.Path)
	}
	p.stage = append(p.stage, item)
	return p, nil
}

// planDelete plans removing a file or tree. A path behind a symlink or
// file is not in the tree (the symlink is never followed): nothing to do.
func planDelete(root int, e events.JournalEntry) (*entryPlan, error) {
	at, err := probePath(root, e.Path)
	if err != nil {
		return nil, retryable("look at %s: %v", e.Path, err)
	}
	p := &entryPlan{}
	if at.exists {
		p.deletes = []string{e.Path}
	}
	return p, nil
}

// planSync plans making the tree at e.Path exactly the manifest: walk the
// live tree without following symlinks, keep files whose content and mode
// match (by their content record, else by hashing when the size matches),
// take content for new and changed files from any live file that has it
// (moves, renames) before fetching from the origin, and delete everything
// else.
func planSync(root int, mount string, e events.JournalEntry, m events.Manifest) (*entryPlan, error) {
	w := &syncWalk{
		mount: mount, plan: &entryPlan{},
		files: make(map[string]*events.ManifestEntry, len(m.Entries)),
		dirs:  map[string]bool{},
		have:  map[string]string{},
		done:  map[string]bool{},
	}
	if e.Path != events.RootPath {
		w.prefix = e.Path + "/"
	}
	for i := range m.Entries {
		me := &m.Entries[i]
		w.files[me.Path] = me
		for d := me.Path; ; {
			j := strings.LastIndexByte(d, '/')
			if j < 0 {
				break
			}
			d = d[:j]
			if w.dirs[d] {
				break
			}
			w.dirs[d] = true
		}
	}

	target := -1 // the target directory, opened, when it exists as one
	if e.Path == events.RootPath {
		fd, err := unix.Dup(root)
		if err != nil {
			return nil, retryable("dup: %v", err)
		}
		target = fd
	} else {
		at, err := probePath(root, e.Path)
		if err != nil {
			return nil, retryable("look at %s: %v", e.Path, err)
		}
		switch {
		case at.blocker != "":
			w.plan.deletes = append(w.plan.deletes, at.blocker)
		case at.isDir():
			fd, err := unix.Openat(root, e.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, retryable("open %s: %v", e.Path, err)
			}
			target = fd
		case at.exists:
			w.plan.deletes = append(w.plan.deletes, e.Path)
		}
		if target < 0 {
			w.plan.links = append(w.plan.links, e.Path) // the directory itself, even when the manifest is empty
		}
	}
	if target >= 0 {
		if err := w.walkTarget(target); err != nil {
			return nil, err
		}
	}

	// Whatever the walk did not find right is new.
	paths := make([]string, 0, len(m.Entries))
	for _, me := range m.Entries {
		if !w.done[me.Path] {
			paths = append(paths, me.Path)
		}
	}
	sort.Strings(paths)
	for _, rel := range paths {
		me := w.files[rel]
		w.plan.links = append(w.plan.links, w.prefix+rel)
		w.plan.stage = append(w.plan.stage, stageItem{path: w.prefix + rel, blob: blobOf(me)})
	}
	// Content found in the live tree is copied locally instead of fetched.
	for i := range w.plan.stage {
		s := &w.plan.stage[i]
		if s.from == "" {
			if src, ok := w.have[s.blob.SHA256]; ok {
				s.from = src
			}
		}
	}
	return w.plan, nil
}

func blobOf(me *events.ManifestEntry) events.Blob {
	return events.Blob{SHA256: me.SHA256, Size: me.Size, Mode: me.Mode}
}

type syncWalk struct {
	mount  string
	prefix string // the target directory + "/", "" for the root
	plan   *entryPlan
	files  map[string]*events.ManifestEntry // by path relative to the target
	dirs   map[string]bool                  // directories the manifest implies
	have   map[string]string                // sha256 → absolute path of a live file holding it (trusted record)
	done   map[string]bool                  // manifest paths already planned (unchanged or copy)
	sem    chan struct{}                    // bounds the directories walked in parallel
}

// walkResult is what the walk of one directory (and below) found.
type walkResult struct {
	deletes, copies []string
	stage           []stageItem
	unchanged       int
	have            map[string]string
	done            []string
}

func (r *walkResult) merge(c *walkResult) {
	r.deletes = append(r.deletes, c.deletes...)
	r.copies = append(r.copies, c.copies...)
	r.stage = append(r.stage, c.stage...)
	r.unchanged += c.unchanged
	r.done = append(r.done, c.done...)
	for k, v := range c.have {
		r.have[k] = v
	}
}

// walkTarget walks the target open at fd into the plan.
func (w *syncWalk) walkTarget(fd int) error {
	w.sem = make(chan struct{}, walkWorkers)
	res, err := w.walk(fd, "")
	if err != nil {
		return err
	}
	w.plan.deletes = append(w.plan.deletes, res.deletes...)
	w.plan.copies = append(w.plan.copies, res.copies...)
	w.plan.stage = append(w.plan.stage, res.stage...)
	w.plan.unchanged += res.unchanged
	for _, d := range res.done {
		w.done[d] = true
	}
	for k, v := range res.have {
		w.have[k] = v
	}
	return nil
}

// walkWorkers bounds the directories walked at once (lstat, getxattr and
// the occasional hash are cheap but many).
const walkWorkers = 4

// walk visits the directory open at fd (rel: relative to the target; ""
// is the target) and closes fd. Subdirectories are walked in parallel
// while a worker is free, inline otherwise.
func (w *syncWalk) walk(fd int, rel string) (*walkResult, error) {
	res := &walkResult{have: map[string]string{}}
	dir := os.NewFile(uintptr(fd), filepath.Join(w.mount, w.prefix+rel))
	defer dir.Close()
	ents, err := dir.ReadDir(-1)
	if err != nil {
		return nil, retryable("read directory %s: %v", dir.Name(), err)
	}
	var (
		wg       sync.WaitGroup
		children = make([]*walkResult, len(ents))
		errs     = make([]error, len(ents))
	)
	for i, de := range ents {
		name := de.Name()
		r := name
		if rel != "" {
			r = rel + "/" + name
		}
		live := w.prefix + r // relative to the mount
		abs := filepath.Join(w.mount, live)
		atRoot := w.prefix == "" && rel == ""
		switch {
		case atRoot && name == stateDirName:
			continue
		case atRoot && name == lostFound && de.IsDir() && !w.dirs[lostFound]:
			continue // mkfs's, kept like rsync users keep it
		case name == rsyncTmpName:
			// rsync's holding directory left by an interrupted apply:
			// never content (events.ValidatePath refuses it), remove it.
			if err := removeAt(fd, name); err != nil {
				return nil, retryable("remove leftover %s: %v", abs, err)
			}
			continue
		}
		switch typ := de.Type(); {
		case typ.IsRegular():
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return nil, retryable("lstat %s: %v", abs, err)
			}
			c, trusted := readContent(abs, &st)
			if trusted {
				res.have[c.SHA256] = abs
			}
			me, wanted := w.files[r]
			if !wanted {
				res.deletes = append(res.deletes, live)
				continue
			}
			res.done = append(res.done, r)
			same := trusted && c.SHA256 == me.SHA256 && st.Size == me.Size
			if !trusted {
				same = liveSHA256(abs, &st, me.SHA256, me.Size)
			}
			if same {
				res.have[me.SHA256] = abs
				if st.Mode&0o7777 == me.Mode {
					res.unchanged++
					continue
				}
			}
			res.copies = append(res.copies, live)
			res.stage = append(res.stage, stageItem{path: live, blob: blobOf(me)})
		case typ.IsDir():
			if !w.dirs[r] {
				res.deletes = append(res.deletes, live)
				continue
			}
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return nil, retryable("open %s: %v", abs, err)
			}
			select {
			case w.sem <- struct{}{}:
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-w.sem }()
					children[i], errs[i] = w.walk(sub, r)
				}()
			default:
				children[i], errs[i] = w.walk(sub, r)
			}
		default:
			// Symlinks, devices, fifos, sockets: never content.
			res.deletes = append(res.deletes, live)
		}
	}
	wg.Wait()
	for i, c := range children {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if c != nil {
			res.merge(c)
		}
	}
	return res, nil
}

// describe summarises a plan for the log.
func (p *entryPlan) describe() string {
	return fmt.Sprintf("%d to fetch or copy (%s), %d new, %d changed, %d deleted, %d unchanged",
		len(p.stage), fmtBytes(p.bytesToStage()), len(p.links), len(p.copies), len(p.deletes), p.unchanged)
}
