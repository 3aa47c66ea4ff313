package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/ssmcmd"
	"github.com/volsd/volsd/internal/store"
)

// Terminate handles a terminate lifecycle action: it marks the instance
// terminating, asks its agent to release the volume (best effort, bounded),
// detaches the volume, recycles or deletes it per the release policy, and
// completes the action CONTINUE. An instance going back into the warm pool
// keeps its volume.
func (p *Pool) Terminate(ctx context.Context, a events.LifecycleAction) error {
	id := a.EC2InstanceID
	log := p.log.With("instance", id, "transition", "terminate")
	if a.Destination == events.LocationWarmPool {
		log.Info("instance returns to the warm pool; it keeps its volume")
		if err := p.markWarmed(ctx, id, true); err != nil {
			return err
		}
		return p.complete(ctx, a, "CONTINUE", log)
	}
	inst, err := p.markTerminating(ctx, id)
	if err != nil {
		return err
	}
	if err := p.releaseHeld(ctx, id, &inst, true, log); err != nil {
		return err
	}
	if err := p.markGone(ctx, id); err != nil {
		return err
	}
	return p.complete(ctx, a, "CONTINUE", log)
}

// markTerminating records that the instance is terminating (creating its
// record if needed) and returns the record as written. A launch that claims
// after this sees it and gives its claim back.
func (p *Pool) markTerminating(ctx context.Context, id string) (store.Instance, error) {
	for range 10 {
		inst, err := p.getInstance(ctx, id)
		if err != nil {
			return store.Instance{}, err
		}
		var got store.Instance
		switch {
		case inst == nil:
			err = p.retry(ctx, func(ctx context.Context) error {
				var err error
				got, err = p.store.PutInstance(ctx, store.Instance{Pool: p.cfg.Pool, InstanceID: id, State: store.InstanceTerminating})
				return err
			})
		case inst.State == store.InstanceTerminating || inst.State == store.InstanceGone:
			return *inst, nil
		default:
			next := *inst
			next.State = store.InstanceTerminating
			err = p.retry(ctx, func(ctx context.Context) error {
				var err error
				got, err = p.store.UpdateInstance(ctx, next)
				return err
			})
		}
		if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrConflict) {
			continue
		}
		return got, err
	}
	return store.Instance{}, fmt.Errorf("mark %s terminating: its record kept changing", id)
}

// markWarmed records that an instance goes into the warm pool (warmed:
// stopped there, not to be waited for by pushes) or comes out of it
// (launching again). Instances in other states (terminating, gone, none
// recorded) are left alone; repeating it changes nothing.
func (p *Pool) markWarmed(ctx context.Context, id string, warmed bool) error {
	from, to := []store.InstanceState{store.InstanceLaunching, store.InstanceReady}, store.InstanceWarmed
	if !warmed {
		from, to = []store.InstanceState{store.InstanceWarmed}, store.InstanceLaunching
	}
	for range 10 {
		inst, err := p.getInstance(ctx, id)
		if err != nil || inst == nil || !slices.Contains(from, inst.State) {
			return err
		}
		next := *inst
		next.State = to
		err = p.retry(ctx, func(ctx context.Context) error {
			_, err := p.store.UpdateInstance(ctx, next)
			return err
		})
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err == nil {
			p.log.Info("instance record", "instance", id, "from", inst.State, "to", to)
		}
		return err
	}
	return fmt.Errorf("mark %s %s: its record kept changing", id, to)
}

// markGone records that the instance is gone.
func (p *Pool) markGone(ctx context.Context, id string) error {
	for range 10 {
		inst, err := p.getInstance(ctx, id)
		if err != nil || inst == nil || inst.State == store.InstanceGone {
			return err
		}
		next := *inst
		next.State = store.InstanceGone
		err = p.retry(ctx, func(ctx context.Context) error {
			_, err := p.store.UpdateInstance(ctx, next)
			return err
		})
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("mark %s gone: its record kept changing", id)
}

// releaseHeld releases the volume an instance holds: one that was never
// attached goes straight back to the pool; one that may have been attached
// is fenced (releasing), optionally released by the agent, detached, and
// recycled or deleted. inst is the instance record if the caller has it.
func (p *Pool) releaseHeld(ctx context.Context, id string, inst *store.Instance, ask bool, log *slog.Logger) error {
	for range 8 {
		if inst == nil {
			var err error
			if inst, err = p.getInstance(ctx, id); err != nil || inst == nil {
				return err
			}
		}
		if inst.VolumeID == "" {
			return nil
		}
		var v store.Volume
		err := p.retry(ctx, func(ctx context.Context) error {
			var err error
			v, err = p.store.GetVolume(ctx, p.cfg.Pool, inst.VolumeID)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			return p.unbind(ctx, id, inst.VolumeID)
		}
		if err != nil {
			return err
		}
		if v.InstanceID != id || !v.State.Held() && v.State != store.VolumeReleasing {
			return p.unbind(ctx, id, v.VolumeID) // a stale binding
		}
		switch v.State {
		case store.VolumeClaimed, store.VolumeCreating:
			err = p.giveBack(ctx, v, log)
		default:
			var f store.Volume
			f, err = p.transition(ctx, v, store.VolumeReleasing, nil)
			if err != nil {
				break
			}
			seq, known := knownSeq(inst, v)
			if ask {
				if rep, ok := p.askRelease(ctx, id, v.VolumeID, log); ok {
					seq, known = max(seq, rep.Seq), true
				}
			}
			err = p.finishRelease(ctx, f, seq, known, true, log)
		}
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		inst = nil // someone else moved it: re-read and decide again
	}
	return fmt.Errorf("release the volume of %s: its records kept changing", id)
}

// askRelease sends volsd-Release to the instance and waits (at most
// ReleaseCommand) for the agent's report. It never fails the terminate:
// problems are logged and ok is false.
func (p *Pool) askRelease(ctx context.Context, id, volumeID string, log *slog.Logger) (rep events.AgentReport, ok bool) {
	if p.ssm == nil || p.cfg.DocRelease == "" {
		return rep, false
	}
	ctx, cancel := context.WithTimeout(ctx, p.t.ReleaseCommand)
	defer cancel()
	out, err := p.ssm.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName:   aws.String(p.cfg.DocRelease),
		InstanceIds:    []string{id},
		TimeoutSeconds: aws.Int32(30),
		Comment:        aws.String("volsd: release the pool volume before terminate"),
	})
	if err != nil {
		log.Warn("could not ask the agent to release; detaching anyway", "error", err)
		return rep, false
	}
	cmd := aws.ToString(out.Command.CommandId)
	w := ssmcmd.Waiter{SSM: p.ssm, WaitFirst: true, Sleep: p.t.Sleep, Delay: func(n int) time.Duration { return p.t.Poll.Delay(n) / 2 }}
	inv, err := w.Wait(ctx, cmd, id)
	var nf *ssmcmd.NotFinalError
	switch {
	case errors.As(err, &nf):
		log.Warn("agent did not release in time; detaching anyway", "command", cmd, "bound", p.t.ReleaseCommand.String())
		return rep, false
	case err != nil:
		log.Warn("could not read the release command; detaching anyway", "command", cmd, "error", err)
		return rep, false
	}
	switch inv.Status {
	case ssmtypes.CommandInvocationStatusSuccess:
		r, perr := events.ParseAgentReport(aws.ToString(inv.StandardOutputContent))
		if perr != nil || r.Volume != volumeID || r.Error != "" {
			log.Warn("agent released without a usable report", "command", cmd, "error", perr, "reportVolume", r.Volume)
			return rep, false
		}
		log.Info("agent released the volume", "command", cmd, "volume", volumeID, "seq", r.Seq)
		return r, true
	default:
		log.Warn("agent release failed; detaching anyway", "command", cmd, "status", inv.Status,
			"detail", aws.ToString(inv.StatusDetails), "stderr", aws.ToString(inv.StandardErrorContent))
		return rep, false
	}
}
