package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// A refused entry (KindBadContent) stalls the pool at its seq until an
// operator repairs the origin (`volsd repair`). The agent never gives up
// on it: up retries it in place, and the timer's periodic apply tries it
// again after a backoff that starts at Deps.StallRetry and doubles up to
// MaxStallRetry, recorded in runDir/stall.json. Commands sent by SSM (a
// push, a repair's superseding entry) always try at once.
const (
	DefaultStallRetry = time.Minute
	MaxStallRetry     = 15 * time.Minute
	stallFile         = "stall.json"
)

// stallRecord is what stall.json holds.
type stallRecord struct {
	Seq      int64     `json:"seq"`
	Error    string    `json:"error"`
	Failures int       `json:"failures"`
	Since    time.Time `json:"since"`
	Next     time.Time `json:"next"`
}

// stallWait is the backoff after the n-th refusal in a row.
func (a *Agent) stallWait(n int) time.Duration {
	d := a.stallRetry
	for i := 1; i < n && d < MaxStallRetry; i++ {
		d *= 2
	}
	return min(d, MaxStallRetry)
}

func (a *Agent) readStall() (stallRecord, bool) {
	var st stallRecord
	data, err := os.ReadFile(filepath.Join(a.cfg.RunDir, stallFile))
	if err != nil || json.Unmarshal(data, &st) != nil {
		return stallRecord{}, false
	}
	return st, true
}

// recordStall counts one more refusal of entry seq and returns the record.
func (a *Agent) recordStall(seq int64, err error) stallRecord {
	st, ok := a.readStall()
	if !ok || st.Seq != seq {
		st = stallRecord{Seq: seq, Since: a.now().UTC()}
	}
	st.Failures++
	st.Error = err.Error()
	st.Next = a.now().Add(a.stallWait(st.Failures)).UTC()
	if data, jerr := json.Marshal(st); jerr == nil {
		if werr := writeFileAtomic(filepath.Join(a.cfg.RunDir, stallFile), data, 0o600); werr != nil {
			a.log.Warn("could not record the refused entry", "seq", seq, "err", werr)
		}
	}
	return st
}

func (a *Agent) clearStall() { _ = os.Remove(filepath.Join(a.cfg.RunDir, stallFile)) }

// applyUntilRepaired is up's catch-up: it applies to the head and, while
// an entry is refused as bad content, waits the stall backoff and tries
// again (heartbeating the hook through progress), so up never ends in a
// state its unit does not restart; any other failure is returned.
func (a *Agent) applyUntilRepaired(ctx context.Context, lock *applyLock, r *Report, progress func()) error {
	for {
		err := a.applyLocked(ctx, 0, lock, r, progress)
		if KindOf(err) != KindBadContent {
			if err == nil {
				a.clearStall()
			}
			return err
		}
		st := a.recordStall(r.Seq+1, err)
		wait := st.Next.Sub(a.now())
		a.log.Error("journal entry refused; the pool is stalled there until the origin is repaired (volsd repair); retrying",
			"seq", st.Seq, "failures", st.Failures, "retryIn", wait.Round(time.Second).String(), "err", err)
		select {
		case <-ctx.Done():
			return retryable("stalled at entry %d (%v): %v", st.Seq, err, ctx.Err())
		case <-time.After(wait):
		}
		if progress != nil {
			progress()
		}
	}
}
