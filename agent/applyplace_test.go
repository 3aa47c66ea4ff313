package agent

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
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

	var stop atomic.Bool
	var swaps atomic.Int64
	var wg sync.WaitGroup
	for d := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			live := filepath.Join(cfg.MountPath, "d"+strconv.Itoa(d))
			for n := 0; !stop.Load(); n++ {
				if err := os.Rename(live, live+".away"); err != nil {
					continue
				}
				_ = os.Symlink(targets[n%len(targets)], live)
				_ = os.Remove(live)
				for os.Rename(live+".away", live) != nil {
					_ = os.RemoveAll(live) // the placer made it again meanwhile
				}
				swaps.Add(1)
			}
		}()
	}
	passes, failed := 0, 0
	for ; passes < 400 && (passes < 20 || swaps.Load() < 2000); passes++ {
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
	stop.Store(true)
	wg.Wait()
	t.Logf("%d passes of %d files, %d directory swaps, %d placements refused", passes, len(paths), swaps.Load(), failed)
	if swaps.Load() < 1000 {
		t.Fatalf("only %d swaps: the race was not run", swaps.Load())
	}
	var escaped []string
	_ = filepath.WalkDir(outside, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != outside {
			escaped = append(escaped, p)
		}
		return nil
	})
	if len(escaped) > 0 {
		t.Fatalf("the placer wrote %d paths outside the mount through swapped-in symlinks, e.g. %v", len(escaped), escaped[:min(5, len(escaped))])
	}
}
