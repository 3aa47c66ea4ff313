package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
)

// Lifecycle is the Auto Scaling lifecycle-hook machinery moto lacks,
// served from the one model of it (internal/awsfake.AutoScaling): actions
// waiting on a hook (Pending:Wait, Terminating:Wait), their tokens,
// heartbeats and timeouts, CompleteLifecycleAction and
// RecordLifecycleActionHeartbeat over HTTP with AWS's checks and errors,
// and the events the model emits. moto keeps the groups, their hooks'
// definitions and the instances; group descriptions from moto show the
// model's wait states.
type Lifecycle struct {
	Model *awsfake.AutoScaling
	asg   *autoscaling.Client // moto, for the hooks' definitions
	log   *slog.Logger

	mu     sync.Mutex
	groups map[string]bool // groups the model knows
	warm   map[string]bool // groups with a warm pool in the model
}

// LifecycleAction is one instance waiting on one hook.
type LifecycleAction struct {
	Group, Hook, InstanceID, Token, Transition string
	Started                                    time.Time
	// Event is the lifecycle event the model emitted for it (EventBridge).
	Event events.Envelope

	model    *awsfake.AutoScaling
	watch    sync.Once
	finished sync.Once
	done     chan struct{}
}

// NewLifecycle registers the lifecycle API on the proxy.
func NewLifecycle(p *Proxy, asg *autoscaling.Client, log *slog.Logger) *Lifecycle {
	l := &Lifecycle{Model: awsfake.NewAutoScaling(awsfake.AutoScalingConfig{Region: Region, Account: Account}),
		asg: asg, log: log, groups: map[string]bool{}, warm: map[string]bool{}}
	for action, h := range l.Model.QueryHandlers() {
		p.HandleQuery("autoscaling", action, func(w http.ResponseWriter, r *http.Request, _ url.Values, body []byte) { h(w, r, body) })
	}
	p.HandleQuery("autoscaling", "DescribeAutoScalingGroups", l.overlay(p))
	p.HandleQuery("autoscaling", "DescribeAutoScalingInstances", l.overlay(p))
	return l
}

// model makes sure the model knows group with the hooks moto has for it
// (read once, on the group's first action).
func (l *Lifecycle) model(ctx context.Context, group string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups[group] {
		return nil
	}
	out, err := l.asg.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: &group})
	if err != nil {
		return fmt.Errorf("describe lifecycle hooks of %s: %w", group, err)
	}
	spec := awsfake.GroupSpec{Name: group}
	for _, h := range out.LifecycleHooks {
		hs := awsfake.HookSpec{Name: deref(h.LifecycleHookName), Transition: deref(h.LifecycleTransition), DefaultResult: deref(h.DefaultResult)}
		if h.HeartbeatTimeout != nil {
			hs.HeartbeatTimeout = time.Duration(*h.HeartbeatTimeout) * time.Second
		}
		spec.Hooks = append(spec.Hooks, hs)
	}
	l.Model.AddGroup(spec)
	l.groups[group] = true
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Start puts instanceID (in az) in the wait state of the group's hook for
// transition and returns the action (nil when the group has no such hook).
func (l *Lifecycle) Start(ctx context.Context, group, instanceID, az, transition string) (*LifecycleAction, error) {
	if err := l.model(ctx, group); err != nil {
		return nil, err
	}
	var raw json.RawMessage
	var err error
	if transition == events.TransitionLaunching {
		raw, err = l.Model.LaunchExisting(group, instanceID, az, "")
	} else {
		raw, err = l.Model.Terminate(group, instanceID, "")
	}
	return l.action(group, instanceID, transition, raw, err)
}

// StartIntoWarmPool launches instanceID (in az) into the group's warm pool
// (a pool state of Stopped): Warmed:Pending:Wait on the launch hook, event
// Destination WarmPool.
func (l *Lifecycle) StartIntoWarmPool(ctx context.Context, group, instanceID, az string) (*LifecycleAction, error) {
	if err := l.model(ctx, group); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if !l.warm[group] {
		if err := l.Model.PutWarmPool(group, awsfake.WarmPoolSpec{PoolState: asgtypes.WarmPoolStateStopped}); err != nil {
			l.mu.Unlock()
			return nil, err
		}
		l.warm[group] = true
	}
	l.mu.Unlock()
	raw, err := l.Model.AddToWarmPool(group, instanceID, az)
	return l.action(group, instanceID, events.TransitionLaunching, raw, err)
}

// StartFromWarmPool moves a warmed instance into the group: Pending:Wait on
// the launch hook, event Origin WarmPool.
func (l *Lifecycle) StartFromWarmPool(ctx context.Context, group, instanceID string) (*LifecycleAction, error) {
	if err := l.model(ctx, group); err != nil {
		return nil, err
	}
	raw, err := l.Model.LeaveWarmPool(group, instanceID)
	return l.action(group, instanceID, events.TransitionLaunching, raw, err)
}

// action wraps the action the model's event raw announces.
func (l *Lifecycle) action(group, instanceID, transition string, raw json.RawMessage, err error) (*LifecycleAction, error) {
	if err != nil || raw == nil {
		return nil, err
	}
	var env events.Envelope
	var d events.LifecycleAction
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("lifecycle event of %s: %w", instanceID, err)
	}
	if err := json.Unmarshal(env.Detail, &d); err != nil {
		return nil, fmt.Errorf("lifecycle event of %s: %w", instanceID, err)
	}
	view, _ := l.Model.Action(d.LifecycleActionToken)
	return &LifecycleAction{Group: group, Hook: d.LifecycleHookName, InstanceID: instanceID, Token: d.LifecycleActionToken,
		Transition: transition, Started: view.Started, Event: env, model: l.Model, done: make(chan struct{})}, nil
}

// view is the action as the model has it now (expiry applied).
func (a *LifecycleAction) view() awsfake.ActionView {
	v, _ := a.model.Action(a.Token)
	return v
}

// Done is closed when the action completes (a CompleteLifecycleAction call
// or the hook's timeout).
func (a *LifecycleAction) Done() <-chan struct{} {
	if a.view().Result != "" {
		a.finished.Do(func() { close(a.done) })
		return a.done
	}
	a.watch.Do(func() {
		go func() {
			for a.view().Result == "" {
				time.Sleep(50 * time.Millisecond)
			}
			a.finished.Do(func() { close(a.done) })
		}()
	})
	return a.done
}

// Result is CONTINUE or ABANDON once Done, and whether a timeout (the hook's
// default result) decided it rather than a CompleteLifecycleAction call.
func (a *LifecycleAction) Result() (result string, timedOut bool) {
	v := a.view()
	return v.Result, v.Expired
}

// Heartbeats counts RecordLifecycleActionHeartbeat calls.
func (a *LifecycleAction) Heartbeats() int { return a.view().Heartbeats }

// Wait blocks until the action completes or ctx ends.
func (a *LifecycleAction) Wait(ctx context.Context) (string, error) {
	select {
	case <-a.Done():
		r, _ := a.Result()
		return r, nil
	case <-ctx.Done():
		return "", fmt.Errorf("lifecycle action %s of %s on hook %s: %w", a.Token, a.InstanceID, a.Hook, ctx.Err())
	}
}

var instanceIDTag = regexp.MustCompile(`<InstanceId>(i-[0-9a-f]+)</InstanceId>`)

// overlay forwards a Describe call to moto and shows the instances waiting
// on a hook in the model's wait state (moto has every instance InService).
func (l *Lifecycle) overlay(p *Proxy) queryHandler {
	return func(w http.ResponseWriter, r *http.Request, _ url.Values, body []byte) {
		f, err := p.forward(r, body)
		if err != nil {
			awsfake.WriteQueryError(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
			return
		}
		if f.Status != http.StatusOK {
			f.write(w, f.Body)
			return
		}
		f.write(w, []byte(l.rewriteStates(string(f.Body))))
	}
}

// waitStates maps each instance waiting on an open action to its state.
func (l *Lifecycle) waitStates() map[string]asgtypes.LifecycleState {
	out := map[string]asgtypes.LifecycleState{}
	for _, a := range l.Model.Actions() {
		if a.Result != "" {
			continue
		}
		out[a.Instance] = asgtypes.LifecycleStatePendingWait
		if a.Transition == events.TransitionTerminating {
			out[a.Instance] = asgtypes.LifecycleStateTerminatingWait
		}
	}
	return out
}

func (l *Lifecycle) rewriteStates(doc string) string {
	waiting := l.waitStates()
	var b strings.Builder
	last := 0
	for _, m := range instanceIDTag.FindAllStringSubmatchIndex(doc, -1) {
		state, ok := waiting[doc[m[2]:m[3]]]
		if !ok {
			continue
		}
		start := strings.LastIndex(doc[:m[0]], "<member>")
		end := strings.Index(doc[m[1]:], "</member>")
		if start < last || end < 0 {
			continue
		}
		end += m[1]
		block := doc[start:end]
		block = strings.Replace(block, "<LifecycleState>InService</LifecycleState>", "<LifecycleState>"+string(state)+"</LifecycleState>", 1)
		b.WriteString(doc[last:start])
		b.WriteString(block)
		last = end
	}
	b.WriteString(doc[last:])
	return b.String()
}
