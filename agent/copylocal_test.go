package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// TestLocalCopiesAreVerified: a live file the plan chose as the source of
// a local copy changes (same size, other bytes) or has its directory
// swapped for a symlink to a look-alike outside the mount before it is
// staged: the staged file is fetched from the origin instead, and holds
// the entry's content.
func TestLocalCopiesAreVerified(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 64)
	data := gen("content", 64<<10)
	w.put("changed/f", data, 0o644)
	w.put("swapped/f", data, 0o644)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		tamper func(abs string)
	}{
		{"changed/f", func(abs string) {
			if err := os.WriteFile(abs, gen("other", len(data)), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"swapped/f", func(abs string) {
			dir := filepath.Dir(abs)
			if err := os.Rename(dir, dir+".away"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, dir); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			root, err := openDir(cfg.MountPath)
			if err != nil {
				t.Fatal(err)
			}
			defer closeFD(root)
			e := events.JournalEntry{Seq: 9, Op: events.OpPut, Path: tc.path, Blob: &events.Blob{SHA256: sum(data), Size: int64(len(data)), Mode: 0o600}}
			p, err := planPut(root, cfg.MountPath, e)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.stage) != 1 || p.stage[0].from == "" {
				t.Fatalf("plan %+v: want a local copy (same content, new mode)", p)
			}
			tc.tamper(filepath.Join(cfg.MountPath, tc.path))
			run, err := a.startRun(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer run.end()
			staging := filepath.Join(a.stateDir(), stagingDir, "9")
			defer a.removeStaging()
			fetched, err := run.stage(context.Background(), staging, p, mtimeOf(e), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(staging, tc.path))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("staged %d bytes (%v), not the entry's content", len(got), err)
			}
			if fetched != int64(len(data)) {
				t.Fatalf("fetched %d bytes from the origin, want %d: the tampered local file was copied", fetched, len(data))
			}
		})
	}
}
