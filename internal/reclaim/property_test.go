package reclaim_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
)

// TestReclaimNeverDeletesWhatIsNeeded is a property test over random
// histories (math/rand, seeds in the log): puts, syncs (the root too) and
// deletes over a small set of nested paths, snapshots with compaction and
// TTL at random points, pushes that upload and land later (within the
// queue's retention) or never, and reclaim runs at random times. After
// every run, a volume from the retained snapshot and one at the head find
// every object they need (by the test's own model of the content), and a
// landed push's objects are all there; at the end, after two grace
// periods, every upload that never reached the journal is gone.
func TestReclaimNeverDeletesWhatIsNeeded(t *testing.T) {
	paths := []string{"a", "a/x", "a/y", "b", "b/z", "c"}
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 15))
			rg := newRig(t)
			var snap int64
			var orphans []string
			type pending struct {
				e    events.JournalEntry
				land time.Time
			}
			var inflight []pending
			content := func() string { return fmt.Sprintf("c%d", rnd.IntN(12)) } // repeats: blobs come back
			files := func() map[string]string {
				m := map[string]string{}
				for i := 0; i < 1+rnd.IntN(3); i++ {
					m[fmt.Sprintf("f%d", rnd.IntN(4))] = content()
				}
				return m
			}
			for step := 0; step < 40; step++ {
				for i := 0; i < len(inflight); i++ {
					if !rg.clock.Now().Before(inflight[i].land) {
						rg.append(inflight[i].e)
						inflight = append(inflight[:i], inflight[i+1:]...)
						i--
					}
				}
				switch op := rnd.IntN(10); {
				case op < 3:
					rg.putFile(paths[rnd.IntN(len(paths))], content())
				case op < 5:
					p := paths[rnd.IntN(len(paths))]
					if rnd.IntN(8) == 0 {
						p = events.RootPath
					}
					rg.sync(p, files())
				case op < 6:
					rg.del(paths[rnd.IntN(len(paths))])
				case op < 7:
					// A push uploads now and lands within 4 days (the
					// queue's retention), or is abandoned.
					e := events.JournalEntry{Op: events.OpSync, Path: paths[rnd.IntN(len(paths))], Manifest: &events.ManifestRef{SHA256: rg.manifest(files())}}
					if rnd.IntN(3) == 0 {
						orphans = append(orphans, events.ManifestKey(e.Manifest.SHA256))
					} else {
						inflight = append(inflight, pending{e, rg.clock.Now().Add(time.Duration(rnd.IntN(96)) * time.Hour)})
					}
				case op < 8 && rg.seq > snap:
					snap = rg.seq
					rg.snapshotAt(snap)
				default:
					rg.run()
					if snap > 0 {
						rg.checkConverges(snap)
					}
					rg.checkConverges(rg.seq)
				}
				rg.clock.Advance(time.Duration(rnd.IntN(72)) * time.Hour)
			}
			for _, p := range inflight {
				rg.append(p.e)
			}
			// Two runs a grace apart: whatever no entry ever named is gone.
			rg.run()
			rg.clock.Advance(grace + time.Hour)
			rg.run()
			if snap > 0 {
				rg.checkConverges(snap)
			}
			rg.checkConverges(rg.seq)
			have := rg.present()
			for _, k := range orphans {
				if have[k] && !rg.needed(0)[k] {
					t.Errorf("seed %d: %s was never pushed and is still there after two grace periods", seed, k)
				}
			}
			res, _ := rg.st.GetReclaimRun(context.Background(), pool)
			t.Logf("seed %d: %d entries, snapshot at %d, %d objects, %d deleted in all", seed, rg.seq, snap, len(have), res.TotalDeleted)
		})
	}
}
