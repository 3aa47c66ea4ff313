package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/store"
)

// TestLeaseRace: 16 goroutines try to take the same lease; exactly one wins.
func TestLeaseRace(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	until := time.Now().Add(time.Minute)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
	)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("run-%d", i)
			_, err := s.AcquireLease(ctx, "web", "snapshot", owner, until)
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, owner)
				mu.Unlock()
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("%s: %v", owner, err)
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("winners %v, want exactly one", winners)
	}
	// The holder may extend; others still lose, with the holder named.
	if _, err := s.AcquireLease(ctx, "web", "snapshot", winners[0], until.Add(time.Minute)); err != nil {
		t.Fatalf("holder extends: %v", err)
	}
	_, err := s.AcquireLease(ctx, "web", "snapshot", "late", until)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("late: %v, want ErrConflict", err)
	}
	if want := "held by " + winners[0]; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	// Another pool or lease name is independent.
	if _, err := s.AcquireLease(ctx, "other", "snapshot", "late", until); err != nil {
		t.Errorf("other pool: %v", err)
	}
	// Releasing by a non-holder changes nothing; by the holder frees it.
	if err := s.ReleaseLease(ctx, "web", "snapshot", "late"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, "web", "snapshot", "late", until); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("after a non-holder's release: %v, want ErrConflict", err)
	}
	if err := s.ReleaseLease(ctx, "web", "snapshot", winners[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, "web", "snapshot", winners[0]); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if _, err := s.AcquireLease(ctx, "web", "snapshot", "late", until); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestLeaseRunsOut(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.AcquireLease(ctx, "web", "snapshot", "dead", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, "web", "snapshot", "next", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("taking over a lease that ran out: %v", err)
	}
	if _, err := s.AcquireLease(ctx, "web", "snapshot", "", time.Now()); err == nil {
		t.Fatal("empty owner accepted")
	}
}
