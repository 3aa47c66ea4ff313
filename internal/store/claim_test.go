package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/volsd/volsd/internal/store"
)

// TestClaimIdleRace: 50 goroutines claim from 10 idle volumes in one AZ while
// 5 idle volumes wait in another AZ. Exactly 10 claims succeed, no volume is
// claimed twice, the other AZ is untouched.
func TestClaimIdleRace(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1a", i))
	}
	for i := 0; i < 5; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1b", i))
	}
	type result struct {
		inst string
		v    store.Volume
		err  error
	}
	results := make(chan result, 50)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start
			inst := fmt.Sprintf("i-%017x", g+1)
			v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", inst)
			results <- result{inst, v, err}
		}(g)
	}
	close(start)
	wg.Wait()
	close(results)

	byVolume := map[string]string{}
	claims, empty := 0, 0
	for r := range results {
		switch {
		case r.err == nil:
			claims++
			if other, dup := byVolume[r.v.VolumeID]; dup {
				t.Errorf("volume %s claimed by %s and %s", r.v.VolumeID, other, r.inst)
			}
			byVolume[r.v.VolumeID] = r.inst
			if r.v.AZ != "eu-west-1a" || r.v.State != store.VolumeClaimed || r.v.InstanceID != r.inst {
				t.Errorf("claim result %+v for %s", r.v, r.inst)
			}
		case errors.Is(r.err, store.ErrNoIdle):
			empty++
		default:
			t.Errorf("%s: unexpected error %v", r.inst, r.err)
		}
	}
	if claims != 10 || empty != 40 {
		t.Errorf("claims = %d, no-idle = %d; want 10 and 40", claims, empty)
	}
	// The table agrees: 10 claimed in a, each bound both ways.
	claimed, _ := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeClaimed)
	if len(claimed) != 10 {
		t.Errorf("%d claimed volumes in the table, want 10", len(claimed))
	}
	for _, v := range claimed {
		inst, err := s.GetInstance(ctx, "web", v.InstanceID)
		if err != nil || inst.VolumeID != v.VolumeID || inst.State != store.InstanceLaunching {
			t.Errorf("instance %s binding: %+v %v", v.InstanceID, inst, err)
		}
	}
	other, _ := s.ListVolumesByState(ctx, "web", "eu-west-1b", store.VolumeIdle)
	if len(other) != 5 {
		t.Errorf("other AZ has %d idle volumes, want 5 untouched", len(other))
	}
	for _, v := range other {
		if v.Rev != 1 {
			t.Errorf("other AZ volume %s was written (rev %d)", v.VolumeID, v.Rev)
		}
	}
}

// TestClaimIdleIsIdempotentPerInstance: the same instance claiming 20 times
// at once (duplicate lifecycle events) ends with exactly one volume.
func TestClaimIdleIsIdempotentPerInstance(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1a", i))
	}
	const inst = "i-0aaaaaaaaaaaaaaaa"
	var wg sync.WaitGroup
	got := make([]string, 20)
	for g := range got {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", inst)
			if err != nil {
				t.Errorf("claim %d: %v", g, err)
				return
			}
			got[g] = v.VolumeID
		}(g)
	}
	wg.Wait()
	for _, id := range got[1:] {
		if id != got[0] {
			t.Fatalf("same instance got different volumes: %v", got)
		}
	}
	idle, _ := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeIdle)
	if len(idle) != 4 {
		t.Errorf("%d idle left, want 4 (one claim only)", len(idle))
	}
	// A later call still returns it.
	v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", inst)
	if err != nil || v.VolumeID != got[0] {
		t.Errorf("later claim: %v %v", v.VolumeID, err)
	}
}

func TestClaimIdleEmptyAZ(t *testing.T) {
	s, _ := newStore(t)
	_, err := s.ClaimIdle(context.Background(), "web", "eu-west-1c", "i-0bbbbbbbbbbbbbbbb")
	if !errors.Is(err, store.ErrNoIdle) {
		t.Fatalf("got %v, want ErrNoIdle", err)
	}
}

func TestAssignNewIsIdempotent(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const inst = "i-0cccccccccccccccc"
	v := store.Volume{Pool: "web", VolumeID: "vol-0new", State: store.VolumeCreating, AZ: "eu-west-1a", InstanceID: inst, SizeGiB: 10}
	a, err := s.AssignNew(ctx, v)
	if err != nil || a.Rev != 1 {
		t.Fatalf("assign: %+v %v", a, err)
	}
	b, err := s.AssignNew(ctx, v)
	if err != nil || b.VolumeID != "vol-0new" {
		t.Fatalf("repeat assign: %+v %v", b, err)
	}
	other := v
	other.VolumeID = "vol-0other"
	held, err := s.AssignNew(ctx, other)
	if !errors.Is(err, store.ErrExists) || held.VolumeID != "vol-0new" {
		t.Fatalf("second volume for the instance: %+v %v, want ErrExists naming vol-0new", held, err)
	}
	if _, err := s.GetVolume(ctx, "web", "vol-0other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the extra volume was recorded: %v", err)
	}
	// After unbinding, the instance can be bound again.
	if err := s.UnbindInstance(ctx, "web", inst, "vol-0new"); err != nil {
		t.Fatal(err)
	}
	in, _ := s.GetInstance(ctx, "web", inst)
	if in.VolumeID != "" || in.State != store.InstanceLaunching {
		t.Errorf("after unbind: %+v", in)
	}
	// Unbound, the instance may be given a new volume.
	fresh := v
	fresh.VolumeID = "vol-0fresh"
	if got, err := s.AssignNew(ctx, fresh); err != nil || got.VolumeID != "vol-0fresh" {
		t.Errorf("assign after unbind: %+v %v", got, err)
	}
}
