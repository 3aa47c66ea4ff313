package pool

import (
	"context"
	"encoding/json"

	"github.com/volsd/volsd/events"
)

// maxLoggedEvent bounds how much of a rejected event goes into the log.
const maxLoggedEvent = 4096

// HandleLifecycle is the lifecycle Lambda's handler. raw is the EventBridge
// event. TEST_NOTIFICATION, other groups' events, other hooks' actions (only
// volsd-launch and volsd-terminate are volsd's) and other detail types are
// ignored with a log line; a malformed event is logged whole (up to 4 KiB)
// with the reason and dropped, since no retry can mend it. An error is
// returned only when a retry can help; the invocation is then retried
// (Lambda and EventBridge retries), and the handler resumes from the table.
func (p *Pool) HandleLifecycle(ctx context.Context, raw json.RawMessage) error {
	ctx, cancel := p.withMargin(ctx)
	defer cancel()
	if events.IsTestNotification(raw) {
		p.log.Info("ignoring autoscaling:TEST_NOTIFICATION")
		return nil
	}
	var env events.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		p.log.Error("malformed event dropped: not an EventBridge event", "error", err, "event", clip(raw))
		return nil
	}
	if env.DetailType == events.DetailTypeLaunchSuccessful {
		return p.handleLaunchSuccessful(ctx, raw, env)
	}
	if env.DetailType != events.DetailTypeLaunch && env.DetailType != events.DetailTypeTerminate {
		p.log.Info("ignoring event", "detailType", env.DetailType, "source", env.Source, "id", env.ID)
		return nil
	}
	var a events.LifecycleAction
	if _, err := events.DecodeDetail(raw, env.DetailType, &a); err != nil {
		p.log.Error("malformed lifecycle event dropped", "error", err, "event", clip(raw))
		return nil
	}
	if a.AutoScalingGroupName != p.cfg.Group {
		p.log.Info("ignoring lifecycle event of another group", "group", a.AutoScalingGroupName, "want", p.cfg.Group, "id", env.ID)
		return nil
	}
	if err := a.Validate(); err != nil {
		p.log.Error("malformed lifecycle event dropped", "error", err, "event", clip(raw))
		return nil
	}
	want := events.TransitionLaunching
	if env.DetailType == events.DetailTypeTerminate {
		want = events.TransitionTerminating
	}
	if a.LifecycleTransition != want {
		p.log.Error("malformed lifecycle event dropped: transition does not match detail-type",
			"detailType", env.DetailType, "transition", a.LifecycleTransition, "event", clip(raw))
		return nil
	}
	if hook := events.HookFor(want); a.LifecycleHookName != hook {
		// Another hook on the same group (a log drainer, a termination
		// handler): its owner completes it; volsd must not touch the
		// instance's volume for it.
		p.log.Info("ignoring lifecycle action of another hook", "hook", a.LifecycleHookName, "want", hook,
			"instance", a.EC2InstanceID, "transition", a.LifecycleTransition, "id", env.ID)
		return nil
	}
	var err error
	if want == events.TransitionLaunching {
		err = p.Launch(ctx, a)
	} else {
		err = p.Terminate(ctx, a)
	}
	if err != nil {
		p.log.Error("lifecycle action not finished; the invocation will be retried", "instance", a.EC2InstanceID,
			"transition", a.LifecycleTransition, "error", err)
	}
	return err
}

// handleLaunchSuccessful asks the agent of an instance of the group that
// entered service for its status (AskStatus).
func (p *Pool) handleLaunchSuccessful(ctx context.Context, raw json.RawMessage, env events.Envelope) error {
	var r events.LaunchResult
	if _, err := events.DecodeDetail(raw, env.DetailType, &r); err != nil {
		p.log.Error("malformed launch event dropped", "error", err, "event", clip(raw))
		return nil
	}
	if r.AutoScalingGroupName != p.cfg.Group {
		p.log.Info("ignoring launch event of another group", "group", r.AutoScalingGroupName, "want", p.cfg.Group, "id", env.ID)
		return nil
	}
	if err := r.Validate(); err != nil {
		p.log.Error("malformed launch event dropped", "error", err, "event", clip(raw))
		return nil
	}
	err := p.AskStatus(ctx, r)
	if err != nil {
		p.log.Error("status not asked; the invocation will be retried", "instance", r.EC2InstanceID, "error", err)
	}
	return err
}

// HandleReconcile is the reconcile Lambda's handler (any event, usually
// the schedule's). It returns an error only when the pool's state could not
// be read at all.
func (p *Pool) HandleReconcile(ctx context.Context, raw json.RawMessage) error {
	var env events.Envelope
	if json.Unmarshal(raw, &env) == nil && env.ID != "" {
		p.log.Debug("reconcile triggered", "detailType", env.DetailType, "id", env.ID)
	}
	_, err := p.Reconcile(ctx)
	if err != nil {
		p.log.Error("reconcile failed", "error", err)
	}
	return err
}

func clip(raw []byte) string {
	if len(raw) > maxLoggedEvent {
		return string(raw[:maxLoggedEvent]) + "…"
	}
	return string(raw)
}
