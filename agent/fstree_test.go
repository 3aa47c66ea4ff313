package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
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

func TestFoldSmallLinks(t *testing.T) {
	want := map[string]events.Blob{
		"a/changed": {Size: 10}, "a/new": {Size: 1 << 20}, "b/new": {Size: 2 << 20}, "big": {Size: FoldLinkBytes},
	}
	copies, links := foldSmallLinks([]string{"a/changed"}, []string{"a/new", "b/new", "site"}, want)
	if !slices.Equal(copies, []string{"a/changed", "a/new", "b/new"}) || !slices.Equal(links, []string{"site"}) {
		t.Errorf("small new files: copies %v, links %v", copies, links)
	}
	copies, links = foldSmallLinks([]string{"a/changed"}, []string{"a/new", "big"}, want)
	if !slices.Equal(copies, []string{"a/changed"}) || !slices.Equal(links, []string{"a/new", "big"}) {
		t.Errorf("over %d bytes: copies %v, links %v", FoldLinkBytes, copies, links)
	}
	in := []string{"a/changed"}
	copies, _ = foldSmallLinks(in[:1:1], []string{"a/new"}, want)
	if len(in) != 1 || in[0] != "a/changed" || len(copies) != 2 {
		t.Errorf("the plan's own slice changed: %v / %v", in, copies)
	}
}
