package events

import (
	"strings"
	"testing"
)

func TestManifestV2Rules(t *testing.T) {
	file := func(p string) ManifestEntry {
		return ManifestEntry{Path: p, Type: TypeFile, SHA256: okSHA, Size: 1, Mode: 0o644, Mtime: 1700000000}
	}
	dir := func(p string, mode uint32) ManifestEntry { return ManifestEntry{Path: p, Type: TypeDir, Mode: mode} }
	link := func(p, target string) ManifestEntry { return ManifestEntry{Path: p, Type: TypeLink, Target: target} }
	v2 := func(es ...ManifestEntry) Manifest { return Manifest{Version: ManifestVersion, Entries: es} }
	for _, c := range []struct {
		name string
		m    Manifest
		want string // "" = valid
	}{
		{"tree", v2(dir(".", 0o755), dir("cache", 0o700), dir("empty", 0o755), file("a/b"), link("latest", "a/b"), link("a/up", "../cache")), ""},
		{"dir under an implied dir", v2(dir("x/y/z", 0o750)), ""},
		{"dangling in-tree link", v2(link("gone", "nothing/here")), ""},
		{"link loop", v2(link("a", "b"), link("b", "a")), ""},
		{"self loop", v2(link("a", "a")), ""},
		{"link to the root", v2(dir("d", 0o755), link("d/top", "..")), ""},
		{"absolute link", v2(link("etc", "/etc/passwd")), `entries[0].target: must be relative`},
		{"escaping link", v2(link("x", "../outside")), `of x leads outside the pushed tree`},
		{"deep escape", v2(file("a/b/c"), link("a/b/l", "../../../x")), `leads outside`},
		{"escape through a link to the root", v2(link("top", "."), link("d/x", "../top/..")), `of d/x leads outside`},
		{"escape through a link chain", v2(link("a/up", ".."), link("b", "a/up/a/up/..")), `of b leads outside`},
		{"into .volsd", v2(link("s", ".volsd/state.json")), `leads into .volsd`},
		{"empty target", v2(link("x", "")), "target: must not be empty"},
		{"control byte target", v2(link("x", "a\x01")), "control"},
		{"no type", v2(ManifestEntry{Path: "a", SHA256: okSHA, Size: 1, Mode: 0o644}), "entries[0].type: is required"},
		{"bad type", v2(ManifestEntry{Path: "a", Type: "fifo"}), "must be file, dir or link"},
		{"dir with content", v2(ManifestEntry{Path: "a", Type: TypeDir, SHA256: okSHA}), "a dir has only"},
		{"dir setgid", v2(dir("a", 0o2755)), "entries[0].mode"},
		{"link with mode", v2(ManifestEntry{Path: "a", Type: TypeLink, Target: "b", Mode: 0o777}), "a link has only"},
		{"file with target", v2(ManifestEntry{Path: "a", Type: TypeFile, SHA256: okSHA, Target: "b"}), "target: must be absent"},
		{"mtime negative", v2(ManifestEntry{Path: "a", Type: TypeFile, SHA256: okSHA, Mtime: -1}), "entries[0].mtime"},
		{"mtime too late", v2(ManifestEntry{Path: "a", Type: TypeFile, SHA256: okSHA, Mtime: MaxMtime}), "entries[0].mtime"},
		{"root as a file", v2(ManifestEntry{Path: ".", Type: TypeFile, SHA256: okSHA}), "entries[0].path"},
		{"root as a link", v2(link(".", "a")), "entries[0].path"},
		{"link is a dir", v2(link("a", "b"), file("a/x")), `"a" is a link and also the directory of "a/x"`},
		{"link is a dir, unsorted", v2(file("a/x"), link("a", "b")), `"a" is a link and also the directory of "a/x"`},
		{"file is a dir", v2(file("a"), dir("a/x", 0o755)), `"a" is a file and also the directory of "a/x"`},
		{"dir and file clash", v2(dir("a", 0o755), file("a")), "appears twice"},
		{"dir and link clash, sorted", v2(dir("a", 0o755), link("a", "b")), "twice"},
		{"v1 with a type", Manifest{Version: ManifestV1, Entries: []ManifestEntry{file("a")}}, "entries[0].type: type, mtime and target are fields of manifest version 2"},
		{"v1 still valid", Manifest{Version: ManifestV1, Entries: []ManifestEntry{{Path: "a", SHA256: okSHA, Size: 1, Mode: 0o644}}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.m.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
		})
	}
}

// A journal may hold v1 and v2 manifests side by side: both parse, by the
// fast path and by the decoder.
func TestParseManifestReadsV1AndV2(t *testing.T) {
	for _, raw := range []string{
		`{"version":1,"entries":[{"path":"a","sha256":"` + okSHA + `","size":1,"mode":420}]}`,
		`{"version": 1, "entries": [{"path": "a", "sha256": "` + okSHA + `", "size": 1, "mode": 420}]}`,
		`{"version":2,"entries":[{"path":"a","type":"file","sha256":"` + okSHA + `","size":1,"mode":420,"mtime":5},{"path":"d","type":"dir","mode":448},{"path":"l","type":"link","target":"a"}]}`,
		`{"version": 2, "entries": [{"type": "link", "path": "l", "target": "a"}, {"path": "a", "type": "file", "sha256": "` + okSHA + `", "size": 1, "mode": 420}]}`,
	} {
		m, err := ParseManifestBytes([]byte(raw))
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		for _, e := range m.Entries {
			if e.Path == "a" && (e.Kind() != TypeFile || e.Blob().SHA256 != okSHA) {
				t.Errorf("%s: file a read as %+v", raw, e)
			}
		}
	}
	if _, err := ParseManifestBytes([]byte(`{"version":2,"entries":[{"path":"l","type":"link","target":"/etc"}]}`)); err == nil || !strings.Contains(err.Error(), "relative") {
		t.Errorf("absolute link parsed: %v", err)
	}
}
