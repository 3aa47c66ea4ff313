package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/store"
)

func TestUnbindInstanceKeepsState(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const iid = "i-0123456789abcdef0"
	if _, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1a", 1)); err != nil {
		t.Fatal(err)
	}
	v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", iid)
	if err != nil {
		t.Fatal(err)
	}
	// A terminate marks the instance terminating meanwhile.
	inst, err := s.GetInstance(ctx, "web", iid)
	if err != nil {
		t.Fatal(err)
	}
	inst.State = store.InstanceTerminating
	if _, err := s.UpdateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if err := s.UnbindInstance(ctx, "web", iid, "vol-other"); err != nil {
		t.Fatalf("unbind from another volume: %v", err)
	}
	if got, _ := s.GetInstance(ctx, "web", iid); got.VolumeID != v.VolumeID {
		t.Fatalf("unbinding another volume cleared the binding: %+v", got)
	}
	if err := s.UnbindInstance(ctx, "web", iid, v.VolumeID); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetInstance(ctx, "web", iid)
	if err != nil || got.VolumeID != "" || got.State != store.InstanceTerminating || got.Rev != inst.Rev+2 {
		t.Fatalf("after unbind: %+v %v (rev before %d)", got, err, inst.Rev)
	}
	if err := s.UnbindInstance(ctx, "web", "i-0000000000000000a", v.VolumeID); err != nil {
		t.Fatalf("unbind of an unknown instance: %v", err)
	}
}

func TestDeleteInstanceOnlyWithoutVolumeAtRev(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const iid = "i-0123456789abcdef1"
	if _, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1b", 2)); err != nil {
		t.Fatal(err)
	}
	v, err := s.ClaimIdle(ctx, "web", "eu-west-1b", iid)
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := s.GetInstance(ctx, "web", iid)
	if err := s.DeleteInstance(ctx, "web", iid, inst.Rev); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete of a bound instance: %v", err)
	}
	if err := s.UnbindInstance(ctx, "web", iid, v.VolumeID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteInstance(ctx, "web", iid, inst.Rev); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete at a stale rev: %v", err)
	}
	if err := s.DeleteInstance(ctx, "web", iid, inst.Rev+1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetInstance(ctx, "web", iid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestInstanceSeqNeverDecreases(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	in, err := s.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: "i-0ddddddddddddddd1", AZ: "eu-west-1a", State: store.InstanceReady, Seq: 5})
	if err != nil {
		t.Fatal(err)
	}
	lower := in
	lower.Seq = 4
	if _, err := s.UpdateInstance(ctx, lower); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("lowering seq: %v, want ErrConflict", err)
	}
	higher := in
	higher.Seq, higher.LastReportAt = 9, time.Now().UTC()
	up, err := s.UpdateInstance(ctx, higher)
	if err != nil || up.Rev != 2 {
		t.Fatalf("raise seq: %+v %v", up, err)
	}
	if _, err := s.UpdateInstance(ctx, higher); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale rev: %v", err)
	}
	got, _ := s.GetInstance(ctx, "web", in.InstanceID)
	if got.Seq != 9 || got.LastReportAt.IsZero() {
		t.Errorf("stored %+v", got)
	}
	list, _ := s.ListInstances(ctx, "web")
	if len(list) != 1 {
		t.Errorf("ListInstances = %d", len(list))
	}
}
