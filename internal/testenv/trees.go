package testenv

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
