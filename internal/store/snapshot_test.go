package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/volsd/volsd/internal/store"
)

func TestSnapshots(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	sn, err := s.PutSnapshot(ctx, store.Snapshot{Pool: "web", SnapshotID: "snap-01", State: store.SnapshotPending, Seq: 12, VolumeID: "vol-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSnapshot(ctx, sn); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate snapshot: %v", err)
	}
	sn.State = store.SnapshotCompleted
	done, err := s.UpdateSnapshot(ctx, sn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateSnapshot(ctx, sn); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale snapshot update: %v", err)
	}
	list, _ := s.ListSnapshots(ctx, "web")
	if len(list) != 1 || list[0].State != store.SnapshotCompleted || list[0].Seq != 12 {
		t.Errorf("list %+v", list)
	}
	if err := s.DeleteSnapshotRecord(ctx, "web", "snap-01", done.Rev); err != nil {
		t.Fatal(err)
	}
}
