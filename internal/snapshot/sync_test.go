package snapshot_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

// TestSyncRecordsFollowsEC2: pending records become completed or error as
// EC2 says (with several DescribeSnapshots pages), unrecorded pool
// snapshots are adopted, records of vanished snapshots are dropped (young
// pending ones kept), and foreign or untagged snapshots are left alone.
func TestSyncRecordsFollowsEC2(t *testing.T) {
	ctx := context.Background()
	f := newFakeEC2("vol-1", "vol-2")
	f.PageSize = 2
	e := newEnv(t, f, func(c *snapshot.Config) { c.KMSKeyID = "another-key" })
	e.appendEntries(9)
	e.serve("i-1", "vol-1", 9, 9)
	r := e.runner()
	taken, err := r.Take(ctx)
	if err != nil || taken.SnapshotID == "" {
		t.Fatalf("take: %+v %v", taken, err)
	}
	pool := map[string]string{"volsd:pool": e.pool}
	tagged := func(seq string) map[string]string { return map[string]string{"volsd:pool": e.pool, "volsd:seq": seq} }
	old := time.Now().Add(-48 * time.Hour)
	failed := f.put("vol-2", ec2types.SnapshotStateError, old, tagged("4"))
	orphan := f.put("vol-2", ec2types.SnapshotStateCompleted, old, tagged("6"))
	untagged := f.put("vol-2", ec2types.SnapshotStateCompleted, old, pool)
	foreign := f.put("vol-2", ec2types.SnapshotStateCompleted, old, map[string]string{"volsd:pool": "other", "volsd:seq": "2"})
	doomed := f.put("vol-2", ec2types.SnapshotStateCompleted, old, tagged("3"))
	for _, rec := range []store.Snapshot{
		{Pool: e.pool, SnapshotID: "snap-vanished", State: store.SnapshotCompleted, Seq: 2, CreatedAt: old},
		{Pool: e.pool, SnapshotID: "snap-oldpending", State: store.SnapshotPending, Seq: 1, CreatedAt: old},
		{Pool: e.pool, SnapshotID: "snap-young", State: store.SnapshotPending, Seq: 9},
		{Pool: e.pool, SnapshotID: doomed, State: store.SnapshotDeleted, Seq: 3, CreatedAt: old},
	} {
		if _, err := e.st.PutSnapshot(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	res, err := r.SyncRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Adopted)
	slices.Sort(res.Dropped)
	if want := sorted(failed, orphan); !slices.Equal(res.Adopted, want) {
		t.Errorf("adopted %v, want %v", res.Adopted, want)
	}
	if want := []string{"snap-oldpending", "snap-vanished"}; !slices.Equal(res.Dropped, want) {
		t.Errorf("dropped %v, want %v", res.Dropped, want)
	}
	if len(res.Updated) != 0 {
		t.Errorf("updated %v while everything was pending", res.Updated)
	}
	get := func(id string) store.Snapshot {
		t.Helper()
		rec, err := e.st.GetSnapshot(ctx, e.pool, id)
		if err != nil {
			t.Fatalf("record %s: %v", id, err)
		}
		return rec
	}
	if rec := get(failed); rec.State != store.SnapshotError || rec.Seq != 4 || rec.LastError == "" || rec.VolumeID != "vol-2" {
		t.Errorf("failed snapshot record %+v", rec)
	}
	if rec := get(orphan); rec.State != store.SnapshotCompleted || rec.Seq != 6 || rec.CreatedAt.Sub(old).Abs() > time.Millisecond {
		t.Errorf("orphan record %+v", rec)
	}
	if rec := get(doomed); rec.State != store.SnapshotDeleted {
		t.Errorf("a deleted record was revived: %+v", rec)
	}
	get("snap-young")
	for _, id := range []string{untagged, foreign} {
		if _, err := e.st.GetSnapshot(ctx, e.pool, id); err == nil {
			t.Errorf("%s got a record", id)
		}
	}
	if !strings.Contains(e.logs.String(), "without a valid volsd:seq tag") {
		t.Error("the untagged pool snapshot is not reported")
	}

	f.setState(taken.SnapshotID, ec2types.SnapshotStateCompleted, "")
	res, err = r.SyncRecords(ctx)
	if err != nil || !slices.Equal(res.Updated, []string{taken.SnapshotID}) {
		t.Fatalf("second sync: %+v %v, want %s updated", res, err, taken.SnapshotID)
	}
	if rec := get(taken.SnapshotID); rec.State != store.SnapshotCompleted || rec.Seq != 9 {
		t.Errorf("completed record %+v", rec)
	}
	if !strings.Contains(e.logs.String(), "not encrypted with the pool's KMS key") {
		t.Error("a snapshot under another key is not reported")
	}
	// Nothing changed: a third sync changes nothing.
	res, err = r.SyncRecords(ctx)
	if err != nil || len(res.Updated)+len(res.Adopted)+len(res.Dropped) != 0 {
		t.Errorf("third sync: %+v %v, want no change", res, err)
	}
}

func sorted(s ...string) []string { slices.Sort(s); return s }
