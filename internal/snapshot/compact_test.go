package snapshot_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

func TestFloor(t *testing.T) {
	reported := time.Now()
	done := func(seq int64) store.Snapshot {
		return store.Snapshot{SnapshotID: fmt.Sprint("snap-", seq), State: store.SnapshotCompleted, Seq: seq}
	}
	snap := func(seq int64, st store.SnapshotState) store.Snapshot {
		return store.Snapshot{SnapshotID: fmt.Sprint("snap-", st, seq), State: st, Seq: seq}
	}
	vol := func(seq int64, st store.VolumeState) store.Volume {
		return store.Volume{VolumeID: fmt.Sprint("vol-", seq), State: st, Seq: seq}
	}
	inst := func(seq int64, st store.InstanceState, at time.Time) store.Instance {
		return store.Instance{InstanceID: fmt.Sprint("i-", seq), State: st, Seq: seq, LastReportAt: at}
	}
	for _, tc := range []struct {
		name  string
		head  int64
		snaps []store.Snapshot
		vols  []store.Volume
		insts []store.Instance
		want  int64
	}{
		{"empty pool", 0, nil, nil, nil, 0},
		{"no snapshot: new volumes start at 0", 50, nil, []store.Volume{vol(40, store.VolumeIdle)}, nil, 0},
		{"only pending and failed snapshots", 50, []store.Snapshot{snap(40, store.SnapshotPending), snap(45, store.SnapshotError)}, nil, nil, 0},
		{"oldest kept snapshot", 50, []store.Snapshot{done(30), done(40), done(45)}, []store.Volume{vol(45, store.VolumeInUse)}, nil, 30},
		{"pending snapshot below the kept ones", 50, []store.Snapshot{done(30), snap(20, store.SnapshotPending)}, nil, nil, 20},
		{"failed and deleted snapshots do not count", 50, []store.Snapshot{done(30), snap(5, store.SnapshotError), snap(6, store.SnapshotDeleted)}, nil, nil, 30},
		{"a volume below the snapshots", 50, []store.Snapshot{done(30)}, []store.Volume{vol(12, store.VolumeIdle), vol(48, store.VolumeInUse)}, nil, 12},
		{"creating and failed volumes count", 50, []store.Snapshot{done(30)}, []store.Volume{vol(25, store.VolumeCreating), vol(22, store.VolumeFailed)}, nil, 22},
		{"gone volumes do not count", 50, []store.Snapshot{done(30)}, []store.Volume{vol(3, store.VolumeGone)}, nil, 30},
		{"an instance below everything", 50, []store.Snapshot{done(30)}, []store.Volume{vol(35, store.VolumeInUse)}, []store.Instance{inst(28, store.InstanceReady, reported)}, 28},
		{"an instance that reported seq 0", 50, []store.Snapshot{done(30)}, nil, []store.Instance{inst(0, store.InstanceReady, reported)}, 0},
		{"an instance that never reported", 50, []store.Snapshot{done(30)}, nil, []store.Instance{inst(0, store.InstanceLaunching, time.Time{})}, 30},
		{"gone instances do not count", 50, []store.Snapshot{done(30)}, nil, []store.Instance{inst(2, store.InstanceGone, reported)}, 30},
		{"never above the head", 10, []store.Snapshot{done(30)}, []store.Volume{vol(40, store.VolumeIdle)}, nil, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := snapshot.Floor(tc.head, tc.snaps, tc.vols, tc.insts)
			if got != tc.want || why == "" {
				t.Errorf("Floor = %d (%s), want %d", got, why, tc.want)
			}
		})
	}
}

var seedFlag = flag.Uint64("seed", 0, "seed of the compaction property test (0: from the clock)")

// history is a random pool history: the test's own model of what the
// store holds, from which it computes the floor independently.
type history struct {
	t     *testing.T
	rnd   *rand.Rand
	e     *env
	pool  string
	head  int64
	snaps map[string]store.Snapshot
	vols  map[string]store.Volume
	insts map[string]store.Instance
	n     int
}

var (
	snapStates = []store.SnapshotState{store.SnapshotPending, store.SnapshotCompleted, store.SnapshotCompleted, store.SnapshotError, store.SnapshotDeleted}
	volStates  = []store.VolumeState{store.VolumeCreating, store.VolumeIdle, store.VolumeClaimed, store.VolumeAttaching,
		store.VolumeInUse, store.VolumeReleasing, store.VolumeDeleting, store.VolumeGone, store.VolumeFailed}
	instStates = []store.InstanceState{store.InstanceLaunching, store.InstanceReady, store.InstanceTerminating, store.InstanceGone}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func (h *history) seq() int64 { return h.rnd.Int64N(h.head + 1) }

// step changes the pool at random: appends, and adds, changes or removes
// snapshot, volume and instance records.
func (h *history) step() {
	ctx := context.Background()
	t := h.t
	if k := h.rnd.IntN(30); k > 0 {
		h.e.pool = h.pool
		h.e.appendEntries(k)
		h.head += int64(k)
	}
	for range h.rnd.IntN(4) {
		h.n++
		switch id := fmt.Sprintf("snap-%d", h.n); {
		case len(h.snaps) == 0 || h.rnd.IntN(3) == 0:
			s, err := h.e.st.PutSnapshot(ctx, store.Snapshot{Pool: h.pool, SnapshotID: id, State: pick(h.rnd, snapStates), Seq: h.seq()})
			if err != nil {
				t.Fatal(err)
			}
			h.snaps[id] = s
		default:
			for id, s := range h.snaps {
				if h.rnd.IntN(4) == 0 {
					if err := h.e.st.DeleteSnapshotRecord(ctx, h.pool, id, s.Rev); err != nil {
						t.Fatal(err)
					}
					delete(h.snaps, id)
				} else {
					s.State = pick(h.rnd, snapStates)
					if s, err := h.e.st.UpdateSnapshot(ctx, s); err != nil {
						t.Fatal(err)
					} else {
						h.snaps[id] = s
					}
				}
				break
			}
		}
	}
	for range h.rnd.IntN(4) {
		h.n++
		switch id := fmt.Sprintf("vol-%d", h.n); {
		case len(h.vols) == 0 || h.rnd.IntN(3) == 0:
			v, err := h.e.st.PutVolume(ctx, store.Volume{Pool: h.pool, VolumeID: id, State: pick(h.rnd, volStates), AZ: testAZ, Seq: h.seq(), SizeGiB: 1})
			if err != nil {
				t.Fatal(err)
			}
			h.vols[id] = v
		default:
			for id, v := range h.vols {
				if h.rnd.IntN(4) == 0 {
					if err := h.e.st.DeleteVolume(ctx, h.pool, id, v.Rev); err != nil {
						t.Fatal(err)
					}
					delete(h.vols, id)
				} else {
					from := v.State
					v.State, v.Seq = pick(h.rnd, volStates), max(v.Seq, h.seq())
					if v, err := h.e.st.TransitionVolume(ctx, v, from); err != nil {
						t.Fatal(err)
					} else {
						h.vols[id] = v
					}
				}
				break
			}
		}
	}
	for range h.rnd.IntN(3) {
		h.n++
		switch id := fmt.Sprintf("i-%d", h.n); {
		case len(h.insts) == 0 || h.rnd.IntN(2) == 0:
			in := store.Instance{Pool: h.pool, InstanceID: id, State: pick(h.rnd, instStates), AZ: testAZ}
			if h.rnd.IntN(3) > 0 {
				in.Seq, in.LastReportAt = h.seq(), time.Now().UTC()
			}
			in, err := h.e.st.PutInstance(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			h.insts[id] = in
		default:
			for id, in := range h.insts {
				in.State, in.Seq, in.LastReportAt = pick(h.rnd, instStates), max(in.Seq, h.seq()), time.Now().UTC()
				if in, err := h.e.st.UpdateInstance(ctx, in); err != nil {
					t.Fatal(err)
				} else {
					h.insts[id] = in
				}
				break
			}
		}
	}
}

// floor is the rule of issue 6 applied to the model: 0 until a completed
// snapshot exists, else the least seq still needed by a usable snapshot,
// a volume that is not gone, or an instance that is not gone and reported.
func (h *history) floor() int64 {
	completed := false
	for _, s := range h.snaps {
		completed = completed || s.State == store.SnapshotCompleted
	}
	if !completed {
		return 0
	}
	need := []int64{h.head}
	for _, s := range h.snaps {
		if s.State == store.SnapshotPending || s.State == store.SnapshotCompleted {
			need = append(need, s.Seq)
		}
	}
	for _, v := range h.vols {
		if v.State != store.VolumeGone {
			need = append(need, v.Seq)
		}
	}
	for _, in := range h.insts {
		if in.State != store.InstanceGone && !in.LastReportAt.IsZero() {
			need = append(need, in.Seq)
		}
	}
	low := need[0]
	for _, n := range need {
		low = min(low, n)
	}
	return low
}

// checkJournal asserts that all entries 1..head still exist, that those at
// or below floor expire (in the future: none is due yet), and that none
// above floor has an expiry.
func checkJournal(t *testing.T, st *store.Store, pool string, head, floor int64) {
	t.Helper()
	list, err := st.EntryExpiries(context.Background(), pool, 0, head)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(list)) != head {
		t.Fatalf("%d entries stored, want %d: compaction removed entries", len(list), head)
	}
	now := time.Now().Unix()
	for i, e := range list {
		if e.Seq != int64(i)+1 {
			t.Fatalf("entry %d missing (found %d)", i+1, e.Seq)
		}
		switch {
		case e.Seq > floor && e.ExpiresAt != 0:
			t.Fatalf("entry %d above floor %d has expiresAt %d", e.Seq, floor, e.ExpiresAt)
		case e.Seq <= floor && e.ExpiresAt <= now:
			t.Fatalf("entry %d at or below floor %d has expiresAt %d (now %d)", e.Seq, floor, e.ExpiresAt, now)
		}
	}
}

// TestCompactionPropertyRandomHistories: over random histories (appends;
// snapshot, volume and instance records added, changed and removed, so the
// floor goes up and down), after every compaction entries above the floor
// carry no expiresAt, entries at or below it do, nothing is removed, and
// the floor is the one the rule gives. Rerun one with -seed.
func TestCompactionPropertyRandomHistories(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	const histories, rounds = 12, 5
	for n := range histories {
		h := &history{t: t, rnd: rand.New(rand.NewPCG(seed, uint64(n))), e: e, pool: fmt.Sprintf("%s-h%d", e.pool, n),
			snaps: map[string]store.Snapshot{}, vols: map[string]store.Volume{}, insts: map[string]store.Instance{}}
		prev := int64(0)
		for round := range rounds {
			h.step()
			want := h.floor()
			res, err := snapshot.Compact(ctx, e.st, h.pool, time.Hour)
			if err != nil {
				t.Fatalf("history %d round %d: %v", n, round, err)
			}
			if res.Floor != want {
				t.Fatalf("history %d round %d: floor %d (%s), want %d", n, round, res.Floor, res.Reason, want)
			}
			if want < prev && res.Unmarked != int(min(prev, h.head)-want) {
				t.Errorf("history %d round %d: floor %d → %d unmarked %d entries", n, round, prev, want, res.Unmarked)
			}
			checkJournal(t, e.st, h.pool, h.head, want)
			if c, err := e.st.GetCompaction(ctx, h.pool); err != nil || c.Marked != want || c.Floor != want {
				t.Fatalf("history %d round %d: marker %+v %v, want bound %d", n, round, c, err, want)
			}
			prev = want
		}
	}
}

// TestCompactRepairsRunCutOff: a run that raised the marker and died before
// marking (or after marking too much) is repaired by the next run.
func TestCompactRepairsRunCutOff(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil)
	e.appendEntries(120)
	if _, err := e.st.PutSnapshot(ctx, store.Snapshot{Pool: e.pool, SnapshotID: "snap-1", State: store.SnapshotCompleted, Seq: 80}); err != nil {
		t.Fatal(err)
	}
	// The dead run believed the floor was 110 and marked up to there.
	c, err := e.st.PutCompaction(ctx, store.Compaction{Pool: e.pool, Floor: 110, Marked: 110})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.ExpireEntries(ctx, e.pool, 110, time.Now().Add(time.Hour), c); err != nil {
		t.Fatal(err)
	}
	res, err := snapshot.Compact(ctx, e.st, e.pool, time.Hour)
	if err != nil || res.Floor != 80 || res.Unmarked != 30 || res.Marked != 0 {
		t.Fatalf("compact: %+v %v, want floor 80 with 30 entries unmarked", res, err)
	}
	checkJournal(t, e.st, e.pool, 120, 80)
}

// TestCompactConcurrent: compactions race while the floor moves up and
// down; whenever they are done, no entry above the marker's bound has an
// expiry, and a last run leaves exactly the entries at or below the floor
// expiring.
func TestCompactConcurrent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil)
	e.appendEntries(120)
	if _, err := e.st.PutSnapshot(ctx, store.Snapshot{Pool: e.pool, SnapshotID: "snap-1", State: store.SnapshotCompleted, Seq: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.PutVolume(ctx, store.Volume{Pool: e.pool, VolumeID: "vol-1", State: store.VolumeInUse, AZ: testAZ, Seq: 80, SizeGiB: 1}); err != nil {
		t.Fatal(err)
	}
	conflicts := 0
	for iter := range 10 {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for k := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Staggered starts, so later runs read the marker an
				// earlier one claimed while that one is still marking.
				time.Sleep(time.Duration(k) * 3 * time.Millisecond)
				_, err := snapshot.Compact(ctx, e.st, e.pool, time.Hour)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, store.ErrConflict):
					conflicts++
				case err != nil:
					t.Error(err)
				}
			}()
		}
		// Meanwhile a volume at an old seq appears or goes away.
		time.Sleep(time.Duration(iter+1) * 4 * time.Millisecond)
		if iter%2 == 0 {
			if _, err := e.st.PutVolume(ctx, store.Volume{Pool: e.pool, VolumeID: "vol-old", State: store.VolumeIdle, AZ: testAZ, Seq: 40, SizeGiB: 1}); err != nil {
				t.Fatal(err)
			}
		} else {
			v, err := e.st.GetVolume(ctx, e.pool, "vol-old")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.st.DeleteVolume(ctx, e.pool, "vol-old", v.Rev); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		c, err := e.st.GetCompaction(ctx, e.pool)
		if err != nil {
			t.Fatal(err)
		}
		list, err := e.st.EntryExpiries(ctx, e.pool, c.Marked, 120)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range list {
			if x.ExpiresAt != 0 {
				t.Fatalf("iteration %d: entry %d above the marker's bound %d has an expiry", iter, x.Seq, c.Marked)
			}
		}
	}
	t.Logf("%d runs stopped by a conflict", conflicts)
	res, err := snapshot.Compact(ctx, e.st, e.pool, time.Hour)
	if err != nil || res.Floor != 80 {
		t.Fatalf("last run: %+v %v, want floor 80", res, err)
	}
	checkJournal(t, e.st, e.pool, 120, 80)
}
