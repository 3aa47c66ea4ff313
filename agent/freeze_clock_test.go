package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/testenv"
)

// freezeByHand freezes a's mount and writes a marker with deadline, as
// Freeze does, without starting a watchdog.
func freezeByHand(t *testing.T, a *Agent, deadline time.Time) string {
	t.Helper()
	m := freezeMarker{Mount: a.cfg.MountPath, Deadline: deadline, Token: "t0ken"}
	data, _ := json.Marshal(m)
	if err := os.MkdirAll(a.cfg.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(a.freezePath(), data, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := openDir(a.cfg.MountPath)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFD(fd)
	if err := ioctlFreeze(fd); err != nil {
		t.Fatal(err)
	}
	return m.Token
}

// TestWatchdogIgnoresWallClockSteps: the wall clock steps back an hour
// right after the watchdog starts; it still thaws at the bound (one
// second), measured on the monotonic clock.
func TestWatchdogIgnoresWallClockSteps(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	var calls atomic.Int64
	stepped := func() time.Time {
		if calls.Add(1) == 1 {
			return time.Now()
		}
		return time.Now().Add(-time.Hour).Round(0) // a wall clock stepped back, no monotonic reading
	}
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 64)
	token := freezeByHand(t, a, time.Now().Add(time.Second))
	a.now = stepped
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Watchdog(ctx, token, time.Now().Add(time.Second)); err != nil {
		t.Fatalf("watchdog: %v (still frozen 20 s into a 1 s freeze after the clock stepped back)", err)
	}
	if frozen(t, cfg.MountPath) {
		t.Fatal("still frozen")
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, freezeFile)); !os.IsNotExist(err) {
		t.Fatalf("freeze marker still there: %v", err)
	}
}

// TestPeriodicApplyThawsAPassedFreeze: a freeze whose watchdog died is
// thawed by the next periodic apply even when it skips for having applied
// recently.
func TestPeriodicApplyThawsAPassedFreeze(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 64)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil { // reaches the head: writes last-apply
		t.Fatal(err)
	}
	freezeByHand(t, a, time.Now().Add(-time.Second))
	r = Report{}
	if err := a.Apply(context.Background(), 0, true, &r); err != nil {
		t.Fatalf("periodic apply: %v", err)
	}
	if frozen(t, cfg.MountPath) {
		t.Fatal("a freeze past its bound is still frozen after the periodic apply")
	}
}
