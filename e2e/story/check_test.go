package story

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/testenv"
)

// TestVerifyInstanceIsTheRsyncOracle shows that the story's check of a
// volume finds what the rsync oracle finds and a digest of regular files
// would not: an extra empty directory, a directory mode, a symlink in place
// of a file's copy, a wrong mtime. Each is made on a tmpfs mounted as the
// instance's volume, holding a copy of the pushed tree.
func TestVerifyInstanceIsTheRsyncOracle(t *testing.T) {
	testenv.RequireRoot(t, "mounting a tmpfs as the volume")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	for _, d := range []string{"assets/css", "empty"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(root, p, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(src, "index.html", "<p>home</p>\n")
	write(src, "assets/css/site.css", "body{}\n")
	old := time.Unix(1700000000, 0)
	for _, p := range []string{"index.html", "assets/css/site.css"} {
		if err := os.Chtimes(filepath.Join(src, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
	want, err := Pushed(work, src, Remote)
	if err != nil {
		t.Fatal(err)
	}
	if want.Len() != 2 {
		t.Fatalf("expected %d files, want 2", want.Len())
	}

	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	in := &harness.Instance{ID: "i-0123456789abcdef0", Mount: mnt}
	site := filepath.Join(mnt, Remote)
	reset := func() {
		t.Helper()
		if err := os.RemoveAll(site); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", src, site).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
		// The agent's state is not content.
		if err := os.MkdirAll(filepath.Join(mnt, ".volsd"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	reset()
	if err := VerifyInstance(in, want); err != nil {
		t.Fatalf("an exact copy: %v", err)
	}

	for _, c := range []struct {
		name, wantMsg string
		damage        func()
	}{
		{"an extra empty directory", "stray", func() {
			if err := os.Mkdir(filepath.Join(site, "stray"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"a missing empty directory", "empty", func() {
			if err := os.Remove(filepath.Join(site, "empty")); err != nil {
				t.Fatal(err)
			}
		}},
		{"a directory's mode", "assets", func() {
			if err := os.Chmod(filepath.Join(site, "assets"), 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{"a symlink instead of a file", "index.html", func() {
			p := filepath.Join(site, "index.html")
			if err := os.Rename(p, filepath.Join(site, "home.html")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("home.html", p); err != nil {
				t.Fatal(err)
			}
		}},
		{"a wrong mtime", "site.css", func() {
			now := time.Now()
			if err := os.Chtimes(filepath.Join(site, "assets/css/site.css"), now, now); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		reset()
		c.damage()
		err := VerifyInstance(in, want)
		if err == nil || !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("%s: VerifyInstance = %v; want an error naming %q", c.name, err, c.wantMsg)
		}
	}

	// Values stay true: the expectation before a delete still wants the
	// deleted tree, the one after does not.
	reset()
	after, err := want.Without(Remote + "/assets")
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyInstance(in, want); err != nil {
		t.Fatalf("the older expectation changed with Without: %v", err)
	}
	if err := VerifyInstance(in, after); err == nil {
		t.Fatal("a volume still holding the deleted directory passed the check after the delete")
	}
	if err := os.RemoveAll(filepath.Join(site, "assets")); err != nil {
		t.Fatal(err)
	}
	if err := VerifyInstance(in, after); err != nil {
		t.Fatalf("after the delete: %v", err)
	}
}
