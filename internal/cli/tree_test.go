package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
)

// mkTree makes files (path → content), dirs (path → mode) and links (path
// → target) under a new directory.
func mkTree(t *testing.T, files map[string]string, dirs map[string]os.FileMode, links map[string]string) string {
	t.Helper()
	d := t.TempDir()
	for p, mode := range dirs {
		if err := os.MkdirAll(filepath.Join(d, p), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(filepath.Join(d, p), mode) // after the files inside it
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(d, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(d, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(d, p)); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// manifestOfTree scans d and returns the manifest push would send.
func manifestOfTree(t *testing.T, d string, copyLinks bool) (events.Manifest, error) {
	t.Helper()
	_, files, other, err := scan(d, copyLinks)
	if err != nil {
		return events.Manifest{}, err
	}
	for i := range files {
		files[i].sha256 = strings.Repeat("0", 64)
	}
	_, raw, _, err := buildManifest(files, other)
	if err != nil {
		return events.Manifest{}, err
	}
	return events.ParseManifestBytes(raw)
}

func byPath(m events.Manifest) map[string]events.ManifestEntry {
	out := map[string]events.ManifestEntry{}
	for _, e := range m.Entries {
		out[e.Path] = e
	}
	return out
}

func TestScanCarriesDirsModesMtimesAndInTreeLinks(t *testing.T) {
	d := mkTree(t,
		map[string]string{"v1.2.3/index.html": "x", "home.html": "h", "assets/app.js": "js"},
		map[string]os.FileMode{"uploads/empty-dir": 0o755, "cache": 0o700, "v1.2.3": 0o750},
		map[string]string{"latest": "v1.2.3", "index.html": "home.html", "v1.2.3/assets": "../assets", "gone": "nothing", "loop-a": "loop-b", "loop-b": "loop-a"})
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 890000000, time.UTC)
	if err := os.Chtimes(filepath.Join(d, "home.html"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	m, err := manifestOfTree(t, d, false)
	if err != nil {
		t.Fatal(err)
	}
	got := byPath(m)
	for p, want := range map[string]events.ManifestEntry{
		".":                 {Path: ".", Type: events.TypeDir, Mode: 0o755},
		"uploads":           {Path: "uploads", Type: events.TypeDir, Mode: 0o755},
		"uploads/empty-dir": {Path: "uploads/empty-dir", Type: events.TypeDir, Mode: 0o755},
		"cache":             {Path: "cache", Type: events.TypeDir, Mode: 0o700},
		"v1.2.3":            {Path: "v1.2.3", Type: events.TypeDir, Mode: 0o750},
		"latest":            {Path: "latest", Type: events.TypeLink, Target: "v1.2.3"},
		"index.html":        {Path: "index.html", Type: events.TypeLink, Target: "home.html"},
		"v1.2.3/assets":     {Path: "v1.2.3/assets", Type: events.TypeLink, Target: "../assets"},
		"gone":              {Path: "gone", Type: events.TypeLink, Target: "nothing"}, // dangling, in the tree: carried as rsync -a does
		"loop-a":            {Path: "loop-a", Type: events.TypeLink, Target: "loop-b"},
	} {
		if got[p] != want {
			t.Errorf("%s: got %+v, want %+v", p, got[p], want)
		}
	}
	if f := got["home.html"]; f.Type != events.TypeFile || f.Mtime != mtime.Unix() || f.Mode != 0o644 || f.Size != 1 {
		t.Errorf("home.html: %+v (want mtime %d, whole seconds)", f, mtime.Unix())
	}
	if len(m.Entries) != 15 {
		t.Errorf("%d entries, want 15: %+v", len(m.Entries), m.Entries)
	}
}

func TestScanRefusesLinksLeadingOutNamingPathAndTarget(t *testing.T) {
	for name, links := range map[string]map[string]string{
		"absolute":           {"a/passwd": "/etc/passwd"},
		"escaping":           {"a/up": "../../outside"},
		"escaping via links": {"top": ".", "a/x": "../top/.."},
	} {
		t.Run(name, func(t *testing.T) {
			d := mkTree(t, map[string]string{"a/f": "f"}, nil, links)
			_, err := manifestOfTree(t, d, false)
			if !errors.Is(err, ErrInput) {
				t.Fatalf("want ErrInput, got %v", err)
			}
			for p, target := range links {
				if strings.HasPrefix(target, "/") || strings.Contains(target, "..") && !strings.Contains(err.Error(), "top") {
					if !strings.Contains(err.Error(), filepath.Join(d, p)) || !strings.Contains(err.Error(), target) || !strings.Contains(err.Error(), "--copy-links") {
						t.Errorf("error does not name the path %s, its target %q and --copy-links: %v", filepath.Join(d, p), target, err)
					}
				}
			}
		})
	}
}

func TestScanCopyLinksFollowsAsRsyncL(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "shared.css"), []byte("body{}"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(outside, "lib", "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "lib", "sub", "x.js"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := mkTree(t, map[string]string{"home.html": "h"}, nil, map[string]string{
		"shared.css": filepath.Join(outside, "shared.css"), "lib": filepath.Join(outside, "lib"), "index.html": "home.html"})
	m, err := manifestOfTree(t, d, true)
	if err != nil {
		t.Fatal(err)
	}
	got := byPath(m)
	if e := got["shared.css"]; e.Type != events.TypeFile || e.Size != 6 || e.Mode != 0o640 {
		t.Errorf("shared.css: %+v", e)
	}
	if e := got["index.html"]; e.Type != events.TypeFile || e.Size != 1 {
		t.Errorf("index.html (an in-tree link, followed too): %+v", e)
	}
	if e := got["lib"]; e.Type != events.TypeDir || e.Mode != 0o750 {
		t.Errorf("lib: %+v", e)
	}
	if e := got["lib/sub/x.js"]; e.Type != events.TypeFile {
		t.Errorf("lib/sub/x.js: %+v", e)
	}

	dangling := mkTree(t, nil, nil, map[string]string{"gone": "nothing"})
	if _, err := manifestOfTree(t, dangling, true); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), `"nothing"`) {
		t.Errorf("--copy-links with a dangling link: %v", err)
	}
	loop := mkTree(t, map[string]string{"a/f": "f"}, nil, map[string]string{"a/back": ".."})
	if _, err := manifestOfTree(t, loop, true); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "loop") {
		t.Errorf("--copy-links with a directory loop: %v", err)
	}
}

func TestScanPutCarriesModeAndMtime(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f.sh")
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1600000000, 5)
	if err := os.Chtimes(f, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	op, files, other, err := scan(f, false)
	if err != nil || op != events.OpPut || len(files) != 1 || other != nil {
		t.Fatalf("%s %+v %+v %v", op, files, other, err)
	}
	if files[0].mode != 0o750 || files[0].modTime.Unix() != 1600000000 {
		t.Errorf("%+v", files[0])
	}
}
