package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/store"
)

// Wait outcomes.
const (
	WaitCaughtUp = "caught-up" // every running instance reports seq ≥ the request's
	WaitRejected = "rejected"  // the push Lambda refused the request
	WaitFailed   = "failed"    // an instance reported an error before catching up
	WaitTimeout  = "timeout"   // time ran out: not processed, or instances lagging
)

// Instance verdicts in a wait.
const (
	InstanceOK      = "ok"
	InstanceFailed  = "failed"
	InstanceLagging = "lagging"
)

// Waited says how a wait ended.
type Waited struct {
	RequestID string        `json:"requestId"`
	Seq       int64         `json:"seq,omitempty"`
	Outcome   string        `json:"outcome"`
	Reason    string        `json:"reason,omitempty"`
	Instances []WaitedOn    `json:"instances"`
	Elapsed   time.Duration `json:"elapsedNs"`
}

// WaitedOn is one running instance at the end of a wait.
type WaitedOn struct {
	InstanceID   string    `json:"instanceId"`
	AZ           string    `json:"az"`
	State        string    `json:"state"`
	Seq          int64     `json:"seq"`
	Verdict      string    `json:"verdict"`
	LastStatus   string    `json:"lastStatus,omitempty"`
	LastError    string    `json:"lastError,omitempty"`
	LastReportAt time.Time `json:"lastReportAt,omitzero"`
}

// WaitError is a wait that did not end with every instance caught up.
type WaitError struct{ W Waited }

func (e *WaitError) Error() string {
	w := e.W
	switch w.Outcome {
	case WaitRejected:
		return fmt.Sprintf("request %s was rejected: %s", w.RequestID, w.Reason)
	case WaitFailed:
		return fmt.Sprintf("request %s (seq %d): %s", w.RequestID, w.Seq, w.Reason)
	default:
		return fmt.Sprintf("request %s: %s", w.RequestID, w.Reason)
	}
}

// running reports whether an instance counts for --wait and status: it is
// launching or ready (not terminating or gone).
func running(in store.Instance) bool {
	return in.State == store.InstanceLaunching || in.State == store.InstanceReady
}

// Wait polls until every running instance of the pool reports a seq at or
// above the request's. It first waits for the push Lambda's record of the
// request (appended: its seq; rejected: a WaitError with the reason). An
// instance whose latest report, made after sentAt, carries an error while
// it is still below the seq fails the wait at once; instances still below
// it when timeout ends are named as lagging.
func (a *App) Wait(ctx context.Context, requestID string, sentAt time.Time, timeout time.Duration) (Waited, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	w := Waited{RequestID: requestID, Instances: []WaitedOn{}}
	poll := a.Poll
	if poll <= 0 {
		poll = WaitPollMax
	}
	sleep := a.Sleep
	if sleep == nil {
		sleep = awserr.Sleep
	}
	var waited time.Duration // the pauses so far
	finish := func(outcome, reason string) (Waited, error) {
		w.Outcome, w.Reason, w.Elapsed = outcome, reason, time.Since(start)
		a.clearLine()
		if outcome == WaitCaughtUp {
			return w, nil
		}
		return w, &WaitError{W: w}
	}
	// pause sleeps until the next poll; false when the deadline has passed.
	pause := func() (bool, error) {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		d := min(waitPause(waited, poll), left)
		waited += d
		return true, sleep(ctx, d)
	}

	for {
		req, err := a.State.GetRequest(ctx, a.Cfg.Pool, requestID)
		if err == nil && req.State == store.RequestRejected {
			return finish(WaitRejected, req.Reason)
		}
		if err == nil {
			w.Seq = req.Seq
			break
		}
		if !errors.Is(err, store.ErrNotFound) && !awserr.IsRetryable(err) {
			return w, fmt.Errorf("read request %s: %w", requestID, err)
		}
		a.line("waiting for the push Lambda to take request %s", requestID)
		more, err := pause()
		if err != nil {
			return w, err
		}
		if !more {
			return finish(WaitTimeout, fmt.Sprintf("not processed by the push Lambda within %s (is its SQS trigger enabled? is the message in the dead-letter queue?)", timeout))
		}
	}

	var lagging []string // as last seen
	for {
		ins, err := a.State.ListInstances(ctx, a.Cfg.Pool)
		if err != nil && !awserr.IsRetryable(err) {
			return w, fmt.Errorf("list instances of %s: %w", a.Cfg.Pool, err)
		}
		if err == nil {
			lagging = nil
			w.Instances = judge(ins, w.Seq, sentAt)
			var failed []string
			for _, i := range w.Instances {
				switch i.Verdict {
				case InstanceFailed:
					failed = append(failed, fmt.Sprintf("%s (seq %d: %s)", i.InstanceID, i.Seq, i.LastError))
				case InstanceLagging:
					lagging = append(lagging, fmt.Sprintf("%s (seq %d)", i.InstanceID, i.Seq))
				}
			}
			switch {
			case len(failed) > 0:
				reason := "failed on " + strings.Join(failed, ", ")
				if len(lagging) > 0 {
					reason += "; still behind: " + strings.Join(lagging, ", ")
				}
				return finish(WaitFailed, reason)
			case len(lagging) == 0:
				return finish(WaitCaughtUp, "")
			}
			a.line("seq %d: %d of %d running instances caught up", w.Seq, len(w.Instances)-len(lagging), len(w.Instances))
		}
		more, err := pause()
		if err != nil {
			return w, err
		}
		if !more {
			return finish(WaitTimeout, fmt.Sprintf("seq %d not reached within %s by %s", w.Seq, timeout, strings.Join(lagging, ", ")))
		}
	}
}

// --wait reads the table WaitPollMin after it starts and then every
// eighth of the time it has waited, never less often than every
// WaitPollMax (App.Poll when set): a push that converges in a second is
// seen within about 100 ms of it (a fixed 2 s poll added up to 2 s to
// every wait, a second on average), and a long wait reads no more often
// than before. One read is a GetItem, or a Query of the pool's instances.
const (
	WaitPollMin = 100 * time.Millisecond
	WaitPollMax = 2 * time.Second
)

// waitPause is the pause before the next read after waiting waited in
// all, at most limit.
func waitPause(waited, limit time.Duration) time.Duration {
	return min(max(waited/8, WaitPollMin), limit)
}

// judge classifies the running instances against seq.
func judge(ins []store.Instance, seq int64, sentAt time.Time) []WaitedOn {
	out := []WaitedOn{}
	for _, i := range ins {
		if !running(i) {
			continue
		}
		v := WaitedOn{InstanceID: i.InstanceID, AZ: i.AZ, State: string(i.State), Seq: i.Seq, LastStatus: i.LastStatus,
			LastError: i.LastError, LastReportAt: i.LastReportAt}
		switch {
		case i.Seq >= seq:
			v.Verdict = InstanceOK
		case i.LastError != "" && !i.LastReportAt.Before(sentAt):
			v.Verdict = InstanceFailed
		default:
			v.Verdict = InstanceLagging
		}
		out = append(out, v)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].InstanceID < out[b].InstanceID })
	return out
}

// line shows a one-line status on a terminal.
func (a *App) line(format string, args ...any) {
	if a.Progress {
		fmt.Fprintf(a.errOut(), "\r\033[K"+format, args...)
	}
}

func (a *App) clearLine() {
	if a.Progress {
		fmt.Fprint(a.errOut(), "\r\033[K")
	}
}
