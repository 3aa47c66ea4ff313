package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/store"
)

// Report says what one reconcile run did.
type Report struct {
	Target    int            // idle volumes wanted per zone
	Idle      map[string]int // idle volumes per zone after the run
	Created   int            // new idle volumes (top-up and refresh)
	Refreshed int            // of Created, replacements of stale volumes
	Adopted   int            // orphans recorded as idle
	Deleted   int            // volumes deleted (surplus, stale, orphans, failed)
	Healed    int            // stuck records moved on
	Dropped   int            // records of volumes that no longer exist
	Detached  int            // detaches started
	Grown     int            // volumes whose size ModifyVolume raised to SizeGiB
	Errors    int            // actions that failed (logged; the next run retries)
	// Complete is false when the run stopped early (deadline or action
	// budget); the next run goes on.
	Complete bool
}

// Changed reports whether the run changed anything.
func (r Report) Changed() bool {
	return r.Created+r.Adopted+r.Deleted+r.Healed+r.Dropped+r.Detached+r.Grown > 0
}

// recon is the state of one reconcile run.
type recon struct {
	p      *Pool
	log    *slog.Logger
	now    time.Time
	azs    []string
	target int
	head   int64
	bases  []base
	vols   map[string]store.Volume
	insts  map[string]store.Instance
	ec2v   map[string]ec2Volume
	ec2i   map[string]types.Instance
	// known holds every volume the table knew at the start of the run or
	// that the run recorded: never orphans, even once their record is gone.
	known  map[string]bool
	budget int
	rep    Report
}

// Reconcile brings the pool in line with its target and with EC2 (docs/design.md
// §3 "Reconcile"): it heals records whose handler died, releases volumes of
// instances that are gone, drops records of volumes that are gone, adopts or
// deletes pool-tagged volumes the table does not know, tops each zone up to
// its idle target from the newest base, replaces stale idle volumes, and
// deletes surplus ones. It is level-triggered and idempotent; it stops
// before the deadline and after MaxActions EC2 mutations.
func (p *Pool) Reconcile(ctx context.Context) (Report, error) {
	ctx, cancel := p.withMargin(ctx)
	defer cancel()
	r := &recon{p: p, log: p.log.With("run", "reconcile"), now: p.t.Now(), budget: p.t.MaxActions}
	r.rep.Complete = true
	if err := r.read(ctx); err != nil {
		return r.rep, err
	}
	for _, id := range slices.Sorted(maps.Keys(r.vols)) {
		if !r.more(ctx) {
			break
		}
		r.fixVolume(ctx, r.vols[id])
	}
	r.orphans(ctx)
	r.grow(ctx)
	r.fixInstances(ctx)
	r.balance(ctx)
	r.rep.Idle = map[string]int{}
	for _, az := range r.azs {
		n := len(r.select_(az, store.VolumeIdle, false))
		r.rep.Idle[az] = n
		p.put(metrics.IdleVolumes, float64(n), metrics.Count, az)
	}
	if ctx.Err() != nil {
		r.rep.Complete = false
	}
	r.log.Info("reconcile done", "target", r.target, "idle", r.rep.Idle, "created", r.rep.Created, "refreshed", r.rep.Refreshed,
		"adopted", r.rep.Adopted, "deleted", r.rep.Deleted, "healed", r.rep.Healed, "dropped", r.rep.Dropped,
		"detached", r.rep.Detached, "grown", r.rep.Grown, "errors", r.rep.Errors, "complete", r.rep.Complete)
	return r.rep, nil
}

// read loads the group, the table's view and EC2's view. Instances are read
// before volumes so that every binding seen has its volume record in the
// later read.
func (r *recon) read(ctx context.Context) error {
	p := r.p
	var grp *autoscaling.DescribeAutoScalingGroupsOutput
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		grp, err = p.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{p.cfg.Group}})
		return err
	})
	if err != nil {
		return fmt.Errorf("describe group %s: %w", p.cfg.Group, err)
	}
	if len(grp.AutoScalingGroups) == 0 {
		return fmt.Errorf("auto scaling group %q (VOLSD_ASG) does not exist", p.cfg.Group)
	}
	g := grp.AutoScalingGroups[0]
	r.azs = p.cfg.AZs
	if len(r.azs) == 0 {
		r.azs = slices.Clone(g.AvailabilityZones)
	}
	sort.Strings(r.azs)
	r.target = min(p.cfg.IdlePerAZ, int(aws.ToInt32(g.MaxSize)))
	r.rep.Target = r.target

	var insts []store.Instance
	var vols []store.Volume
	var snaps []store.Snapshot
	err = p.retry(ctx, func(ctx context.Context) error {
		var err error
		if insts, err = p.store.ListInstances(ctx, p.cfg.Pool); err != nil {
			return err
		}
		if vols, err = p.store.ListVolumes(ctx, p.cfg.Pool); err != nil {
			return err
		}
		if r.head, err = p.store.Head(ctx, p.cfg.Pool); err != nil {
			return err
		}
		snaps, err = p.store.ListSnapshots(ctx, p.cfg.Pool)
		return err
	})
	if err != nil {
		return fmt.Errorf("read the table: %w", err)
	}
	r.bases = p.basesFrom(snaps)
	r.insts = map[string]store.Instance{}
	for _, in := range insts {
		r.insts[in.InstanceID] = in
	}
	r.vols, r.known = map[string]store.Volume{}, map[string]bool{}
	for _, v := range vols {
		r.vols[v.VolumeID] = v
		r.known[v.VolumeID] = true
	}

	if r.ec2v, err = p.poolVolumes(ctx); err != nil {
		return err
	}
	var missing []string
	for id := range r.vols {
		if _, ok := r.ec2v[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		// Recorded volumes that lost their pool tag still exist.
		more, err := p.volumesByID(ctx, missing)
		if err != nil {
			return err
		}
		for id, v := range more {
			r.ec2v[id] = v
		}
	}
	ids := map[string]bool{}
	for _, v := range r.vols {
		if v.InstanceID != "" {
			ids[v.InstanceID] = true
		}
	}
	for _, in := range r.insts {
		if in.State != store.InstanceGone || in.VolumeID != "" {
			ids[in.InstanceID] = true
		}
	}
	for _, v := range r.ec2v {
		if v.Instance != "" {
			ids[v.Instance] = true
		}
	}
	r.ec2i, err = p.instancesByID(ctx, slices.Sorted(maps.Keys(ids)))
	return err
}

// more reports whether the run may go on (deadline, action budget).
func (r *recon) more(ctx context.Context) bool {
	if ctx.Err() != nil || r.budget <= 0 {
		r.rep.Complete = false
		return false
	}
	return true
}

// spend takes one EC2 mutation from the budget.
func (r *recon) spend(ctx context.Context) bool {
	if !r.more(ctx) {
		return false
	}
	r.budget--
	return true
}

// alive reports whether EC2 shows the instance and it is not terminating.
func (r *recon) alive(id string) bool {
	in, ok := r.ec2i[id]
	return ok && !instanceGone(in)
}

func (r *recon) fail(log *slog.Logger, what string, err error) {
	if errors.Is(err, errDetaching) {
		log.Info(what+": waiting for the detach", "detail", err)
		return
	}
	if errors.Is(err, store.ErrConflict) {
		log.Info(what+": the record changed meanwhile; next run", "detail", err)
		return
	}
	r.rep.Errors++
	log.Warn(what+" failed; next run retries", "error", err)
}

// set records v as the current record (zero State = dropped).
func (r *recon) set(v store.Volume) {
	r.known[v.VolumeID] = true
	if v.State == "" || v.State == store.VolumeGone {
		delete(r.vols, v.VolumeID)
		return
	}
	r.vols[v.VolumeID] = v
}

// fixVolume compares one record with EC2's view and moves it on.
func (r *recon) fixVolume(ctx context.Context, v store.Volume) {
	p := r.p
	log := r.log.With("volume", v.VolumeID, "state", v.State, "instance", v.InstanceID)
	age := r.now.Sub(v.UpdatedAt)
	stuck := age > p.t.StuckAfter
	ev, ok := r.ec2v[v.VolumeID]
	if !ok || ev.going() || v.State == store.VolumeGone {
		if age < p.t.GoneGrace && v.State != store.VolumeDeleting && v.State != store.VolumeGone {
			return // EC2 may not list a new volume yet
		}
		if err := p.dropRecord(ctx, v); err != nil {
			r.fail(log, "drop record", err)
			return
		}
		log.Info("volume no longer exists; record dropped")
		r.rep.Dropped++
		delete(r.vols, v.VolumeID)
		return
	}
	switch v.State {
	case store.VolumeCreating:
		switch {
		case ev.State == types.VolumeStateError:
			if r.spend(ctx) {
				r.deleteRecorded(ctx, v, "creation failed", log)
			}
		case ev.State == types.VolumeStateAvailable && v.InstanceID == "":
			r.toIdle(ctx, v, log)
		case ev.State == types.VolumeStateAvailable && stuck:
			// The launch that created it died: it is an idle volume now.
			n, err := p.transition(ctx, v, store.VolumeIdle, func(n *store.Volume) { n.InstanceID = "" })
			if err == nil {
				err = p.unbind(ctx, v.InstanceID, v.VolumeID)
			}
			if err != nil {
				r.fail(log, "heal stuck creating", err)
				return
			}
			r.set(n)
			r.rep.Healed++
			log.Info("healed: volume of a dead launch is idle now")
		}
	case store.VolumeIdle:
		if ev.Instance != "" && stuck {
			// A launch that lost its claim attached it. Fencing it
			// (releasing) first makes sure no claim holds it now.
			log.Warn("idle volume is attached; detaching it", "attachedTo", ev.Instance)
			r.release(ctx, v, "idle volume attached to "+ev.Instance, log)
		}
	case store.VolumeClaimed, store.VolumeAttaching:
		if stuck {
			r.healClaim(ctx, v, ev, log)
		}
	case store.VolumeInUse:
		alive := r.alive(v.InstanceID)
		lost := alive && stuck && !(ev.Instance == v.InstanceID && ev.attached())
		if !alive && age > p.t.GoneGrace || lost {
			why := "instance is gone"
			if lost {
				why = "volume is no longer attached to its instance"
			}
			r.release(ctx, v, why, log)
		}
	case store.VolumeReleasing:
		// Cut off, or detached by an earlier run (then it is free).
		if stuck || ev.free() && age > p.t.GoneGrace {
			r.release(ctx, v, "release was cut off", log)
		}
	case store.VolumeDeleting:
		if age > p.t.GoneGrace && r.spend(ctx) {
			if err := p.deleteVolume(ctx, v, log); err != nil {
				r.fail(log, "finish delete", err)
				return
			}
			r.rep.Deleted++
			delete(r.vols, v.VolumeID)
		}
	case store.VolumeFailed:
		switch {
		case ev.attached():
			if r.spend(ctx) {
				if err := p.detach(ctx, v.VolumeID, ev.Instance, false); err != nil {
					r.fail(log, "detach failed volume", err)
					return
				}
				r.rep.Detached++
			}
		case ev.free() && r.spend(ctx):
			r.deleteRecorded(ctx, v, "volume failed: "+v.LastError, log)
		}
	}
}

// healClaim moves on a claim whose launch died, from EC2's view.
func (r *recon) healClaim(ctx context.Context, v store.Volume, ev ec2Volume, log *slog.Logger) {
	p := r.p
	alive := r.alive(v.InstanceID)
	var err error
	switch {
	case alive && ev.Instance == v.InstanceID && ev.Attach == types.VolumeAttachmentStateAttached:
		var n store.Volume
		n, err = p.transition(ctx, v, store.VolumeInUse, func(n *store.Volume) { n.Device = ev.Device })
		if err == nil {
			r.set(n)
			log.Info("healed: the volume is attached; recorded in-use", "device", ev.Device)
		}
	case ev.free():
		// Never (or no longer) attached: its content is its base.
		var n store.Volume
		n, err = p.transition(ctx, v, store.VolumeIdle, func(n *store.Volume) { n.InstanceID, n.Device, n.LastError = "", "", "" })
		if err == nil {
			r.set(n)
			err = p.unbind(ctx, v.InstanceID, v.VolumeID)
			log.Info("healed: stuck claim returned to the idle pool", "alive", alive)
		}
	case !alive:
		r.release(ctx, v, "instance is gone", log)
		return
	default:
		// Attached elsewhere, or stuck in EC2: detach, decide next run.
		// The write first fences off a launch that resumed meanwhile.
		if !r.spend(ctx) {
			return
		}
		var n store.Volume
		if n, err = p.transition(ctx, v, v.State, nil); err == nil {
			r.set(n)
			err = p.detach(ctx, v.VolumeID, ev.Instance, ev.Attach == types.VolumeAttachmentStateAttaching)
		}
		if err == nil {
			r.rep.Detached++
			log.Info("healed: stuck attachment detached", "attachedTo", ev.Instance, "attachment", ev.Attach)
		}
	}
	if err != nil {
		r.fail(log, "heal stuck claim", err)
		return
	}
	r.rep.Healed++
}

// release fences a volume (releasing) and finishes its release without
// waiting for detaches.
func (r *recon) release(ctx context.Context, v store.Volume, why string, log *slog.Logger) {
	p := r.p
	if !r.spend(ctx) {
		return
	}
	// The fence (also for a release already under way) makes a handler
	// that resumed meanwhile lose its next write instead of racing us.
	f, err := p.transition(ctx, v, store.VolumeReleasing, nil)
	if err != nil {
		r.fail(log, "fence release", err)
		return
	}
	r.set(f)
	log.Info("releasing volume", "reason", why)
	var inst *store.Instance
	if in, ok := r.insts[v.InstanceID]; ok {
		inst = &in
	}
	seq, known := knownSeq(inst, v)
	if v.State == store.VolumeIdle {
		seq, known = v.Seq, true // it was idle: its seq is its record's
	}
	if err := p.finishRelease(ctx, f, seq, known, false, log); err != nil {
		r.fail(log, "release", err)
		return
	}
	r.rep.Healed++
	r.reread(ctx, v.VolumeID)
}

// toIdle records a new unowned volume as idle once EC2 has it available.
func (r *recon) toIdle(ctx context.Context, v store.Volume, log *slog.Logger) {
	n, err := r.p.transition(ctx, v, store.VolumeIdle, nil)
	if err != nil {
		r.fail(log, "record new volume idle", err)
		r.reread(ctx, v.VolumeID)
		return
	}
	r.set(n)
}

// reread replaces the run's copy of a record with the stored one.
func (r *recon) reread(ctx context.Context, id string) {
	cur, err := r.p.store.GetVolume(ctx, r.p.cfg.Pool, id)
	switch {
	case err == nil:
		r.set(cur)
	case errors.Is(err, store.ErrNotFound):
		delete(r.vols, id)
	}
}

// deleteRecorded deletes a recorded volume that must go (deleting, then
// gone).
func (r *recon) deleteRecorded(ctx context.Context, v store.Volume, why string, log *slog.Logger) bool {
	d, err := r.p.transition(ctx, v, store.VolumeDeleting, nil)
	if err == nil {
		r.set(d)
		err = r.p.deleteVolume(ctx, d, log)
	}
	if err != nil {
		r.fail(log, "delete volume", err)
		return false
	}
	if v.InstanceID != "" {
		_ = r.p.unbind(ctx, v.InstanceID, v.VolumeID)
	}
	delete(r.vols, v.VolumeID)
	r.rep.Deleted++
	log.Info("volume deleted", "reason", why, "seq", v.Seq)
	return true
}

// orphans adopts or deletes pool-tagged volumes the table does not know,
// once they are older than OrphanGrace.
func (r *recon) orphans(ctx context.Context) {
	p := r.p
	for _, id := range slices.Sorted(maps.Keys(r.ec2v)) {
		ev := r.ec2v[id]
		if r.known[id] || ev.Tags[events.TagPool] != p.cfg.Pool || ev.going() || ev.State == types.VolumeStateCreating {
			continue
		}
		if r.now.Sub(ev.Created) < p.t.OrphanGrace || !r.more(ctx) {
			continue
		}
		log := r.log.With("volume", id, "az", ev.AZ)
		if ev.Instance != "" {
			log.Warn("pool volume unknown to the table is attached; leaving it", "attachedTo", ev.Instance, "attachment", ev.Attach)
			continue
		}
		seq, usable := r.baseSeq(ev.SnapshotID)
		switch {
		case !ev.free() && ev.State != types.VolumeStateError:
			continue
		case ev.free() && usable && slices.Contains(r.azs, ev.AZ) && ev.SizeGiB == p.cfg.SizeGiB &&
			ev.Type == p.cfg.VolumeType && r.inFlight(ev.AZ) < r.target:
			rec := store.Volume{Pool: p.cfg.Pool, VolumeID: id, State: store.VolumeIdle, AZ: ev.AZ, Seq: seq,
				SnapshotID: ev.SnapshotID, SizeGiB: ev.SizeGiB, CreatedAt: ev.Created}
			n, err := p.store.PutVolume(ctx, rec)
			if err != nil {
				r.fail(log, "adopt orphan", err)
				continue
			}
			r.set(n)
			r.rep.Adopted++
			log.Info("orphan volume adopted as idle", "seq", seq, "snapshot", ev.SnapshotID)
		default:
			if !r.spend(ctx) {
				return
			}
			err := p.retry(ctx, func(ctx context.Context) error {
				_, err := p.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)})
				return err
			})
			if err != nil && !awserr.IsNotFound(err) {
				r.fail(log, "delete orphan", err)
				continue
			}
			r.rep.Deleted++
			log.Info("orphan volume deleted", "snapshot", ev.SnapshotID, "usableBase", usable, "sizeGiB", ev.SizeGiB, "type", ev.Type)
		}
	}
}

// baseSeq returns the seq of volumes made from snapshotID if it is a base
// new volumes may come from now.
func (r *recon) baseSeq(snapshotID string) (int64, bool) {
	for _, b := range r.bases {
		if b.SnapshotID == snapshotID {
			return b.Seq, true
		}
	}
	return 0, false
}

// fixInstances clears stale bindings, marks instances that are gone, and
// drops records of instances gone long ago.
func (r *recon) fixInstances(ctx context.Context) {
	p := r.p
	for _, id := range slices.Sorted(maps.Keys(r.insts)) {
		if !r.more(ctx) {
			return
		}
		in := r.insts[id]
		log := r.log.With("instance", id, "state", in.State)
		age := r.now.Sub(in.UpdatedAt)
		if age < p.t.GoneGrace {
			continue
		}
		if in.VolumeID != "" {
			v, ok := r.vols[in.VolumeID]
			if ok && v.InstanceID == id && (v.State.Held() || v.State == store.VolumeReleasing) {
				continue
			}
			// The binding is stale (this run may have released the
			// volume): clear it and look at the record afresh.
			if err := p.unbind(ctx, id, in.VolumeID); err != nil {
				r.fail(log, "clear stale binding", err)
				continue
			}
			cur, err := p.getInstance(ctx, id)
			if err != nil || cur == nil || cur.VolumeID != "" {
				continue
			}
			in = *cur
		}
		switch {
		case in.State != store.InstanceGone && !r.alive(id):
			if err := p.markGone(ctx, id); err != nil {
				r.fail(log, "mark instance gone", err)
			}
		case in.State == store.InstanceGone && age > p.t.InstanceRetention:
			err := p.retry(ctx, func(ctx context.Context) error { return p.store.DeleteInstance(ctx, p.cfg.Pool, id, in.Rev) })
			if err != nil {
				r.fail(log, "drop gone instance", err)
			}
		}
	}
}

// select_ returns the records of az in state (for creating: only unowned
// ones when unowned is set).
func (r *recon) select_(az string, state store.VolumeState, unowned bool) []store.Volume {
	var out []store.Volume
	for _, v := range r.vols {
		if v.AZ == az && v.State == state && (!unowned || v.InstanceID == "") {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VolumeID < out[j].VolumeID })
	return out
}

// inFlight counts idle volumes and unowned volumes being created in az.
func (r *recon) inFlight(az string) int {
	return len(r.select_(az, store.VolumeIdle, false)) + len(r.select_(az, store.VolumeCreating, true))
}

// stale reports whether an idle volume should be replaced: it is more than
// RefreshBehind entries behind the head or older than RefreshAge, and a
// newer completed snapshot of the pool exists.
func (r *recon) stale(v store.Volume) bool {
	b := r.bases[0]
	if !b.Own || b.Seq <= v.Seq {
		return false
	}
	return r.head-v.Seq > r.p.cfg.RefreshBehind || r.now.Sub(v.CreatedAt) > r.p.cfg.RefreshAge
}

// balance tops every zone up to the target, starts replacements of stale
// idle volumes (never more than RefreshMax), waits for new volumes, and
// then deletes idle volumes beyond the target, stale ones first: a stale
// volume goes only once its replacement is idle, so the idle count never
// drops below the target for a refresh.
func (r *recon) balance(ctx context.Context) {
	p := r.p
	refreshed := 0
	for _, az := range r.azs {
		have := r.inFlight(az)
		for ; have < r.target; have++ {
			if !r.spend(ctx) || !r.createIdle(ctx, az, false) {
				break
			}
		}
		var stale int
		for _, v := range r.select_(az, store.VolumeIdle, false) {
			if r.stale(v) {
				stale++
			}
		}
		need := stale - max(0, r.inFlight(az)-r.target)
		for ; need > 0 && refreshed < p.cfg.RefreshMax; need-- {
			if !r.spend(ctx) || !r.createIdle(ctx, az, true) {
				break
			}
			refreshed++
		}
	}
	r.waitCreated(ctx)
	for _, az := range r.azs {
		idle := r.select_(az, store.VolumeIdle, false)
		if len(idle) <= r.target {
			continue
		}
		sort.SliceStable(idle, func(i, j int) bool {
			si, sj := r.stale(idle[i]), r.stale(idle[j])
			if si != sj {
				return si
			}
			if idle[i].Seq != idle[j].Seq {
				return idle[i].Seq < idle[j].Seq
			}
			return idle[i].CreatedAt.Before(idle[j].CreatedAt)
		})
		for _, v := range idle[:len(idle)-r.target] {
			if !r.spend(ctx) {
				return
			}
			why := "surplus"
			if r.stale(v) {
				why = fmt.Sprintf("stale (seq %d, head %d, newest snapshot %d); replaced", v.Seq, r.head, r.bases[0].Seq)
			}
			r.deleteRecorded(ctx, v, why, r.log.With("volume", v.VolumeID, "az", az))
		}
	}
}

// createIdle creates one unowned volume in az from the newest usable base
// and records it creating.
func (r *recon) createIdle(ctx context.Context, az string, refresh bool) bool {
	p := r.p
	log := r.log.With("az", az)
	var tok [12]byte
	_, _ = rand.Read(tok[:])
	for len(r.bases) > 0 {
		b := r.bases[0]
		in := p.createInput(az, b, "volsd-"+hex.EncodeToString(tok[:]))
		var out *ec2.CreateVolumeOutput
		err := p.retry(ctx, func(ctx context.Context) error {
			var err error
			out, err = p.ec2.CreateVolume(ctx, in)
			return err
		})
		if awserr.IsSnapshotNotFound(err) && len(r.bases) > 1 {
			log.Warn("base snapshot does not exist; using the next", "snapshot", b.SnapshotID)
			r.bases = r.bases[1:]
			continue
		}
		if err != nil {
			r.fail(log, "create idle volume", err)
			return false
		}
		rec := store.Volume{Pool: p.cfg.Pool, VolumeID: aws.ToString(out.VolumeId), State: store.VolumeCreating, AZ: az,
			Seq: b.Seq, SnapshotID: b.SnapshotID, SizeGiB: aws.ToInt32(out.Size)}
		n, err := p.store.PutVolume(ctx, rec)
		if err != nil {
			r.fail(log, "record new volume (an orphan now; a later run adopts it)", err)
			return false
		}
		r.set(n)
		r.rep.Created++
		if refresh {
			r.rep.Refreshed++
		}
		log.Info("volume created for the idle pool", "volume", rec.VolumeID, "seq", b.Seq, "snapshot", b.SnapshotID, "refresh", refresh)
		return true
	}
	return false
}

// waitCreated waits (at most CreateWait) for unowned creating volumes to
// become available and records them idle.
func (r *recon) waitCreated(ctx context.Context) {
	p := r.p
	start := p.t.Now()
	for n := 0; ; n++ {
		var ids []string
		for id, v := range r.vols {
			if v.State == store.VolumeCreating && v.InstanceID == "" {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 || ctx.Err() != nil {
			return
		}
		sort.Strings(ids)
		views, err := p.volumesByID(ctx, ids)
		if err != nil {
			r.fail(r.log, "read new volumes", err)
			return
		}
		for _, id := range ids {
			v, ev := r.vols[id], views[id]
			log := r.log.With("volume", id)
			switch ev.State {
			case types.VolumeStateAvailable:
				r.toIdle(ctx, v, log)
			case types.VolumeStateError:
				if r.spend(ctx) {
					r.deleteRecorded(ctx, v, "creation failed", log)
				}
			}
		}
		if p.t.Now().Sub(start) > p.t.CreateWait {
			return
		}
		pending := false
		for _, id := range ids {
			if v, ok := r.vols[id]; ok && v.State == store.VolumeCreating {
				pending = true
			}
		}
		if !pending {
			return
		}
		if err := p.t.Sleep(ctx, p.t.Poll.Delay(n)); err != nil {
			return
		}
	}
}
