package push_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
)

// treeFiles is a tree of n small files (path → content).
func treeFiles(n int, tag string) map[string]string {
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("d%02d/f%04d.html", i%10, i)] = fmt.Sprintf("<p>%s %d</p>", tag, i)
	}
	return files
}

func syncBody(t *testing.T, id, path, manifest string) string {
	return body(t, events.PushRequest{RequestID: id, Op: events.OpSync, Path: path, Manifest: &events.ManifestRef{SHA256: manifest}})
}

// TestResyncChecksOnlyBlobsThePreviousManifestLacks: with a sync of a
// 200-file tree in the journal, a sync of the same path with one changed
// and one added file costs two GetObjects (the manifest and the previous
// one) and two HeadObjects (the two new blobs), never a listing of
// blobs/; a re-sync of the same manifest costs no S3 call at all; a sync
// of another path with the same blobs checks them all.
func TestResyncChecksOnlyBlobsThePreviousManifestLacks(t *testing.T) {
	fake := awsfake.NewS3()
	r := newRig(t, fake)
	files := treeFiles(200, "v1")
	first := r.manifest(files)
	if resp := r.handle(batch(sqsMessage("m1", syncBody(t, "s1", "www", first), 1))); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("first sync failed: %+v\n%s", resp, r.logs)
	}
	files["d03/f0003.html"] = "<p>changed</p>"
	files["new/page.html"] = "<p>new</p>"
	second := r.manifest(files)

	calls := func() (head, get, list int) {
		return fake.Calls("HeadObject"), fake.Calls("GetObject"), fake.Calls("ListObjectsV2")
	}
	h0, g0, l0 := calls()
	if resp := r.handle(batch(sqsMessage("m2", syncBody(t, "s2", "www", second), 1))); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("second sync failed: %+v\n%s", resp, r.logs)
	}
	h1, g1, l1 := calls()
	if h1-h0 != 2 || g1-g0 != 2 || l1-l0 != 0 {
		t.Fatalf("re-sync with 2 new blobs: %d HeadObject, %d GetObject, %d ListObjectsV2; want 2, 2, 0", h1-h0, g1-g0, l1-l0)
	}

	if resp := r.handle(batch(sqsMessage("m3", syncBody(t, "s3", "www", second), 1))); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("third sync failed: %+v\n%s", resp, r.logs)
	}
	h2, g2, l2 := calls()
	if h2-h1+g2-g1+l2-l1 != 0 {
		t.Fatalf("re-sync of the same manifest made %d HeadObject, %d GetObject, %d ListObjectsV2; want none", h2-h1, g2-g1, l2-l1)
	}

	if resp := r.handle(batch(sqsMessage("m4", syncBody(t, "s4", "other", second), 1))); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("sync of another path failed: %+v\n%s", resp, r.logs)
	}
	h3, _, l3 := calls()
	if h3-h2 != 201 || l3-l2 != 0 {
		t.Fatalf("first sync of another path: %d HeadObject, %d ListObjectsV2; want 201 (every blob) and 0", h3-h2, l3-l2)
	}
	if j := r.journal(); len(j) != 4 {
		t.Fatalf("journal has %d entries, want 4", len(j))
	}
}

// TestResyncStillFindsANewBlobMissing: a blob the previous manifest did not
// name is checked, so one that is not in the origin keeps the sync out of
// the journal (retried, then rejected), and so does a blob the previous
// manifest named with another size.
func TestResyncStillFindsANewBlobMissing(t *testing.T) {
	r := newRig(t, awsfake.NewS3())
	files := treeFiles(100, "v1")
	first := r.manifest(files)
	if resp := r.handle(batch(sqsMessage("m1", syncBody(t, "s1", "www", first), 1))); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("first sync failed: %+v\n%s", resp, r.logs)
	}
	m := events.Manifest{Version: events.ManifestVersion}
	for p, c := range files {
		b := blobRef([]byte(c))
		m.Entries = append(m.Entries, events.ManifestEntry{Path: p, Type: events.TypeFile, SHA256: b.SHA256, Size: b.Size, Mode: 0o644})
	}
	absent := blobRef([]byte("never uploaded"))
	withAbsent := append(append([]events.ManifestEntry(nil), m.Entries...), events.ManifestEntry{Path: "zz/absent.html", Type: events.TypeFile, SHA256: absent.SHA256, Size: absent.Size, Mode: 0o644})
	wrongSize := append([]events.ManifestEntry(nil), m.Entries...)
	wrongSize[0].Size++
	for name, c := range map[string]struct {
		entries []events.ManifestEntry
		reason  string
	}{
		"absent":     {withAbsent, "not in the origin"},
		"wrong size": {wrongSize, "bytes, not"},
	} {
		raw, err := events.Manifest{Version: events.ManifestVersion, Entries: c.entries}.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		sha := blobRef(raw).SHA256
		r.put(events.ManifestKey(sha), raw)
		id := "bad-" + strings.ReplaceAll(name, " ", "-")
		resp := r.handle(batch(sqsMessage("m-"+id, syncBody(t, id, "www", sha), 5)))
		if len(resp.BatchItemFailures) != 1 {
			t.Fatalf("%s: accepted: %+v", name, resp)
		}
		rec, err := r.st.GetRequest(context.Background(), r.pool, id)
		if err != nil || rec.State != store.RequestRejected || !strings.Contains(rec.Reason, c.reason) {
			t.Fatalf("%s: record %+v %v, want rejected with %q", name, rec, err, c.reason)
		}
	}
	if j := r.journal(); len(j) != 1 {
		t.Fatalf("journal has %d entries, want 1", len(j))
	}
}

// TestPreviousSyncSkipsEntriesMarkedToExpire: an entry below the compaction
// floor (expiresAt set) no longer vouches for its blobs; PreviousSync then
// finds the newest unmarked one, or none.
func TestPreviousSyncSkipsEntriesMarkedToExpire(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	ref := func(s string) *events.ManifestRef { return &events.ManifestRef{SHA256: strings.Repeat(s, 64)} }
	for i, e := range []events.JournalEntry{
		{Op: events.OpSync, Path: "www", Manifest: ref("a"), RequestID: "r1"},
		{Op: events.OpSync, Path: "www", Manifest: ref("b"), RequestID: "r2"},
		{Op: events.OpSync, Path: "other", Manifest: ref("c"), RequestID: "r3"},
		{Op: events.OpDelete, Path: "www", RequestID: "r4"},
	} {
		if _, _, err := st.Append(ctx, "web", e); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	e, found, err := st.PreviousSync(ctx, "web", "www")
	if err != nil || !found || e.Seq != 2 || e.Manifest.SHA256 != ref("b").SHA256 {
		t.Fatalf("previous sync of www: %+v %v %v, want seq 2", e, found, err)
	}
	fence, err := st.PutCompaction(ctx, store.Compaction{Pool: "web", Floor: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ExpireEntries(ctx, "web", 2, time.Now().Add(time.Hour), fence); err != nil {
		t.Fatal(err)
	}
	if e, found, err := st.PreviousSync(ctx, "web", "www"); err != nil || found {
		t.Fatalf("previous sync of www after expiry: %+v %v %v, want none", e, found, err)
	}
	if e, found, err := st.PreviousSync(ctx, "web", "other"); err != nil || !found || e.Seq != 3 {
		t.Fatalf("previous sync of other: %+v %v %v, want seq 3", e, found, err)
	}
}
