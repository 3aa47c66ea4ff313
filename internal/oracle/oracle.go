// Package oracle compares a volume with the tree that was pushed to it by
// means that are not volsd's code: rsync's own dry run with checksums, and
// the file system's mtimes. e2e tests, the demo's story and agent tests
// use it.
package oracle

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// MtimeDiffs lists, up to max, the regular files of src whose mtime in
// whole seconds differs at dst (or that dst lacks), and those at dst whose
// mtime is not whole seconds: volsd places source mtimes in whole seconds.
func MtimeDiffs(src, dst string, max int) ([]string, error) {
	var diffs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || len(diffs) >= max {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		a, err := os.Lstat(p)
		if err != nil {
			return err
		}
		b, err := os.Lstat(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		if a.ModTime().Unix() != b.ModTime().Unix() || b.ModTime().Nanosecond() != 0 {
			diffs = append(diffs, fmt.Sprintf("%s: %s, source %s", rel, b.ModTime().UTC().Format(time.RFC3339Nano), a.ModTime().UTC().Format(time.RFC3339)))
		}
		return nil
	})
	return diffs, err
}

// RsyncDiffs lists what `rsync -rlpcni --delete SRC/ DST/` would change to
// make dst equal to src: a dry run comparing checksums, permissions,
// symlinks and which paths exist, by rsync's code, not volsd's. Paths
// matching an exclude pattern (rsync's syntax, e.g. "/.volsd") are left out
// on both sides. Nothing listed means the trees are equal.
func RsyncDiffs(src, dst string, exclude ...string) ([]string, error) {
	args := []string{"-rlpcni", "--delete"}
	for _, e := range exclude {
		args = append(args, "--exclude="+e)
	}
	args = append(args, strings.TrimSuffix(src, "/")+"/", strings.TrimSuffix(dst, "/")+"/")
	out, err := exec.Command("rsync", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("rsync %s: %v: %s", strings.Join(args, " "), err, out)
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

// Summary joins up to max lines of diffs, naming how many more there are.
func Summary(diffs []string, max int) string {
	if len(diffs) > max {
		diffs = append(diffs[:max:max], fmt.Sprintf("… and %d more", len(diffs)-max))
	}
	return strings.Join(diffs, "\n  ")
}
