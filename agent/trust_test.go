package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/internal/testenv"
)

// TestForgedContentRecordsDoNotVouch: whoever can write a served file
// changes its bytes (same size, mtime put back or the record rewritten to
// the new mtime); the next sync of the same content must find the change
// and put the right bytes back. A user.* record (what agents before
// wrote, and what any writer of the file can set) never vouches, nor does
// a record on a file group or others may write.
func TestForgedContentRecordsDoNotVouch(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 64)
	orig := gen("served", 4096)
	files := map[string]file{"private": {orig, 0o644}, "shared": {orig, 0o666}}
	w.sync("site", files)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	evil := gen("evil", 4096)
	for _, name := range []string{"private", "shared"} {
		p := filepath.Join(cfg.MountPath, "site", name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, evil, 0); err != nil {
			t.Fatal(err)
		}
		if name == "private" {
			// A forged user.* record matching the new mtime, as the file's
			// writer (had it been an old agent's record) could set it.
			var now unix.Stat_t
			if err := unix.Lstat(p, &now); err != nil {
				t.Fatal(err)
			}
			rec := content{SHA256: sum(orig), Size: int64(len(orig)), Mtime: now.Mtim.Nano()}
			if err := unix.Lsetxattr(p, "user.volsd.content", rec.xattr(), 0); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// The shared file's mtime put back: its trusted record matches
		// size and mtime again, but others may write it.
		if err := os.Chtimes(p, time.Unix(0, st.Mtim.Nano()), time.Unix(0, st.Mtim.Nano())); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(cfg.MountPath, stateDirName, indexFile)) // the index alone would see the ctimes
	w.sync("site", files)
	r = Report{}
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, cfg.MountPath, w.model)
}

// TestOldUserRecordsAreReadSafely: a file placed by an older agent has
// only a user.* record; the walk hashes it (right content: kept and given
// a trusted record) instead of trusting it.
func TestOldUserRecordsAreReadSafely(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	data := gen("old", 100)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	wrong := content{SHA256: sum(gen("other", 100)), Size: 100, Mtime: st.Mtim.Nano()}
	if err := unix.Lsetxattr(p, "user.volsd.content", wrong.xattr(), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := readContent(p, &st); ok {
		t.Fatal("a user.* record vouched")
	}
	if liveSHA256(p, &st, wrong.SHA256, 100) {
		t.Fatal("the old record's content was believed")
	}
	if !liveSHA256(p, &st, sum(data), 100) {
		t.Fatal("the right content was not recognised by hashing")
	}
	if c, ok := readContent(p, &st); !ok || c.SHA256 != sum(data) {
		t.Fatalf("no trusted record after hashing: %+v %v", c, ok)
	}
}
