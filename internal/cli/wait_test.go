package cli_test

import (
	"context"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/store"
)

// waitState is a pool whose push Lambda takes the request after
// requestAfter reads and whose instances reach seq 7 after caughtUpAfter
// reads of the instances.
type waitState struct {
	cli.State
	requestAfter, caughtUpAfter int
	requestReads, instanceReads int
}

func (s *waitState) GetRequest(_ context.Context, pool, id string) (store.Request, error) {
	s.requestReads++
	if s.requestReads <= s.requestAfter {
		return store.Request{}, store.ErrNotFound
	}
	return store.Request{Pool: pool, RequestID: id, State: store.RequestAppended, Seq: 7}, nil
}

func (s *waitState) ListInstances(_ context.Context, pool string) ([]store.Instance, error) {
	s.instanceReads++
	seq := int64(6)
	if s.instanceReads > s.caughtUpAfter {
		seq = 7
	}
	var out []store.Instance
	for _, id := range []string{"i-1", "i-2", "i-3"} {
		out = append(out, store.Instance{Pool: pool, InstanceID: id, State: store.InstanceReady, Seq: seq})
	}
	return out, nil
}

// TestWaitReadsSoonThenBacksOff: --wait reads the table WaitPollMin after
// it starts and then every eighth of what it has waited, capped at
// WaitPollMax (a fixed 2 s poll added up to 2 s to every push that
// converges in a second), and reads no more often than that over a long
// wait.
func TestWaitReadsSoonThenBacksOff(t *testing.T) {
	st := &waitState{requestAfter: 2, caughtUpAfter: 200}
	var pauses []time.Duration
	a := &cli.App{Cfg: cli.Config{Pool: "web"}, State: st, Sleep: func(_ context.Context, d time.Duration) error {
		pauses = append(pauses, d)
		return nil
	}}
	w, err := a.Wait(context.Background(), "req-1", time.Now(), time.Hour)
	if err != nil || w.Outcome != cli.WaitCaughtUp || w.Seq != 7 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if len(pauses) != 2+200 {
		t.Fatalf("%d pauses, want one before each read after the first (202)", len(pauses))
	}
	if pauses[0] > cli.WaitPollMin {
		t.Errorf("first pause %s: a push that converges at once waits that long; want at most %s", pauses[0], cli.WaitPollMin)
	}
	var waited time.Duration
	for i, d := range pauses {
		if d < cli.WaitPollMin || d > cli.WaitPollMax {
			t.Fatalf("pause %d is %s, want %s..%s", i, d, cli.WaitPollMin, cli.WaitPollMax)
		}
		if want := min(max(waited/8, cli.WaitPollMin), cli.WaitPollMax); d != want {
			t.Fatalf("pause %d after %s waited is %s, want %s (an eighth of the wait, within the bounds)", i, waited, d, want)
		}
		waited += d
	}
	if first1s := countUntil(pauses, time.Second); first1s > 12 {
		t.Errorf("%d reads in the first second, want at most 12", first1s)
	}
	if last := pauses[len(pauses)-1]; last != cli.WaitPollMax {
		t.Errorf("after %s of waiting the pause is %s, want the cap %s", waited, last, cli.WaitPollMax)
	}
}

// countUntil counts the pauses that end within d of the start.
func countUntil(pauses []time.Duration, d time.Duration) int {
	var at time.Duration
	n := 0
	for _, p := range pauses {
		if at += p; at > d {
			break
		}
		n++
	}
	return n
}
