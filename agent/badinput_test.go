package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// TestBadInputLosesNothing: each kind of bad content is refused with an
// error that says what was wrong and is of kind bad input; the live tree
// stays as it was and the watermark does not move. Every case is entry 1
// of its own pool on the same volume.
func TestBadInputLosesNothing(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	base := w.config(t)
	a := w.agent(t, base, Deps{})
	mountedVolume(t, a, 64)
	w.sync(events.RootPath, map[string]file{"keep/a": {gen("a", 100), 0o644}, "keep/b": {gen("b", 200), 0o644}})
	w.put("top", gen("top", 50), 0o644)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	before := readTree(t, base.MountPath)

	good := gen("good", 64)
	w.upload(good)
	goodBlob := events.Blob{SHA256: sum(good), Size: int64(len(good)), Mode: 0o644}
	liar := gen("liar", 64) // uploaded under the name of another sha
	w.uploadKey(events.BlobKey(sum(gen("claimed", 64))), liar)
	manifestOf := func(raw string) events.ManifestRef {
		w.uploadKey(events.ManifestKey(sum([]byte(raw))), []byte(raw))
		return events.ManifestRef{SHA256: sum([]byte(raw))}
	}
	entry := func(path, sha string) string {
		return fmt.Sprintf(`{"path":%q,"sha256":%q,"size":64,"mode":420}`, path, sha)
	}

	cases := []struct {
		name  string
		entry events.JournalEntry
		want  string // in the error
	}{
		{"put escaping path", events.JournalEntry{Op: events.OpPut, Path: "../escape", Blob: &goodBlob}, `".." components`},
		{"put absolute path", events.JournalEntry{Op: events.OpPut, Path: "/etc/passwd", Blob: &goodBlob}, "relative"},
		{"put under .volsd", events.JournalEntry{Op: events.OpPut, Path: ".volsd/state.json", Blob: &goodBlob}, ".volsd"},
		{"put rsync holding dir", events.JournalEntry{Op: events.OpPut, Path: "a/.~tmp~/b", Blob: &goodBlob}, "reserved for rsync"},
		{"put setuid mode", events.JournalEntry{Op: events.OpPut, Path: "x", Blob: &events.Blob{SHA256: goodBlob.SHA256, Size: 64, Mode: 0o4755}}, "permission bits"},
		{"delete root", events.JournalEntry{Op: events.OpDelete, Path: "."}, "root"},
		{"hash mismatch", events.JournalEntry{Op: events.OpPut, Path: "keep/a", Blob: &events.Blob{SHA256: sum(gen("claimed", 64)), Size: 64, Mode: 0o644}}, "sha256 mismatch"},
		{"size mismatch", events.JournalEntry{Op: events.OpPut, Path: "keep/a", Blob: &events.Blob{SHA256: goodBlob.SHA256, Size: 65, Mode: 0o644}}, "size mismatch"},
		{"missing blob", events.JournalEntry{Op: events.OpPut, Path: "keep/a", Blob: &events.Blob{SHA256: sum([]byte("nowhere")), Size: 7, Mode: 0o644}}, "missing from the origin"},
		{"missing manifest", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: &events.ManifestRef{SHA256: sum([]byte("no manifest"))}}, "missing from the origin"},
		{"manifest hash mismatch", func() events.JournalEntry {
			w.uploadKey(events.ManifestKey(sum([]byte("claimed manifest"))), []byte(`{"version":1,"entries":[]}`))
			return events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: &events.ManifestRef{SHA256: sum([]byte("claimed manifest"))}}
		}(), "sha256 mismatch"},
		{"manifest escaping path", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: ptr(manifestOf(`{"version":1,"entries":[` + entry("../../etc/cron.d/x", goodBlob.SHA256) + `]}`))}, `".." components`},
		{"manifest writes under .volsd", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: ptr(manifestOf(`{"version":1,"entries":[` + entry(".volsd/state.json", goodBlob.SHA256) + `]}`))}, ".volsd"},
		{"manifest symlink by mode", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: ptr(manifestOf(`{"version":1,"entries":[{"path":"link","sha256":"` + goodBlob.SHA256 + `","size":64,"mode":41471}]}`))}, "permission bits"},
		{"manifest symlink by field", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: ptr(manifestOf(`{"version":1,"entries":[{"path":"link","sha256":"` + goodBlob.SHA256 + `","size":64,"mode":420,"target":"/etc"}]}`))}, "target"},
		{"manifest file and dir", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: ptr(manifestOf(`{"version":1,"entries":[` + entry("a", goodBlob.SHA256) + "," + entry("a/b", goodBlob.SHA256) + `]}`))}, "also the directory"},
		{"manifest not JSON", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: ptr(manifestOf(`not json`))}, "not valid JSON"},
		{"manifest blob hash mismatch", events.JournalEntry{Op: events.OpSync, Path: ".", Manifest: ptr(manifestOf(`{"version":1,"entries":[` + entry("keep/new", sum(gen("claimed", 64))) + `]}`))}, "sha256 mismatch"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			cfg.Pool = fmt.Sprintf("bad%d", i)
			b := w.agent(t, cfg, Deps{})
			if err := b.writeState(0); err != nil {
				t.Fatal(err)
			}
			c.entry.RequestID = fmt.Sprintf("bad-%d", i)
			if _, _, err := w.store.Append(context.Background(), cfg.Pool, c.entry); err != nil {
				t.Fatal(err)
			}
			var r Report
			err := b.Apply(context.Background(), 0, false, &r)
			code := finish(&r, err)
			if code != ExitBadInput || r.ErrorKind != string(KindBadContent) || !strings.Contains(r.Error, c.want) || !strings.Contains(r.Error, "entry 1") {
				t.Fatalf("exit %d, report %+v; want exit 2, bad-input, an error naming entry 1 and %q", code, r, c.want)
			}
			if r.Seq != 0 || watermark(t, cfg.MountPath) != 0 {
				t.Fatalf("watermark moved: report %d, file %d", r.Seq, watermark(t, cfg.MountPath))
			}
			if d := before.diff(readTree(t, cfg.MountPath)); d != "" {
				t.Fatalf("the live tree changed:\n%s", d)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
