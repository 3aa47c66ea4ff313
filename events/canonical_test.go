package events

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParseCanonicalTakesCanonicalManifests(t *testing.T) {
	m := Manifest{Version: ManifestV1, Entries: []ManifestEntry{
		{Path: "b/index.html", SHA256: strings.Repeat("ab", 32), Size: 0, Mode: 0o644},
		{Path: "a/é.css", SHA256: strings.Repeat("01", 32), Size: 9007199254740993, Mode: 0o755},
	}}
	raw, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := parseCanonical(raw)
	if !ok {
		t.Fatalf("parseCanonical refused Canonical's own output %s", raw)
	}
	want := Manifest{Version: m.Version, Entries: []ManifestEntry{m.Entries[1], m.Entries[0]}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	empty, _ := Manifest{Version: ManifestVersion}.Canonical()
	if got, ok := parseCanonical(empty); !ok || got.Entries == nil || len(got.Entries) != 0 {
		t.Fatalf("empty manifest: ok %v, %+v", ok, got)
	}
}

func TestParseCanonicalTakesCanonicalV2Manifests(t *testing.T) {
	m := Manifest{Version: ManifestVersion, Entries: []ManifestEntry{
		{Path: "b/index.html", Type: TypeFile, SHA256: strings.Repeat("ab", 32), Size: 0, Mode: 0o644, Mtime: 1700000000},
		{Path: ".", Type: TypeDir, Mode: 0o755},
		{Path: "cache", Type: TypeDir, Mode: 0o700},
		{Path: "latest", Type: TypeLink, Target: "v1.2.3"},
		{Path: "a/é.css", Type: TypeFile, SHA256: strings.Repeat("01", 32), Size: 9007199254740993, Mode: 0o755, Mtime: 0},
	}}
	raw, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"entries":[{"path":".","type":"dir","mode":493},` +
		`{"path":"a/é.css","type":"file","sha256":"` + strings.Repeat("01", 32) + `","size":9007199254740993,"mode":493,"mtime":0},` +
		`{"path":"b/index.html","type":"file","sha256":"` + strings.Repeat("ab", 32) + `","size":0,"mode":420,"mtime":1700000000},` +
		`{"path":"cache","type":"dir","mode":448},{"path":"latest","type":"link","target":"v1.2.3"}]}` + "\n"
	if string(raw) != want {
		t.Fatalf("canonical form:\n got %s\nwant %s", raw, want)
	}
	got, ok := parseCanonical(raw)
	if !ok {
		t.Fatalf("parseCanonical refused Canonical's own output %s", raw)
	}
	var slow Manifest
	if err := decodeStrict(raw, &slow); err != nil || !reflect.DeepEqual(got, slow) {
		t.Fatalf("fast %+v, decoder %+v (%v)", got, slow, err)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	// Strings that need escapes still round-trip, through the decoder.
	odd := Manifest{Version: ManifestVersion, Entries: []ManifestEntry{{Path: `a"<b>&\c`, Type: TypeLink, Target: "x\u2028y"}}}
	raw, _ = odd.Canonical()
	back, err := ParseManifestBytes(raw)
	if err != nil || !reflect.DeepEqual(back.Entries, odd.Entries) {
		t.Fatalf("%s: %+v %v", raw, back, err)
	}
}

// Anything off the canonical form goes to the general decoder, which
// parses it (or explains what is wrong): the fast path never decides.
func TestParseCanonicalLeavesTheRestToTheDecoder(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	for _, in := range []string{
		`{"version":1,"entries":[{"path":"a\u0026b","sha256":"` + sha + `","size":1,"mode":420}]}`, // escape
		`{"version":1, "entries":[]}`, // space
		`{"entries":[],"version":1}`,  // key order
		`{"Version":1,"entries":[]}`,  // key case
		`{"version":1,"entries":[{"path":"a","sha256":"` + sha + `","size":01,"mode":420}]}`,       // leading zero
		`{"version":1,"entries":[{"path":"a","sha256":"` + sha + `","size":-1,"mode":420}]}`,       // negative
		`{"version":1,"entries":[{"path":"a","sha256":"` + sha + `","size":1,"mode":4294967296}]}`, // overflow
		`{"version":1,"entries":[]}` + "\n\n",                                                      // trailing data
		`{"version":1,"entries":[],"extra":1}`,                                                     // unknown field
		`{"version":1,"entries":null}`,
		`{"version":2,"entries":[{"path":"a","type":"dir","mode":448,"size":0}]}`,                         // a field the form lacks
		`{"version":2,"entries":[{"type":"dir","path":"a","mode":448}]}`,                                  // key order
		`{"version":2,"entries":[{"path":"a","type":"file","sha256":"` + sha + `","size":1,"mode":420}]}`, // no mtime
		`{"version":2,"entries":[{"path":"a","type":"file","sha256":"` + sha + `","size":1,"mode":420,"mtime":-1}]}`,
		`{"version":2,"entries":[{"path":"a","type":"link","target":"\/etc"}]}`,
	} {
		if m, ok := parseCanonical([]byte(in)); ok {
			t.Errorf("parseCanonical took %s: %+v", in, m)
		}
	}
}

// FuzzParseCanonical: whatever the fast path accepts, the general strict
// decoder accepts too and decodes to the same manifest.
func FuzzParseCanonical(f *testing.F) {
	sha := strings.Repeat("0f", 32)
	f.Add([]byte(`{"version":1,"entries":[{"path":"a/b","sha256":"` + sha + `","size":12,"mode":420}]}` + "\n"))
	f.Add([]byte(`{"version":1,"entries":[]}`))
	f.Add([]byte(`{"version":2,"entries":[{"path":".","type":"dir","mode":493},{"path":"a/b","type":"file","sha256":"` + sha + `","size":12,"mode":420,"mtime":1700000000},{"path":"l","type":"link","target":"a/b"}]}` + "\n"))
	f.Add([]byte(`{"version":2,"entries":[{"path":"x","type":"link","target":"../y"},{"path":"x","sha256":"","size":0,"mode":1}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"path":"x","sha256":"y","size":0,"mode":0},{"path":"x","sha256":"","size":18446744073709551615,"mode":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// ParseManifestOwned and ManifestBlobs read what ParseManifestBytes reads.
		want, werr := ParseManifestBytes(data)
		owned, oerr := ParseManifestOwned(bytes.Clone(data))
		if (werr == nil) != (oerr == nil) || werr == nil && !reflect.DeepEqual(want, owned) {
			t.Fatalf("%q: ParseManifestOwned %+v %v, ParseManifestBytes %+v %v", data, owned, oerr, want, werr)
		}
		if werr == nil {
			blobs, err := ManifestBlobs(data)
			if err != nil {
				t.Fatalf("%q: ManifestBlobs: %v", data, err)
			}
			for _, e := range want.Entries {
				if e.Kind() == TypeFile && !blobs.Holds(e.SHA256, e.Size) {
					t.Fatalf("%q: ManifestBlobs lacks %s/%d", data, e.SHA256, e.Size)
				}
			}
			if n := len(want.Blobs()); len(blobs) < n {
				t.Fatalf("%q: %d compact blobs, %d distinct", data, len(blobs), n)
			}
		}
		fast, ok := parseCanonical(data)
		if !ok {
			return
		}
		var slow Manifest
		if err := decodeStrict(data, &slow); err != nil {
			t.Fatalf("fast path took %q, the decoder refuses it: %v", data, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast %+v, decoder %+v", data, fast, slow)
		}
	})
}

// TestManifestBlobs: the compact blob set of a manifest, canonical or not,
// holds each file's blob with its size and nothing else; a malformed
// sha256 is an error, not a silent miss.
func TestManifestBlobs(t *testing.T) {
	a, b := strings.Repeat("0a", 32), strings.Repeat("b1", 32)
	for name, data := range map[string]string{
		"canonical": `{"version":2,"entries":[{"path":".","type":"dir","mode":493},{"path":"x","type":"file","sha256":"` + a + `","size":3,"mode":420,"mtime":1},{"path":"y","type":"file","sha256":"` + a + `","size":3,"mode":420,"mtime":1},{"path":"z","type":"file","sha256":"` + b + `","size":0,"mode":420,"mtime":1}]}` + "\n",
		"spaced":    `{"version": 1, "entries": [{"path": "x", "sha256": "` + a + `", "size": 3, "mode": 420}, {"path": "z", "sha256": "` + b + `", "size": 0, "mode": 420}]}`,
	} {
		blobs, err := ManifestBlobs([]byte(data))
		if err != nil || len(blobs) != 2 {
			t.Fatalf("%s: %d blobs, %v", name, len(blobs), err)
		}
		for _, c := range []struct {
			sha  string
			size int64
			want bool
		}{{a, 3, true}, {b, 0, true}, {a, 4, false}, {strings.Repeat("cc", 32), 3, false}, {"0a", 3, false}, {strings.Repeat("zz", 32), 3, false}} {
			if got := blobs.Holds(c.sha, c.size); got != c.want {
				t.Errorf("%s: Holds(%s, %d) = %v, want %v", name, c.sha, c.size, got, c.want)
			}
		}
		check, err := BlobsToCheck(Manifest{Version: 1, Entries: []ManifestEntry{{Path: "x", SHA256: a, Size: 3}, {Path: "n", SHA256: strings.Repeat("dd", 32), Size: 1}}}, blobs)
		if err != nil || len(check) != 1 || check[strings.Repeat("dd", 32)] != 1 {
			t.Fatalf("%s: BlobsToCheck %v %v, want only the new blob", name, check, err)
		}
	}
	if _, err := ManifestBlobs([]byte(`{"version":1,"entries":[{"path":"x","sha256":"nothex","size":3,"mode":420}]}`)); err == nil {
		t.Fatal("a malformed sha256: no error")
	}
}
