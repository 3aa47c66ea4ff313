package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Bounds of one launch.
const (
	maxLaunchRounds = 12 // claim/create rounds before giving up
	maxClientTokens = 4  // on-demand volumes per instance before giving up
)

// launch is the state of one launch handler run.
type launch struct {
	p       *Pool
	a       events.LifecycleAction
	id      string // instance
	az      string
	used    map[string]bool // device slots taken on the instance
	log     *slog.Logger
	token   int // client-token attempt for on-demand volumes
	tries   int // attach tries (stuck attachments)
	pending int // waits for an instance that is not attachable yet
	claimT  time.Time
	missed  bool
}

// step results.
type outcome int

const (
	again    outcome = iota // re-read and decide again
	attached                // the instance holds its volume, attached
	gone                    // the instance is terminating or gone
)

// Launch gives the instance of a launch lifecycle action one volume in its
// zone, attached, and returns without completing the action (the agent
// completes it once the content is current). It completes the action
// ABANDON when no retry can help, and returns an error only when one can.
func (p *Pool) Launch(ctx context.Context, a events.LifecycleAction) error {
	l := &launch{p: p, a: a, id: a.EC2InstanceID, log: p.log.With("instance", a.EC2InstanceID, "transition", "launch")}
	if a.FromWarmPool() {
		l.log = l.log.With("origin", a.Origin)
	}
	inst, found, err := p.waitInstance(ctx, l.id)
	if err != nil {
		return err
	}
	if !found || instanceGone(inst) {
		l.log.Info("instance is gone; nothing to attach")
		return nil
	}
	l.az = aws.ToString(inst.Placement.AvailabilityZone)
	l.used = usedDevices(inst)
	l.log = l.log.With("az", l.az)
	rec, err := p.getInstance(ctx, l.id)
	if err != nil {
		return err
	}
	if rec != nil && (rec.State == store.InstanceTerminating || rec.State == store.InstanceGone) {
		l.log.Info("instance is already terminating; nothing to attach", "state", rec.State)
		return nil
	}
	if a.FromWarmPool() {
		// Into service: pushes wait for it again.
		if err := p.markWarmed(ctx, l.id, false); err != nil {
			return err
		}
	}
	return l.run(ctx)
}

// waitInstance describes a new instance, waiting up to InstanceVisible for
// it to show (DescribeInstances is eventually consistent).
func (p *Pool) waitInstance(ctx context.Context, id string) (types.Instance, bool, error) {
	start := p.t.Now()
	for n := 0; ; n++ {
		inst, found, err := p.describeInstance(ctx, id)
		if err != nil || found || p.t.Now().Sub(start) >= p.t.InstanceVisible {
			return inst, found, err
		}
		if err := p.t.Sleep(ctx, p.t.Poll.Delay(n)); err != nil {
			return inst, false, err
		}
	}
}

func (p *Pool) getInstance(ctx context.Context, id string) (*store.Instance, error) {
	var in store.Instance
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		in, err = p.store.GetInstance(ctx, p.cfg.Pool, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read instance %s: %w", id, err)
	}
	return &in, nil
}

func (l *launch) run(ctx context.Context) error {
	for round := 0; round < maxLaunchRounds; round++ {
		v, err := l.acquire(ctx)
		if err != nil {
			return l.fail(ctx, err)
		}
		if l.claimT.IsZero() {
			l.claimT = l.p.t.Now()
		}
		// A terminate that marked the instance before this claim saw no
		// binding to release; one that marks it after sees ours. Check
		// which happened, every round: a round may have claimed anew.
		rec, err := l.p.getInstance(ctx, l.id)
		if err != nil {
			return err
		}
		if rec != nil && (rec.State == store.InstanceTerminating || rec.State == store.InstanceGone) {
			return l.abort(ctx, "instance is terminating")
		}
		if l.a.IntoWarmPool() && rec != nil && rec.State != store.InstanceWarmed {
			// It will wait stopped in the warm pool: from its claim on,
			// pushes do not wait for it (it catches up when it leaves).
			if err := l.p.markWarmed(ctx, l.id, true); err != nil {
				return err
			}
		}
		res, err := l.step(ctx, v)
		if err != nil {
			return l.fail(ctx, err)
		}
		switch res {
		case attached:
			return nil
		case gone:
			return l.abort(ctx, "instance terminated during launch")
		}
	}
	return l.fail(ctx, unrecoverable("no volume attached after %d rounds", maxLaunchRounds))
}

// acquire returns the volume the instance holds: one it held already, an
// idle one claimed now, or one created on demand.
func (l *launch) acquire(ctx context.Context) (store.Volume, error) {
	p := l.p
	start := p.t.Now()
	var v store.Volume
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		v, err = p.store.ClaimIdle(ctx, p.cfg.Pool, l.az, l.id)
		return err
	})
	if err == nil {
		if l.claimT.IsZero() {
			p.put("ClaimLatency", float64(p.t.Now().Sub(start).Milliseconds()), metrics.Milliseconds, l.az)
		}
		return v, nil
	}
	if !errors.Is(err, store.ErrNoIdle) {
		return v, fmt.Errorf("claim an idle volume: %w", err)
	}
	if !l.missed {
		l.missed = true
		p.put("PoolMiss", 1, metrics.Count, l.az)
		l.log.Info("no idle volume in the zone; creating one on demand")
	}
	return l.create(ctx)
}

// create makes a volume for the instance from the pool's base with a
// client token derived from pool and instance, and records it bound to the
// instance. A retry of the same launch gets the same volume back from EC2.
func (l *launch) create(ctx context.Context) (store.Volume, error) {
	p := l.p
	bases, err := p.bases(ctx)
	if err != nil {
		return store.Volume{}, err
	}
	for b := 0; l.token < maxClientTokens; {
		if b >= len(bases) {
			return store.Volume{}, unrecoverable("no usable base snapshot (tried %d)", len(bases))
		}
		base := bases[b]
		in := p.createInput(l.az, base, clientToken(p.cfg.Pool, l.id, l.token))
		var out *ec2.CreateVolumeOutput
		err := p.retry(ctx, func(ctx context.Context) error {
			var err error
			out, err = p.ec2.CreateVolume(ctx, in)
			return err
		})
		switch {
		case awserr.IsSnapshotNotFound(err):
			l.log.Warn("base snapshot does not exist; trying the next", "snapshot", base.SnapshotID)
			b++
			continue
		case awserr.IsClientTokenReused(err):
			l.token++
			continue
		case err != nil && (awserr.Classify(err) == awserr.Invalid || awserr.Classify(err) == awserr.NotFound):
			return store.Volume{}, unrecoverable("create volume: %v", err)
		case err != nil:
			return store.Volume{}, fmt.Errorf("create volume: %w", err)
		}
		id := aws.ToString(out.VolumeId)
		if out.State == types.VolumeStateDeleting || out.State == types.VolumeStateDeleted || out.State == types.VolumeStateError {
			l.log.Info("volume of this client token is unusable; using the next token", "volume", id, "state", out.State)
			l.token++
			continue
		}
		rec := store.Volume{
			Pool: p.cfg.Pool, VolumeID: id, State: store.VolumeCreating, AZ: l.az, InstanceID: l.id,
			Seq: base.Seq, SnapshotID: base.SnapshotID, SizeGiB: aws.ToInt32(out.Size),
		}
		var got store.Volume
		err = p.retry(ctx, func(ctx context.Context) error {
			var err error
			got, err = p.store.AssignNew(ctx, rec)
			return err
		})
		switch {
		case err == nil:
			l.log.Info("volume created on demand", "volume", id, "seq", base.Seq, "snapshot", base.SnapshotID)
			return got, nil
		case errors.Is(err, store.ErrExists):
			// A concurrent delivery claimed another volume for the
			// instance first. Keep ours as an unowned new volume.
			rec.InstanceID = ""
			if _, perr := p.store.PutVolume(ctx, rec); perr != nil && !errors.Is(perr, store.ErrExists) {
				l.log.Warn("could not record the extra volume; reconcile will adopt it", "volume", id, "error", perr)
			}
			return got, nil
		case errors.Is(err, store.ErrConflict):
			// The volume is recorded already but not ours (reconcile
			// adopted it): use a new token.
			cur, gerr := p.store.GetVolume(ctx, p.cfg.Pool, id)
			if gerr == nil && cur.InstanceID == l.id && cur.State.Held() {
				return cur, nil
			}
			l.token++
		default:
			return store.Volume{}, fmt.Errorf("record volume %s: %w", id, err)
		}
	}
	return store.Volume{}, unrecoverable("no volume after %d client tokens", maxClientTokens)
}

// step moves a held volume on towards attached.
func (l *launch) step(ctx context.Context, v store.Volume) (outcome, error) {
	p := l.p
	log := l.log.With("volume", v.VolumeID)
	switch v.State {
	case store.VolumeCreating:
		ev, found, err := l.waitCreated(ctx, v.VolumeID)
		if err != nil {
			return again, err
		}
		if !found || ev.State != types.VolumeStateAvailable {
			state := "gone"
			if found {
				state = string(ev.State)
			}
			l.token++
			return again, l.markFailed(ctx, v, "volume creation ended in state "+state)
		}
	case store.VolumeInUse:
		ev, found, err := p.describeVolume(ctx, v.VolumeID)
		if err != nil {
			return again, err
		}
		if found && ev.Instance == l.id && ev.Attach == types.VolumeAttachmentStateAttached {
			log.Info("instance already holds its volume", "device", ev.Device, "seq", v.Seq)
			return attached, nil
		}
	case store.VolumeAttaching:
		ev, found, err := p.describeVolume(ctx, v.VolumeID)
		if err != nil {
			return again, err
		}
		if found && ev.Instance == l.id && ev.Attach == types.VolumeAttachmentStateAttached {
			// Another delivery for this instance attached it and has not
			// recorded it yet (or was cut off). Record it without fencing:
			// duplicates that fenced each other after the attach would
			// invalidate each other's record round after round.
			return l.recordAttached(ctx, v, ev)
		}
	case store.VolumeClaimed:
	default:
		return again, nil
	}
	// Fence: this write makes any other handler's pending write on the
	// volume fail, so only one of us acts on EC2 from here on.
	f, err := p.transition(ctx, v, store.VolumeAttaching, nil)
	if errors.Is(err, store.ErrConflict) {
		return again, nil
	}
	if err != nil {
		return again, err
	}
	// A volume just claimed from the idle pool, or just created and seen
	// available, is attached at once: EC2's view is read only when the
	// attach is refused (one DescribeVolumes less per launch).
	return l.attach(ctx, f, v.State == store.VolumeClaimed || v.State == store.VolumeCreating)
}

// waitCreated waits until a new volume is no longer creating. A volume
// EC2 does not show yet (DescribeVolumes is eventually consistent) is waited
// for up to InstanceVisible.
func (l *launch) waitCreated(ctx context.Context, id string) (ec2Volume, bool, error) {
	start := l.p.t.Now()
	for n := 0; ; n++ {
		ev, found, err := l.p.describeVolume(ctx, id)
		if err != nil || found && ev.State != types.VolumeStateCreating || !found && l.p.t.Now().Sub(start) > l.p.t.InstanceVisible {
			return ev, found, err
		}
		if err := l.p.t.Sleep(ctx, l.p.t.Poll.Delay(n)); err != nil {
			return ev, found, err
		}
	}
}

// markFailed takes a volume the instance cannot use out of the pool
// (reconcile detaches and deletes failed volumes) and unbinds it, so the
// next round claims another.
func (l *launch) markFailed(ctx context.Context, v store.Volume, reason string) error {
	l.log.Warn("volume unusable; marking it failed", "volume", v.VolumeID, "reason", reason)
	_, err := l.p.transition(ctx, v, store.VolumeFailed, func(n *store.Volume) { n.LastError = reason })
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	if err != nil {
		return err
	}
	return l.p.unbind(ctx, l.id, v.VolumeID)
}

// attach attaches a fenced (attaching) volume and waits until EC2 shows it
// attached, then records it in-use.
func (l *launch) attach(ctx context.Context, v store.Volume, first bool) (outcome, error) {
	p := l.p
	log := l.log.With("volume", v.VolumeID)
	var since time.Time
	// try attaches the volume; done is false when EC2 refused (the caller
	// reads EC2's view again).
	try := func() (res outcome, done bool, err error) {
		res, err = l.attachFree(ctx, v)
		switch {
		case err != nil:
			return again, true, err
		case res == gone:
			return gone, true, nil
		case res == attached:
			res, err = l.waitAttached(ctx, v, p.t.Now())
			return res, true, err
		}
		return again, false, nil
	}
	if first {
		if res, done, err := try(); done {
			return res, err
		}
		// Refused: EC2's view says why.
	}
	for busy := 0; ; {
		ev, found, err := p.describeVolume(ctx, v.VolumeID)
		switch {
		case err != nil:
			return again, err
		case !found || ev.going():
			return again, l.markFailed(ctx, v, "volume no longer exists")
		case ev.Instance != "" && ev.Instance != l.id:
			return again, l.markFailed(ctx, v, "volume is attached to "+ev.Instance)
		case ev.Instance == l.id && ev.Attach == types.VolumeAttachmentStateDetaching:
			// A previous try is detaching it: wait, then attach again.
		case ev.Instance == l.id && ev.Attach == types.VolumeAttachmentStateAttached:
			return l.recordAttached(ctx, v, ev)
		case ev.Instance == l.id:
			if since.IsZero() {
				since = ev.AttachTime
			}
			return l.waitAttached(ctx, v, since)
		case ev.State == types.VolumeStateCreating:
		case ev.State == types.VolumeStateError:
			return again, l.markFailed(ctx, v, "volume is in state error")
		case ev.free():
			if res, done, err := try(); done {
				return res, err
			}
		}
		busy++
		if busy > 20 {
			return again, fmt.Errorf("volume %s did not become attachable (state %s, attachment %s)", v.VolumeID, ev.State, ev.Attach)
		}
		if err := p.t.Sleep(ctx, p.t.Poll.Delay(min(busy, 4))); err != nil {
			return again, err
		}
		log.Debug("waiting for volume to become attachable", "state", ev.State, "attachment", ev.Attach)
	}
}

// attachFree calls AttachVolume at the first free device name, moving on
// when EC2 says a name is in use. It returns attached when the call was
// accepted, gone when the instance is gone, and again when the volume was
// not available after all (the caller re-reads).
func (l *launch) attachFree(ctx context.Context, v store.Volume) (outcome, error) {
	p := l.p
	for _, dev := range deviceNames {
		if l.used[deviceSlot(dev)] {
			continue
		}
		err := p.retry(ctx, func(ctx context.Context) error {
			_, err := p.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{
				VolumeId: aws.String(v.VolumeID), InstanceId: aws.String(l.id), Device: aws.String(dev),
			})
			return err
		})
		switch {
		case err == nil:
			l.log.Info("attaching volume", "volume", v.VolumeID, "device", dev)
			return attached, nil
		case awserr.IsDeviceInUse(err):
			l.used[deviceSlot(dev)] = true
			continue
		case awserr.IsInstanceNotFound(err) || awserr.IsIncorrectInstanceState(err):
			inst, found, derr := p.describeInstance(ctx, l.id)
			if derr != nil {
				return again, derr
			}
			if !found || instanceGone(inst) {
				return gone, nil
			}
			// Still pending (or stopping): wait, then try again.
			l.pending++
			if l.pending > 30 {
				return again, fmt.Errorf("attach %s to %s: instance stays %s: %w", v.VolumeID, l.id, inst.State.Name, err)
			}
			l.log.Debug("instance not attachable yet; waiting", "state", inst.State.Name)
			if serr := p.t.Sleep(ctx, p.t.Poll.Delay(min(l.pending, 4))); serr != nil {
				return again, serr
			}
			return again, nil
		case awserr.IsIncorrectState(err), awserr.IsVolumeNotFound(err):
			return again, nil // the caller re-reads EC2's view
		case awserr.IsRetryable(err):
			return again, fmt.Errorf("attach %s to %s: %w", v.VolumeID, l.id, err)
		default:
			return again, unrecoverable("attach %s to %s at %s: %v", v.VolumeID, l.id, dev, err)
		}
	}
	return again, unrecoverable("no free device name on %s (tried /dev/sdf../dev/sdp)", l.id)
}

// waitAttached waits for the attachment to complete and records the volume
// in-use. An attachment stuck "attaching" for AttachStuck is detached and
// tried again, at most AttachTries times.
func (l *launch) waitAttached(ctx context.Context, v store.Volume, since time.Time) (outcome, error) {
	p := l.p
	log := l.log.With("volume", v.VolumeID)
	for n := 0; ; n++ {
		// An attachment takes seconds: look only after each poll interval
		// (growing, jittered), never right after AttachVolume. A throttled
		// look is not retried at once: the next one waits longer, so a mass
		// scale-out's waits thin out instead of piling onto EC2's limit.
		if err := p.t.Sleep(ctx, p.t.AttachPoll.Delay(n)); err != nil {
			return again, err
		}
		ev, found, err := p.lookVolume(ctx, v.VolumeID)
		if awserr.IsThrottle(err) {
			log.Debug("DescribeVolumes throttled while waiting for the attachment; looking again later", "error", err)
			continue
		}
		if err != nil {
			return again, err
		}
		switch {
		case !found:
			return again, l.markFailed(ctx, v, "volume no longer exists")
		case ev.Instance == l.id && ev.Attach == types.VolumeAttachmentStateAttached:
			return l.recordAttached(ctx, v, ev)
		case ev.Instance != l.id || ev.Attach == types.VolumeAttachmentStateDetaching:
			// Detached under us: the instance may be terminating.
			inst, ifound, err := p.describeInstance(ctx, l.id)
			if err != nil {
				return again, err
			}
			if !ifound || instanceGone(inst) {
				return gone, nil
			}
			return again, nil
		case p.t.Now().Sub(since) > p.t.AttachStuck:
			l.tries++
			log.Warn("attachment stuck; detaching to try again", "device", ev.Device, "stuckFor", p.t.Now().Sub(since).String(), "try", l.tries)
			if l.tries >= p.t.AttachTries {
				return again, unrecoverable("volume %s stuck attaching to %s %d times", v.VolumeID, l.id, l.tries)
			}
			l.used[deviceSlot(ev.Device)] = true
			if err := p.detach(ctx, v.VolumeID, l.id, false); err != nil {
				return again, err
			}
			return again, nil
		}
	}
}

// recordAttached moves the volume attaching → in-use. If the write is lost,
// someone else owns the record now: a volume no longer held by this
// instance is detached again.
func (l *launch) recordAttached(ctx context.Context, v store.Volume, ev ec2Volume) (outcome, error) {
	p := l.p
	_, err := p.transition(ctx, v, store.VolumeInUse, func(n *store.Volume) { n.Device = ev.Device; n.LastError = "" })
	if errors.Is(err, store.ErrConflict) {
		cur, gerr := p.store.GetVolume(ctx, p.cfg.Pool, v.VolumeID)
		if gerr == nil && cur.InstanceID == l.id && cur.State == store.VolumeInUse {
			return attached, nil // another delivery for the instance recorded it
		}
		if gerr == nil && cur.InstanceID == l.id && cur.State.Held() {
			return again, nil // another delivery for the instance: re-read
		}
		if gerr != nil && !errors.Is(gerr, store.ErrNotFound) {
			return again, gerr
		}
		l.log.Warn("volume was taken from this launch while attaching; detaching it", "volume", v.VolumeID)
		return again, p.detach(ctx, v.VolumeID, l.id, false)
	}
	if err != nil {
		return again, err
	}
	p.put("AttachLatency", float64(p.t.Now().Sub(l.claimT).Milliseconds()), metrics.Milliseconds, l.az)
	l.log.Info("volume attached", "volume", v.VolumeID, "device", ev.Device, "seq", v.Seq)
	return attached, nil
}

// abort gives back whatever the instance holds because the instance is
// terminating or gone.
func (l *launch) abort(ctx context.Context, why string) error {
	l.log.Info("launch stopped", "reason", why)
	return l.p.releaseHeld(ctx, l.id, nil, false, l.log)
}

// fail handles an error of the launch: a retryable one is returned (the
// Lambda is invoked again); an unrecoverable one abandons the launch.
func (l *launch) fail(ctx context.Context, err error) error {
	if !errors.Is(err, errUnrecoverable) {
		if ctx.Err() != nil {
			l.log.Warn("launch cut off before the deadline; a retry resumes it", "error", err)
		}
		return err
	}
	p := l.p
	l.log.Error("launch failed; abandoning the lifecycle action", "error", err)
	if rec, gerr := p.getInstance(ctx, l.id); gerr == nil {
		var uerr error
		if rec == nil {
			_, uerr = p.store.PutInstance(ctx, store.Instance{Pool: p.cfg.Pool, InstanceID: l.id, AZ: l.az,
				State: store.InstanceLaunching, LastError: err.Error()})
		} else {
			rec.LastError = err.Error()
			_, uerr = p.store.UpdateInstance(ctx, *rec)
		}
		if uerr != nil {
			l.log.Warn("could not record the error on the instance", "error", uerr)
		}
	}
	if rerr := p.releaseHeld(ctx, l.id, nil, false, l.log); rerr != nil {
		l.log.Warn("could not release the volume of the abandoned instance; reconcile will", "error", rerr)
	}
	return p.complete(ctx, l.a, "ABANDON", l.log)
}

// complete completes a lifecycle action with result. An action that no
// longer exists (completed already, expired) counts as done.
func (p *Pool) complete(ctx context.Context, a events.LifecycleAction, result string, log *slog.Logger) error {
	err := p.retry(ctx, func(ctx context.Context) error {
		_, err := p.asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
			AutoScalingGroupName: aws.String(a.AutoScalingGroupName), LifecycleHookName: aws.String(a.LifecycleHookName),
			LifecycleActionToken: aws.String(a.LifecycleActionToken), InstanceId: aws.String(a.EC2InstanceID),
			LifecycleActionResult: aws.String(result),
		})
		return err
	})
	switch {
	case err == nil:
		log.Info("lifecycle action completed", "result", result)
		return nil
	case awserr.IsLifecycleActionGone(err):
		log.Info("lifecycle action already completed or expired", "result", result, "detail", awserr.Message(err))
		return nil
	}
	return fmt.Errorf("complete lifecycle action %s: %w", result, err)
}
