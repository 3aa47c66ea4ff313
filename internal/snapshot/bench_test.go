package snapshot_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

// BenchmarkCompact measures one compaction that gives 500 entries an
// expiry (fenced transactions of 98), against the baseline of reading the
// same 500 entries whole, on DynamoDB Local.
func BenchmarkCompact(b *testing.B) {
	const n = 500
	ctx := context.Background()
	e := newEnv(b, nil, nil)
	b.Run("baseline-read-500", func(b *testing.B) {
		e.pool = fmt.Sprintf("%s-read", e.pool)
		e.appendEntries(n)
		b.ResetTimer()
		for b.Loop() {
			if es, err := e.st.Entries(ctx, e.pool, 0, n); err != nil || len(es) != n {
				b.Fatal(len(es), err)
			}
		}
	})
	b.Run("mark-500", func(b *testing.B) {
		i := 0
		for b.Loop() {
			b.StopTimer()
			i++
			e.pool = fmt.Sprintf("bench-compact-%d-%d", time.Now().UnixNano(), i)
			e.appendEntries(n)
			if _, err := e.st.PutSnapshot(ctx, store.Snapshot{Pool: e.pool, SnapshotID: "snap-1", State: store.SnapshotCompleted, Seq: n}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			res, err := snapshot.Compact(ctx, e.st, e.pool, time.Hour)
			if err != nil || res.Marked != n {
				b.Fatal(res, err)
			}
		}
	})
	b.Run("noop-500", func(b *testing.B) {
		// Everything marked already: the steady state of a run with
		// nothing new below the floor.
		for b.Loop() {
			if res, err := snapshot.Compact(ctx, e.st, e.pool, time.Hour); err != nil || res.Marked != 0 {
				b.Fatal(res, err)
			}
		}
	})
}
