package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/reclaim"
	"github.com/volsd/volsd/internal/store"
)

// Floor returns the journal compaction floor of a pool and what holds it:
// the smallest seq anything may still need to catch up from. Entries at or
// below it may expire; nothing above it is ever removed.
//
//   - Until the pool has a completed snapshot of its own, the floor is 0: a
//     new volume starts blank or from the source snapshot, at seq 0.
//   - Otherwise it is the minimum of: the seq of every pending or completed
//     snapshot record (the oldest kept one; the newer ones are above it),
//     the seq of every volume record that is not gone, and the reported seq
//     of every instance record that is not gone and has reported (an
//     instance that never reported has seq 0 by default; its volume's
//     record stands for it) — and never above head.
func Floor(head int64, snaps []store.Snapshot, vols []store.Volume, insts []store.Instance) (int64, string) {
	if _, ok := Newest(snaps); !ok {
		return 0, "no completed snapshot yet: a new volume starts at seq 0"
	}
	floor, why := head, fmt.Sprintf("journal head %d", head)
	lower := func(seq int64, what string) {
		if seq < floor {
			floor, why = seq, what
		}
	}
	for _, s := range snaps {
		if s.State == store.SnapshotPending || s.State == store.SnapshotCompleted {
			lower(s.Seq, fmt.Sprintf("snapshot %s (%s) at seq %d", s.SnapshotID, s.State, s.Seq))
		}
	}
	for _, v := range vols {
		if v.State != store.VolumeGone {
			lower(v.Seq, fmt.Sprintf("volume %s (%s) at seq %d", v.VolumeID, v.State, v.Seq))
		}
	}
	for _, in := range insts {
		if in.State != store.InstanceGone && (in.Seq > 0 || !in.LastReportAt.IsZero()) {
			lower(in.Seq, fmt.Sprintf("instance %s (%s) at seq %d", in.InstanceID, in.State, in.Seq))
		}
	}
	return max(floor, 0), why
}

// CompactResult says what Compact did.
type CompactResult struct {
	Floor    int64  // the floor computed (-1: not computed)
	Reason   string // what holds the floor
	Previous int64  // the marker's bound before this run
	Marked   int    // entries given an expiry now
	Unmarked int    // entries whose expiry was removed (the floor went down)
}

// Compact lets the pool's journal entries at or below the floor (see Floor)
// expire through DynamoDB's TTL, grace after now, and removes the expiry
// from entries above the floor that still carry one (when the floor went
// down, e.g. a volume at an older seq appeared), so within grace nothing a
// reader needs is lost. The snapshot Lambda calls it after Retain;
// reconcile may call it too.
//
// The pool's compaction marker fences concurrent runs: a run first claims
// the marker (raising its bound to the floor), and every expiry it writes
// checks that the marker is still its own. A run overtaken by another
// stops with store.ErrConflict; callers treat that as "someone else is
// compacting". A run cut off anywhere leaves the marker an upper bound of
// what carries an expiry, so the next run repairs everything.
func Compact(ctx context.Context, st *store.Store, pool string, grace time.Duration) (CompactResult, error) {
	res := CompactResult{Floor: -1}
	c, err := st.GetCompaction(ctx, pool)
	if err != nil {
		return res, err
	}
	res.Previous = c.Marked
	head, err := st.Head(ctx, pool)
	if err != nil {
		return res, err
	}
	snaps, err := st.ListSnapshots(ctx, pool)
	if err != nil {
		return res, err
	}
	vols, err := st.ListVolumes(ctx, pool)
	if err != nil {
		return res, err
	}
	insts, err := st.ListInstances(ctx, pool)
	if err != nil {
		return res, err
	}
	floor, why := Floor(head, snaps, vols, insts)
	res.Floor, res.Reason = floor, why

	// The journal forgets an entry only after the base tree remembers
	// what it left in the content (origin reclaim marks by it).
	base, err := reclaim.AdvanceBase(ctx, st, c, floor)
	if err != nil {
		return res, fmt.Errorf("compact %s: keep the base tree: %w", pool, err)
	}
	want := c
	want.Floor, want.Marked = floor, max(c.Marked, floor)
	want.HasTree, want.TreeSeq, want.TreeKnown = true, base.Seq, base.Known
	var claim store.Compaction
	err = awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		var err error
		claim, err = st.PutCompaction(ctx, want)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("compact %s: %w", pool, err)
	}
	if floor < c.Marked {
		if res.Unmarked, err = st.KeepEntries(ctx, pool, floor, c.Marked); err != nil {
			return res, err
		}
	}
	if res.Marked, err = st.ExpireEntries(ctx, pool, floor, time.Now().Add(grace), claim); err != nil {
		return res, err
	}
	if claim.Marked != floor {
		lowered := claim
		lowered.Marked = floor
		if _, err := st.PutCompaction(ctx, lowered); err != nil {
			return res, fmt.Errorf("compact %s: lower the marker to %d: %w", pool, floor, err)
		}
	}
	return res, st.DeleteTreesBelow(ctx, pool, base.Seq)
}
