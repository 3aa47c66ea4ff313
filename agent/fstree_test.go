package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The content record is trusted only when it is well formed and still
// matches the file's size and mtime; anything else means "hash the file".
func TestReadContentTrustsOnlyAMatchingRecord(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	good := content{SHA256: sha, Size: 5, Mtime: st.Mtim.Nano()}
	for _, tc := range []struct {
		name, rec string
		ok        bool
	}{
		{"as written", string(good.xattr()), true},
		{"other size", string(content{SHA256: sha, Size: 6, Mtime: good.Mtime}.xattr()), false},
		{"other mtime", string(content{SHA256: sha, Size: 5, Mtime: good.Mtime + 1}.xattr()), false},
		{"other version", strings.Replace(string(good.xattr()), "v1", "v2", 1), false},
		{"short sha", string(content{SHA256: sha[:63], Size: 5, Mtime: good.Mtime}.xattr()), false},
		{"upper-case sha", string(content{SHA256: strings.ToUpper(sha), Size: 5, Mtime: good.Mtime}.xattr()), false},
		{"extra field", string(good.xattr()) + " 7", false},
		{"missing field", "v1 " + sha + " 5", false},
		{"empty", "", false},
		{"garbage", "\x00\xff junk", false},
	} {
		if err := unix.Lsetxattr(p, contentXattr, []byte(tc.rec), 0); err != nil {
			if tc.rec == "" {
				continue // some filesystems refuse empty values
			}
			t.Fatal(err)
		}
		if err := unix.Lstat(p, &st); err != nil { // the xattr does not move the mtime
			t.Fatal(err)
		}
		c, ok := readContent(p, &st)
		if ok != tc.ok || ok && c != good {
			t.Errorf("%s (%q): got %+v, %v; want ok=%v", tc.name, tc.rec, c, ok, tc.ok)
		}
	}
}
