package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
)

// Apply applies the journal entries above the watermark up to upTo (0: the
// head), in order, under the apply lock (docs/design.md §3 "Apply"). periodic
// (the systemd timer) returns at once unless applyInterval has passed since
// the last apply that reached the head.
func (a *Agent) Apply(ctx context.Context, upTo int64, periodic bool, r *Report) error {
	r.Command = "apply"
	a.fillIdentity(ctx, r)
	last := filepath.Join(a.cfg.RunDir, lastApplyFile)
	if periodic {
		// A freeze whose watchdog died is thawed now, not after the
		// next applyInterval.
		if m, ok := a.readFreeze(); ok && !a.now().Before(m.Deadline) {
			if err := a.checkNotFrozen(); err != nil {
				return err
			}
		}
		if st, ok := a.readStall(); ok && a.now().Before(st.Next) {
			r.Seq = st.Seq - 1
			a.log.Warn("periodic apply skipped: backing off a refused entry", "seq", st.Seq, "failures", st.Failures, "next", st.Next.UTC().Format(time.RFC3339), "err", st.Error)
			return nil
		}
		if fi, err := os.Stat(last); err == nil && a.now().Sub(fi.ModTime()) < time.Duration(a.cfg.ApplyInterval) {
			if st, ok, err := a.readState(); err == nil && ok {
				r.Seq = st.Seq
			}
			a.log.Info("periodic apply skipped: applied recently", "at", fi.ModTime().UTC().Format(time.RFC3339), "applyInterval", time.Duration(a.cfg.ApplyInterval).String())
			return nil
		}
	}
	lock, err := a.lockApply(ctx, 0)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := a.applyLocked(ctx, upTo, lock, r, nil); err != nil {
		if KindOf(err) == KindBadContent {
			a.recordStall(r.Seq+1, err)
		}
		return err
	}
	a.clearStall()
	if r.Seq >= r.Head {
		if err := os.WriteFile(last, nil, 0o600); err == nil {
			_ = os.Chtimes(last, a.now(), a.now())
		}
	}
	return nil
}

// lastApplyFile in runDir: its mtime is when an apply last reached the head.
const lastApplyFile = "last-apply"

// applyLocked does Apply's work; the caller holds lock. progress, when not
// nil, is called after each applied entry (up heartbeats the hook there).
func (a *Agent) applyLocked(ctx context.Context, upTo int64, lock *applyLock, r *Report, progress func()) error {
	if err := a.checkNotReleased(); err != nil {
		return err
	}
	if err := a.checkNotFrozen(); err != nil {
		return err
	}
	if a.rsyncErr != nil {
		return a.rsyncErr
	}
	if err := a.checkMounted(); err != nil {
		return err
	}
	a.growMounted(ctx)
	defer a.fillSpace(r)
	st, ok, err := a.readState()
	if err != nil {
		return err
	}
	if !ok {
		return notReady("volume at %s has no watermark %s (run `volsd-agent up`)", a.cfg.MountPath, a.statePath())
	}
	r.Seq = st.Seq
	run, err := a.startRun(lock)
	if err != nil {
		return err
	}
	defer run.end()
	if err := a.recoverLeftovers(); err != nil {
		return err
	}
	jstart := time.Now()
	head, entries, err := a.readJournal(ctx, st.Seq, upTo)
	if err != nil {
		return err
	}
	r.Head = head
	target := head
	if upTo > 0 && upTo < head {
		target = upTo
	}
	if target <= st.Seq {
		a.log.Info("up to date", "seq", st.Seq, "head", head)
		return nil
	}
	a.log.Debug("journal read", "duration", time.Since(jstart).Round(time.Millisecond).String())
	a.log.Info("applying", "from", st.Seq+1, "to", target, "head", head)

	done := st.Seq
	lastCheckpoint := time.Now()
	// stop keeps what is done (checkpoint) and returns err.
	stop := func(err error) error {
		if done > r.Seq {
			if cerr := run.checkpoint(done); cerr == nil {
				r.Seq = done
			}
		}
		return err
	}
	single := 0 // entries below this index are applied one by one (a fold of them failed)
	for i := 0; i < len(entries); i++ {
		e := entries[i]
		if err := a.checkNotReleased(); err != nil {
			return stop(err)
		}
		start := time.Now()
		if k := foldablePuts(entries[i:]); k > 1 && i >= single {
			group := entries[i : i+k]
			n, err := run.applyPuts(ctx, group)
			r.Bytes += n
			if err == nil {
				a.log.Info("applied together", "from", e.Seq, "to", group[k-1].Seq, "op", string(events.OpPut), "files", k,
					"fetched", fmtBytes(n), "duration", time.Since(start).Round(time.Millisecond).String())
				done = group[k-1].Seq
				r.Applied += k
				i += k - 1
				if progress != nil {
					progress()
				}
				if i == len(entries)-1 || time.Since(lastCheckpoint) >= a.checkpointEvery {
					if err := run.checkpoint(done); err != nil {
						return err
					}
					r.Seq = done
					lastCheckpoint = time.Now()
				}
				continue
			}
			if ctx.Err() != nil {
				return stop(retryable("entries %d..%d: %v", e.Seq, group[k-1].Seq, err))
			}
			// Each entry again on its own: the same result, and a
			// refusal names its entry.
			a.log.Warn("entries placed together failed; applying them one by one", "from", e.Seq, "to", group[k-1].Seq, "err", err)
			single = i + k
		}
		n, desc, err := run.applyEntry(ctx, e)
		r.Bytes += n
		if err != nil {
			k := KindOf(err)
			if k == KindBadInput && !isLocal(err) {
				k = KindBadContent // every agent refuses this entry: the pool stalls here
			}
			return stop(&Error{Kind: k, Err: fmt.Errorf("entry %d (%s %s): %w", e.Seq, e.Op, e.Path, err)})
		}
		a.log.Info("applied", "seq", e.Seq, "op", string(e.Op), "path", e.Path, "plan", desc,
			"fetched", fmtBytes(n), "duration", time.Since(start).Round(time.Millisecond).String())
		done = e.Seq
		r.Applied++
		if progress != nil {
			progress()
		}
		if i == len(entries)-1 || time.Since(lastCheckpoint) >= a.checkpointEvery {
			cp := time.Now()
			if err := run.checkpoint(done); err != nil {
				return err
			}
			a.log.Debug("checkpoint", "seq", done, "duration", time.Since(cp).Round(time.Millisecond).String())
			r.Seq = done
			lastCheckpoint = time.Now()
		}
	}
	return nil
}

// readJournal reads the journal head and the entries after seq up to
// upTo (0: the head), both at once: one round trip instead of two. An
// append between the two reads is harmless: entries past the head are
// dropped, and entries the head already counts but the query missed are
// read again.
func (a *Agent) readJournal(ctx context.Context, seq, upTo int64) (int64, []events.JournalEntry, error) {
	var (
		head    int64
		headErr error
		read    = make(chan struct{})
	)
	go func() {
		defer close(read)
		head, headErr = a.journal.Head(ctx, a.cfg.Pool)
	}()
	entries, err := a.journal.Entries(ctx, a.cfg.Pool, seq, upTo)
	<-read
	if headErr != nil {
		return 0, nil, awsFailure(headErr, "read journal head of pool %s", a.cfg.Pool)
	}
	target := head
	if upTo > 0 && upTo < head {
		target = upTo
	}
	if err == nil && int64(len(entries)) < target-seq {
		var more []events.JournalEntry
		more, err = a.journal.Entries(ctx, a.cfg.Pool, seq+int64(len(entries)), target)
		entries = append(entries, more...)
	}
	if err != nil {
		return 0, nil, awsFailure(err, "read journal entries %d..%d of pool %s", seq+1, target, a.cfg.Pool)
	}
	if n := target - seq; n >= 0 && int64(len(entries)) > n {
		entries = entries[:n]
	}
	if target > seq && int64(len(entries)) != target-seq {
		return 0, nil, retryable("journal of pool %s returned %d entries for %d..%d (expired below a snapshot? the volume is too far behind)", a.cfg.Pool, len(entries), seq+1, target)
	}
	return head, entries, nil
}

// recoverLeftovers removes what an interrupted apply left in .volsd:
// staging trees and rsync temp files. rsync holding directories in the
// live tree are removed when the interrupted entry is applied again (it is
// above the watermark): a put looks beside its file, a sync's walk meets
// them.
func (a *Agent) recoverLeftovers() error {
	for _, d := range []string{stagingDir, rsyncTmpDir} {
		if err := os.RemoveAll(filepath.Join(a.stateDir(), d)); err != nil {
			return retryable("remove leftover %s: %v", filepath.Join(a.stateDir(), d), err)
		}
	}
	return nil
}

// applyEntry puts one entry in place: prepare (plan against the live
// tree, stage the content, fetched and verified or copied locally), then
// place (the rsync passes and a check that rsync did what was asked). It
// returns the bytes fetched from the origin and a summary for the log.
// Until place starts nothing in the live tree changes, so bad input and a
// full disk leave it intact.
func (a *applyRun) applyEntry(ctx context.Context, e events.JournalEntry) (fetched int64, desc string, err error) {
	ctx, end := a.entryDeadline(ctx, e)
	defer func() {
		if err = end(err); err != nil {
			var mp *mountPointError
			if errors.As(err, &mp) {
				err = localBadInput("%s is the mount point of another filesystem inside the volume: volsd never places or deletes across a mount (like rsync -x); unmount it, or mount it outside %s, and apply again", filepath.Join(a.cfg.MountPath, mp.rel), a.cfg.MountPath)
			}
		}
	}()
	root, err := openDir(a.cfg.MountPath)
	if err != nil {
		return 0, "", retryable("%v", err)
	}
	defer unix.Close(root)
	defer a.removeStaging()
	ph := newPhases()
	defer func() { a.log.Debug("phases", "seq", e.Seq, "times", ph.String()) }()
	pe, err := a.prepareEntry(ctx, root, e, ph)
	if err != nil {
		return pe.fetched, pe.desc, err
	}
	if !pe.empty() {
		if err := a.placeEntry(ctx, root, pe, ph); err != nil {
			return pe.fetched, pe.desc, err
		}
		// Before the index captures the placed files: unlinking the
		// staged names changes the ctime of the files linked from them.
		a.removeStaging()
	}
	a.updateIndex(root, e, pe)
	ph.mark("index")
	return pe.fetched, pe.desc, nil
}

// entryDeadline starts e's deadline (a.deadline while the agent works on
// it); end stops it and returns err, or the deadline's own error when the
// deadline is what ended the work.
func (a *applyRun) entryDeadline(ctx context.Context, e events.JournalEntry) (context.Context, func(err error) error) {
	ctx, dl := newEntryDeadline(ctx, e, a.entryBase)
	a.deadline = dl
	return ctx, func(err error) error {
		dl.stop()
		a.deadline = nil
		if err != nil {
			if c := dl.passed(ctx); c != nil {
				return c
			}
		}
		return err
	}
}

// FoldPuts bounds how many consecutive put entries one apply places
// together.
const FoldPuts = 256

// foldablePuts returns how many entries from the first can be placed
// together: consecutive puts (at most FoldPuts) of distinct paths none of
// which is inside another's, so that their order cannot matter.
func foldablePuts(entries []events.JournalEntry) int {
	n := 0
	for _, e := range entries {
		if n == FoldPuts || e.Op != events.OpPut || e.Blob == nil {
			break
		}
		for _, prev := range entries[:n] {
			if underPath(e.Path, prev.Path) || underPath(prev.Path, e.Path) {
				return n
			}
		}
		n++
	}
	return n
}

// applyPuts places consecutive put entries of unrelated paths (see
// foldablePuts) with one plan: their files staged at once (in parallel,
// each with its own entry's mtime), one copy pass, one link pass, one
// check and one flush, instead of a set of rsync runs and a flush per
// entry. It changes the volume exactly as applying them in order would;
// the caller moves the watermark past the last only when it succeeds.
func (a *applyRun) applyPuts(ctx context.Context, es []events.JournalEntry) (fetched int64, err error) {
	first := es[0]
	var size int64
	for _, e := range es {
		size += e.Blob.Size
	}
	ctx, end := a.entryDeadline(ctx, first)
	a.deadline.extend(size)
	defer func() { err = end(err) }()
	root, err := openDir(a.cfg.MountPath)
	if err != nil {
		return 0, retryable("%v", err)
	}
	defer unix.Close(root)
	defer a.removeStaging()
	ph := newPhases()
	defer func() { a.log.Debug("phases", "seq", first.Seq, "entries", len(es), "times", ph.String()) }()
	merged := &entryPlan{}
	for _, e := range es {
		if err := e.Validate(); err != nil {
			return 0, badInput("%v", err)
		}
		if err := removePath(root, filepath.Join(filepath.Dir(e.Path), rsyncTmpName)); err != nil {
			return 0, retryable("remove leftover %s: %w", rsyncTmpName, err)
		}
		p, err := planPut(root, a.cfg.MountPath, e)
		if err != nil {
			return 0, err
		}
		merged.deletes = append(merged.deletes, p.deletes...)
		merged.copies = append(merged.copies, p.copies...)
		merged.links = append(merged.links, p.links...)
		merged.unchanged += p.unchanged
		for _, s := range p.stage {
			s.mtime = mtimeOf(e)
			merged.stage = append(merged.stage, s)
		}
	}
	pe := &preparedEntry{plan: merged}
	err = a.stagePlan(ctx, pe, nil, filepath.Join(a.stateDir(), stagingDir, fmt.Sprint(first.Seq)), mtimeOf(first), ph)
	fetched = pe.fetched
	if err != nil {
		return fetched, err
	}
	if !pe.empty() {
		if err := a.placeEntry(ctx, root, pe, ph); err != nil {
			return fetched, err
		}
		a.removeStaging()
	}
	a.updateIndex(root, events.JournalEntry{Op: events.OpPut}, pe)
	ph.mark("index")
	return fetched, nil
}

// treeIndex returns the tree index, loaded on first use in an apply.
func (a *applyRun) treeIndex() *treeIndex {
	if a.index == nil {
		var err error
		a.index, err = loadIndex(filepath.Join(a.stateDir(), indexFile))
		if err != nil {
			a.log.Warn("tree index not used; the walk reads content records", "err", err)
		}
		a.fineTimes = fineTimestamps(a.stateDir())
	}
	return a.index
}

// updateIndex brings the tree index, when this apply loaded it, up to
// date with the entry just applied: a sync's target gets the records of
// its unchanged and placed files, a put's file its placed record, and
// whatever was deleted loses its records.
func (a *applyRun) updateIndex(root int, e events.JournalEntry, pe *preparedEntry) {
	x, p := a.index, pe.plan
	if x == nil || p == nil {
		return
	}
	placed := captureRecords(root, a.cfg.MountPath, pe.want, a.fineTimes)
	if e.Op == events.OpSync {
		for _, d := range p.deletes {
			if !underPath(d, e.Path) {
				x.removeUnder(d) // a blocker on the way to the target
			}
		}
		x.replaceUnder(e.Path, append(p.records, placed...))
		return
	}
	for _, d := range p.deletes {
		x.removeUnder(d)
	}
	for path := range pe.want {
		x.removeUnder(path)
	}
	x.add(placed)
}

// checkpoint advances the watermark to seq and then writes the tree
// index (encoded while the volume is made durable): the index describes
// only what that syncfs made durable. A failed index write only costs
// speed.
func (a *applyRun) checkpoint(seq int64) error {
	encoded := a.index.encode()
	if err := a.writeStateWith(seq, a.flush); err != nil {
		return err
	}
	if encoded != nil {
		if err := a.index.write(filepath.Join(a.stateDir(), indexFile), encoded()); err != nil {
			a.log.Warn("write tree index (the next walk reads content records instead)", "err", err)
		}
	}
	return nil
}

// underPath says whether p is dir or inside it (events.RootPath: all),
// without building a string (the index asks it of every record).
func underPath(p, dir string) bool {
	return dir == events.RootPath || strings.HasPrefix(p, dir) && (len(p) == len(dir) || p[len(dir)] == '/')
}

// targetPrefix is what a sync's target puts before its manifest's paths
// to make them relative to the mount: "" for the root, "<target>/".
func targetPrefix(target string) string {
	if target == events.RootPath {
		return ""
	}
	return target + "/"
}

// preparedEntry is an entry planned and staged, ready to place.
type preparedEntry struct {
	plan    *entryPlan
	staging string
	want    map[string]events.Blob // staged files by path
	fetched int64
	desc    string
}

func (pe *preparedEntry) empty() bool {
	return pe.plan == nil || len(pe.plan.deletes)+len(pe.plan.copies)+len(pe.plan.links)+len(pe.plan.chmods) == 0
}

// prepareEntry validates, plans and stages e. root is the mount's
// directory descriptor; ph collects timings.
func (a *applyRun) prepareEntry(ctx context.Context, root int, e events.JournalEntry, ph *phases) (*preparedEntry, error) {
	pe := &preparedEntry{}
	if err := e.Validate(); err != nil {
		return pe, badInput("%v", err)
	}
	var (
		err     error
		pf      *prefetch
		staging = filepath.Join(a.stateDir(), stagingDir, fmt.Sprint(e.Seq))
	)
	switch e.Op {
	case events.OpPut:
		// rsync's holding directory beside the file, left by a copy pass
		// that was cut off: this entry is the one re-applied after it.
		if err := removePath(root, filepath.Join(filepath.Dir(e.Path), rsyncTmpName)); err != nil {
			return pe, retryable("remove leftover %s: %w", rsyncTmpName, err)
		}
		pe.plan, err = planPut(root, a.cfg.MountPath, e)
	case events.OpDelete:
		pe.plan, err = planDelete(root, e)
	case events.OpSync:
		// The tree index is read while the manifest is fetched.
		loaded := make(chan struct{})
		go func() {
			defer close(loaded)
			a.treeIndex().ready()
		}()
		var m events.Manifest
		m, pe.fetched, err = a.origin.manifest(ctx, *e.Manifest)
		<-loaded
		ph.mark("manifest+index")
		if err == nil {
			pf = a.startPrefetch(ctx, e, m, staging)
			defer pf.stop()
			// The walk also removes leftover holding directories.
			pe.plan, err = planSync(root, a.cfg.MountPath, e, m, a.index, a.fineTimes)
		}
	}
	if err != nil {
		return pe, err
	}
	return pe, a.stagePlan(ctx, pe, pf, staging, mtimeOf(e), ph)
}

// stagePlan stages the content of a planned entry (pe.plan): what pf
// prefetched (nil: nothing) is kept where the plan wants it, the rest is
// fetched or copied locally, after a disk-space check. mtime is the
// entry's (a staged item may carry its own).
func (a *applyRun) stagePlan(ctx context.Context, pe *preparedEntry, pf *prefetch, staging string, mtime int64, ph *phases) error {
	p := pe.plan
	pe.desc = p.describe()
	if err := a.checkNoMountInside(p); err != nil {
		return err
	}
	ph.mark("plan")
	prefetched, n := pf.wait()
	pe.fetched += n
	if pe.empty() {
		return nil
	}
	pe.staging = staging
	pe.want = make(map[string]events.Blob, len(p.stage))
	var copyBytes int64
	for _, s := range p.stage {
		pe.want[s.path] = s.blob
	}
	for path := range prefetched {
		if _, ok := pe.want[path]; !ok {
			// A wrong guess. The passes take the plan's paths only, but a
			// sync whose target is new links the staged target whole.
			os.Remove(filepath.Join(staging, path))
			delete(prefetched, path)
		}
	}
	if len(p.copies) > 0 && len(p.deletes) == 0 {
		p.copies, p.links = foldSmallLinks(p.copies, p.links, pe.want)
	}
	for _, c := range p.copies {
		copyBytes += pe.want[c].Size
	}
	// Staging holds the new content once, and the copy pass a second copy
	// of the changed files until it renames them; links cost no data.
	// What prefetch staged is already on the volume.
	need := p.bytesToStage() + copyBytes + 1<<20
	for path, b := range prefetched {
		if pe.want[path] == b {
			need -= b.Size
		}
	}
	a.deadline.extend(p.bytesToStage())
	if free, err := freeBytes(a.cfg.MountPath); err == nil && need > free {
		return retryable("disk full: needs %s free on %s to stage and place this entry, has %s", fmtBytes(need), a.cfg.MountPath, fmtBytes(free))
	}
	n, err := a.stage(ctx, pe.staging, p, mtime, prefetched)
	pe.fetched += n
	ph.mark("stage")
	return err
}

// placeEntry puts a prepared entry in place: the agent itself when it
// places few paths (placeNative), else the rsync passes (rsyncPasses);
// then the chmods of existing directories.
func (a *applyRun) placeEntry(ctx context.Context, root int, pe *preparedEntry, ph *phases) error {
	p := pe.plan
	place := a.rsyncPasses
	if a.placesNatively(pe) {
		place = func(_ context.Context, root int, pe *preparedEntry, ph *phases) error {
			return a.placeNative(root, pe, ph)
		}
	}
	if err := place(ctx, root, pe, ph); err != nil {
		return err
	}
	for _, d := range p.chmods {
		if err := chmodDir(root, d, p.dirModes[d]); err != nil {
			return retryable("chmod %s: %v", d, err)
		}
	}
	if len(p.chmods) > 0 {
		if err := verifyPlaced(root, a.cfg.MountPath, p.chmods, pe.want, p); err != nil {
			return err
		}
		ph.mark("chmod")
	}
	return nil
}

// rsyncPasses runs the passes of a prepared entry: copy (changed files,
// --delay-updates), deletes (no symlink followed), link (new files), each
// checked afterwards.
func (a *applyRun) rsyncPasses(ctx context.Context, root int, pe *preparedEntry, ph *phases) (err error) {
	p := pe.plan
	var rs rsync
	if len(p.copies)+len(p.links) > 0 {
		if rs, err = a.rsync(); err != nil {
			return err
		}
	}
	stopFlush := a.flush.flushWhile("flush under the rsync passes")
	defer func() {
		if ferr := stopFlush(); err == nil {
			err = ferr
		}
	}()
	if len(p.copies) > 0 {
		tmp := filepath.Join(a.stateDir(), rsyncTmpDir)
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			return retryable("create %s: %v", tmp, err)
		}
		err := a.copyPasses(ctx, rs, pe.staging, tmp, p.copies)
		ph.mark("rsync")
		// A failed pass may leave holding directories; so may a crash,
		// which the next apply cleans up when it re-applies this entry.
		for _, d := range parentDirs(p.copies) {
			if cerr := removePath(root, filepath.Join(d, rsyncTmpName)); cerr != nil && err == nil {
				err = retryable("remove %s: %w", filepath.Join(d, rsyncTmpName), cerr)
			}
		}
		if err != nil {
			return err
		}
		ph.mark("holddirs")
		if err := verifyPlaced(root, a.cfg.MountPath, p.copies, pe.want, p); err != nil {
			return err
		}
		ph.mark("verify")
	}
	for _, d := range p.deletes {
		if err := removePath(root, d); err != nil {
			return retryable("delete %s: %w", d, err)
		}
	}
	ph.mark("delete")
	if len(p.links) > 0 {
		if err := rs.linkPass(ctx, pe.staging, a.cfg.MountPath, p.links); err != nil {
			return err
		}
		if err := verifyPlaced(root, a.cfg.MountPath, p.links, pe.want, p); err != nil {
			return err
		}
		ph.mark("link")
	}
	return nil
}

// SplitCopyFiles: a copy pass of at least this many files (in more than
// one directory) runs as CopyProcesses rsync runs at once, each over the
// files of its own directories (two runs never share a holding directory).
// Each rsync run spends most of its fixed cost waiting (start-up, and its
// exit, which polls in 20 ms sleeps) and copies one file after another;
// two runs of 50 files each took 72 ms where one of 100 took 80 ms.
const (
	SplitCopyFiles = 32
	CopyProcesses  = 2
)

// copyPasses runs the copy pass of paths, split by directory when large,
// and returns the first error.
func (a *applyRun) copyPasses(ctx context.Context, rs rsync, staging, tmp string, paths []string) error {
	groups := [][]string{paths}
	if len(paths) >= SplitCopyFiles {
		groups = splitByDir(paths, CopyProcesses)
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = rs.copyPass(ctx, staging, a.cfg.MountPath, tmp, g)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// splitByDir splits paths into at most n groups of about the same size,
// the files of one directory always in the same group; empty groups are
// dropped.
func splitByDir(paths []string, n int) [][]string {
	byDir := map[string][]string{}
	var dirs []string
	for _, p := range paths {
		d := filepath.Dir(p)
		if byDir[d] == nil {
			dirs = append(dirs, d)
		}
		byDir[d] = append(byDir[d], p)
	}
	// Largest directories first, each to the smallest group.
	sort.SliceStable(dirs, func(i, j int) bool { return len(byDir[dirs[i]]) > len(byDir[dirs[j]]) })
	groups := make([][]string, n)
	for _, d := range dirs {
		small := 0
		for i := range groups {
			if len(groups[i]) < len(groups[small]) {
				small = i
			}
		}
		groups[small] = append(groups[small], byDir[d]...)
	}
	out := groups[:0]
	for _, g := range groups {
		if len(g) > 0 {
			out = append(out, g)
		}
	}
	return out
}

// FoldLinkBytes: when an entry has a copy pass anyway, new files adding up
// to at most this many bytes go into it instead of a link pass of their
// own. Every rsync run has a fixed cost of about 45 ms (process start-up
// and its exit, which polls for its children in 20 ms sleeps), about what
// copying 16 MiB costs; a small delta that changes and adds files then runs
// rsync once, like a plain rsync would.
const FoldLinkBytes = 16 << 20

// foldSmallLinks moves the new files of links into copies when they add up
// to at most FoldLinkBytes; directories (a sync's new target) stay links.
// Only for a plan without deletions: nothing is then in the way of a new
// file, and the copy pass runs before the deletions would. prepareEntry
// folds before its space check, which counts the folded files as copies.
func foldSmallLinks(copies, links []string, want map[string]events.Blob) ([]string, []string) {
	var n int64
	var files, dirs []string
	for _, l := range links {
		b, isFile := want[l]
		if !isFile {
			dirs = append(dirs, l)
			continue
		}
		if n += b.Size; n > FoldLinkBytes {
			return copies, links
		}
		files = append(files, l)
	}
	if len(files) == 0 {
		return copies, links
	}
	return append(slices.Clone(copies), files...), dirs
}

// removeStaging removes the staging trees and rsync's temp directory.
func (a *Agent) removeStaging() {
	os.RemoveAll(filepath.Join(a.stateDir(), stagingDir))
	os.RemoveAll(filepath.Join(a.stateDir(), rsyncTmpDir))
}

// stage builds the staging tree of p: content from local files first,
// unique blobs from the origin in parallel, duplicates copied from the
// first staged copy; then each file gets its mode, mtime and content
// record. It returns the bytes fetched from the origin.
func (a *applyRun) stage(ctx context.Context, staging string, p *entryPlan, mtime int64, prefetched map[string]events.Blob) (int64, error) {
	dirs := map[string]bool{staging: true}
	files := make(map[string]bool, len(p.stage))
	for _, s := range p.stage {
		dirs[filepath.Dir(filepath.Join(staging, s.path))] = true
		files[s.path] = true
	}
	for _, l := range p.links {
		if _, isLink := p.symlinks[l]; !files[l] && !isLink {
			dirs[filepath.Join(staging, l)] = true // a sync's new directory or target
		} else if isLink {
			dirs[filepath.Dir(filepath.Join(staging, l))] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted)
	for _, d := range sorted {
		if err := mkdirAll(d); err != nil {
			return 0, stageErr(err)
		}
	}
	for _, l := range p.links {
		if t, ok := p.symlinks[l]; ok {
			if err := os.Symlink(t, filepath.Join(staging, l)); err != nil {
				return 0, stageErr(err)
			}
		}
	}
	// rsync gives each directory it passes through the staged directory's
	// mode: the manifest's, where it has one. Reverse order: a directory
	// is chmodded after the ones inside it (the agent is root; the order
	// only keeps this independent of that).
	for i := len(sorted) - 1; i >= 0; i-- {
		rel, err := filepath.Rel(staging, sorted[i])
		if err != nil {
			return 0, stageErr(err)
		}
		if mode, ok := p.dirModes[rel]; ok {
			if err := os.Chmod(sorted[i], os.FileMode(mode)); err != nil {
				return 0, stageErr(err)
			}
		}
	}

	// Local copies are opened beneath the mount (or the staging tree),
	// by paths relative to it.
	root, err := openDir(a.cfg.MountPath)
	if err != nil {
		return 0, retryable("%v", err)
	}
	defer unix.Close(root)
	stagingFD, err := openDir(staging)
	if err != nil {
		return 0, stageErr(err)
	}
	defer unix.Close(stagingFD)
	mount := filepath.Clean(a.cfg.MountPath) + "/"
	var fetched atomic.Int64
	wb := newWriteback(a.flush)
	defer wb.stop()
	// produce makes the staged file of s: a local copy, or a fetch from
	// the origin (also when the local copy fails: the live file changed
	// under us); then its mode, content record and mtime.
	produce := func(ctx context.Context, s stageItem) error {
		dst := filepath.Join(staging, s.path)
		if s.from != "" {
			err := copyLocal(root, strings.TrimPrefix(s.from, mount), dst, s.blob, finisherOf(s, mtime))
			if isNoSpace(err) {
				return stageErr(err)
			}
			if err != nil {
				os.Remove(dst)
				a.log.Warn("local copy failed; fetching from the origin", "from", s.from, "err", err)
				s.from = ""
			}
		}
		if s.from == "" {
			n, err := a.origin.blob(ctx, s.blob, dst, finisherOf(s, mtime))
			fetched.Add(n)
			if err != nil {
				return err
			}
		}
		return wb.add(s.blob.Size)
	}
	primary := map[string]string{} // sha256 → staged path fetched from the origin
	var work, dups []stageItem
	for _, s := range p.stage {
		if b, ok := prefetched[s.path]; ok && b == s.blob {
			primary[s.blob.SHA256] = filepath.Join(staging, s.path)
		}
	}
	for _, s := range p.stage {
		switch {
		case primary[s.blob.SHA256] == filepath.Join(staging, s.path):
			// prefetched
		case s.from != "":
			work = append(work, s)
		case primary[s.blob.SHA256] != "":
			dups = append(dups, s)
		default:
			primary[s.blob.SHA256] = filepath.Join(staging, s.path)
			work = append(work, s)
		}
	}
	if err := parallel(ctx, FileWorkers, work, produce); err != nil {
		return fetched.Load(), err
	}
	for _, s := range dups {
		if err := copyLocal(stagingFD, strings.TrimPrefix(primary[s.blob.SHA256], staging+"/"), filepath.Join(staging, s.path), s.blob, finisherOf(s, mtime)); err != nil {
			return fetched.Load(), stageErr(err)
		}
	}
	return fetched.Load(), wb.stop()
}

// finisherOf returns what finishes the staged file of s: its mode, content
// record and mtime.
func finisherOf(s stageItem, mtime int64) func(*os.File) error {
	if s.mtime != 0 {
		mtime = s.mtime // its own entry's (puts placed together)
	}
	if s.blob.Mtime != 0 {
		mtime = s.blob.Mtime * int64(time.Second) // the source's (manifest v2, put)
	}
	c := content{SHA256: s.blob.SHA256, Size: s.blob.Size, Mtime: mtime}
	return func(f *os.File) error { return finishFile(f, s.blob.Mode, c) }
}

// parallel runs fn on every item with at most workers long-lived
// goroutines (one goroutine per item would grow a fresh stack through the
// SDK's middleware for each of thousands of files). It stops taking items
// at the first error or when ctx ends, and returns the first error.
func parallel[T any](ctx context.Context, workers int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(items)) {
					return
				}
				if err := fn(ctx, items[i]); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx) // nil, fn's first error, or why the caller's ctx ended
}

func stageErr(err error) error {
	var ae *Error
	if errors.As(err, &ae) {
		return err
	}
	if isNoSpace(err) {
		return retryable("disk full while staging: %v", err)
	}
	return retryable("staging: %v", err)
}

// copyLocal copies the regular file rel beneath the directory dirfd to
// the new file dst, expecting blob b, and calls finish on dst before
// closing it. rel is opened with openat2 RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV: no symlink anywhere on the way
// (even one swapped in after planning), nothing outside dirfd's tree or
// its filesystem. The bytes are hashed while they are copied: a file
// changed since the plan vouched for it is an error (the caller fetches
// from the origin instead), never a staged file whose record lies.
func copyLocal(dirfd int, rel, dst string, b events.Blob, finish func(*os.File) error) error {
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return &os.PathError{Op: "openat2", Path: rel, Err: err}
	}
	in := os.NewFile(uintptr(fd), rel)
	defer in.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s is no longer a regular file", rel)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	buf := copyBuffers.get()
	n, err := io.CopyBuffer(io.MultiWriter(out, h), io.LimitReader(in, b.Size+1), buf)
	copyBuffers.put(buf)
	if err == nil && n != b.Size {
		err = fmt.Errorf("%s has %d bytes, expected %d", rel, n, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); err == nil && got != b.SHA256 {
		err = fmt.Errorf("%s changed since it was planned: sha256 %s, expected %s", rel, short(got), short(b.SHA256))
	}
	if err == nil {
		err = finish(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// verifyPlaced checks that each path is in place: a regular file with
// the staged size, mode and content record, a symlink of the plan with its
// target, or else a directory, with the manifest's mode where it has one.
func verifyPlaced(root int, mount string, paths []string, want map[string]events.Blob, plan *entryPlan) error {
	for _, p := range paths {
		at, err := probePath(root, p)
		if err != nil {
			return retryable("check %s: %w", p, err)
		}
		b, isFile := want[p]
		if t, isLink := plan.symlinks[p]; isLink {
			if !at.exists || at.st.Mode&unix.S_IFMT != unix.S_IFLNK {
				return retryable("rsync did not create symlink %s", p)
			}
			if got, err := readlinkPath(root, p); err != nil || got != t {
				return retryable("symlink %s leads to %q, want %q (%v)", p, got, t, err)
			}
			continue
		}
		if !isFile {
			if !at.isDir() {
				return retryable("rsync did not create directory %s", p)
			}
			if mode, ok := plan.dirModes[p]; ok && at.st.Mode&0o7777 != mode {
				return retryable("directory %s has mode %o, want %o", p, at.st.Mode&0o7777, mode)
			}
			continue
		}
		if !at.isRegular() || at.st.Size != b.Size || at.st.Mode&0o7777 != b.Mode {
			return retryable("rsync did not put %s in place (found mode %o, %d bytes; want %o, %d bytes)", p, at.st.Mode, at.st.Size, b.Mode, b.Size)
		}
		if c, ok := readContent(filepath.Join(mount, p), &at.st); ok && c.SHA256 != b.SHA256 {
			return retryable("rsync put other content at %s (%s, want %s)", p, short(c.SHA256), short(b.SHA256))
		}
	}
	return nil
}

// parentDirs returns the distinct parent directories of paths ("." for
// the root), sorted.
func parentDirs(paths []string) []string {
	set := map[string]bool{}
	for _, p := range paths {
		set[filepath.Dir(p)] = true
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// phases times the steps of an entry for the debug log.
type phases struct {
	last  time.Time
	names []string
	times []time.Duration
}

func newPhases() *phases { return &phases{last: time.Now()} }

func (p *phases) mark(name string) {
	now := time.Now()
	p.names = append(p.names, name)
	p.times = append(p.times, now.Sub(p.last))
	p.last = now
}

func (p *phases) String() string {
	var b strings.Builder
	for i, n := range p.names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", n, p.times[i].Round(time.Millisecond))
	}
	return b.String()
}

// An entry's deadline: EntryBaseTimeout to plan, stage and place it, plus
// its content at MinApplyRate once its size is known (a put's at once, a
// sync's when its plan says what to fetch). A stuck apply (a GET that
// never ends, an rsync that hangs) fails retryable instead of holding the
// apply lock; the entry is applied again by the next apply.
const (
	EntryBaseTimeout = 10 * time.Minute
	MinApplyRate     = 2 << 20 // bytes per second
)

// entryDeadline ends an entry's context at its deadline.
type entryDeadline struct {
	start time.Time
	base  time.Duration
	limit time.Duration
	timer *time.Timer
}

// newEntryDeadline returns ctx ended at e's deadline, base plus its size.
func newEntryDeadline(ctx context.Context, e events.JournalEntry, base time.Duration) (context.Context, *entryDeadline) {
	ctx, cancel := context.WithCancelCause(ctx)
	d := &entryDeadline{start: time.Now(), base: base, limit: base}
	if e.Blob != nil {
		d.limit += sizeTime(e.Blob.Size)
	}
	d.timer = time.AfterFunc(d.limit, func() {
		cancel(retryable("entry %d (%s %s) was not applied within its deadline of %s (%s plus its size at %s/s): stopped; the next apply retries it", e.Seq, e.Op, e.Path, d.limit.Round(time.Millisecond), d.base, fmtBytes(MinApplyRate)))
	})
	return ctx, d
}

func sizeTime(n int64) time.Duration { return time.Duration(n/MinApplyRate+1) * time.Second }

// extend adds the time n bytes take at MinApplyRate to the base.
func (d *entryDeadline) extend(n int64) {
	if d == nil {
		return
	}
	d.limit = d.base + sizeTime(n)
	d.timer.Reset(time.Until(d.start.Add(d.limit)))
}

func (d *entryDeadline) stop() { d.timer.Stop() }

// passed returns why ctx ended when the deadline ended it.
func (d *entryDeadline) passed(ctx context.Context) error {
	var ae *Error
	if c := context.Cause(ctx); ctx.Err() != nil && errors.As(c, &ae) {
		return c
	}
	return nil
}

// checkNoMountInside refuses a plan that would delete a directory with
// another filesystem mounted at or beneath it, or place a file beneath
// one, before anything is touched (the st_dev checks of the walk and of
// removePath stop at a mount too, but a deletion could have begun).
func (a *Agent) checkNoMountInside(p *entryPlan) error {
	mounts, err := readMounts()
	if err != nil {
		return retryable("read the mount table: %v", err)
	}
	mount := filepath.Clean(a.cfg.MountPath)
	for _, m := range mounts {
		rel, ok := strings.CutPrefix(m.point, mount+"/")
		if !ok {
			continue
		}
		for _, d := range p.deletes {
			if underPath(rel, d) {
				return &mountPointError{rel: rel}
			}
		}
		for _, s := range p.stage {
			if underPath(s.path, rel) {
				return &mountPointError{rel: rel}
			}
		}
	}
	return nil
}
