package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// TestNothingCrossesAMountInsideTheTree: a tmpfs mounted at site/uploads
// inside the live tree is another filesystem: a sync that would delete it
// (or keep it), a put beneath it and a delete of it all fail as bad
// input naming the mount point, and leave its files and the watermark as
// they were. (Before, the sync emptied the tmpfs and then stuck on the
// rmdir's EBUSY as a retryable failure.)
func TestNothingCrossesAMountInsideTheTree(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 64)
	w.put("site/index.html", gen("index", 100), 0o644)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	uploads := filepath.Join(cfg.MountPath, "site", "uploads")
	if err := os.MkdirAll(uploads, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", uploads)
	t.Cleanup(func() { _ = run2("umount", "-l", uploads) })
	kept := filepath.Join(uploads, "photo.jpg")
	if err := os.MkdirAll(filepath.Join(uploads, "2026"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{kept, filepath.Join(uploads, "2026", "a.jpg")} {
		if err := os.WriteFile(p, []byte("user data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for i, tc := range []struct {
		name  string
		entry func() events.JournalEntry
	}{
		{"sync of the parent deleting it", func() events.JournalEntry {
			ref := w.manifest(map[string]file{"index.html": {gen("index2", 100), 0o644}})
			return events.JournalEntry{Op: events.OpSync, Path: "site", Manifest: &ref}
		}},
		{"sync of the root keeping it", func() events.JournalEntry {
			ref := w.manifest(map[string]file{"site/index.html": {gen("index", 100), 0o644}, "site/uploads/photo.jpg": {[]byte("user data"), 0o644}})
			return events.JournalEntry{Op: events.OpSync, Path: events.RootPath, Manifest: &ref}
		}},
		{"sync of the mount point", func() events.JournalEntry {
			ref := w.manifest(map[string]file{"x": {gen("x", 10), 0o644}})
			return events.JournalEntry{Op: events.OpSync, Path: "site/uploads", Manifest: &ref}
		}},
		{"put beneath it", func() events.JournalEntry {
			data := gen("new", 10)
			w.upload(data)
			return events.JournalEntry{Op: events.OpPut, Path: "site/uploads/2026/new.jpg", Blob: &events.Blob{SHA256: sum(data), Size: 10, Mode: 0o644}}
		}},
		{"delete of it", func() events.JournalEntry { return events.JournalEntry{Op: events.OpDelete, Path: "site/uploads"} }},
		{"delete of the parent", func() events.JournalEntry { return events.JournalEntry{Op: events.OpDelete, Path: "site"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.Pool = "mnt" + itoa(i)
			b := w.agent(t, c, Deps{})
			if err := b.writeState(0); err != nil {
				t.Fatal(err)
			}
			e := tc.entry()
			e.RequestID = "m" + itoa(i)
			if _, _, err := w.store.Append(context.Background(), c.Pool, e); err != nil {
				t.Fatal(err)
			}
			r := Report{}
			err := b.Apply(context.Background(), 0, false, &r)
			if KindOf(err) != KindBadInput || !strings.Contains(err.Error(), uploads+" is the mount point") {
				t.Fatalf("apply: %v (kind %s); want bad input naming %s", err, KindOf(err), uploads)
			}
			if watermark(t, c.MountPath) != 0 {
				t.Fatal("watermark moved")
			}
			for _, p := range []string{kept, filepath.Join(uploads, "2026", "a.jpg")} {
				if data, err := os.ReadFile(p); err != nil || string(data) != "user data" {
					t.Fatalf("%s: %q %v: the other filesystem was touched", p, data, err)
				}
			}
			if _, err := os.Stat(filepath.Join(cfg.MountPath, "site", "index.html")); err != nil {
				t.Fatalf("the tree around the mount changed: %v", err)
			}
		})
	}

	// Beneath the plan's check, removal itself stops at the other
	// filesystem (st_dev), whatever asked for it.
	root, err := openDir(cfg.MountPath)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFD(root)
	var mp *mountPointError
	if err := removePath(root, "site"); !errors.As(err, &mp) || mp.rel != "site/uploads" {
		t.Fatalf("removePath(site): %v; want the mount point site/uploads", err)
	}
	if data, err := os.ReadFile(kept); err != nil || string(data) != "user data" {
		t.Fatalf("removePath went into the other filesystem: %q %v", data, err)
	}
}
