package agent

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
)

func TestPredictFetch(t *testing.T) {
	sha := func(c string) string { return strings.Repeat(c, 64) }
	rec := func(path, c string, vouch bool) indexRecord {
		return indexRecord{path: path, sha: sha(c), size: 10, vouch: vouch}
	}
	idx := &treeIndex{}
	idx.add([]indexRecord{rec("site/a", "a", true), rec("site/b", "b", true), rec("site/c", "c", false), rec("other/x", "d", true)})
	idx.ready()
	entry := func(p, c string) events.ManifestEntry {
		return events.ManifestEntry{Path: p, Type: events.TypeFile, SHA256: sha(c), Size: 10, Mode: 0o644}
	}
	m := events.Manifest{Version: events.ManifestVersion, Entries: []events.ManifestEntry{
		entry("a", "a"), // in place
		entry("b", "1"), // changed: fetch
		entry("c", "c"), // in place by a record that does not vouch: the walk checks it
		entry("d", "d"), // new, content elsewhere on the volume: copied
		entry("e", "2"), // new: fetch
		entry("f", "2"), // same content as e: staged once
		entry("g", "b"), // new, content of site/b: copied
	}}
	var got []string
	for _, s := range predictFetch(idx, "site", m) {
		got = append(got, s.path+" "+s.blob.SHA256[:1])
	}
	if want := []string{"site/b 1", "site/e 2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("predicted %v, want %v", got, want)
	}
	if got := predictFetch(idx, "blog", m); got != nil {
		t.Fatalf("a target the index knows nothing of: predicted %d files, want none", len(got))
	}
	if got := predictFetch(nil, "site", m); got != nil {
		t.Fatalf("no index: predicted %d files", len(got))
	}
	big := events.Manifest{Version: events.ManifestVersion}
	for i := range PrefetchMax + 1 {
		big.Entries = append(big.Entries, entry(fmt.Sprintf("n%03d", i), fmt.Sprintf("%x", i%16)))
		big.Entries[i].SHA256 = fmt.Sprintf("%064x", i+1000)
	}
	if got := predictFetch(idx, "site", big); got != nil {
		t.Fatalf("%d new files predicted (more than PrefetchMax): want none prefetched, got %d", len(big.Entries), len(got))
	}
}

// TestPrefetchGuessesNeverReachTheTree: content fetched while the walk
// runs is used when the walk needs it, and a wrong guess (a file the
// index lost track of) is never placed: the live file keeps its inode.
func TestPrefetchGuessesNeverReachTheTree(t *testing.T) {
	w, a, tree, _ := syncedTree(t, 60, 4)
	ctx := context.Background()
	time.Sleep(30 * time.Millisecond) // past the racy tick: the next index vouches
	w.sync(events.RootPath, tree)
	var r Report
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	// The index forgets d3/f003 (as if an outside put replaced it): the
	// prediction takes it for new.
	path := filepath.Join(a.stateDir(), indexFile)
	x, err := loadIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	x.removeUnder("d3/f003")
	if err := x.write(path, x.encode()()); err != nil {
		t.Fatal(err)
	}
	before := inodesOf(t, a.cfg.MountPath)

	var changed int64
	next := maps.Clone(tree)
	for _, p := range []string{"d0/f000", "d1/f001"} {
		next[p] = file{gen("changed "+p, 2000), 0o644}
		changed += 2000
	}
	next["new/f100"] = file{gen("new", 1500), 0o644}
	changed += 1500
	x.ready()
	if got := predictFetch(x, events.RootPath, manifestOf(t, next)); len(got) != 4 {
		t.Fatalf("predicted %d files, want 4 (two changed, one new, one forgotten)", len(got))
	}
	w.sync(events.RootPath, next)
	r = Report{}
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	after := inodesOf(t, a.cfg.MountPath)
	for p, ino := range before {
		_, isChanged := map[string]bool{"d0/f000": true, "d1/f001": true}[p]
		if !isChanged && after[p] != ino {
			t.Errorf("%s was replaced (inode %d -> %d); only the changed files may be", p, ino, after[p])
		}
	}
	// Fetched: the manifest, the changed and new files and the wrong
	// guess (the proof that prefetch ran), each once.
	raw, err := manifestOf(t, next).Canonical()
	if err != nil {
		t.Fatal(err)
	}
	guess := int64(len(tree["d3/f003"].data))
	if want := int64(len(raw)) + changed + guess; r.Bytes != want {
		t.Fatalf("fetched %d bytes; want %d: manifest %d, content %d, the wrong guess %d", r.Bytes, want, len(raw), changed, guess)
	}
}
