package e2e

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/oracle"
)

// fullTrees runs TestRealTrees on the whole of the real trees (the Go
// distribution's src, about 11,500 files, and /usr/share/doc); CI runs a
// bounded part of each (realTreeFiles files) so that it stays fast.
var (
	fullTrees     = flag.Bool("volsd.full-trees", false, "TestRealTrees: push the whole Go src and /usr/share/doc trees (CI pushes -volsd.tree-files of each)")
	realTreeFiles = flag.Int("volsd.tree-files", 500, "TestRealTrees: files copied from each real tree when -volsd.full-trees is not set")
	bigFileBytes  = flag.Int64("volsd.big-file", 1<<30+4096, "TestRealTrees: size of the file larger than 1 GiB")
)

// Real trees that nobody on the project wrote.
const (
	goSrcTree = "/usr/local/go/src"
	docTree   = "/usr/share/doc"
)

// TestRealTrees pushes real trees to two instances, then scales out, and
// after each push compares every instance with the pushed tree by an
// oracle that is not volsd's code: `rsync -rlpcni --delete SRC/ DST/`
// (dry run, checksums) must print nothing; file mtimes (whole seconds)
// must be the source's. Trees: the Go distribution's src and a delta of it
// (1% rewritten, some chmod, a directory deleted, files added), odd names
// with empty directories and mixed modes, /usr/share/doc with its relative
// symlinks, a file larger than 1 GiB. A tree with an absolute or escaping
// link is refused with the path and target named, and nothing uploaded.
func TestRealTrees(t *testing.T) {
	t.Parallel()
	for _, tree := range []string{goSrcTree, docTree} {
		if _, err := os.Stat(tree); err != nil {
			t.Fatalf("real tree %s: %v (the machine image has the Go distribution and Debian's docs)", tree, err)
		}
	}
	c := startCluster(t, harness.Options{
		IdlePerAZ: 1, VolumeSizeGiB: 4, ReleasePolicy: "delete",
		QueueVisibility: 60 * time.Second, ApplyInterval: 0,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	outputs, err := c.OutputsFile()
	if err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (harness.CLIResult, error) {
		return c.CLI(ctx, append([]string{args[0], "--outputs", outputs}, args[1:]...)...)
	}
	if _, err := c.Schedule(ctx, "reconcile"); err != nil {
		t.Fatal(err)
	}
	launch(ctx, t, c, 2)

	limit := *realTreeFiles
	if *fullTrees {
		limit = 0
	}
	work := filepath.Join(c.WorkDir(), "trees")
	pushed := map[string]string{} // DEST → local tree
	push := func(local, dest string, flags ...string) {
		t.Helper()
		begin := time.Now()
		if _, err := cli(append(append([]string{"push", "--wait", "--timeout", "10m"}, flags...), local, dest)...); err != nil {
			t.Fatal(err)
		}
		pushed[dest] = local
		t.Logf("pushed %s to %s in %.1f s", local, dest, time.Since(begin).Seconds())
		verifyFleet(t, c, pushed)
	}

	// The Go distribution's src.
	gosrc := filepath.Join(work, "gosrc")
	n := copyTree(t, goSrcTree, gosrc, limit)
	if *fullTrees && n < 10000 {
		t.Fatalf("%s has %d files; the full-size case needs at least 10,000", goSrcTree, n)
	}
	t.Logf("tree %s: %d files (limit %d; -volsd.full-trees pushes all)", goSrcTree, n, limit)
	push(gosrc, "go")

	// A delta: 1% rewritten, some chmod, a directory deleted, files added
	// (the deletion is meant: past the guard).
	deltaTree(t, gosrc)
	push(gosrc, "go", "--allow-delete")

	// Odd names, empty directories, mixed modes.
	odd := filepath.Join(work, "odd")
	oddTree(t, odd)
	push(odd, "odd")

	// A real tree with relative symlinks. Debian's doc tree also has
	// links that lead out of it (python3/_static/*.js ->
	// ../../../javascript/…): refused as it is, naming one; pushed without
	// them, its in-tree links are carried.
	doc := filepath.Join(work, "doc")
	n = copyTree(t, docTree, doc, limit)
	links, escaping := treeLinks(t, doc)
	if len(links) == 0 {
		t.Fatalf("%s copied without symlinks", docTree)
	}
	if len(escaping) > 0 {
		r, err := cli("push", "--wait", doc, "doc")
		if err == nil || r.ExitCode != 2 || !strings.Contains(r.Stderr, "leads outside the pushed tree") {
			t.Fatalf("push of %s with %d links leading out of it: exit %d, %v: %s", docTree, len(escaping), r.ExitCode, err, r.Stderr)
		}
		for _, p := range escaping {
			if err := os.Remove(filepath.Join(doc, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("tree %s: %d files, %d relative symlinks inside it carried, %d leading out of it refused then removed", docTree, n, len(links)-len(escaping), len(escaping))
	push(doc, "doc")

	// Absolute and escaping links: refused, nothing uploaded.
	for name, target := range map[string]string{"absolute": "/etc/passwd", "escaping": "../../outside"} {
		bad := filepath.Join(work, "bad-"+name)
		writeFile(t, filepath.Join(bad, "sub", "unique-"+name+".txt"), "content that is in no other tree "+name, 0o644)
		if err := os.Symlink(target, filepath.Join(bad, "sub", "link")); err != nil {
			t.Fatal(err)
		}
		before := originObjects(ctx, t, c)
		r, err := cli("push", "--wait", bad, "bad")
		if err == nil || r.ExitCode != 2 {
			t.Fatalf("push of a tree with an %s link: exit %d, %v", name, r.ExitCode, err)
		}
		if !strings.Contains(r.Stderr, filepath.Join(bad, "sub", "link")) || !strings.Contains(r.Stderr, target) {
			t.Errorf("the refusal does not name the link %s and its target %q: %s", filepath.Join(bad, "sub", "link"), target, r.Stderr)
		}
		if after := originObjects(ctx, t, c); after != before {
			t.Errorf("a refused push uploaded %d objects", after-before)
		}
	}

	// A file larger than 1 GiB.
	big := filepath.Join(work, "big")
	bigFile(t, filepath.Join(big, "media", "big.bin"), *bigFileBytes)
	push(big, "big")

	// Scale out: the new instance holds every tree.
	launch(ctx, t, c, 1)
	verifyFleet(t, c, pushed)
}

// pusher returns the trees pushed so far (DEST → local directory, for
// verifyFleet) and a push that runs `volsd push --wait` with flags.
func pusher(ctx context.Context, t *testing.T, c *harness.Cluster) (map[string]string, func(local, dest string, flags ...string)) {
	t.Helper()
	outputs, err := c.OutputsFile()
	if err != nil {
		t.Fatal(err)
	}
	pushed := map[string]string{}
	return pushed, func(local, dest string, flags ...string) {
		t.Helper()
		args := append([]string{"push", "--outputs", outputs, "--wait", "--timeout", "2m"}, flags...)
		if _, err := c.CLI(ctx, append(args, local, dest)...); err != nil {
			t.Fatal(err)
		}
		pushed[dest] = local
	}
}

func launch(ctx context.Context, t *testing.T, c *harness.Cluster, n int) {
	t.Helper()
	ls, err := c.Group.ScaleOut(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := c.Group.WaitInService(ctx, ls)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Result != "CONTINUE" {
			t.Fatalf("launch of %s: %s", r.InstanceID, r.Result)
		}
	}
}

// verifyFleet runs the oracle for every pushed tree on every instance in
// service, and compares file mtimes with the source's.
func verifyFleet(t *testing.T, c *harness.Cluster, pushed map[string]string) {
	t.Helper()
	ids := c.Group.InService()
	if len(ids) == 0 {
		t.Fatal("no instance in service")
	}
	for _, id := range ids {
		in, ok := c.Fleet.Get(id)
		if !ok {
			t.Fatalf("instance %s is in service but not running", id)
		}
		for dest, local := range pushed {
			dst := filepath.Join(in.Mount, dest)
			diffs, err := oracle.RsyncDiffs(local, dst)
			if err != nil {
				t.Fatalf("rsync oracle on %s: %v", id, err)
			}
			if len(diffs) > 0 {
				t.Fatalf("instance %s: %s differs from %s (rsync -rlpcni --delete):\n  %s", id, dst, local, oracle.Summary(diffs, 10))
			}
			d, err := oracle.MtimeDiffs(local, dst, 5)
			if err != nil {
				t.Fatal(err)
			}
			if len(d) > 0 {
				t.Fatalf("instance %s: mtimes under %s differ from the source: %s", id, dst, strings.Join(d, "; "))
			}
		}
	}
	t.Logf("oracle: %d trees identical on %d instances", len(pushed), len(ids))
}

// copyTree copies src to dst with modes and mtimes: every directory and
// symlink, and regular files up to limit (0: all). It returns the files
// copied.
func copyTree(t *testing.T, src, dst string, limit int) int {
	t.Helper()
	n := 0
	var dirs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			dirs = append(dirs, rel)
			return os.MkdirAll(to, 0o755)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case fi.Mode().IsRegular():
			if limit > 0 && n >= limit {
				return nil
			}
			n++
			return copyFile(p, to, fi)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Directory modes last (a 0555 directory would refuse its files).
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, err := os.Stat(filepath.Join(src, dirs[i]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dst, dirs[i]), fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func copyFile(src, dst string, fi fs.FileInfo) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Chmod(dst, fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

// deltaTree changes a tree as a release does: 1% of the files rewritten
// (new content, new mtime), some chmod, one directory deleted, files
// added.
func deltaTree(t *testing.T, root string) {
	t.Helper()
	var files, dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && p != root:
			dirs = append(dirs, p)
		case d.Type().IsRegular():
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	rewritten, chmodded := 0, 0
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, f := range files {
		switch {
		case i%100 == 7:
			writeFile(t, f, fmt.Sprintf("rewritten %d\n", i), 0o644)
			if err := os.Chtimes(f, when, when); err != nil {
				t.Fatal(err)
			}
			rewritten++
		case i%97 == 3:
			if err := os.Chmod(f, 0o600); err != nil {
				t.Fatal(err)
			}
			chmodded++
		}
	}
	// Delete the deepest directory with files, add files and a new one.
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	deleted := dirs[0]
	if err := os.RemoveAll(deleted); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		writeFile(t, filepath.Join(root, "added", fmt.Sprintf("new%02d.go", i)), fmt.Sprintf("package added // %d\n", i), 0o644)
	}
	if err := os.Chmod(filepath.Join(root, "added"), 0o750); err != nil {
		t.Fatal(err)
	}
	t.Logf("delta: %d of %d files rewritten, %d chmod, %s deleted, 20 files added", rewritten, len(files), chmodded, deleted)
}

// oddTree writes names that break naive tools, empty directories and
// mixed modes.
func oddTree(t *testing.T, root string) {
	t.Helper()
	names := []string{"unicodé ☃ 日本.txt", "with space.html", "hash#frag", "what?.css", "star*.js", `quote"d`, "single'quote", "back\\slash", "-leading-dash", " leading space", "trailing space ", strings.Repeat("n", 255)}
	for i, n := range names {
		writeFile(t, filepath.Join(root, "names", n), fmt.Sprintf("odd %d\n", i), []os.FileMode{0o644, 0o600, 0o755, 0o640, 0o444}[i%5])
	}
	deep := root
	for i := range 40 {
		deep = filepath.Join(deep, fmt.Sprintf("l%02d", i))
	}
	writeFile(t, filepath.Join(deep, "bottom.txt"), "40 levels down\n", 0o644)
	for dir, mode := range map[string]os.FileMode{"uploads/empty-dir": 0o755, "cache": 0o700, "private/empty": 0o750, "public": 0o755, "readonly": 0o555} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.Chmod(filepath.Join(root, dir), mode); err != nil {
				t.Fatal(err)
			}
		}()
	}
	writeFile(t, filepath.Join(root, "public", "exec.sh"), "#!/bin/sh\n", 0o755)
}

func writeFile(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// bigFile writes size bytes that do not repeat (a counter block hashed
// per MiB), dense: no hole, so every byte is carried.
func bigFile(t *testing.T, p string, size int64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(block)) {
		h := sha256.Sum256(fmt.Append(nil, off))
		for i := 0; i < len(block); i += len(h) {
			copy(block[i:], h[:])
			h[0]++
		}
		n := min(int64(len(block)), size-off)
		if _, err := f.Write(block[:n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// treeLinks returns the tree's symlinks (path → target) and those that
// lead out of it.
func treeLinks(t *testing.T, root string) (map[string]string, []string) {
	t.Helper()
	links := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		target, err := os.Readlink(p)
		rel, _ := filepath.Rel(root, p)
		links[rel] = target
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var escaping []string
	for p, target := range links {
		if strings.HasPrefix(target, "/") || events.LinkEscapes(p, target, links) != "" {
			escaping = append(escaping, p)
		}
	}
	sort.Strings(escaping)
	return links, escaping
}

// originObjects counts the objects in the origin bucket.
func originObjects(ctx context.Context, t *testing.T, c *harness.Cluster) int {
	t.Helper()
	n := 0
	p := s3.NewListObjectsV2Paginator(c.S3, &s3.ListObjectsV2Input{Bucket: aws.String(c.Names.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Contents)
	}
	return n
}
