package agent

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// scriptedJournal writes a journal that exercises every op and the type
// changes between them (file ↔ directory), syncs of the root and of
// subtrees, duplicate and moved content, mode-only changes.
func scriptedJournal(w *world) {
	w.put("a/x.txt", gen("x1", 300), 0o644)
	w.put("a/b/y.bin", gen("y1", 5000), 0o600)
	w.put("top.txt", gen("top", 10), 0o755)
	w.sync("site", map[string]file{
		"index.html":   {gen("index1", 512), 0o644},
		"css/site.css": {gen("css", 2048), 0o644},
		"img/logo.png": {gen("logo", 70000), 0o644},
		"img/copy.png": {gen("logo", 70000), 0o600}, // same blob twice
	})
	w.put("site/extra.txt", gen("extra", 33), 0o644)
	w.sync("site", map[string]file{
		"index.html":    {gen("index2", 600), 0o644}, // changed
		"css/site.css":  {gen("css", 2048), 0o644},   // unchanged
		"js/app.js":     {gen("app", 4000), 0o644},   // new
		"moved/img.png": {gen("logo", 70000), 0o644}, // moved content, fetched locally
		"img/copy.png":  {gen("logo", 70000), 0o644}, // mode change only
		"empty":         {nil, 0o644},                // empty file
		"deep/a/b/c/d":  {gen("deep", 100), 0o400},   // read-only, deep
	})
	w.del("a/b")
	w.put("a", gen("a-file", 77), 0o644)                // a directory becomes a file
	w.put("a/c", gen("a-dir", 88), 0o644)               // and a directory again
	w.del("nothing/here")                               // absent: nothing to do
	w.del("top.txt/below")                              // below a file: nothing to do
	w.sync("deep/t", map[string]file{})                 // an empty target directory appears
	w.put("site/index.html", gen("index2", 600), 0o600) // same content, new mode
	w.put("top.txt", gen("top2", 11), 0o644)
	w.sync("site/css", map[string]file{"site.css": {gen("css2", 100), 0o644}})
	w.sync("top.txt", map[string]file{"in.txt": {gen("in", 9), 0o644}}) // a file becomes a synced directory
	w.sync(events.RootPath, map[string]file{
		"index.html": {gen("root-index", 1234), 0o644},
		"js/app.js":  {gen("app", 4000), 0o644}, // moved from site/js
		"a/x.txt":    {gen("x1", 300), 0o644},
	})
	w.put("late/file", gen("late", 1), 0o644)
}

func TestApplyFollowsTheJournalStepByStep(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	a := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, a, 64)
	scriptedJournal(w)
	ctx := context.Background()
	for k := int64(1); k < int64(len(w.models)); k++ {
		var r Report
		if err := a.Apply(ctx, k, false, &r); err != nil {
			t.Fatalf("apply --upto %d: %v", k, err)
		}
		if r.Seq != k || r.Applied != 1 || r.Head != int64(len(w.models)-1) {
			t.Fatalf("apply --upto %d: report %+v", k, r)
		}
		if got := watermark(t, a.cfg.MountPath); got != k {
			t.Fatalf("watermark after apply --upto %d is %d", k, got)
		}
		assertTree(t, a.cfg.MountPath, w.models[k])
	}
	// Nothing of the agent's work is left behind.
	for _, p := range []string{stagingDir, rsyncTmpDir} {
		if _, err := os.Lstat(filepath.Join(a.stateDir(), p)); err == nil {
			t.Errorf("%s left in .volsd", p)
		}
	}
}

func TestApplyIsIdempotent(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	a := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, a, 64)
	scriptedJournal(w)
	ctx := context.Background()
	var r Report
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	want := w.models[len(w.models)-1]
	assertTree(t, a.cfg.MountPath, want)
	inodes := inodesOf(t, a.cfg.MountPath)

	// Applying at the head changes nothing.
	r = Report{}
	if err := a.Apply(ctx, 0, false, &r); err != nil || r.Applied != 0 || r.Bytes != 0 {
		t.Fatalf("second apply: %+v %v", r, err)
	}
	// Re-applying the last entries (the watermark set back, as after a
	// crash before the checkpoint) rewrites no file: content is recognised.
	// (Except late/file: the re-applied sync of the root deletes it and the
	// put after it makes it anew; whether the new file gets the old inode
	// number is up to the filesystem's allocator.)
	if err := a.writeState(int64(len(w.models) - 3)); err != nil {
		t.Fatal(err)
	}
	r = Report{}
	if err := a.Apply(ctx, 0, false, &r); err != nil || r.Applied != 2 {
		t.Fatalf("re-apply: %+v %v", r, err)
	}
	assertTree(t, a.cfg.MountPath, want)
	delete(inodes, "late/file")
	got := inodesOf(t, a.cfg.MountPath)
	delete(got, "late/file")
	if fmt.Sprint(got) != fmt.Sprint(inodes) {
		t.Errorf("re-applying rewrote files:\nbefore %v\nafter  %v", inodes, got)
	}
}

// inodesOf maps each content file to its inode.
func inodesOf(t testing.TB, mount string) map[string]uint64 {
	out := map[string]uint64{}
	for p := range readTree(t, mount).files {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mount, p), &st); err != nil {
			t.Fatal(err)
		}
		out[p] = st.Ino
	}
	return out
}

// TestSyncFetchesOnlyWhatChanged: a 1% change of a tree downloads the
// changed files only; moved files and unchanged files come from the volume.
// syncedTree returns an agent on a mounted volume that applied a sync of
// n generated files in dirs directories, the tree, and the first report.
func syncedTree(t *testing.T, n, dirs int) (*world, *Agent, map[string]file, Report) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	a := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, a, 64)
	tree := map[string]file{}
	for i := 0; i < n; i++ {
		tree[fmt.Sprintf("d%d/f%03d", i%dirs, i)] = file{gen(fmt.Sprint("v1-", i), 1000+i), 0o644}
	}
	w.sync(events.RootPath, tree)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	return w, a, tree, r
}

func TestSyncFetchesOnlyWhatChanged(t *testing.T) {
	w, a, tree, r := syncedTree(t, 200, 7)
	ctx := context.Background()
	var total int64
	for _, f := range tree {
		total += int64(len(f.data))
	}
	if r.Bytes < total {
		t.Fatalf("first sync fetched %d bytes, tree has %d", r.Bytes, total)
	}

	next := maps.Clone(tree)
	changed := gen("changed", 4321)
	next["d0/f000"] = file{changed, 0o644}              // changed
	next["moved/f001"] = next["d1/f001"]                // moved: local copy
	delete(next, "d1/f001")                             //
	next["d2/f002"] = file{next["d2/f002"].data, 0o600} // mode only
	delete(next, "d3/f003")                             // deleted
	w.sync(events.RootPath, next)
	r = Report{}
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	manifestBytes := r.Bytes - int64(len(changed))
	if manifestBytes < 0 || manifestBytes > 40000 {
		t.Fatalf("delta sync fetched %d bytes; want the changed file (%d) plus the manifest", r.Bytes, len(changed))
	}
}

func TestConcurrentAppliesSerialize(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 64)
	for i := 0; i < 30; i++ {
		w.put(fmt.Sprintf("f%d", i%5), gen(fmt.Sprint("c", i), 2000+i), 0o644)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for g := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := w.agent(t, cfg, Deps{})
			var r Report
			errs[g] = b.Apply(context.Background(), int64(10*(g%3+1)), false, &r)
		}()
	}
	wg.Wait()
	for g, err := range errs {
		if err != nil {
			t.Errorf("apply %d: %v", g, err)
		}
	}
	if got := watermark(t, cfg.MountPath); got != 30 {
		t.Fatalf("watermark %d, want 30", got)
	}
	assertTree(t, cfg.MountPath, w.models[30])
}

// TestSymlinksInTheTreeAreNeverFollowed: symlinks that someone planted in
// the live tree, pointing out of the mount, are replaced or removed, and
// what they point at is untouched.
func TestSymlinksInTheTreeAreNeverFollowed(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	a := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, a, 64)
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := a.cfg.MountPath
	for _, l := range []string{"del", "put", "sync", "file"} {
		if err := os.Symlink(outside, filepath.Join(m, l)); err != nil {
			t.Fatal(err)
		}
	}
	w.del("del/victim")                        // behind a symlink: not in the tree
	w.del("file")                              // the symlink itself goes
	w.put("put/victim", gen("evil", 5), 0o644) // the symlink is replaced by a directory
	w.sync("sync", map[string]file{"victim": {gen("evil2", 6), 0o644}})
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "precious" {
		t.Fatalf("the file outside the mount changed: %q %v", data, err)
	}
	// The model does not know the symlink "del": it is still there.
	if fi, err := os.Lstat(filepath.Join(m, "del")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("del: %v %v", fi, err)
	}
	os.Remove(filepath.Join(m, "del"))
	assertTree(t, m, w.model)
}

// A small delta that changes and adds files, and deletes nothing, placed
// by rsync (more paths than NativePlaceMax) is one rsync run (the new
// files folded into the copy pass), and ends exactly right.
func TestSmallDeltaRunsRsyncOnce(t *testing.T) {
	w, a, tree, r := syncedTree(t, 50, 5)
	ctx := context.Background()

	runs := recordRsyncRuns(t, a)
	a.placeNativeMax = 0 // the rsync passes

	next := maps.Clone(tree)
	next["d0/f000"] = file{gen("changed", 4321), 0o644}      // changed
	next["d1/f999"] = file{gen("new in d1", 777), 0o640}     // new beside others
	next["new/dir/x.html"] = file{gen("new dir", 99), 0o644} // new in new directories
	w.sync(events.RootPath, next)
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	if n := len(runs()); n != 1 {
		t.Errorf("rsync ran %d times for a small change-and-add delta, want 1", n)
	}
}

// TestSmallDeltaRunsNoRsync: a delta of a few paths — changed files, new
// files beside others and in new directories, a file replaced by a
// directory, a symlink, deletions, a mode change — is placed by the agent
// itself (NativePlaceMax): no rsync run and no jail, the tree exactly the
// journal's, each placed file the staged inode (renamed, not copied: its
// content record is there) and the index vouching for it afterwards.
func TestSmallDeltaRunsNoRsync(t *testing.T) {
	w, a, tree, r := syncedTree(t, 50, 5)
	ctx := context.Background()
	runs := recordRsyncRuns(t, a)

	next := maps.Clone(tree)
	next["d0/f000"] = file{gen("changed", 4321), 0o644}      // changed
	next["d1/f999"] = file{gen("new in d1", 777), 0o640}     // new beside others
	next["new/dir/x.html"] = file{gen("new dir", 99), 0o644} // new in new directories
	next["d2/f002"] = file{tree["d2/f002"].data, 0o600}      // mode only
	delete(next, "d3/f003")                                  // deleted
	delete(next, "d4/f004")                                  // replaced by a directory
	next["d4/f004/inner"] = file{gen("inner", 12), 0o644}    //
	w.sync(events.RootPath, next)
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	if got := runs(); len(got) != 0 {
		t.Errorf("rsync ran %d times for a delta of a few paths, want 0: %v", len(got), got)
	}
	for _, p := range []string{"d0/f000", "d1/f999", "new/dir/x.html", "d4/f004/inner"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(a.cfg.MountPath, p), &st); err != nil {
			t.Fatal(err)
		}
		if c, ok := readContent(filepath.Join(a.cfg.MountPath, p), &st); !ok || c.SHA256 != sum(next[p].data) {
			t.Errorf("%s: content record %+v (%v), want the staged file's", p, c, ok)
		}
	}
	if _, err := os.Lstat(a.jailPath()); !os.IsNotExist(err) {
		t.Errorf("jail %s left or made: %v", a.jailPath(), err)
	}
	// Applied again: nothing to place, and the index knows every file.
	w.sync(events.RootPath, next)
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
}

func TestSplitByDir(t *testing.T) {
	paths := []string{"a/1", "a/2", "a/3", "b/1", "b/2", "c/1", "top", "a/x/1"}
	groups := splitByDir(paths, 2)
	if len(groups) != 2 {
		t.Fatalf("%d groups, want 2: %v", len(groups), groups)
	}
	n := disjointDirs(t, groups)
	if n != len(paths) || len(groups[0])+len(groups[1]) != len(paths) || abs(len(groups[0])-len(groups[1])) > 2 {
		t.Fatalf("groups %v: want all %d paths, balanced", groups, len(paths))
	}
	if g := splitByDir([]string{"a/1", "a/2"}, 2); len(g) != 1 {
		t.Fatalf("one directory: %d groups, want 1", len(g))
	}
}

func abs(n int) int { return max(n, -n) }

// TestLargeCopyPassRunsSplitByDirectory: a delta that changes many files
// runs two rsync copy passes at once over disjoint directories, and ends
// exactly right.
func TestLargeCopyPassRunsSplitByDirectory(t *testing.T) {
	w, a, tree, r := syncedTree(t, 80, 6)
	ctx := context.Background()
	runs := recordRsyncRuns(t, a)
	a.placeNativeMax = 0 // the rsync passes
	next := maps.Clone(tree)
	for i := 0; i < 40; i++ {
		p := fmt.Sprintf("d%d/f%03d", i%6, i)
		next[p] = file{gen("changed "+p, 900+i), 0o644}
	}
	w.sync(events.RootPath, next)
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	got := runs()
	if len(got) != 2 {
		t.Fatalf("%d rsync runs, want 2 copy passes: %v", len(got), got)
	}
	total := disjointDirs(t, got)
	if total != 40 {
		t.Fatalf("the runs copied %d files, want 40", total)
	}
}

// recordRsyncRuns puts a wrapper in front of a's rsync that logs each
// run's file list; runs returns them, one slice of paths per run.
func recordRsyncRuns(t *testing.T, a *Agent) (runs func() [][]string) {
	t.Helper()
	lists := filepath.Join(t.TempDir(), "lists")
	wrapper := filepath.Join(t.TempDir(), "rsync")
	script := `#!/bin/sh
tmp=$(mktemp)
cat > "$tmp"
{ tr '\0' '\n' < "$tmp"; echo --; } >> ` + lists + `
exec 0<"$tmp"
rm -f "$tmp"
exec ` + a.rsyncBin + ` "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	a.rsyncBin = wrapper
	a.unconfined = true // the wrapper and its log live outside the jail
	return func() [][]string {
		data, _ := os.ReadFile(lists)
		var out [][]string
		for _, run := range strings.SplitAfter(string(data), "--\n") {
			if run != "" {
				out = append(out, strings.Fields(strings.TrimSuffix(run, "--\n")))
			}
		}
		return out
	}
}

// disjointDirs fails unless no directory has paths in two groups, and
// returns the number of paths.
func disjointDirs(t *testing.T, groups [][]string) int {
	t.Helper()
	seen := map[string]int{}
	n := 0
	for gi, g := range groups {
		for _, p := range g {
			n++
			if other, ok := seen[filepath.Dir(p)]; ok && other != gi {
				t.Fatalf("directory %s is in groups %d and %d: %v", filepath.Dir(p), other, gi, groups)
			}
			seen[filepath.Dir(p)] = gi
		}
	}
	return n
}

// TestCatchUpPlacesConsecutivePutsTogether: a catch-up of many one-file
// puts (new files, changed files, a file where a directory was, the same
// content twice, a mode change) places each run of puts of unrelated
// paths with one copy pass and one link pass instead of rsync runs per
// entry; a put of a path already in the run (or inside one) starts a new
// run, so the later content wins; each file keeps its own entry's mtime;
// the tree ends exactly as the journal says, and the watermark at the
// head.
func TestCatchUpPlacesConsecutivePutsTogether(t *testing.T) {
	w, a, _, _ := syncedTree(t, 30, 3)
	ctx := context.Background()
	runs := recordRsyncRuns(t, a)
	a.placeNativeMax = 0 // count the rsync passes
	var r Report
	first := w.put("news/a.html", gen("a", 100), 0o644) // new, new directory
	w.put("d0/f000", gen("changed", 2000), 0o644)       // changed
	w.put("d1/f001", gen("same", 50), 0o600)            // changed
	w.put("news/b.html", gen("same", 50), 0o644)        // new, same content as above
	time.Sleep(1100 * time.Millisecond)                 // a later second: its own mtime
	w.put("d2", gen("was a directory", 10), 0o644)      // d2 is a directory in the tree
	w.put("news/c.html", gen("c", 70000), 0o640)
	last := w.put("news/a.html", gen("a2", 101), 0o644) // again: a new run, the later content wins
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	if got := watermark(t, a.cfg.MountPath); got != last || r.Seq != last || r.Applied != int(last-first+1) {
		t.Fatalf("watermark %d, report %+v; want seq %d, %d applied", got, r, last, last-first+1)
	}
	got := runs()
	if len(got) > 3 { // two runs: one copy pass and one link pass, then one more for the repeated path
		t.Errorf("%d rsync runs for %d puts in two runs of unrelated paths, want at most 3: %v", len(got), last-first+1, got)
	}
	entries, err := w.store.Entries(ctx, w.pool, first-1, last)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Path == "news/a.html" && e.Seq != last {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(a.cfg.MountPath, e.Path), &st); err != nil {
			t.Fatal(err)
		}
		if want := e.CreatedAt.Truncate(time.Second).Unix(); st.Mtim.Sec != want {
			t.Errorf("%s (entry %d): mtime %d, want its entry's %d", e.Path, e.Seq, st.Mtim.Sec, want)
		}
	}
}

func TestFoldablePuts(t *testing.T) {
	put := func(p string) events.JournalEntry {
		return events.JournalEntry{Op: events.OpPut, Path: p, Blob: &events.Blob{SHA256: strings.Repeat("a", 64)}}
	}
	del := events.JournalEntry{Op: events.OpDelete, Path: "x"}
	for _, tc := range []struct {
		entries []events.JournalEntry
		want    int
	}{
		{[]events.JournalEntry{put("a"), put("b"), put("c/d")}, 3},
		{[]events.JournalEntry{put("a"), put("b"), put("a")}, 2},
		{[]events.JournalEntry{put("a"), put("a/b")}, 1},
		{[]events.JournalEntry{put("a/b"), put("a")}, 1},
		{[]events.JournalEntry{put("ab"), put("a")}, 2},
		{[]events.JournalEntry{put("a"), del, put("b")}, 1},
		{[]events.JournalEntry{del, put("b")}, 0},
	} {
		if got := foldablePuts(tc.entries); got != tc.want {
			var paths []string
			for _, e := range tc.entries {
				paths = append(paths, string(e.Op)+" "+e.Path)
			}
			t.Errorf("foldablePuts(%v) = %d, want %d", paths, got, tc.want)
		}
	}
}
