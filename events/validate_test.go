package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

const okSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestValidatePathAccepts(t *testing.T) {
	for _, p := range []string{
		"index.html", "a/b/c.txt", ".well-known/acme", "..hidden", "a..b", "ünïcödé/文件.txt",
		"with space/and-dash_underscore", strings.Repeat("a", 255), strings.Repeat("ab/", 340) + "cde",
		".volsdx", "x/.volsd", "back\\slash",
	} {
		if err := ValidatePath("path", p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
}

// TestHostileRequests is the table of at least 40 hostile or malformed
// paths and requests; each must fail naming the field and the rule.
func TestHostileRequests(t *testing.T) {
	put := func(path string) string {
		return `{"version":1,"requestId":"r1","op":"put","path":` + quote(path) + `,"blob":{"sha256":"` + okSHA + `","size":1,"mode":420}}`
	}
	cases := []struct {
		name, body, field, rule string
	}{
		// hostile paths
		{"absolute", put("/etc/passwd"), "path", "relative"},
		{"dotdot", put("../etc/passwd"), "path", `".."`},
		{"dotdot middle", put("a/../../b"), "path", `".."`},
		{"dotdot end", put("a/.."), "path", `".."`},
		{"only dotdot", put(".."), "path", `".."`},
		{"dot component", put("./a"), "path", `"."`},
		{"dot middle", put("a/./b"), "path", `"."`},
		{"root", put("."), "path", "root"},
		{"empty", put(""), "path", "empty"},
		{"trailing slash", put("a/b/"), "path", "clean"},
		{"double slash", put("a//b"), "path", "clean"},
		{"nul", put("a\x00b"), "path", "control"},
		{"newline", put("a\nb"), "path", "control"},
		{"tab", put("a\tb"), "path", "control"},
		{"escape", put("a\x1b[31mb"), "path", "control"},
		{"del", put("a\x7fb"), "path", "control"},
		{"carriage return", put("evil\r"), "path", "control"},
		{"reserved dir", put(".volsd"), "path", "reserved"},
		{"rsync holding dir", put("a/.~tmp~/b"), "path", "reserved for rsync"},
		{"under reserved", put(".volsd/state.json"), "path", "reserved"},
		{"too long", put(strings.Repeat("a/", 600)), "path", "at most 1024 bytes"},
		{"long component", put(strings.Repeat("x", 256)), "path", "255"},
		{"invalid utf8", strings.Replace(put("a"), `"path":"a"`, "\"path\":\"a\xffb\"", 1), "body", "UTF-8"},
		{"delete root", `{"version":1,"requestId":"r1","op":"delete","path":"."}`, "path", "root"},
		{"delete reserved", `{"version":1,"requestId":"r1","op":"delete","path":".volsd"}`, "path", "reserved"},
		{"sync dotdot", `{"version":1,"requestId":"r1","op":"sync","path":"../x","manifest":{"sha256":"` + okSHA + `"}}`, "path", `".."`},
		// malformed requests
		{"version 2", strings.Replace(put("a"), `"version":1`, `"version":2`, 1), "version", "unsupported"},
		{"version 0", strings.Replace(put("a"), `"version":1,`, ``, 1), "version", "unsupported"},
		{"version string", strings.Replace(put("a"), `"version":1`, `"version":"1"`, 1), "version", "wrong type"},
		{"unknown op", strings.Replace(put("a"), `"op":"put"`, `"op":"chmod"`, 1), "op", "put, sync or delete"},
		{"missing op", strings.Replace(put("a"), `"op":"put",`, ``, 1), "op", "required"},
		{"uppercase op", strings.Replace(put("a"), `"op":"put"`, `"op":"PUT"`, 1), "op", "put, sync or delete"},
		{"missing request id", strings.Replace(put("a"), `"requestId":"r1",`, ``, 1), "requestId", "1 to 128"},
		{"request id with slash", strings.Replace(put("a"), `"requestId":"r1"`, `"requestId":"a/b"`, 1), "requestId", "only letters"},
		{"request id too long", strings.Replace(put("a"), `"requestId":"r1"`, `"requestId":"`+strings.Repeat("r", 129)+`"`, 1), "requestId", "1 to 128"},
		{"put without blob", `{"version":1,"requestId":"r1","op":"put","path":"a"}`, "blob", "required"},
		{"put with manifest", strings.Replace(put("a"), `}}`, `},"manifest":{"sha256":"`+okSHA+`"}}`, 1), "manifest", "absent"},
		{"sync without manifest", `{"version":1,"requestId":"r1","op":"sync","path":"a"}`, "manifest", "required"},
		{"sync with blob", `{"version":1,"requestId":"r1","op":"sync","path":"a","manifest":{"sha256":"` + okSHA + `"},"blob":{"sha256":"` + okSHA + `","size":1,"mode":420}}`, "blob", "absent"},
		{"delete with blob", `{"version":1,"requestId":"r1","op":"delete","path":"a","blob":{"sha256":"` + okSHA + `","size":1,"mode":420}}`, "op", "neither"},
		{"sha uppercase", strings.Replace(put("a"), okSHA, strings.ToUpper(okSHA), 1), "blob.sha256", "lowercase hex"},
		{"sha short", strings.Replace(put("a"), okSHA, okSHA[:63], 1), "blob.sha256", "64"},
		{"sha non hex", strings.Replace(put("a"), okSHA, "z"+okSHA[1:], 1), "blob.sha256", "hex"},
		{"manifest sha bad", `{"version":1,"requestId":"r1","op":"sync","path":"a","manifest":{"sha256":"abc"}}`, "manifest.sha256", "64"},
		{"negative size", strings.Replace(put("a"), `"size":1`, `"size":-1`, 1), "blob.size", ">= 0"},
		{"setuid", strings.Replace(put("a"), `"mode":420`, `"mode":2541`, 1), "blob.mode", "setuid"},
		{"sticky", strings.Replace(put("a"), `"mode":420`, `"mode":1023`, 1), "blob.mode", "permission bits"},
		{"file type bits", strings.Replace(put("a"), `"mode":420`, `"mode":33188`, 1), "blob.mode", "permission bits"},
		{"negative mode", strings.Replace(put("a"), `"mode":420`, `"mode":-1`, 1), "blob.mode", "wrong type"},
		{"negative mtime", strings.Replace(put("a"), `"mode":420`, `"mode":420,"mtime":-5`, 1), "blob.mtime", "whole seconds"},
		{"unknown field", strings.Replace(put("a"), `"op"`, `"pool":"x","op"`, 1), "pool", "not a known field"},
		{"not json", `put a please`, "body", "not valid JSON"},
		{"empty body", ``, "body", "empty"},
		{"array", `[1,2]`, "", "wrong type"},
		{"trailing data", put("a") + `{}`, "body", "after the JSON object"},
		{"truncated", put("a")[:40], "body", "JSON"},
		{"path number", strings.Replace(put("a"), `"path":"a"`, `"path":7`, 1), "path", "wrong type"},
		{"huge body", `{"version":1,"requestId":"r1","op":"delete","path":"` + strings.Repeat("a", MaxPushRequestBytes) + `"}`, "body", "at most"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePushRequest([]byte(tc.body))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a ValidationError", err)
			}
			if tc.field != "" && ve.Field != tc.field {
				t.Errorf("field = %q, want %q (%v)", ve.Field, tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("error %q does not state the rule %q", err, tc.rule)
			}
		})
	}
}

func TestSyncToRootAllowed(t *testing.T) {
	body := `{"version":1,"requestId":"r1","op":"sync","path":".","manifest":{"sha256":"` + okSHA + `"}}`
	if _, err := ParsePushRequest([]byte(body)); err != nil {
		t.Fatal(err)
	}
}

func TestManifestRules(t *testing.T) {
	e := func(p string) ManifestEntry { return ManifestEntry{Path: p, SHA256: okSHA, Size: 1, Mode: 0o644} }
	for _, tc := range []struct {
		name string
		m    Manifest
		want string
	}{
		{"ok", Manifest{Version: 1, Entries: []ManifestEntry{e("a"), e("b/c")}}, ""},
		{"empty ok", Manifest{Version: 1}, ""},
		{"version", Manifest{Version: 3}, "version"},
		{"dup", Manifest{Version: 1, Entries: []ManifestEntry{e("a"), e("a")}}, "twice"},
		{"file is dir", Manifest{Version: 1, Entries: []ManifestEntry{e("a"), e("a/b")}}, "is a file and also the directory"},
		// Sorted (as every canonical manifest is): the clashing pair
		// need not be neighbours ("-" sorts before "/").
		{"file is dir, sorted apart", Manifest{Version: 1, Entries: []ManifestEntry{e("a"), e("a-b"), e("a.c"), e("a/b")}}, `"a" is a file and also the directory of "a/b"`},
		{"file is grandparent, sorted", Manifest{Version: 1, Entries: []ManifestEntry{e("d/a"), e("d/a-x"), e("d/a/b/c"), e("e")}}, `"d/a" is a file and also the directory of "d/a/b/c"`},
		{"file is dir, unsorted", Manifest{Version: 1, Entries: []ManifestEntry{e("x/y/z"), e("b"), e("x/y")}}, `"x/y" is a file and also the directory of "x/y/z"`},
		{"dup, unsorted", Manifest{Version: 1, Entries: []ManifestEntry{e("b"), e("a"), e("b")}}, "entries[2].path: appears twice"},
		{"ok, sorted deep", Manifest{Version: 1, Entries: []ManifestEntry{e("a-b"), e("a/b/c"), e("a/b/d"), e("a/c"), e("ab")}}, ""},
		{"hostile", Manifest{Version: 1, Entries: []ManifestEntry{e("../x")}}, `entries[0].path: must not contain ".."`},
		{"reserved", Manifest{Version: 1, Entries: []ManifestEntry{e("ok"), e(".volsd/state.json")}}, "entries[1].path"},
		{"mode", Manifest{Version: 1, Entries: []ManifestEntry{{Path: "a", SHA256: okSHA, Mode: 0o4755}}}, "entries[0].mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := ParseManifest(strings.NewReader(`{"version":1,"entries":[{"path":"a","sha256":"` + okSHA + `","size":1,"mode":420,"symlink":"/etc"}]}`)); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("manifest with a symlink field: %v", err)
	}
}

func quote(s string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[r>>4])
			b.WriteByte("0123456789abcdef"[r&15])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzValidatePath checks that every accepted path is safe to join under a
// mount: clean, relative, no "..", no control bytes, not under .volsd.
func FuzzValidatePath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../a", "/a", ".volsd/x", "a\x00", "a//b", ".", "", "ü/ß"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if ValidatePath("path", p) != nil {
			return
		}
		if !utf8.ValidString(p) || len(p) > MaxPathBytes || strings.HasPrefix(p, "/") {
			t.Fatalf("accepted %q", p)
		}
		for _, part := range strings.Split(p, "/") {
			if part == "" || part == "." || part == ".." {
				t.Fatalf("accepted %q with component %q", p, part)
			}
		}
		if p == ReservedDir || strings.HasPrefix(p, ReservedDir+"/") {
			t.Fatalf("accepted reserved %q", p)
		}
		for _, c := range []byte(p) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("accepted control byte in %q", p)
			}
		}
	})
}

// FuzzParsePushRequest checks the decoder never panics, that every error is
// a ValidationError, and that every accepted request re-encodes to a body
// that parses to the same request.
func FuzzParsePushRequest(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"requestId":"r","op":"put","path":"a","blob":{"sha256":"` + okSHA + `","size":1,"mode":420}}`,
		`{"version":1,"requestId":"r","op":"sync","path":".","manifest":{"sha256":"` + okSHA + `"}}`,
		`{"version":1,"requestId":"r","op":"delete","path":"x/y"}`,
		`{}`, `[]`, `null`, `{"version":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParsePushRequest(body)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is not a ValidationError: %T %v", err, err)
			}
			return
		}
		again, err := ParsePushRequest(mustJSON(t, r))
		if err != nil {
			t.Fatalf("accepted request does not re-parse: %v", err)
		}
		if again.RequestID != r.RequestID || again.Path != r.Path || again.Op != r.Op {
			t.Fatalf("re-parse changed request: %+v vs %+v", r, again)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
