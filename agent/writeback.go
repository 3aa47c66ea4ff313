package agent

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// flusher is the one descriptor of the mount through which every flush of
// an apply runs: the early writebacks, the flushes under the rsync passes
// and the checkpoint's syncfs. Linux reports a writeback error to each
// descriptor of the filesystem opened before it happened, once: a syncfs
// that swallowed it leaves a later one on the same descriptor returning 0,
// and a descriptor opened after the error never sees it. So the flusher is
// opened before the apply writes anything, and it remembers the first
// error: from then on every flush of the apply fails, and the watermark
// cannot move past content that did not reach the disk.
type flusher struct {
	mount string
	fd    int
	mu    sync.Mutex
	first error
}

// openFlusher opens the mount for flushing.
func openFlusher(mount string) (*flusher, error) {
	fd, err := openDir(mount)
	if err != nil {
		return nil, retryable("%v", err)
	}
	return &flusher{mount: mount, fd: fd}, nil
}

// syncfs writes the filesystem back; it returns the first flush error of
// this flusher, whichever call met it.
func (f *flusher) syncfs(why string) error {
	if err := unix.Syncfs(f.fd); err != nil {
		f.mu.Lock()
		if f.first == nil {
			f.first = retryable("syncfs %s (%s) failed: %v: content written since may not be on the disk; the watermark stays (check the volume: dmesg, the EBS volume's status)", f.mount, why, err)
		}
		f.mu.Unlock()
	}
	return f.failed()
}

// failed returns the first flush error met so far (nil: none).
func (f *flusher) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

func (f *flusher) close() { unix.Close(f.fd) }

// WritebackEvery is how much staged data starts an early writeback.
const WritebackEvery = 64 << 20

// writeback starts the filesystem's writeback while an entry is still
// being staged, so writing to the volume overlaps fetching and hashing
// instead of all waiting for the checkpoint's syncfs. The kernel would
// otherwise hold up to its dirty limit (gigabytes on a large instance) in
// the page cache until that syncfs. Each time another WritebackEvery bytes
// are staged, one background syncfs runs (never two at once); nothing
// waits for it but stop. Its error is the flusher's: stop returns it, and
// the checkpoint fails with it.
type writeback struct {
	f       *flusher
	staged  atomic.Int64
	started atomic.Int64 // staged bytes when the last syncfs started
	busy    atomic.Bool
	wg      sync.WaitGroup
}

func newWriteback(f *flusher) *writeback { return &writeback{f: f} }

// add records n more staged bytes and starts a syncfs when due. It
// returns the flusher's first error.
func (w *writeback) add(n int64) error {
	total := w.staged.Add(n)
	if total-w.started.Load() < WritebackEvery || !w.busy.CompareAndSwap(false, true) {
		return w.f.failed()
	}
	w.started.Store(total)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer w.busy.Store(false)
		_ = w.f.syncfs("writeback while staging") // kept by the flusher
	}()
	return w.f.failed()
}

// stop waits for a running syncfs and returns the flusher's first error.
func (w *writeback) stop() error {
	w.wg.Wait()
	return w.f.failed()
}

// FlushPause is the pause between the syncfs calls of flushWhile.
const FlushPause = 5 * time.Millisecond

// flushWhile writes back the filesystem, one syncfs after another
// FlushPause apart, until stop is called; stop waits for the syncfs
// running and returns the flusher's first error. The rsync passes run
// under it: rsync's data reaches the volume while rsync still works and,
// at its end, while rsync's processes wait for each other to exit (each
// polls in 20 ms sleeps), so the checkpoint's own syncfs finds little left
// to write.
func (f *flusher) flushWhile(pass string) (stop func() error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(FlushPause)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if f.syncfs(pass) != nil {
				return // failed: the checkpoint fails with it
			}
			t.Reset(FlushPause)
		}
	}()
	return func() error {
		close(done)
		wg.Wait()
		return f.failed()
	}
}
