package harness

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// TreeSpec describes a generated content tree.
type TreeSpec struct {
	Files      int   // number of files, the big one included
	TotalBytes int64 // about this many bytes in all
	BigFile    int64 // size of the one big file
	Seed       uint64
}

// TreeStats says what GenerateTree wrote.
type TreeStats struct {
	Files int
	Dirs  int
	Bytes int64
}

// GenerateTree writes a deterministic tree under dir: a web site shape
// (courses/<n>/lessons, assets/css|js|img, media/) with one big media
// file, the rest spread over the other files with sizes from a few bytes to
// a few MiB, and a few executable scripts.
func GenerateTree(dir string, spec TreeSpec) (TreeStats, error) {
	rng := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x9e3779b97f4a7c15))
	var st TreeStats
	dirs := map[string]bool{}
	write := func(rel string, size int64, mode fs.FileMode) error {
		p := filepath.Join(dir, rel)
		if !dirs[filepath.Dir(rel)] {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			dirs[filepath.Dir(rel)] = true
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
		if err != nil {
			return err
		}
		src := rand.NewChaCha8(seedOf(spec.Seed, rel))
		w := bufio.NewWriterSize(f, 1<<20)
		if _, err := io.CopyN(w, src, size); err != nil {
			f.Close()
			return err
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			f.Close()
			return err
		}
		st.Files++
		st.Bytes += size
		return f.Close()
	}
	if spec.Files < 2 {
		return st, fmt.Errorf("tree spec: at least 2 files")
	}
	if err := write("media/lecture-01.mp4", spec.BigFile, 0o644); err != nil {
		return st, err
	}
	rest := spec.TotalBytes - spec.BigFile
	n := spec.Files - 1
	// Sizes: log-uniform weights, scaled so they sum to rest.
	weights := make([]float64, n)
	var sum float64
	for i := range weights {
		weights[i] = float64(int64(1) << rng.IntN(14))
		sum += weights[i]
	}
	kinds := []struct {
		dir, ext string
		mode     fs.FileMode
	}{
		{"assets/css", ".css", 0o644}, {"assets/js", ".js", 0o644}, {"assets/img", ".png", 0o644},
		{"courses/%02d/lessons", ".html", 0o644}, {"courses/%02d/downloads", ".pdf", 0o644},
		{"media/clips", ".webm", 0o644}, {"tools", ".sh", 0o755},
	}
	for i := 0; i < n; i++ {
		k := kinds[i%len(kinds)]
		d := k.dir
		if strings.Contains(d, "%") {
			d = fmt.Sprintf(d, rng.IntN(12))
		}
		size := int64(weights[i] / sum * float64(rest))
		if err := write(fmt.Sprintf("%s/file-%04d%s", d, i, k.ext), size, k.mode); err != nil {
			return st, err
		}
	}
	st.Dirs = len(dirs)
	return st, nil
}

func seedOf(seed uint64, name string) [32]byte {
	var s [32]byte
	h := sha256.Sum256([]byte(fmt.Sprintf("%d/%s", seed, name)))
	copy(s[:], h[:])
	return s
}

// FileDigest is one regular file of a tree.
type FileDigest struct {
	SHA256 string
	Size   int64
	Mode   fs.FileMode
}

// Digest hashes every regular file under dir (paths relative, "/"
// separated). The agent's .volsd directory and lost+found at the top are
// not content. Symlinks, devices and other non-regular files are reported
// as errors: content trees hold only files and directories.
func Digest(dir string) (map[string]FileDigest, error) {
	type job struct{ rel, path string }
	var jobs []job
	out := map[string]FileDigest{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".volsd" || rel == "lost+found" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (%s)", rel, d.Type())
		}
		jobs = append(jobs, job{rel, p})
		return nil
	})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var digests errgroup.Group
	digests.SetLimit(4)
	for _, j := range jobs {
		digests.Go(func() error {
			d, err := digestFile(j.path)
			mu.Lock()
			out[j.rel] = d
			mu.Unlock()
			return err
		})
	}
	return out, digests.Wait()
}

func digestFile(p string) (FileDigest, error) {
	f, err := os.Open(p)
	if err != nil {
		return FileDigest{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return FileDigest{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return FileDigest{}, err
	}
	return FileDigest{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, Mode: st.Mode().Perm()}, nil
}

// DiffTrees lists how got differs from want (missing, extra, content or
// mode), sorted; empty means identical.
func DiffTrees(want, got map[string]FileDigest) []string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+p)
		case g.SHA256 != w.SHA256 || g.Size != w.Size:
			diffs = append(diffs, fmt.Sprintf("content of %s differs (%d bytes %s…, want %d bytes %s…)", p, g.Size, g.SHA256[:12], w.Size, w.SHA256[:12]))
		case g.Mode != w.Mode:
			diffs = append(diffs, fmt.Sprintf("mode of %s is %v, want %v", p, g.Mode, w.Mode))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "unexpected "+p)
		}
	}
	sort.Strings(diffs)
	return diffs
}

// TreeBytes sums the sizes of a digest.
func TreeBytes(d map[string]FileDigest) int64 {
	var n int64
	for _, f := range d {
		n += f.Size
	}
	return n
}
