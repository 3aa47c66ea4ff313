package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/store"
)

// MetricAge is the EMF metric of the newest completed snapshot's age.
const MetricAge = metrics.SnapshotAgeSeconds

// Age returns how long the newest completed snapshot has been out of date:
// the seconds since it was started or since the first journal entry it
// lacks was appended, whichever is later; 0 when it holds the journal head
// (a quiet pool needs no new snapshot, and Take takes none, so it is not
// stale). Without a completed snapshot it is the age of journal entry 1
// (0 for an empty journal). It is what the SnapshotAge alarm watches: it
// grows only while the pool has content that no completed snapshot holds.
func Age(ctx context.Context, st *store.Store, pool string, now time.Time) (time.Duration, error) {
	head, err := st.Head(ctx, pool)
	if err != nil {
		return 0, err
	}
	recs, err := st.ListSnapshots(ctx, pool)
	if err != nil {
		return 0, err
	}
	newest, ok := Newest(recs)
	if ok && newest.Seq >= head || !ok && head == 0 {
		return 0, nil
	}
	var since time.Time
	after := int64(0)
	if ok {
		since, after = newest.CreatedAt, newest.Seq
	}
	// Entries above the oldest kept snapshot are never removed, so the
	// first entry after the newest one is there.
	es, err := st.Entries(ctx, pool, after, after+1)
	if err != nil {
		return 0, err
	}
	switch {
	case len(es) == 1 && es[0].CreatedAt.After(since):
		since = es[0].CreatedAt
	case len(es) == 0 && !ok:
		return 0, fmt.Errorf("pool %s has no completed snapshot and journal entry 1 is gone; cannot tell the snapshot age", pool)
	}
	return max(now.Sub(since), 0), nil
}

// emitAge computes Age and writes it as SnapshotAgeSeconds (dimension Pool).
func (r *Runner) emitAge(ctx context.Context) (float64, error) {
	age, err := Age(ctx, r.st, r.cfg.Pool, r.now())
	if err != nil {
		return -1, err
	}
	secs := age.Seconds()
	r.metrics.Put(MetricAge, secs, metrics.Seconds, map[string]string{"Pool": r.cfg.Pool})
	return secs, nil
}

// DefaultInterval is how often a snapshot is taken unless the pool says
// otherwise (snapshotIntervalHours).
const DefaultInterval = 6 * time.Hour

// MaxAge is the snapshot age (Age) the SnapshotAge alarm and volsd doctor
// allow for a snapshot schedule of interval: two intervals and an hour, so
// one failed run does not raise it.
func MaxAge(interval time.Duration) time.Duration { return 2*interval + time.Hour }
