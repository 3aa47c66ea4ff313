package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/internal/testenv"
)

// TestNativePlacementCannotWriteOutsideTheMount: while the agent places
// staged files itself (placer, no rsync), another process swaps the
// directories it writes into for symlinks (absolute, and relative ones
// climbing out) to a directory outside the mount, thousands of times.
// Every live directory is opened without following a symlink, so nothing
// is ever written there; a placement that meets a swapped-in link fails
// (retryable) instead.
func TestNativePlacementCannotWriteOutsideTheMount(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 128)
	outside := t.TempDir()
	const dirs, perDir = 8, 40
	staging := filepath.Join(a.stateDir(), stagingDir, "1")
	var paths []string
	for d := range dirs {
		for i := range perDir {
			paths = append(paths, filepath.Join("d"+strconv.Itoa(d), "sub", "f"+strconv.Itoa(i)))
		}
		if err := os.MkdirAll(filepath.Join(cfg.MountPath, "d"+strconv.Itoa(d), "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stage := func() {
		for _, p := range paths {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(staging, p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(staging, p), gen(p, 200), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	rel, err := filepath.Rel(filepath.Join(cfg.MountPath, "d0"), outside)
	if err != nil {
		t.Fatal(err)
	}
	targets := []string{outside, rel, filepath.Join(rel, "..", filepath.Base(outside))}
	root, err := openDir(cfg.MountPath)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)

	sw := swapDirsForLinks(cfg.MountPath, dirs, targets)
	passes, failed := 0, 0
	for ; passes < 400 && (passes < 20 || sw.swaps.Load() < 2000); passes++ {
		stage()
		pl, err := newPlacer(root, staging)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if err := pl.place(p); err != nil {
				failed++
			}
		}
		pl.close()
	}
	sw.halt(t)
	t.Logf("%d passes of %d files, %d directory swaps, %d placements refused", passes, len(paths), sw.swaps.Load(), failed)
	requireNothingUnder(t, outside, "the placer")
}
