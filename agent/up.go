package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/volsd/volsd/internal/awserr"
)

// Up is the boot command (docs/design.md §3 "Agent start"): find the pool
// volume attached to this instance, wait for its device, format it only
// when blank, mount it, grow it when the volume is larger, catch up with
// the journal while heartbeating the launch hook, then complete the hook
// CONTINUE. Every step is idempotent; systemd runs it again on failure.
func (a *Agent) Up(ctx context.Context, r *Report) error {
	r.Command = "up"
	r.Mount = a.cfg.MountPath
	if a.cfg.ASG == "" {
		return badInput("config: asg (VOLSD_ASG) is required for up (the lifecycle hook's group)")
	}
	if err := a.checkPrograms(); err != nil {
		return err
	}
	steps := newBootSteps()
	defer func() { a.log.Info("up steps", steps.attrs()...) }()
	doc, err := a.imds.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		return retryable("instance identity from IMDS: %v", err)
	}
	r.Instance = doc.InstanceID
	steps.done("imds")
	a.log.Info("instance", "instance", doc.InstanceID, "az", doc.AvailabilityZone, "region", doc.Region)

	vol, dev, calls, err := a.waitVolume(ctx, doc.InstanceID)
	steps.describeVolumes = calls
	if err != nil {
		return err
	}
	r.Volume, r.Device = vol, dev
	steps.done("device")
	a.log.Info("device", "volume", vol, "device", dev, "describeVolumesCalls", calls)

	lock, err := a.lockApply(ctx, 0)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := os.Remove(filepath.Join(a.cfg.RunDir, releasedFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return retryable("remove release marker: %v", err)
	}
	if err := a.prepareFilesystem(ctx, dev); err != nil {
		return err
	}
	if err := a.writeVolumeInfo(volumeInfo{Instance: doc.InstanceID, Volume: vol, Device: dev, Mount: a.cfg.MountPath}); err != nil {
		return retryable("write %s: %v", volumeFile, err)
	}
	steps.done("mount")

	hb := a.heartbeat(ctx, doc.InstanceID)
	err = a.applyUntilRepaired(ctx, lock, r, hb.beat)
	hb.stop()
	if err != nil {
		return err
	}
	steps.done("catchUp")
	err = a.completeLaunch(ctx, doc.InstanceID)
	steps.done("hook")
	return err
}

// bootSteps times the steps of up (docs/agent.md "Boot"), logged as one
// line: imds, device (the wait for the volume and its device), mount
// (lock, probe, format, mount, grow, watermark), catchUp (journal read
// and entries applied), hook (CompleteLifecycleAction), in seconds.
type bootSteps struct {
	start, last     time.Time
	names           []string
	took            []time.Duration
	describeVolumes int
}

func newBootSteps() *bootSteps { now := time.Now(); return &bootSteps{start: now, last: now} }

func (b *bootSteps) done(name string) {
	now := time.Now()
	b.names, b.took = append(b.names, name), append(b.took, now.Sub(b.last))
	b.last = now
}

func (b *bootSteps) attrs() []any {
	out := make([]any, 0, 2*len(b.names)+4)
	for i, n := range b.names {
		out = append(out, n, b.took[i].Seconds())
	}
	return append(out, "total", time.Since(b.start).Seconds(), "describeVolumesCalls", b.describeVolumes)
}

// prepareFilesystem formats a blank device, mounts it, grows it and makes
// sure .volsd/ and the watermark exist. A device with any other signature
// than the configured filesystem is refused, never formatted.
func (a *Agent) prepareFilesystem(ctx context.Context, dev string) error {
	fsType, blank, err := probeFS(ctx, dev)
	if err != nil {
		return err
	}
	switch {
	case blank:
		a.log.Info("blank device; formatting", "device", dev, "fsType", a.cfg.FSType)
		if err := mkfs(ctx, a.cfg.FSType, dev); err != nil {
			return err
		}
	case fsType != a.cfg.FSType:
		return badInput("device %s holds %s, not %s; refusing to format or mount it", dev, fsType, a.cfg.FSType)
	}
	if err := a.mountDevice(ctx, dev); err != nil {
		return err
	}
	if err := a.growIfNeeded(ctx, dev); err != nil {
		// The content is usable at the old size; the next up tries again.
		a.log.Warn("could not grow the filesystem; going on at its current size", "device", dev, "err", err)
	}
	if err := os.MkdirAll(a.stateDir(), 0o700); err != nil {
		return retryable("create %s: %v", a.stateDir(), err)
	}
	if _, ok, err := a.readState(); err != nil {
		return err
	} else if !ok {
		a.log.Info("no watermark; the volume starts at seq 0", "state", a.statePath())
		if err := a.writeState(0); err != nil {
			return err
		}
	}
	return nil
}

// heartbeater records lifecycle action heartbeats while up catches up.
type heartbeater struct {
	mu   sync.Mutex
	next time.Time
	beat func()
	stop func()
}

// heartbeat returns a heartbeater whose beat() sends at most one
// RecordLifecycleActionHeartbeat per heartbeatEvery (and a ticker sends
// them while one long entry runs). A gone action stops the heartbeats.
func (a *Agent) heartbeat(ctx context.Context, instance string) *heartbeater {
	// The first heartbeat is due heartbeatEvery after the start: the
	// hook's timeout is far longer, and a call on the first entry would
	// sit on the boot's critical path.
	h := &heartbeater{next: time.Now().Add(a.heartbeatEvery)}
	ctx, cancel := context.WithCancel(ctx)
	gone := false
	send := func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if gone || time.Now().Before(h.next) {
			return
		}
		h.next = time.Now().Add(a.heartbeatEvery)
		_, err := a.asg.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
			AutoScalingGroupName: aws.String(a.cfg.ASG), LifecycleHookName: aws.String(a.cfg.LifecycleHook), InstanceId: aws.String(instance),
		})
		switch {
		case err == nil:
			a.log.Info("lifecycle heartbeat", "instance", instance, "hook", a.cfg.LifecycleHook)
		case awserr.IsLifecycleActionGone(err):
			gone = true
			a.log.Info("no lifecycle action to heartbeat (completed, expired, or a warm start)", "instance", instance, "msg", awserr.Message(err))
		case ctx.Err() == nil:
			a.log.Warn("lifecycle heartbeat failed", "instance", instance, "err", err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(a.heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				send()
			}
		}
	}()
	h.beat = send
	h.stop = func() { cancel(); <-done }
	return h
}

// completeLaunch completes the launch hook CONTINUE by instance ID. An
// action that is gone (completed before, timed out, or none for a warm
// start) is fine: the content is in place either way.
func (a *Agent) completeLaunch(ctx context.Context, instance string) error {
	err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		_, err := a.asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
			AutoScalingGroupName:  aws.String(a.cfg.ASG),
			LifecycleHookName:     aws.String(a.cfg.LifecycleHook),
			InstanceId:            aws.String(instance),
			LifecycleActionResult: aws.String("CONTINUE"),
		})
		return err
	})
	switch {
	case err == nil:
		a.log.Info("lifecycle action completed CONTINUE", "instance", instance, "group", a.cfg.ASG, "hook", a.cfg.LifecycleHook)
		return nil
	case awserr.IsLifecycleActionGone(err):
		a.log.Warn("lifecycle action already completed or expired; nothing to complete", "instance", instance, "group", a.cfg.ASG, "hook", a.cfg.LifecycleHook, "msg", awserr.Message(err))
		return nil
	}
	return awsFailure(err, "complete lifecycle action of %s (group %s, hook %s)", instance, a.cfg.ASG, a.cfg.LifecycleHook)
}
