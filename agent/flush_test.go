package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/volsd/volsd/internal/testenv"
)

// failingVolume mounts a fresh fstype filesystem at a's mount path on a
// loop device whose image lives on a tmpfs, initialised like up does, and
// returns a function that shrinks the tmpfs to what the image uses plus
// slackMiB: from then on the disk runs out of backing store and writes of
// new blocks fail with an I/O error, as a failing disk's would.
func failingVolume(t *testing.T, a *Agent, fstype string, imgMiB int) (fail func(slackMiB int)) {
	t.Helper()
	backing := filepath.Join(t.TempDir(), "backing")
	if err := os.MkdirAll(backing, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(imgMiB+16)+"m", "tmpfs", backing)
	t.Cleanup(func() { _ = run2("umount", "-l", backing) })
	img := filepath.Join(backing, "volume.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(imgMiB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dev := attachImage(t, img)
	switch fstype {
	case "xfs":
		run(t, "mkfs.xfs", "-q", "-f", dev)
	default:
		run(t, "mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)
	}
	if err := os.MkdirAll(a.cfg.MountPath, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-o", "noatime", dev, a.cfg.MountPath)
	unmountAtCleanup(t, a.cfg.MountPath)
	if err := os.MkdirAll(a.stateDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := a.writeState(0); err != nil {
		t.Fatal(err)
	}
	return func(slackMiB int) {
		t.Helper()
		run(t, "sync")
		used := run(t, "du", "-m", "--block-size=1M", img)
		mib, err := strconv.Atoi(strings.Fields(used)[0])
		if err != nil {
			t.Fatal(err)
		}
		run(t, "mount", "-o", "remount,size="+strconv.Itoa(mib+slackMiB)+"m", backing)
	}
}

func run2(name string, args ...string) error {
	_, err := exec.Command(name, args...).CombinedOutput()
	return err
}

// TestFlushErrorKeepsWatermark: when the disk fails to write an entry's
// content back, the apply fails naming the failed flush, the watermark
// stays below the entry, and the report says what failed — on ext4 and
// xfs. (Before, the early flushes swallowed the error and the checkpoint's
// syncfs, on a descriptor opened after it, returned 0: the watermark moved
// past content that never reached the disk.)
func TestFlushErrorKeepsWatermark(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			w := newWorld(t)
			cfg := w.config(t)
			cfg.FSType = fstype
			a := w.agent(t, cfg, Deps{})
			size := 96
			if fstype == "xfs" {
				size = 320 // mkfs.xfs's smallest
			}
			fail := failingVolume(t, a, fstype, size)
			w.put("small", gen("small", 1000), 0o644)
			var r Report
			if err := a.Apply(context.Background(), 0, false, &r); err != nil || r.Seq != 1 {
				t.Fatalf("first apply: seq %d, %v", r.Seq, err)
			}
			fail(2)
			w.put("big", gen("big", 48<<20), 0o644)
			r = Report{}
			err := a.Apply(context.Background(), 0, false, &r)
			code := finish(&r, err)
			t.Logf("report: %+v", r)
			if err == nil {
				t.Fatalf("apply of 48 MiB onto a disk with 2 MiB of backing store succeeded (seq %d, watermark %d)", r.Seq, watermark(t, cfg.MountPath))
			}
			if code != ExitRetryable || !strings.Contains(r.Error, "entry 2") {
				t.Fatalf("exit %d, report error %q: want a retryable failure of entry 2", code, r.Error)
			}
			if r.Seq != 1 {
				t.Fatalf("report says seq %d, want 1", r.Seq)
			}
			if got := watermark(t, cfg.MountPath); got != 1 {
				t.Fatalf("watermark moved to %d past content that is not on the disk", got)
			}
		})
	}
}
