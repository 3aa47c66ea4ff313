package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/volsd/volsd/internal/testenv"
)

// TestRsyncCannotWriteOutsideTheMount: while copy and link passes run,
// another process swaps the directories they write into for symlinks
// (absolute, and relative ones climbing out) to a directory outside the
// mount, thousands of times. Confined in the jail, rsync never writes
// there: whatever a link resolves to is the volume or read-only.
func TestRsyncCannotWriteOutsideTheMount(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 128)
	outside := t.TempDir()
	const dirs, perDir = 8, 40
	staging := filepath.Join(a.stateDir(), stagingDir, "1")
	tmp := filepath.Join(a.stateDir(), rsyncTmpDir)
	var paths []string
	for d := range dirs {
		for i := range perDir {
			p := filepath.Join("d"+strconv.Itoa(d), "f"+strconv.Itoa(i))
			if err := os.MkdirAll(filepath.Dir(filepath.Join(staging, p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(staging, p), gen(p, 2000), 0o644); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		if err := os.MkdirAll(filepath.Join(cfg.MountPath, "d"+strconv.Itoa(d)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(filepath.Join(cfg.MountPath, "d0"), outside)
	if err != nil {
		t.Fatal(err)
	}
	targets := []string{outside, rel}

	teardown, err := a.setUpJail()
	if err != nil {
		t.Fatal(err)
	}
	defer teardown()
	rs := rsync{bin: a.rsyncBin, jail: a.jailPath(), mount: cfg.MountPath}
	if os.Getenv("VOLSD_TEST_UNCONFINED") != "" {
		rs.jail = "" // to see the race do harm without the jail
	}

	sw := swapDirsForLinks(cfg.MountPath, dirs, targets)
	passes := 0
	for passes < 20 || sw.swaps.Load() < 2000 {
		passes++
		if passes%2 == 0 {
			_ = rs.copyPass(context.Background(), staging, cfg.MountPath, tmp, paths)
		} else {
			_ = rs.linkPass(context.Background(), staging, cfg.MountPath, paths)
		}
		if passes >= 80 {
			break
		}
	}
	sw.halt(t)
	t.Logf("%d passes of %d files, %d directory swaps (%d renames failed)", passes, len(paths), sw.swaps.Load(), sw.refused.Load())
	requireNothingUnder(t, outside, "rsync")
}
