package agent

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

func testRecords(n int) []indexRecord {
	var recs []indexRecord
	for i := range n {
		recs = append(recs, indexRecord{path: fmt.Sprintf("site/d%d/f%03d.html", i%3, i), ino: uint64(1000 + i), size: int64(i),
			mtime: 1_700_000_000_123_456_789 + int64(i), ctime: 1_700_000_001_000_000_000 - int64(i), mode: unix.S_IFREG | 0o644,
			sha: fmt.Sprintf("%064x", i*7919), vouch: i%3 != 0})
	}
	return recs
}

func TestIndexCodecRoundTripsAndRefusesDamage(t *testing.T) {
	recs := testRecords(50)
	data := encodeIndex(recs)
	got, err := decodeIndex(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, recs) {
		t.Fatalf("decode(encode(records)) differs:\ngot  %v\nwant %v", got[:2], recs[:2])
	}
	empty, err := decodeIndex(encodeIndex(nil))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty index: %v, %v", empty, err)
	}

	damaged := map[string][]byte{
		"empty":       nil,
		"other magic": append([]byte("volsd-index 2\n"), data[len(indexMagic):]...),
		"cut short":   data[:len(data)-1],
		"cut at half": data[:len(data)/2],
	}
	for _, at := range []int{0, len(indexMagic) + 3, len(data) / 2, len(data) - 5, len(data) - 1} {
		b := bytes.Clone(data)
		b[at] ^= 0x20
		damaged[fmt.Sprintf("byte %d flipped", at)] = b
	}
	for name, b := range damaged {
		if recs, err := decodeIndex(b); err == nil {
			t.Errorf("%s: decoded %d records, want an error", name, len(recs))
		}
	}

	// On disk: a damaged file is an empty index that will be rewritten.
	path := filepath.Join(t.TempDir(), indexFile)
	if err := os.WriteFile(path, data[:len(data)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	x, err := loadIndex(path)
	if err == nil || !strings.Contains(err.Error(), "ignored") || len(x.recs) != 0 || !x.dirty {
		t.Fatalf("damaged index: %d records, dirty %v, err %v; want none, dirty, an error saying it is ignored", len(x.recs), x.dirty, err)
	}
	x.add(recs)
	if err := x.write(path, x.encode()()); err != nil {
		t.Fatal(err)
	}
	if x, err = loadIndex(path); err != nil || len(x.recs) != len(recs) {
		t.Fatalf("rewritten index: %d records, %v", len(x.recs), err)
	}
	if x, err = loadIndex(filepath.Join(t.TempDir(), "missing")); err != nil || len(x.recs) != 0 || x.dirty {
		t.Fatalf("missing index: %d records, dirty %v, err %v; want an empty clean index", len(x.recs), x.dirty, err)
	}
}

func TestIndexRemoveUnder(t *testing.T) {
	x := &treeIndex{}
	x.add([]indexRecord{{path: "a"}, {path: "ab"}, {path: "a/b"}, {path: "a/b/c"}, {path: "b/a"}, {path: "c"}})
	paths := func() string {
		var ps []string
		for _, r := range x.recs {
			ps = append(ps, r.path)
		}
		sort.Strings(ps)
		return strings.Join(ps, " ")
	}
	x.removeUnder("a/b")
	if got := paths(); got != "a ab b/a c" {
		t.Fatalf("after removeUnder(a/b): %s", got)
	}
	x.removeUnder("a")
	if got := paths(); got != "ab b/a c" {
		t.Fatalf("after removeUnder(a): %s", got)
	}
	x.replaceUnder("b", []indexRecord{{path: "b/z"}})
	if got := paths(); got != "ab b/z c" {
		t.Fatalf("after replaceUnder(b): %s", got)
	}
	x.replaceUnder(events.RootPath, []indexRecord{{path: "n"}})
	if got := paths(); got != "n" {
		t.Fatalf("after replaceUnder(.): %s", got)
	}
}

// manifestOf is the parsed manifest of files.
func manifestOf(t testing.TB, files map[string]file) events.Manifest {
	m := events.Manifest{Version: events.ManifestVersion}
	for p, f := range files {
		m.Entries = append(m.Entries, events.ManifestEntry{Path: p, Type: events.TypeFile, SHA256: sum(f.data), Size: int64(len(f.data)), Mode: f.mode})
	}
	data, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	m, err = events.ParseManifest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// planWithIndex plans a sync of the root to files with the index on the
// volume, as an apply would.
func planWithIndex(t *testing.T, a *Agent, files map[string]file) *entryPlan {
	t.Helper()
	x, err := loadIndex(filepath.Join(a.stateDir(), indexFile))
	if err != nil {
		t.Fatal(err)
	}
	root, err := openDir(a.cfg.MountPath)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFD(root)
	x.ready()
	e := events.JournalEntry{Seq: 99, Op: events.OpSync, Path: events.RootPath, Manifest: &events.ManifestRef{SHA256: strings.Repeat("0", 64)}}
	p, err := planSync(root, a.cfg.MountPath, e, manifestOf(t, files), x, fineTimestamps(a.stateDir()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTreeIndexVouchesOnlyForUntouchedFiles: after two syncs the index
// knows every file, so the walk reads no content record; a file changed
// behind the agent's back with its size and mtime restored and its content
// record removed, or replaced by a copy, is not vouched for: the first is
// fetched again, the second hashed and kept.
func TestTreeIndexVouchesOnlyForUntouchedFiles(t *testing.T) {
	w, a, tree, _ := syncedTree(t, 60, 4)
	ctx := context.Background()
	mount := a.cfg.MountPath
	if !fineTimestamps(a.stateDir()) {
		t.Fatal("ext4 with 256-byte inodes should keep nanosecond timestamps")
	}
	// The records of files placed in the clock tick the index captured
	// them in do not vouch (racy); a second sync, a tick later, makes them
	// all vouch.
	time.Sleep(30 * time.Millisecond)
	w.sync(events.RootPath, tree)
	var r Report
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	if p := planWithIndex(t, a, tree); p.indexed != len(tree) || p.unchanged != len(tree) {
		t.Fatalf("plan of the same tree: %s; want all %d files known by the index", p.describe(), len(tree))
	}

	// Tampered: same size, same mtime, content record removed.
	tampered := filepath.Join(mount, "d1/f001")
	var before unix.Stat_t
	if err := unix.Lstat(tampered, &before); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(tampered, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tampered"), 10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := unix.Lremovexattr(tampered, contentXattr); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, tampered, []unix.Timespec{before.Atim, before.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	// Copied: a new inode with the same content and mtime, no record.
	copied := filepath.Join(mount, "d2/f002")
	run(t, "cp", "--preserve=mode,timestamps", copied, copied+".new")
	if err := os.Rename(copied+".new", copied); err != nil {
		t.Fatal(err)
	}

	p := planWithIndex(t, a, tree)
	if p.indexed != len(tree)-2 || p.unchanged != len(tree)-1 || !reflect.DeepEqual(p.copies, []string{"d1/f001"}) {
		t.Fatalf("plan after tampering: %s, copies %v; want %d known by the index, %d unchanged, d1/f001 to replace",
			p.describe(), p.copies, len(tree)-2, len(tree)-1)
	}
	w.sync(events.RootPath, tree)
	if err := a.Apply(ctx, 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, mount, w.model)
}

// TestDamagedTreeIndexIsIgnoredAndRewritten: a torn index costs speed,
// not correctness.
func TestDamagedTreeIndexIsIgnoredAndRewritten(t *testing.T) {
	w, a, tree, _ := syncedTree(t, 40, 3)
	time.Sleep(30 * time.Millisecond) // past the racy tick (see TestTreeIndexVouchesOnlyForUntouchedFiles)
	w.sync(events.RootPath, tree)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(a.stateDir(), indexFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no tree index after a sync: %v", err)
	}
	if recs, err := decodeIndex(data); err != nil || len(recs) != len(tree) {
		t.Fatalf("index after two syncs: %d records, %v; want %d", len(recs), err, len(tree))
	}
	if err := os.WriteFile(path, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	next := maps.Clone(tree)
	next["d0/f000"] = file{gen("changed", 3000), 0o644}
	w.sync(events.RootPath, next)
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	x, err := loadIndex(path)
	if err != nil || len(x.recs) == 0 {
		t.Fatalf("index after the apply: %d records, %v; want it rewritten", len(x.recs), err)
	}
}

// TestRacyRecordsDoNotVouch: a file changed in the clock tick its record
// is captured in could change again unseen, so its record does not vouch;
// on a filesystem with one-second timestamps, no record younger than a
// second does.
func TestRacyRecordsDoNotVouch(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	for _, tc := range []struct {
		name      string
		inodeSize string
		fine      bool
	}{{"nanosecond timestamps", "256", true}, {"one-second timestamps", "128", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dev, _ := loopDevice(t, 32)
			mnt := filepath.Join(t.TempDir(), "mnt")
			if err := os.MkdirAll(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, "mkfs.ext4", "-q", "-I", tc.inodeSize, dev)
			run(t, "mount", dev, mnt)
			unmountAtCleanup(t, mnt)
			if got := fineTimestamps(mnt); got != tc.fine {
				t.Fatalf("fineTimestamps = %v, want %v", got, tc.fine)
			}
			root, err := openDir(mnt)
			if err != nil {
				t.Fatal(err)
			}
			defer closeFD(root)
			data := []byte("placed content")
			b := events.Blob{SHA256: sum(data), Size: int64(len(data)), Mode: 0o644}
			place := func(name string) {
				f, err := os.Create(filepath.Join(mnt, name))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.Write(data); err != nil {
					t.Fatal(err)
				}
				if err := finishFile(f, 0o644, content{SHA256: b.SHA256, Size: b.Size, Mtime: time.Now().Truncate(time.Second).UnixNano()}); err != nil {
					t.Fatal(err)
				}
			}
			want := map[string]events.Blob{"old": b, "new": b}
			place("old")
			// A tick on a fine filesystem; past the second on a coarse one.
			wait := 30 * time.Millisecond
			if !tc.fine {
				wait = 2100 * time.Millisecond
			}
			time.Sleep(wait)
			place("new")
			recs := captureRecords(root, mnt, want, tc.fine)
			sort.Slice(recs, func(i, j int) bool { return recs[i].path > recs[j].path })
			if len(recs) != 2 || recs[0].path != "old" || !recs[0].vouch || recs[1].vouch {
				t.Fatalf("records %+v; want both, only the file placed %v before vouching", recs, wait)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, "old"), &st); err != nil {
				t.Fatal(err)
			}
			if !recs[0].matches(&st) || recs[0].sha != b.SHA256 {
				t.Fatalf("record %+v does not describe the file", recs[0])
			}
			// Any change makes the record stale.
			if err := os.Chmod(filepath.Join(mnt, "old"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lstat(filepath.Join(mnt, "old"), &st); err != nil {
				t.Fatal(err)
			}
			if recs[0].matches(&st) {
				t.Fatal("record still matches after chmod")
			}
		})
	}
}

// TestPlanSyncTwiceOnOneDescriptor: the walk reads the mount through its
// own descriptor; a dup would share the root's offset, and a second plan
// on the same root would find the tree empty.
func TestPlanSyncTwiceOnOneDescriptor(t *testing.T) {
	_, a, tree, _ := syncedTree(t, 20, 2)
	root, err := openDir(a.cfg.MountPath)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFD(root)
	e := events.JournalEntry{Seq: 9, Op: events.OpSync, Path: events.RootPath, Manifest: &events.ManifestRef{SHA256: strings.Repeat("0", 64)}}
	for i := range 2 {
		p, err := planSync(root, a.cfg.MountPath, e, manifestOf(t, tree), nil, true)
		if err != nil {
			t.Fatal(err)
		}
		if p.unchanged != len(tree) {
			t.Fatalf("plan %d on one descriptor: %s; want all %d unchanged", i+1, p.describe(), len(tree))
		}
	}
}
