package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

func motoSnapshot(t testing.TB, c *ec2.Client, vol string, tags map[string]string) string {
	t.Helper()
	var tt []ec2types.Tag
	for k, v := range tags {
		tt = append(tt, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	out, err := c.CreateSnapshot(context.Background(), &ec2.CreateSnapshotInput{VolumeId: aws.String(vol),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot, Tags: tt}}})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.SnapshotId)
}

// TestRetentionKeepsExactlyK: against moto, of six completed pool
// snapshots (seq 1..6) exactly the K newest stay, with their records;
// snapshots of another pool or without volsd:seq are never touched; a
// second run deletes nothing.
func TestRetentionKeepsExactlyK(t *testing.T) {
	for _, k := range []int{1, 3, 8} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			ctx := context.Background()
			ec2c, vol := motoEC2(t)
			e := newEnv(t, ec2c, func(c *snapshot.Config) { c.Keep = k })
			bySeq := map[int64]string{}
			for seq := int64(1); seq <= 6; seq++ {
				bySeq[seq] = motoSnapshot(t, ec2c, vol, map[string]string{"volsd:pool": e.pool, "volsd:seq": strconv.FormatInt(seq, 10)})
			}
			untagged := motoSnapshot(t, ec2c, vol, map[string]string{"volsd:pool": e.pool})
			foreign := motoSnapshot(t, ec2c, vol, map[string]string{"volsd:pool": e.pool + "-other", "volsd:seq": "1"})
			r := e.runner()
			if _, err := r.SyncRecords(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := r.Retain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var wantKept, wantDeleted []string
			for seq := int64(6); seq >= 1; seq-- {
				if int(6-seq) < k {
					wantKept = append(wantKept, bySeq[seq])
				} else {
					wantDeleted = append(wantDeleted, bySeq[seq])
				}
			}
			if !slices.Equal(res.Kept, wantKept) {
				t.Errorf("kept %v, want %v (newest first)", res.Kept, wantKept)
			}
			if !slices.Equal(sorted(res.Deleted...), sorted(wantDeleted...)) {
				t.Errorf("deleted %v, want %v", res.Deleted, wantDeleted)
			}
			out, err := ec2c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
				Filters: []ec2types.Filter{{Name: aws.String("tag:volsd:pool"), Values: []string{e.pool, e.pool + "-other"}}}})
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, s := range out.Snapshots {
				left = append(left, aws.ToString(s.SnapshotId))
			}
			if want := sorted(append(slices.Clone(wantKept), untagged, foreign)...); !slices.Equal(sorted(left...), want) {
				t.Errorf("left in EC2 %v, want %v", sorted(left...), want)
			}
			recs, err := e.st.ListSnapshots(ctx, e.pool)
			if err != nil {
				t.Fatal(err)
			}
			var recIDs []string
			for _, rec := range recs {
				recIDs = append(recIDs, rec.SnapshotID)
				if rec.State != store.SnapshotCompleted {
					t.Errorf("record %+v", rec)
				}
			}
			if !slices.Equal(sorted(recIDs...), sorted(wantKept...)) {
				t.Errorf("records %v, want %v", recIDs, wantKept)
			}
			again, err := r.Retain(ctx)
			if err != nil || len(again.Deleted) != 0 || len(again.Kept) != min(k, 6) {
				t.Errorf("second retain: %+v %v", again, err)
			}
		})
	}
}

// TestRetentionSparesBaseOfCreatingVolume: an old snapshot that a volume
// is being created from survives until that volume is no longer creating;
// pending snapshots are never deleted, failed ones are.
func TestRetentionSparesBaseOfCreatingVolume(t *testing.T) {
	ctx := context.Background()
	f := newFakeEC2("vol-1")
	e := newEnv(t, f, func(c *snapshot.Config) { c.Keep = 1 })
	tagged := func(seq string) map[string]string { return map[string]string{"volsd:pool": e.pool, "volsd:seq": seq} }
	start := time.Now().Add(-time.Hour)
	s1 := f.put("vol-1", ec2types.SnapshotStateCompleted, start, tagged("1"))
	s2 := f.put("vol-1", ec2types.SnapshotStateCompleted, start.Add(time.Minute), tagged("2"))
	s3 := f.put("vol-1", ec2types.SnapshotStateCompleted, start.Add(2*time.Minute), tagged("3"))
	pending := f.put("vol-1", ec2types.SnapshotStatePending, start.Add(-time.Hour), tagged("0"))
	failed := f.put("vol-1", ec2types.SnapshotStateError, start, tagged("2"))
	r := e.runner()
	if _, err := r.SyncRecords(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := e.st.PutVolume(ctx, store.Volume{Pool: e.pool, VolumeID: "vol-new", State: store.VolumeCreating, AZ: testAZ, Seq: 1, SnapshotID: s1, SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Retain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Kept, []string{s3}) || !slices.Equal(sorted(res.Deleted...), sorted(s2, failed)) {
		t.Fatalf("retain: %+v, want %s kept and %s, %s deleted", res, s3, s2, failed)
	}
	if !strings.Contains(res.Skipped[s1], "vol-new") {
		t.Errorf("skipped %v, want %s spared for vol-new", res.Skipped, s1)
	}
	if want := sorted(s1, s3, pending); !slices.Equal(f.ids(), want) {
		t.Fatalf("left %v, want %v", f.ids(), want)
	}
	if rec, err := e.st.GetSnapshot(ctx, e.pool, s1); err != nil || rec.State != store.SnapshotCompleted {
		t.Errorf("record of the spared base: %+v %v", rec, err)
	}
	v.State = store.VolumeIdle
	if _, err := e.st.TransitionVolume(ctx, v, store.VolumeCreating); err != nil {
		t.Fatal(err)
	}
	res, err = r.Retain(ctx)
	if err != nil || !slices.Equal(res.Deleted, []string{s1}) {
		t.Fatalf("after the volume is idle: %+v %v, want %s deleted", res, err, s1)
	}
	if want := sorted(s3, pending); !slices.Equal(f.ids(), want) {
		t.Errorf("left %v, want %v", f.ids(), want)
	}
}

// TestRetentionInUseAndAlreadyGone: InvalidSnapshot.InUse leaves the
// snapshot for the next run (its record marked deleted so nobody uses it),
// InvalidSnapshot.NotFound counts as deleted.
func TestRetentionInUseAndAlreadyGone(t *testing.T) {
	ctx := context.Background()
	f := newFakeEC2("vol-1")
	e := newEnv(t, f, func(c *snapshot.Config) { c.Keep = 1 })
	tagged := func(seq string) map[string]string { return map[string]string{"volsd:pool": e.pool, "volsd:seq": seq} }
	start := time.Now().Add(-time.Hour)
	inUse := f.put("vol-1", ec2types.SnapshotStateCompleted, start, tagged("1"))
	gone := f.put("vol-1", ec2types.SnapshotStateCompleted, start, tagged("2"))
	kept := f.put("vol-1", ec2types.SnapshotStateCompleted, start, tagged("3"))
	r := e.runner()
	if _, err := r.SyncRecords(ctx); err != nil {
		t.Fatal(err)
	}
	f.setInUse(inUse, true)
	f.setVanish(gone)
	res, err := r.Retain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Deleted, []string{gone}) || !strings.Contains(res.Skipped[inUse], "in use") || !slices.Equal(res.Kept, []string{kept}) {
		t.Fatalf("retain: %+v", res)
	}
	if rec, err := e.st.GetSnapshot(ctx, e.pool, inUse); err != nil || rec.State != store.SnapshotDeleted {
		t.Errorf("record of the in-use snapshot: %+v %v, want state deleted", rec, err)
	}
	if _, err := e.st.GetSnapshot(ctx, e.pool, gone); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record of the vanished snapshot: %v, want dropped", err)
	}
	// A sync in between does not revive the record.
	if _, err := r.SyncRecords(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, _ := e.st.GetSnapshot(ctx, e.pool, inUse); rec.State != store.SnapshotDeleted {
		t.Errorf("sync revived %+v", rec)
	}
	// With K raised to 3 the in-use snapshot is among the kept ones again:
	// its record is usable again and nothing is deleted.
	e.cfg.Keep = 3
	res, err = e.runner().Retain(ctx)
	if err != nil || len(res.Deleted) != 0 || len(res.Kept) != 2 {
		t.Fatalf("retain with K=3: %+v %v", res, err)
	}
	if rec, err := e.st.GetSnapshot(ctx, e.pool, inUse); err != nil || rec.State != store.SnapshotCompleted {
		t.Errorf("record of a kept snapshot: %+v %v, want completed", rec, err)
	}
	f.setInUse(inUse, false)
	res, err = r.Retain(ctx)
	if err != nil || !slices.Equal(res.Deleted, []string{inUse}) {
		t.Fatalf("second retain: %+v %v", res, err)
	}
	if _, err := e.st.GetSnapshot(ctx, e.pool, inUse); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record after deletion: %v, want dropped", err)
	}
	if !slices.Equal(f.ids(), []string{kept}) {
		t.Errorf("left %v", f.ids())
	}
}
