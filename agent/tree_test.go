package agent

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/oracle"
	"github.com/volsd/volsd/internal/testenv"
)

// srcTree is a source tree on disk for the manifest v2 tests: what the
// operator pushes. The oracle compares the mount with it.
type srcTree struct {
	t   *testing.T
	dir string
}

func newSrcTree(t *testing.T) *srcTree { return &srcTree{t: t, dir: t.TempDir()} }

func (s *srcTree) abs(p string) string { return filepath.Join(s.dir, p) }

// file writes p with data, mode and mtime (whole seconds).
func (s *srcTree) file(p, data string, mode os.FileMode, mtime int64) {
	s.t.Helper()
	s.clear(p)
	if err := os.MkdirAll(filepath.Dir(s.abs(p)), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(s.abs(p), []byte(data), mode); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chmod(s.abs(p), mode); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chtimes(s.abs(p), time.Unix(mtime, 0), time.Unix(mtime, 0)); err != nil {
		s.t.Fatal(err)
	}
}

func (s *srcTree) dirMode(p string, mode os.FileMode) {
	s.t.Helper()
	if err := os.MkdirAll(s.abs(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chmod(s.abs(p), mode); err != nil {
		s.t.Fatal(err)
	}
}

func (s *srcTree) link(p, target string) {
	s.t.Helper()
	s.clear(p)
	if err := os.MkdirAll(filepath.Dir(s.abs(p)), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Symlink(target, s.abs(p)); err != nil {
		s.t.Fatal(err)
	}
}

// clear removes whatever is at p.
func (s *srcTree) clear(p string) {
	s.t.Helper()
	if err := os.RemoveAll(s.abs(p)); err != nil {
		s.t.Fatal(err)
	}
}

// manifest uploads the tree's blobs and its v2 manifest (as the CLI
// builds it) and returns the manifest's ref and its size.
func (s *srcTree) manifest(w *world) (events.ManifestRef, int64) {
	s.t.Helper()
	root, err := os.Stat(s.dir)
	if err != nil {
		s.t.Fatal(err)
	}
	m := events.Manifest{Version: events.ManifestVersion, Entries: []events.ManifestEntry{{Path: ".", Type: events.TypeDir, Mode: uint32(root.Mode().Perm())}}}
	err = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == s.dir {
			return err
		}
		rel, _ := filepath.Rel(s.dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m.Entries = append(m.Entries, events.ManifestEntry{Path: rel, Type: events.TypeLink, Target: target})
		case fi.IsDir():
			m.Entries = append(m.Entries, events.ManifestEntry{Path: rel, Type: events.TypeDir, Mode: uint32(fi.Mode().Perm())})
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			w.upload(data)
			m.Entries = append(m.Entries, events.ManifestEntry{Path: rel, Type: events.TypeFile, SHA256: sum(data), Size: int64(len(data)),
				Mode: uint32(fi.Mode().Perm()), Mtime: fi.ModTime().Unix()})
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	data, err := m.Canonical()
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := events.ParseManifestBytes(data); err != nil {
		s.t.Fatalf("the test's manifest is invalid: %v", err)
	}
	w.uploadKey(events.ManifestKey(sum(data)), data)
	return events.ManifestRef{SHA256: sum(data)}, int64(len(data))
}

// syncEntry appends a sync of the tree to target and returns the
// manifest's size.
func (s *srcTree) syncEntry(w *world, target string) int64 {
	s.t.Helper()
	ref, n := s.manifest(w)
	appendUnique(w, events.JournalEntry{Op: events.OpSync, Path: target, Manifest: &ref})
	return n
}

// rsyncOracle fails t unless `rsync -rlpcni --delete SRC/ DST/` (dry run,
// checksums) finds nothing to change: an oracle that is not volsd's code.
// The agent's own directories at the root are left out.
func rsyncOracle(t *testing.T, src, dst string) {
	t.Helper()
	diffs, err := oracle.RsyncDiffs(src, dst, "/"+stateDirName, "/"+lostFound)
	if err != nil {
		t.Fatalf("rsync oracle: %v", err)
	}
	if len(diffs) > 0 {
		t.Fatalf("the mount differs from the pushed tree (rsync -rlpcni --delete):\n  %s", oracle.Summary(diffs, 20))
	}
}

// assertMtimes fails t unless every regular file of src has the same
// mtime (whole seconds) at dst.
func assertMtimes(t *testing.T, src, dst string) {
	t.Helper()
	diffs, err := oracle.MtimeDiffs(src, dst, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Errorf("mtime on the volume differs: %s", d)
	}
}

// appendUnique appends e with a request ID of its own (world.appendEntry
// names requests by the model's length, which these tests do not keep).
func appendUnique(w *world, e events.JournalEntry) {
	w.t.Helper()
	uniqueRequests++
	e.RequestID = fmt.Sprintf("tree-%d", uniqueRequests)
	w.appendEntry(e)
}

var uniqueRequests int

func applyAll(t *testing.T, a *Agent) Report {
	t.Helper()
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// A v2 sync carries empty directories and directory modes, relative
// links (dangling and looping ones too, as rsync -a does) and source
// mtimes; then a delta turns a directory into a file, a file into a link,
// a link into a directory and back, changes a link's target, a directory's
// mode and a file's mtime only, and costs no fetch but the new content.
// The journal starts with a v1 manifest, which the agent still applies.
func TestSyncV2CarriesDirsLinksModesAndMtimes(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	a := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, a, 64)
	m := a.cfg.MountPath

	// seq 1: a v1 manifest, as older CLIs wrote them.
	v1 := events.Manifest{Version: events.ManifestV1, Entries: []events.ManifestEntry{{Path: "old/a.txt", SHA256: sum([]byte("a")), Size: 1, Mode: 0o644}}}
	w.upload([]byte("a"))
	raw, _ := v1.Canonical()
	w.uploadKey(events.ManifestKey(sum(raw)), raw)
	appendUnique(w, events.JournalEntry{Op: events.OpSync, Path: "site", Manifest: &events.ManifestRef{SHA256: sum(raw)}, CreatedAt: w.now})
	applyAll(t, a)
	if data, err := os.ReadFile(filepath.Join(m, "site/old/a.txt")); err != nil || string(data) != "a" {
		t.Fatalf("v1 entry: %q %v", data, err)
	}

	// seq 2: a v2 tree.
	s := newSrcTree(t)
	s.dirMode(".", 0o750)
	s.file("v1.2.3/index.html", "release", 0o644, 1600000000)
	s.file("home.html", "home", 0o640, 1500000000)
	s.file("bin/run.sh", "#!/bin/sh\n", 0o755, 1400000000)
	s.file("was-dir/x", "x", 0o644, 1300000000)
	s.file("was-file", "file", 0o644, 1300000001)
	s.file("meta-only", "same bytes", 0o644, 1300000002)
	s.dirMode("uploads/empty-dir", 0o755)
	s.dirMode("cache", 0o700)
	s.dirMode("v1.2.3", 0o750)
	s.link("latest", "v1.2.3")
	s.link("index.html", "home.html")
	s.link("v1.2.3/shared", "../bin")
	s.link("dangling", "not/here")
	s.link("loop-a", "loop-b")
	s.link("loop-b", "loop-a")
	s.link("was-link", "home.html")
	s.syncEntry(w, "site")
	applyAll(t, a)
	rsyncOracle(t, s.dir, filepath.Join(m, "site"))
	assertMtimes(t, s.dir, filepath.Join(m, "site"))

	// seq 3: the delta.
	s.clear("was-dir")
	s.file("was-dir", "now a file", 0o644, 1700000000)                                                         // dir → file
	s.link("was-file", "home.html")                                                                            // file → link
	s.clear("was-link")                                                                                        //
	s.file("was-link/inside", "now a dir", 0o600, 1700000001)                                                  // link → dir
	s.link("latest", "bin")                                                                                    // new target
	s.dirMode("cache", 0o750)                                                                                  // dir mode
	s.file("meta-only", "same bytes", 0o600, 1700000002)                                                       // mode and mtime only
	if err := os.Chtimes(s.abs("home.html"), time.Unix(1700000003, 0), time.Unix(1700000003, 0)); err != nil { // mtime only
		t.Fatal(err)
	}
	mbytes := s.syncEntry(w, "site")
	r := applyAll(t, a)
	rsyncOracle(t, s.dir, filepath.Join(m, "site"))
	assertMtimes(t, s.dir, filepath.Join(m, "site"))
	newContent := int64(len("now a file") + len("now a dir"))
	if r.Bytes != mbytes+newContent {
		t.Errorf("delta fetched %d bytes; want the manifest (%d) and the new content (%d): unchanged links and dirs, mode and mtime changes cost no fetch", r.Bytes, mbytes, newContent)
	}

	// seq 4: and back: file → dir, link → file, dir → link.
	s.clear("was-dir")
	s.file("was-dir/x", "x", 0o644, 1300000000)
	s.clear("was-file")
	s.file("was-file", "file", 0o644, 1300000001)
	s.clear("was-link")
	s.link("was-link", "home.html")
	s.syncEntry(w, "site")
	applyAll(t, a)
	rsyncOracle(t, s.dir, filepath.Join(m, "site"))
	assertMtimes(t, s.dir, filepath.Join(m, "site"))

	// seq 5: the same tree again costs the manifest only.
	mbytes = s.syncEntry(w, "site")
	if r := applyAll(t, a); r.Bytes != mbytes {
		t.Errorf("an unchanged tree fetched %d bytes, want the manifest's %d", r.Bytes, mbytes)
	}
	rsyncOracle(t, s.dir, filepath.Join(m, "site"))

	// A second volume applying the whole journal (v1 entry included) ends
	// with the same tree and the same mtimes.
	b := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, b, 64)
	applyAll(t, b)
	rsyncOracle(t, s.dir, filepath.Join(b.cfg.MountPath, "site"))
	assertMtimes(t, s.dir, filepath.Join(b.cfg.MountPath, "site"))
}

// A put carries the file's mtime; a delete of a directory removes the
// links in it without following them.
func TestPutMtimeAndDeleteOfLinks(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	a := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, a, 64)
	m := a.cfg.MountPath
	data := []byte("put me")
	w.upload(data)
	appendUnique(w, events.JournalEntry{Op: events.OpPut, Path: "p/f.txt", Blob: &events.Blob{SHA256: sum(data), Size: int64(len(data)), Mode: 0o640, Mtime: 1234567890}})
	applyAll(t, a)
	fi, err := os.Stat(filepath.Join(m, "p/f.txt"))
	if err != nil || fi.ModTime().Unix() != 1234567890 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("put: %v %v", fi, err)
	}
	// The same put with a new mtime only: placed without a fetch.
	appendUnique(w, events.JournalEntry{Op: events.OpPut, Path: "p/f.txt", Blob: &events.Blob{SHA256: sum(data), Size: int64(len(data)), Mode: 0o640, Mtime: 1234567999}})
	if r := applyAll(t, a); r.Bytes != 0 {
		t.Errorf("an mtime-only put fetched %d bytes", r.Bytes)
	}
	if fi, err := os.Stat(filepath.Join(m, "p/f.txt")); err != nil || fi.ModTime().Unix() != 1234567999 {
		t.Fatalf("mtime-only put: %v %v", fi, err)
	}

	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSrcTree(t)
	s.file("d/a", "a", 0o644, 1500000000)
	s.link("d/up", "..")
	s.link("d/a-link", "a")
	s.syncEntry(w, "links")
	applyAll(t, a)
	rsyncOracle(t, s.dir, filepath.Join(m, "links"))
	// Someone plants a link out of the mount beside the pushed ones.
	if err := os.Symlink(outside, filepath.Join(m, "links/d/planted")); err != nil {
		t.Fatal(err)
	}
	appendUnique(w, events.JournalEntry{Op: events.OpDelete, Path: "links/d"})
	applyAll(t, a)
	if _, err := os.Lstat(filepath.Join(m, "links/d")); !os.IsNotExist(err) {
		t.Fatalf("links/d still there: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(got) != "keep" {
		t.Fatalf("the delete followed a link out of the mount: %q %v", got, err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Fatalf("outside the mount: %v", ents)
	}
}
