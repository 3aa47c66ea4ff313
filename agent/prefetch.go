package agent

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/volsd/volsd/events"
)

// prefetch fetches, while a sync's walk runs, the content the tree index
// predicts the walk will ask the origin for: manifest files whose path has
// no record holding their content, and whose content no record anywhere
// holds (that content the walk finds on the volume, and copies). The walk
// still decides; stage then skips what prefetch already staged, and a
// wrong guess only costs a fetch: a staged file the plan does not name is
// never placed (the rsync passes take the plan's paths) and goes with the
// staging tree. A failed prefetch of a file is forgotten: stage fetches it
// again and reports what is wrong.
type prefetch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	staged  map[string]events.Blob // by path; complete once done is closed
	fetched atomic.Int64
}

// PrefetchMax bounds a prefetch: at most this many files, or an eighth of
// the manifest when that is more. A larger predicted change (or an index
// that knows little of the tree) waits for the walk, which may find much
// of it already in place.
const PrefetchMax = 64

// predictFetch returns the files of m (a sync of target) that idx
// predicts must be fetched, one per distinct content; nil when idx knows
// nothing under the target or predicts more than PrefetchMax (or an eighth
// of m).
func predictFetch(idx *treeIndex, target string, m events.Manifest) []stageItem {
	if idx == nil || !slices.ContainsFunc(idx.recs, func(r indexRecord) bool { return underPath(r.path, target) }) {
		return nil
	}
	prefix := targetPrefix(target)
	limit := max(PrefetchMax, len(m.Entries)/8)
	var items []stageItem
	want := map[string]bool{} // content to fetch
	path := []byte(prefix)    // each entry's path in the mount, looked up without a string
	for i := range m.Entries {
		me := &m.Entries[i]
		if me.Kind() != events.TypeFile {
			continue // dirs and links have no content
		}
		path = append(path[:len(prefix)], me.Path...)
		if j, ok := idx.byPath[string(path)]; ok && idx.recs[j].sha == me.SHA256 && idx.recs[j].size == me.Size {
			continue // in place (perhaps but for its mode)
		}
		if want[me.SHA256] {
			continue // staged once, copied by stage
		}
		if len(items) == limit {
			return nil
		}
		want[me.SHA256] = true
		items = append(items, stageItem{path: string(path), blob: blobOf(me)})
	}
	// Content the volume holds elsewhere is copied, not fetched.
	local := map[string]bool{}
	for i := range idx.recs {
		if want[idx.recs[i].sha] {
			local[idx.recs[i].sha] = true
		}
	}
	out := items[:0]
	for _, s := range items {
		if !local[s.blob.SHA256] {
			out = append(out, s)
		}
	}
	return out
}

// startPrefetch starts predicting and fetching the files of a sync into
// staging, next to the walk; nothing is fetched when the prediction is
// empty or the volume has not room for it.
func (a *applyRun) startPrefetch(ctx context.Context, e events.JournalEntry, m events.Manifest, staging string) *prefetch {
	ctx, cancel := context.WithCancel(ctx)
	pf := &prefetch{cancel: cancel, done: make(chan struct{}), staged: map[string]events.Blob{}}
	idx, mtime := a.index, mtimeOf(e)
	go func() {
		defer close(pf.done)
		items := predictFetch(idx, e.Path, m)
		var bytes int64
		for _, s := range items {
			bytes += s.blob.Size
		}
		if free, err := freeBytes(a.cfg.MountPath); len(items) == 0 || err != nil || bytes+1<<20 > free {
			return // stage checks the space and says what is missing
		}
		_ = parallel(ctx, FileWorkers, items, func(ctx context.Context, s stageItem) error {
			dst := filepath.Join(staging, s.path)
			if err := mkdirAll(filepath.Dir(dst)); err != nil {
				return nil
			}
			n, err := a.origin.blob(ctx, s.blob, dst, finisherOf(s, mtime)) // removes dst on error
			pf.fetched.Add(n)
			if err != nil {
				return nil
			}
			pf.mu.Lock()
			pf.staged[s.path] = s.blob
			pf.mu.Unlock()
			return nil
		})
		// What was prefetched is written back while the walk still runs
		// (a small delta's content, below WritebackEvery, would otherwise
		// wait for the flush after placing); on the apply's flusher, so an
		// error fails the entry.
		if pf.fetched.Load() > 0 && ctx.Err() == nil {
			_ = a.flush.syncfs("flush after prefetch")
		}
	}()
	return pf
}

// wait waits for the prefetch to end and returns what it staged (by path)
// and fetched; nil-safe.
func (pf *prefetch) wait() (map[string]events.Blob, int64) {
	if pf == nil {
		return nil, 0
	}
	<-pf.done
	return pf.staged, pf.fetched.Load()
}

// stop ends the prefetch and waits for it; nil-safe.
func (pf *prefetch) stop() {
	if pf != nil {
		pf.cancel()
		<-pf.done
	}
}
