package reclaim_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/reclaim"
	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
)

const (
	pool   = "web"
	bucket = "origin"
	grace  = 7 * 24 * time.Hour
)

// rig is a pool's table (DynamoDB Local), its origin (awsfake.S3 on a
// manual clock: S3's LastModified must follow the test's time) and a
// Reclaimer on the same clock.
type rig struct {
	t     testing.TB
	db    *dynamodb.Client
	st    *store.Store
	s3    *awsfake.S3
	clock *awsfake.Clock
	r     *reclaim.Reclaimer
	seq   int64
	// history is every entry appended, for the test's own model.
	history []events.JournalEntry
	// manifests maps a manifest's sha256 to its files (path → blob).
	manifests map[string]map[string]string
	emf       bytes.Buffer
}

func newRig(t testing.TB) *rig {
	t.Helper()
	st, db := storetest.NewWithClient(t)
	clock := awsfake.NewClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	rg := &rig{t: t, db: db, st: st, s3: awsfake.NewS3(bucket).SetClock(clock.Now), clock: clock, manifests: map[string]map[string]string{}}
	rg.r = reclaim.New(reclaim.Config{Pool: pool, Bucket: bucket, Grace: grace}, rg.st, rg.s3, nil, metrics.New(&rg.emf))
	rg.r.Now = clock.Now
	return rg
}

func (rg *rig) put(key string, data []byte) {
	rg.t.Helper()
	if _, err := rg.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
		rg.t.Fatal(err)
	}
}

// blob uploads content as a blob and returns its sha256.
func (rg *rig) blob(content string) string {
	sum := sha256.Sum256([]byte(content))
	sha := hex.EncodeToString(sum[:])
	rg.put(events.BlobKey(sha), []byte(content))
	return sha
}

// manifest uploads a version 1 manifest of files (path → content),
// uploading their blobs, and returns its sha256.
func (rg *rig) manifest(files map[string]string) string {
	rg.t.Helper()
	m := events.Manifest{Version: events.ManifestV1}
	byPath := map[string]string{}
	for p, c := range files {
		sha := rg.blob(c)
		byPath[p] = sha
		m.Entries = append(m.Entries, events.ManifestEntry{Path: p, SHA256: sha, Size: int64(len(c)), Mode: 0o644})
	}
	sort.Slice(m.Entries, func(i, j int) bool { return m.Entries[i].Path < m.Entries[j].Path })
	data, err := m.Canonical()
	if err != nil {
		rg.t.Fatal(err)
	}
	if _, err := events.ParseManifestBytes(data); err != nil {
		rg.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	rg.put(events.ManifestKey(sha), data)
	rg.manifests[sha] = byPath
	return sha
}

func (rg *rig) append(e events.JournalEntry) int64 {
	rg.t.Helper()
	rg.seq++
	e.RequestID = fmt.Sprintf("req-%d", rg.seq)
	seq, _, err := rg.st.Append(context.Background(), pool, e)
	if err != nil {
		rg.t.Fatal(err)
	}
	e.Seq = seq
	rg.history = append(rg.history, e)
	return seq
}

func (rg *rig) putFile(path, content string) int64 {
	sha := rg.blob(content)
	return rg.append(events.JournalEntry{Op: events.OpPut, Path: path, Blob: &events.Blob{SHA256: sha, Size: int64(len(content)), Mode: 0o644}})
}

func (rg *rig) sync(path string, files map[string]string) int64 {
	return rg.append(events.JournalEntry{Op: events.OpSync, Path: path, Manifest: &events.ManifestRef{SHA256: rg.manifest(files)}})
}

func (rg *rig) del(path string) int64 {
	return rg.append(events.JournalEntry{Op: events.OpDelete, Path: path})
}

// snapshotAt records a completed snapshot at seq and retires every older
// one (retention of 1), then compacts: entries at or below the floor get
// an expiry, and ttl plays DynamoDB's TTL removing them.
func (rg *rig) snapshotAt(seq int64) {
	rg.t.Helper()
	ctx := context.Background()
	snaps, err := rg.st.ListSnapshots(ctx, pool)
	if err != nil {
		rg.t.Fatal(err)
	}
	for _, s := range snaps {
		if err := rg.st.DeleteSnapshotRecord(ctx, pool, s.SnapshotID, s.Rev); err != nil {
			rg.t.Fatal(err)
		}
	}
	if _, err := rg.st.PutSnapshot(ctx, store.Snapshot{Pool: pool, SnapshotID: fmt.Sprintf("snap-%017d", seq), State: store.SnapshotCompleted, Seq: seq}); err != nil {
		rg.t.Fatal(err)
	}
	if _, err := snapshot.Compact(ctx, rg.st, pool, 0); err != nil {
		rg.t.Fatal(err)
	}
	rg.ttl()
}

// ttl removes every journal entry that carries an expiry, as DynamoDB's
// TTL does once it has passed.
func (rg *rig) ttl() {
	rg.t.Helper()
	ctx := context.Background()
	head, err := rg.st.Head(ctx, pool)
	if err != nil {
		rg.t.Fatal(err)
	}
	exp, err := rg.st.EntryExpiries(ctx, pool, 0, head)
	if err != nil {
		rg.t.Fatal(err)
	}
	for _, e := range exp {
		if e.ExpiresAt == 0 {
			continue
		}
		if _, err := rg.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(rg.st.Table()), Key: map[string]types.AttributeValue{
			store.AttrPK: &types.AttributeValueMemberS{Value: "JOURNAL#" + pool}, store.AttrSK: &types.AttributeValueMemberS{Value: store.SeqKey(e.Seq)},
		}}); err != nil {
			rg.t.Fatal(err)
		}
	}
}

func (rg *rig) run() reclaim.Result {
	rg.t.Helper()
	res, err := rg.r.Run(context.Background())
	if err != nil {
		rg.t.Fatal(err)
	}
	return res
}

// files is the content at seq by the test's own model: path → blob sha256.
func (rg *rig) files(seq int64) map[string]string {
	out := map[string]string{}
	under := func(p, dir string) bool {
		return dir == events.RootPath || p == dir || len(p) > len(dir) && p[:len(dir)+1] == dir+"/"
	}
	for _, e := range rg.history {
		if e.Seq > seq {
			break
		}
		switch e.Op {
		case events.OpPut:
			out[e.Path] = e.Blob.SHA256
		case events.OpSync:
			for p := range out {
				if under(p, e.Path) {
					delete(out, p)
				}
			}
			for p, sha := range rg.manifests[e.Manifest.SHA256] {
				if e.Path == events.RootPath {
					out[p] = sha
				} else {
					out[e.Path+"/"+p] = sha
				}
			}
		case events.OpDelete:
			for p := range out {
				if under(p, e.Path) {
					delete(out, p)
				}
			}
		}
	}
	return out
}

// needed is every object a volume at seq needs to converge to head, and
// that the content at seq holds: the blobs of its files, and the blob or
// manifest (with its blobs) of every entry after seq.
func (rg *rig) needed(seq int64) map[string]bool {
	out := map[string]bool{}
	for _, sha := range rg.files(seq) {
		out[events.BlobKey(sha)] = true
	}
	for _, e := range rg.history {
		if e.Seq <= seq {
			continue
		}
		switch {
		case e.Blob != nil:
			out[events.BlobKey(e.Blob.SHA256)] = true
		case e.Manifest != nil:
			out[events.ManifestKey(e.Manifest.SHA256)] = true
			for _, sha := range rg.manifests[e.Manifest.SHA256] {
				out[events.BlobKey(sha)] = true
			}
		}
	}
	return out
}

func (rg *rig) present() map[string]bool {
	out := map[string]bool{}
	for _, p := range reclaim.Prefixes {
		for _, k := range rg.s3.Keys(bucket, p) {
			out[k] = true
		}
	}
	return out
}

// checkConverges: a new instance from a snapshot at seq finds every object
// it needs (and every file its snapshot holds has its blob in the origin).
func (rg *rig) checkConverges(seq int64) {
	rg.t.Helper()
	have := rg.present()
	for k := range rg.needed(seq) {
		if !have[k] {
			rg.t.Fatalf("a volume from the snapshot at seq %d needs %s, which reclaim deleted", seq, k)
		}
	}
}

func sha(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// TestReclaimDeletesExactlyTheUnreferencedAfterGrace: a pool with history
// (syncs, a put replaced, a tree deleted, an upload never pushed), a
// retained snapshot, and pushes uploading while reclaim runs: exactly the
// objects nothing references, unreferenced and unchanged for the grace
// period, are deleted; a concurrent push's objects stay; a new instance
// from the retained snapshot finds everything it needs.
func TestReclaimDeletesExactlyTheUnreferencedAfterGrace(t *testing.T) {
	rg := newRig(t)
	rg.sync("www", map[string]string{"a": "a1", "b": "b1", "c": "c1"}) // 1: M1
	rg.putFile("media/v.mp4", "video-1")                               // 2
	rg.sync("docs", map[string]string{"x": "x1"})                      // 3: M3
	rg.putFile("media/v.mp4", "video-2")                               // 4: video-1 replaced
	rg.del("docs")                                                     // 5: M3, x1 gone
	six := rg.sync("www", map[string]string{"a": "a1", "d": "d1"})     // 6: M2; M1, b1, c1 replaced
	rg.blob("never-pushed")                                            // a rejected or abandoned push
	m1 := events.ManifestKey(rg.history[0].Manifest.SHA256)
	m3 := events.ManifestKey(rg.history[2].Manifest.SHA256)
	rg.snapshotAt(six) // the journal forgets 1..6: the base tree remembers
	if head, _ := rg.st.Head(context.Background(), pool); head != 6 {
		t.Fatalf("head %d", head)
	}
	if es, _ := rg.st.PresentEntries(context.Background(), pool, 0, 6); len(es) != 0 {
		t.Fatalf("entries 1..6 should have expired: %d left", len(es))
	}
	rg.putFile("img/logo.png", "logo-1") // 7, above the floor

	rg.clock.Advance(8 * 24 * time.Hour)
	// A push uploads now and has not reached the journal yet.
	inflight := rg.manifest(map[string]string{"p": "push-1", "q": "push-2"})
	res := rg.run()
	if res.Deleted != 0 || res.Skipped != "" {
		t.Fatalf("first sighting must only start the grace: %+v", res)
	}
	unref := []string{m1, m3, events.BlobKey(sha("b1")), events.BlobKey(sha("c1")), events.BlobKey(sha("video-1")),
		events.BlobKey(sha("x1")), events.BlobKey(sha("never-pushed"))}
	if res.Waiting != len(unref)+3 { // + the in-flight push's manifest and two blobs
		t.Fatalf("waiting %d, want %d: %+v", res.Waiting, len(unref)+3, res)
	}
	// The push lands; another one uploads just before the next run.
	rg.append(events.JournalEntry{Op: events.OpSync, Path: "shop", Manifest: &events.ManifestRef{SHA256: inflight}}) // 8
	rg.clock.Advance(7*24*time.Hour + time.Hour)
	late := rg.blob("uploading-now")
	before := rg.present()
	res = rg.run()

	after := rg.present()
	var gone []string
	for k := range before {
		if !after[k] {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	sort.Strings(unref)
	if fmt.Sprint(gone) != fmt.Sprint(unref) {
		t.Fatalf("deleted\n%v\nwant exactly\n%v", gone, unref)
	}
	if !after[events.BlobKey(late)] || !after[events.ManifestKey(inflight)] || !after[events.BlobKey(sha("push-1"))] {
		t.Fatal("a concurrent push's objects were deleted")
	}
	if res.Deleted != len(unref) || res.DeletedBytes == 0 || res.TotalDeleted != int64(len(unref)) {
		t.Fatalf("run summary %+v", res)
	}
	rg.checkConverges(six)
	rg.checkConverges(rg.seq)
	if stored, err := rg.st.GetReclaimRun(context.Background(), pool); err != nil || stored.Deleted != len(unref) {
		t.Fatalf("stored summary %+v %v", stored, err)
	}
	// The metrics the dashboard reads, with the catalogue's dimensions.
	seen := map[string]bool{}
	for _, l := range metrics.ParseLines(rg.emf.Bytes()) {
		if want, ok := metrics.Read[l.Name]; ok && fmt.Sprint(want) == fmt.Sprint(l.Dimensions) && l.Values["Pool"] == pool {
			seen[l.Name] = true
		}
	}
	if !seen[metrics.ReclaimedBytes] || !seen[metrics.UnreferencedBytes] {
		t.Fatalf("reclaim metrics not emitted as the catalogue says: %v\n%s", seen, rg.emf.String())
	}
}
