package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/store"
)

// transition writes next in place of v (state from, v's rev), with the API
// retry. A lost write is store.ErrConflict.
func (p *Pool) transition(ctx context.Context, v store.Volume, to store.VolumeState, edit func(*store.Volume)) (store.Volume, error) {
	next := v
	next.State = to
	if edit != nil {
		edit(&next)
	}
	var out store.Volume
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		out, err = p.store.TransitionVolume(ctx, next, v.State)
		return err
	})
	return out, err
}

// unbind clears an instance's binding to a volume (state untouched).
func (p *Pool) unbind(ctx context.Context, instanceID, volumeID string) error {
	if instanceID == "" {
		return nil
	}
	return p.retry(ctx, func(ctx context.Context) error {
		return p.store.UnbindInstance(ctx, p.cfg.Pool, instanceID, volumeID)
	})
}

// dropRecord removes a volume record (its volume is gone) and the binding
// of the instance that held it.
func (p *Pool) dropRecord(ctx context.Context, v store.Volume) error {
	err := p.retry(ctx, func(ctx context.Context) error {
		return p.store.DeleteVolume(ctx, p.cfg.Pool, v.VolumeID, v.Rev)
	})
	if err != nil {
		return err
	}
	return p.unbind(ctx, v.InstanceID, v.VolumeID)
}

// knownSeq returns the watermark of a volume released by inst and whether
// it is known: only when the agent has reported (the report Lambda records
// it on the instance) or said so in its release output.
func knownSeq(inst *store.Instance, v store.Volume) (int64, bool) {
	if inst == nil || inst.LastReportAt.IsZero() {
		return v.Seq, false
	}
	return max(inst.Seq, v.Seq), true
}

// giveBack returns a volume that an instance held but never had attached
// (claimed, or creating for it) to the pool: its content is its base, so
// its seq stays. Volumes that may have been attached go through release.
func (p *Pool) giveBack(ctx context.Context, v store.Volume, log *slog.Logger) error {
	var err error
	switch v.State {
	case store.VolumeClaimed:
		_, err = p.transition(ctx, v, store.VolumeIdle, func(n *store.Volume) { n.InstanceID, n.Device, n.LastError = "", "", "" })
	case store.VolumeCreating:
		// Unowned creating volumes become idle through reconcile.
		_, err = p.transition(ctx, v, store.VolumeCreating, func(n *store.Volume) { n.InstanceID = "" })
	default:
		return fmt.Errorf("give back volume %s: state %s", v.VolumeID, v.State)
	}
	if err != nil {
		return err
	}
	log.Info("volume given back to the pool", "volume", v.VolumeID, "seq", v.Seq, "from", v.State)
	return p.unbind(ctx, v.InstanceID, v.VolumeID)
}

// finishRelease takes a volume in state releasing (fenced by the caller)
// off its instance and either returns it to the idle pool with seq (policy
// recycle and the seq known) or deletes it. It is safe to repeat: reconcile
// calls it for releases whose handler died.
//
// With wait false (reconcile) it does not wait for a detach to finish: it
// returns errDetaching and the next run goes on.
func (p *Pool) finishRelease(ctx context.Context, v store.Volume, seq int64, known, wait bool, log *slog.Logger) error {
	log = log.With("volume", v.VolumeID)
	ev, found, err := p.detachAndWait(ctx, v.VolumeID, wait, log)
	if err != nil {
		return err
	}
	if !found {
		log.Info("released volume no longer exists; dropping its record")
		return p.dropRecord(ctx, v)
	}
	if p.cfg.ReleasePolicy == PolicyRecycle && known && ev.free() {
		if _, err := p.transition(ctx, v, store.VolumeIdle, func(n *store.Volume) {
			n.InstanceID, n.Device, n.LastError, n.Seq = "", "", "", max(seq, v.Seq)
		}); err != nil {
			return fmt.Errorf("recycle %s: %w", v.VolumeID, err)
		}
		log.Info("volume recycled into the idle pool", "seq", max(seq, v.Seq))
		return p.unbind(ctx, v.InstanceID, v.VolumeID)
	}
	reason := "release policy delete"
	if p.cfg.ReleasePolicy == PolicyRecycle {
		reason = "watermark unknown (the agent never reported)"
	}
	d, err := p.transition(ctx, v, store.VolumeDeleting, nil)
	if err != nil {
		return fmt.Errorf("mark %s deleting: %w", v.VolumeID, err)
	}
	if err := p.deleteVolume(ctx, d, log); err != nil {
		return err
	}
	log.Info("released volume deleted", "reason", reason)
	return p.unbind(ctx, v.InstanceID, v.VolumeID)
}

// errDetaching says a detach was started but has not finished yet.
var errDetaching = errors.New("detach in progress")

// detachAndWait detaches the volume from whatever it is attached to and
// waits until EC2 shows it free (forcing the detach after half of
// DetachWait). found is false when the volume does not exist. Without wait
// it returns errDetaching instead of waiting.
func (p *Pool) detachAndWait(ctx context.Context, id string, wait bool, log *slog.Logger) (ec2Volume, bool, error) {
	start := p.t.Now()
	forced := false
	for n := 0; ; n++ {
		ev, found, err := p.describeVolume(ctx, id)
		if err != nil || !found {
			return ev, found, err
		}
		if ev.going() {
			return ev, false, nil
		}
		if ev.Instance == "" {
			return ev, true, nil
		}
		waited := p.t.Now().Sub(start)
		if waited > p.t.DetachWait {
			return ev, true, fmt.Errorf("volume %s still attached to %s (%s) after %s", id, ev.Instance, ev.Attach, p.t.DetachWait)
		}
		force := !forced && waited > p.t.DetachWait/2
		if ev.attached() || force {
			if force {
				forced = true
				log.Warn("detach is slow; forcing it", "volume", id, "instance", ev.Instance)
			}
			if err := p.detach(ctx, id, ev.Instance, force); err != nil {
				return ev, true, err
			}
		}
		if !wait && n > 0 {
			return ev, true, fmt.Errorf("volume %s from %s: %w", id, ev.Instance, errDetaching)
		}
		if err := p.t.Sleep(ctx, p.t.Poll.Delay(n)); err != nil {
			return ev, true, err
		}
	}
}

// deleteVolume deletes a volume in state deleting from EC2 (waiting while
// it is still attached or creating) and then drops its record.
func (p *Pool) deleteVolume(ctx context.Context, v store.Volume, log *slog.Logger) error {
	start := p.t.Now()
	for n := 0; ; n++ {
		err := p.retry(ctx, func(ctx context.Context) error {
			_, err := p.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(v.VolumeID)})
			return err
		})
		if err == nil || awserr.IsNotFound(err) {
			break
		}
		if !awserr.IsIncorrectState(err) {
			return fmt.Errorf("delete volume %s: %w", v.VolumeID, err)
		}
		if p.t.Now().Sub(start) > p.t.DetachWait {
			return fmt.Errorf("delete volume %s: still %s after %s: %w", v.VolumeID, awserr.Code(err), p.t.DetachWait, err)
		}
		if ev, found, derr := p.describeVolume(ctx, v.VolumeID); derr == nil && found && ev.attached() {
			if derr := p.detach(ctx, v.VolumeID, ev.Instance, false); derr != nil {
				return derr
			}
		}
		if err := p.t.Sleep(ctx, p.t.Poll.Delay(n)); err != nil {
			return err
		}
	}
	err := p.retry(ctx, func(ctx context.Context) error {
		return p.store.DeleteVolume(ctx, p.cfg.Pool, v.VolumeID, v.Rev)
	})
	if errors.Is(err, store.ErrConflict) {
		return nil // someone else finished (or re-recorded) it
	}
	return err
}
