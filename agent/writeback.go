package agent

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// WritebackEvery is how much staged data starts an early writeback.
const WritebackEvery = 64 << 20

// writeback starts the filesystem's writeback while an entry is still
// being staged, so writing to the volume overlaps fetching and hashing
// instead of all waiting for the checkpoint's syncfs. The kernel would
// otherwise hold up to its dirty limit (gigabytes on a large instance) in
// the page cache until that syncfs. Each time another WritebackEvery bytes
// are staged, one background syncfs runs (never two at once); nothing
// waits for it but stop. It changes no result: the checkpoint still
// syncs before the watermark moves, and a failed early syncfs is left for
// that one to report.
type writeback struct {
	fd      int // the mount, opened
	staged  atomic.Int64
	started atomic.Int64 // staged bytes when the last syncfs started
	busy    atomic.Bool
	wg      sync.WaitGroup
}

// newWriteback returns a writeback for the filesystem of dir; nil (which
// does nothing) when dir cannot be opened.
func newWriteback(dir string) *writeback {
	fd, err := openDir(dir)
	if err != nil {
		return nil
	}
	return &writeback{fd: fd}
}

// add records n more staged bytes and starts a syncfs when due.
func (w *writeback) add(n int64) {
	if w == nil {
		return
	}
	total := w.staged.Add(n)
	if total-w.started.Load() < WritebackEvery || !w.busy.CompareAndSwap(false, true) {
		return
	}
	w.started.Store(total)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer w.busy.Store(false)
		_ = unix.Syncfs(w.fd)
	}()
}

// stop waits for a running syncfs and closes the mount.
func (w *writeback) stop() {
	if w == nil {
		return
	}
	w.wg.Wait()
	unix.Close(w.fd)
}

// FlushPause is the pause between the syncfs calls of flushWhile.
const FlushPause = 5 * time.Millisecond

// flushWhile writes back the filesystem of dir, one syncfs after another
// FlushPause apart, until stop is called; stop waits for the syncfs
// running. The rsync passes run under it: rsync's data reaches the volume
// while rsync still works and, at its end, while rsync's processes wait
// for each other to exit (each polls in 20 ms sleeps), so the checkpoint's
// own syncfs finds little left to write. Like writeback it changes no
// result: the checkpoint still syncs before the watermark moves.
func flushWhile(dir string) (stop func()) {
	fd, err := openDir(dir)
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer unix.Close(fd)
		t := time.NewTimer(FlushPause)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			_ = unix.Syncfs(fd)
			t.Reset(FlushPause)
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
