package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// applyLock is the flock on runDir/apply.lock that apply, up, freeze and
// release hold while they work. rsync inherits the descriptor, so an rsync
// left running by a killed agent keeps the lock until it ends and the next
// apply cannot race it.
type applyLock struct{ f *os.File }

// lockApply takes the apply lock, waiting at most wait (0: as long as ctx
// lives). A timeout is retryable: another command holds the lock.
func (a *Agent) lockApply(ctx context.Context, wait time.Duration) (*applyLock, error) {
	if err := a.ensureRunDir(); err != nil {
		return nil, err
	}
	path := filepath.Join(a.cfg.RunDir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, retryable("open lock %s: %v", path, err)
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	logged := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &applyLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, retryable("lock %s: %v", path, err)
		}
		if !logged {
			a.log.Info("waiting for the apply lock (another apply, freeze or release runs)", "lock", path)
			logged = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, retryable("waiting for the apply lock %s: %v", path, ctx.Err())
		case <-deadline:
			f.Close()
			return nil, retryable("another apply, freeze or release holds the apply lock %s for more than %s", path, wait)
		case <-tick.C:
		}
	}
}

// release unlocks (closing the descriptor drops the flock).
func (l *applyLock) release() {
	if l != nil && l.f != nil {
		l.f.Close()
	}
}

func (l *applyLock) String() string { return fmt.Sprint(l.f.Name()) }
