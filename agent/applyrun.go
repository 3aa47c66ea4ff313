package agent

import (
	"github.com/volsd/volsd/internal/awserr"
)

// applyRun is the state of one apply, under its lock: made by
// applyLocked when it starts and gone when it returns, so nothing of one
// apply outlives it on the long-lived Agent. Its methods are the steps of
// applying entries; the Agent's own fields (configuration, clients) are
// reached through it.
type applyRun struct {
	*Agent
	// origin is the agent's origin with this apply's retry budget: every
	// GET of the apply shares it.
	origin origin
	// flush is the apply's one descriptor for flushing the mount, opened
	// before anything is written: it sees every writeback error of the
	// apply.
	flush *flusher
	// index is the tree index, loaded by the first sync that needs it
	// (files may have changed since the last apply); fineTimes says
	// whether the volume keeps nanosecond timestamps.
	index     *treeIndex
	fineTimes bool
	// deadline is the deadline of the entry being applied.
	deadline *entryDeadline

	lock *applyLock
	// rs is the rsync of the passes, its jail set up by the first pass
	// (an apply that places everything itself sets up none).
	rs       *rsync
	teardown func()
}

// startRun starts an apply's run under lock (nil: a run without rsync's
// inherited lock, for tests): its flusher and its retry budget.
func (a *Agent) startRun(lock *applyLock) (*applyRun, error) {
	f, err := openFlusher(a.cfg.MountPath)
	if err != nil {
		return nil, err
	}
	run := &applyRun{Agent: a, origin: a.origin, flush: f, lock: lock}
	run.origin.budget = awserr.NewBudget(fetchBackoff)
	return run, nil
}

// end tears down what the run set up: the rsync jail and the flusher.
func (a *applyRun) end() {
	if a.teardown != nil {
		a.teardown()
		a.teardown = nil
	}
	a.flush.close()
}

// rsync returns the rsync of this apply's passes, confined in its jail,
// which the first call sets up.
func (a *applyRun) rsync() (rsync, error) {
	if a.rs != nil {
		return *a.rs, nil
	}
	rs := rsync{bin: a.rsyncBin}
	if a.lock != nil {
		rs.lock = a.lock.f
	}
	if !a.unconfined {
		teardown, err := a.setUpJail()
		if err != nil {
			return rs, err
		}
		a.teardown = teardown
		rs.jail, rs.mount = a.jailPath(), a.cfg.MountPath
	}
	a.rs = &rs
	return rs, nil
}
