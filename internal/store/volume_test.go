package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/volsd/volsd/internal/store"
)

func TestVolumeLifecycleAndConflicts(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	v, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1a", 1))
	if err != nil {
		t.Fatal(err)
	}
	if v.Rev != 1 || v.CreatedAt.IsZero() {
		t.Fatalf("put returned %+v", v)
	}
	if _, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1a", 1)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second put: %v, want ErrExists", err)
	}
	got, err := s.GetVolume(ctx, "web", v.VolumeID)
	if err != nil || got.State != store.VolumeIdle || got.Rev != 1 || got.Seq != 3 || got.AZ != "eu-west-1a" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if !got.CreatedAt.Equal(v.CreatedAt) {
		t.Errorf("createdAt round trip: %v vs %v", got.CreatedAt, v.CreatedAt)
	}

	next := got
	next.State = store.VolumeClaimed
	next.InstanceID = "i-0123456789abcdef0"
	claimed, err := s.TransitionVolume(ctx, next, store.VolumeIdle)
	if err != nil || claimed.Rev != 2 {
		t.Fatalf("transition: %+v %v", claimed, err)
	}
	// Stale rev: the caller read rev 1, the item is at rev 2 now.
	stale := got
	stale.State = store.VolumeDeleting
	if _, err := s.TransitionVolume(ctx, stale, store.VolumeIdle); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale rev: %v, want ErrConflict", err)
	}
	// Right rev, wrong expected state.
	wrong := claimed
	wrong.State = store.VolumeInUse
	if _, err := s.TransitionVolume(ctx, wrong, store.VolumeIdle); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("wrong from-state: %v, want ErrConflict", err)
	}
	after, _ := s.GetVolume(ctx, "web", v.VolumeID)
	if after.State != store.VolumeClaimed || after.Rev != 2 {
		t.Fatalf("failed transitions changed the item: %+v", after)
	}
	if err := s.DeleteVolume(ctx, "web", v.VolumeID, 1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete with stale rev: %v", err)
	}
	if err := s.DeleteVolume(ctx, "web", v.VolumeID, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVolume(ctx, "web", v.VolumeID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestListVolumesByStateUsesAZAndState(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1a", i))
	}
	mustPut(t, s, idleVolume("web", "eu-west-1b", 7))
	mustPut(t, s, idleVolume("other", "eu-west-1a", 9))
	busy := idleVolume("web", "eu-west-1a", 8)
	busy.State = store.VolumeInUse
	mustPut(t, s, busy)

	idle, err := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeIdle)
	if err != nil || len(idle) != 3 {
		t.Fatalf("idle in a: %d %v", len(idle), err)
	}
	for _, v := range idle {
		if v.Pool != "web" || v.AZ != "eu-west-1a" || v.State != store.VolumeIdle {
			t.Errorf("unexpected %+v", v)
		}
	}
	inUse, _ := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeInUse)
	if len(inUse) != 1 || inUse[0].VolumeID != busy.VolumeID {
		t.Errorf("in-use: %+v", inUse)
	}
	all, err := s.ListVolumes(ctx, "web")
	if err != nil || len(all) != 5 {
		t.Errorf("ListVolumes(web) = %d %v, want 5", len(all), err)
	}
}
