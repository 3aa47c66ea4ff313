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
	deletes   []string          // stale files and trees, and whatever is in the way (removed by the agent, no symlink followed)
	copies    []string          // existing regular files to replace (rsync copy pass)
	links     []string          // files, dirs and symlinks (and a sync's target directory) that do not exist yet (rsync link pass)
	chmods    []string          // existing directories whose mode is not the manifest's (chmod by the agent, no symlink followed)
	dirModes  map[string]uint32 // a sync's directories with a mode (manifest v2): staged and checked with it
	symlinks  map[string]string // the links' symlinks, path → target: staged as symlinks, checked by readlink
	stage     []stageItem       // content to put into the staging tree before any pass
	unchanged int               // files already right
	records   []indexRecord     // a sync's unchanged files, known without hashing: for the tree index
	indexed   int               // live files the tree index vouched for
}

// stageItem is one file of the staging tree.
type stageItem struct {
	path string
	blob events.Blob
	from string // absolute path of a local file with the same content; "" = fetch from the origin
	// mtime is the staged file's mtime (ns) when it is not its entry's:
	// puts placed together each keep their own (0: the entry's).
	mtime int64
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
		return nil, retryable("look at %s: %w", e.Path, err)
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
			if metaMatches(&at.st, *e.Blob) {
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
		return nil, retryable("look at %s: %w", e.Path, err)
	}
	p := &entryPlan{}
	if at.exists {
		p.deletes = []string{e.Path}
	}
	return p, nil
}

// planSync plans making the tree at e.Path exactly the manifest: walk the
// live tree without following symlinks, keep files whose content and mode
// match (by the tree index, else their content record, else by hashing
// when the size matches), take content for new and changed files from any
// live file that has it (moves, renames) before fetching from the origin,
// and delete everything else. idx (may be nil) is the tree index; fine
// says the filesystem keeps nanosecond timestamps (see indexFile). The
// plan's records are the unchanged files, for the next index.
func planSync(root int, mount string, e events.JournalEntry, m events.Manifest, idx *treeIndex, fine bool) (*entryPlan, error) {
	w := &syncWalk{
		mount: mount, plan: &entryPlan{},
		entries: m.Entries,
		files:   make(map[string]int, len(m.Entries)),
		dirs:    map[string]bool{},
		found:   make([]bool, len(m.Entries)),
		idx:     idx,
		rootDir: -1,
	}
	w.prefix = targetPrefix(e.Path)
	for i := range m.Entries {
		me := &m.Entries[i]
		switch me.Kind() {
		case events.TypeDir:
			if w.plan.dirModes == nil {
				w.plan.dirModes = map[string]uint32{}
			}
			if me.Path == events.RootPath {
				w.rootDir = i
				w.plan.dirModes[e.Path] = me.Mode
				continue
			}
			w.dirs[me.Path] = true
			w.plan.dirModes[w.prefix+me.Path] = me.Mode
		case events.TypeLink:
			if w.plan.symlinks == nil {
				w.plan.symlinks = map[string]string{}
			}
		}
		w.files[me.Path] = i
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

	dev, err := devOf(root)
	if err != nil {
		return nil, retryable("fstat %s: %v", mount, err)
	}
	w.dev = dev
	target := -1 // the target directory, opened, when it exists as one
	if e.Path == events.RootPath {
		fd, err := reopenDir(root)
		if err != nil {
			return nil, retryable("dup: %v", err)
		}
		target = fd
	} else {
		at, err := probePath(root, e.Path)
		if err != nil {
			return nil, retryable("look at %s: %w", e.Path, err)
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
		if w.rootDir >= 0 {
			w.found[w.rootDir] = true
			var st unix.Stat_t
			if err := unix.Fstat(target, &st); err != nil {
				unix.Close(target)
				return nil, retryable("stat %s: %v", e.Path, err)
			}
			if st.Mode&0o7777 != m.Entries[w.rootDir].Mode {
				w.plan.chmods = append(w.plan.chmods, e.Path)
			}
		}
		idx.ready()
		w.racyBefore = racyBefore(fine)
		w.sem = make(chan struct{}, walkWorkers)
		if err := w.walk(target, ""); err != nil {
			return nil, err
		}
		sort.Strings(w.res.deletes)
		sort.Strings(w.res.copies)
		sort.Slice(w.res.stage, func(i, j int) bool { return w.res.stage[i].path < w.res.stage[j].path })
		sort.Strings(w.res.chmods)
		w.plan.deletes = append(w.plan.deletes, w.res.deletes...)
		w.plan.copies = append(w.plan.copies, w.res.copies...)
		w.plan.chmods = append(w.plan.chmods, w.res.chmods...)
		w.plan.stage = append(w.plan.stage, w.res.stage...)
		w.plan.unchanged += w.res.unchanged
		w.plan.indexed = w.res.indexed
	}

	// Whatever the walk did not find is new (the manifest is sorted).
	for i := range m.Entries {
		if w.found[i] || i == w.rootDir {
			continue // the target itself, when new, is in links already
		}
		me := &m.Entries[i]
		w.plan.links = append(w.plan.links, w.prefix+me.Path)
		switch me.Kind() {
		case events.TypeFile:
			w.plan.stage = append(w.plan.stage, stageItem{path: w.prefix + me.Path, blob: blobOf(me)})
		case events.TypeLink:
			w.plan.symlinks[w.prefix+me.Path] = me.Target
		}
	}
	// Content found in the live tree is copied locally instead of fetched.
	var need map[string]bool
	for _, s := range w.plan.stage {
		if s.from == "" {
			if need == nil {
				need = map[string]bool{}
			}
			need[s.blob.SHA256] = true
		}
	}
	have := map[string]string{}
	n := 0
	for _, dir := range w.known {
		n += len(dir)
	}
	w.plan.records = make([]indexRecord, 0, n)
	for _, dir := range w.known {
		for i := range dir {
			k := &dir[i]
			if need[k.rec.sha] {
				have[k.rec.sha] = filepath.Join(mount, k.rec.path)
			}
			if k.keep {
				w.plan.records = append(w.plan.records, k.rec)
			}
		}
	}
	for i := range w.plan.stage {
		s := &w.plan.stage[i]
		if s.from == "" {
			if src, ok := have[s.blob.SHA256]; ok {
				s.from = src
			}
		}
	}
	return w.plan, nil
}

func blobOf(me *events.ManifestEntry) events.Blob { return me.Blob() }

// metaMatches says whether the live file whose lstat is st has the mode
// and, when b names one, the mtime (whole seconds) of b.
func metaMatches(st *unix.Stat_t, b events.Blob) bool {
	return st.Mode&0o7777 == b.Mode && (b.Mtime == 0 || st.Mtim.Sec == b.Mtime && st.Mtim.Nsec == 0)
}

type syncWalk struct {
	mount      string
	prefix     string // the target directory + "/", "" for the root
	plan       *entryPlan
	entries    []events.ManifestEntry
	files      map[string]int  // manifest entry by path relative to the target
	dirs       map[string]bool // directories the manifest implies
	found      []bool          // by manifest entry: met in the live tree (each written by one walker)
	idx        *treeIndex
	dev        uint64        // the mount's filesystem: the walk never leaves it
	rootDir    int           // the manifest's entry of the target itself ("."), -1 if none
	racyBefore int64         // ns: a file changed since cannot go into the index (see indexFile)
	sem        chan struct{} // bounds the directories walked in parallel

	mu    sync.Mutex
	res   walkResult    // what the directories walked so far found
	known [][]knownFile // by directory: live regular files whose content is known
}

// walkResult is what the walk found.
type walkResult struct {
	deletes, copies []string
	chmods          []string
	stage           []stageItem
	unchanged       int
	indexed         int
	known           []knownFile // this directory's only
}

// knownFile is a live regular file whose content the walk knows.
type knownFile struct {
	rec  indexRecord
	keep bool // unchanged: for the next index (vouching when known without hashing and not racy)
}

func (r *walkResult) merge(c *walkResult) {
	r.deletes = append(r.deletes, c.deletes...)
	r.copies = append(r.copies, c.copies...)
	r.chmods = append(r.chmods, c.chmods...)
	r.stage = append(r.stage, c.stage...)
	r.unchanged += c.unchanged
	r.indexed += c.indexed
}

// walkWorkers bounds the directories walked at once (lstat and the
// occasional content record or hash are cheap but many).
const walkWorkers = 4

// walk visits the directory open at fd (rel: relative to the target; ""
// is the target) and closes fd. Subdirectories are walked in parallel
// while a worker is free, inline otherwise. Each directory's findings are
// added to w.res once.
func (w *syncWalk) walk(fd int, rel string) error {
	var res walkResult
	dir := os.NewFile(uintptr(fd), filepath.Join(w.mount, w.prefix+rel))
	defer dir.Close()
	ents, err := dir.ReadDir(-1)
	if err != nil {
		return retryable("read directory %s: %v", dir.Name(), err)
	}
	// path holds the path of each entry relative to the mount: the index
	// and the manifest are looked up without building a string per file.
	path := make([]byte, 0, 256)
	path = append(path, w.prefix...)
	if rel != "" {
		path = append(path, rel...)
		path = append(path, '/')
	}
	base, atRoot := len(path), w.prefix == "" && rel == ""
	res.known = make([]knownFile, 0, len(ents))
	var (
		wg   sync.WaitGroup
		errs = make([]error, len(ents))
	)
	for i, de := range ents {
		name := de.Name()
		path = append(path[:base], name...)
		switch {
		case atRoot && name == stateDirName:
			continue
		case atRoot && name == lostFound && de.IsDir() && !w.dirs[lostFound]:
			continue // mkfs's, kept like rsync users keep it
		case name == rsyncTmpName:
			// rsync's holding directory left by an interrupted apply:
			// never content (events.ValidatePath refuses it), remove it.
			if err := removeAt(fd, name, w.dev); err != nil {
				return retryable("remove leftover %s: %w", filepath.Join(w.mount, string(path)), err)
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
				return retryable("lstat %s: %v", filepath.Join(w.mount, string(path)), err)
			}
			if err := w.file(&res, path, &st); err != nil {
				return err
			}
		case typ.IsDir():
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Dev != w.dev {
				return &mountPointError{rel: string(path)} // to keep or to delete: either crosses it
			}
			r := string(path[len(w.prefix):])
			if !w.dirs[r] {
				res.deletes = append(res.deletes, string(path))
				continue
			}
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return retryable("open %s: %v", filepath.Join(w.mount, string(path)), err)
			}
			if mi, ok := w.files[r]; ok { // a dir entry (manifest v2): its mode
				w.found[mi] = true
				var st unix.Stat_t
				if err := unix.Fstat(sub, &st); err != nil {
					unix.Close(sub)
					return retryable("stat %s: %v", filepath.Join(w.mount, string(path)), err)
				}
				if st.Mode&0o7777 != w.entries[mi].Mode {
					res.chmods = append(res.chmods, string(path))
				}
			}
			select {
			case w.sem <- struct{}{}:
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-w.sem }()
					errs[i] = w.walk(sub, r)
				}()
			default:
				errs[i] = w.walk(sub, r)
			}
		case typ&os.ModeSymlink != 0:
			// A link of the manifest is kept when its target is the
			// manifest's; any other symlink goes, never followed.
			if mi, ok := w.files[string(path[len(w.prefix):])]; ok && w.entries[mi].Kind() == events.TypeLink {
				if t, err := readlinkAt(fd, name); err == nil && t == w.entries[mi].Target {
					w.found[mi] = true
					res.unchanged++
					continue
				}
			}
			res.deletes = append(res.deletes, string(path))
		default:
			// Devices, fifos, sockets: never content.
			res.deletes = append(res.deletes, string(path))
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	w.mu.Lock()
	w.res.merge(&res)
	if len(res.known) > 0 {
		w.known = append(w.known, res.known)
	}
	w.mu.Unlock()
	return nil
}

// file plans the regular file whose lstat is st and whose path relative
// to the mount is live (a reused buffer: the index and manifest are looked
// up without a string per file; an index record brings its own path).
func (w *syncWalk) file(res *walkResult, live []byte, st *unix.Stat_t) error {
	var rec indexRecord
	trusted := false
	if w.idx != nil {
		if i, ok := w.idx.byPath[string(live)]; ok && w.idx.recs[i].vouch && w.idx.recs[i].matches(st) {
			rec, trusted = w.idx.recs[i], true
			res.indexed++
		}
	}
	if !trusted {
		p := string(live)
		if c, ok := readContent(filepath.Join(w.mount, p), st); ok {
			rec, trusted = recordOf(p, st, c.SHA256, false), true
		}
	}
	mi, wanted := w.files[string(live[len(w.prefix):])]
	if wanted && w.entries[mi].Kind() != events.TypeFile {
		wanted = false // a file where the manifest has a dir or link: replaced
	}
	if !wanted {
		res.deletes = append(res.deletes, string(live))
		if trusted {
			res.known = append(res.known, knownFile{rec: rec}) // content to move
		}
		return nil
	}
	w.found[mi] = true
	me := &w.entries[mi]
	same := trusted && rec.sha == me.SHA256 && st.Size == me.Size
	if !trusted && liveSHA256(filepath.Join(w.mount, string(live)), st, me.SHA256, me.Size) {
		// Hashed (and given a content record, which changed its ctime).
		same, rec = true, recordOf(string(live), st, me.SHA256, false)
	}
	modeOK := metaMatches(st, blobOf(me)) // mode, and mtime when the manifest has one
	if same {
		rec.vouch = trusted && st.Ctim.Nano() < w.racyBefore
		res.known = append(res.known, knownFile{rec: rec, keep: modeOK})
		if modeOK {
			res.unchanged++
			return nil
		}
	}
	res.copies = append(res.copies, string(live))
	res.stage = append(res.stage, stageItem{path: string(live), blob: blobOf(me)})
	return nil
}

// describe summarises a plan for the log.
func (p *entryPlan) describe() string {
	return fmt.Sprintf("%d to fetch or copy (%s), %d new, %d changed, %d deleted, %d chmod, %d unchanged (%d files known by the tree index)",
		len(p.stage), fmtBytes(p.bytesToStage()), len(p.links), len(p.copies), len(p.deletes), len(p.chmods), p.unchanged, p.indexed)
}

// readlinkAt reads the target of the symlink name in the directory dirfd.
func readlinkAt(dirfd int, name string) (string, error) {
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		k, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if k < n {
			return string(buf[:k]), nil
		}
	}
}
