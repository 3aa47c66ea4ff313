package lambdamain

import (
	"context"
	"testing"
	"time"
)

func TestMarginDeadline(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name         string
		left, margin time.Duration
		cut          time.Duration // how much earlier than the deadline the result ends
	}{
		{"plenty of time", 60 * time.Second, 10 * time.Second, 10 * time.Second},
		{"exactly twice the margin", 20 * time.Second, 10 * time.Second, 10 * time.Second},
		{"less than twice: half the time left", 8 * time.Second, 10 * time.Second, 4 * time.Second},
		{"deadline passed: not moved", -time.Second, 10 * time.Second, 0},
	} {
		dl := now.Add(tc.left)
		if got := dl.Sub(marginDeadline(dl, now, tc.margin)); got != tc.cut {
			t.Errorf("%s: cut %v before the deadline, want %v", tc.name, got, tc.cut)
		}
	}
}

func TestWithDeadlineMargin(t *testing.T) {
	bg := context.Background()
	got, cancel := WithDeadlineMargin(bg, 10*time.Second)
	if _, ok := got.Deadline(); ok {
		t.Error("no deadline: one appeared")
	}
	cancel()
	if got.Err() == nil {
		t.Error("cancel does not end it")
	}

	dl := time.Now().Add(time.Hour)
	ctx, cancel := context.WithDeadline(bg, dl)
	defer cancel()
	got, gcancel := WithDeadlineMargin(ctx, 0)
	defer gcancel()
	if gdl, _ := got.Deadline(); !gdl.Equal(dl) {
		t.Errorf("margin 0 moved the deadline by %v", dl.Sub(gdl))
	}
	got, gcancel = WithDeadlineMargin(ctx, time.Minute)
	defer gcancel()
	if gdl, _ := got.Deadline(); !gdl.Equal(dl.Add(-time.Minute)) {
		t.Errorf("margin 1m: deadline %v before, want 1m", dl.Sub(gdl))
	}
}
