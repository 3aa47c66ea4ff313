package harness

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/volsd/volsd/internal/lambdaruntime"
)

// Lifecycle plays the Auto Scaling lifecycle-hook machinery moto lacks:
// actions waiting on a hook (Pending:Wait, Terminating:Wait), their tokens,
// heartbeats and timeouts, and the CompleteLifecycleAction /
// RecordLifecycleActionHeartbeat API with AWS's checks and errors.
type Lifecycle struct {
	asg *autoscaling.Client // moto, for the hooks' definitions
	log *slog.Logger

	mu      sync.Mutex
	actions map[string]*LifecycleAction // token → action (completed ones stay, for errors)
}

// LifecycleAction is one instance waiting on one hook.
type LifecycleAction struct {
	Group, Hook, InstanceID, Token, Transition string
	HeartbeatTimeout                           time.Duration
	DefaultResult                              string
	Started                                    time.Time

	mu          sync.Mutex
	deadline    time.Time
	global      time.Time
	timer       *time.Timer
	done        chan struct{}
	result      string
	by          string // "api" or "timeout"
	heartbeats  int
	completions int // CompleteLifecycleAction calls that found it active
}

// Done is closed when the action completes.
func (a *LifecycleAction) Done() <-chan struct{} { return a.done }

// Result is CONTINUE or ABANDON once Done, and whether a timeout (the hook's
// default result) decided it rather than a CompleteLifecycleAction call.
func (a *LifecycleAction) Result() (result string, timedOut bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.result, a.by == "timeout"
}

// Heartbeats counts RecordLifecycleActionHeartbeat calls.
func (a *LifecycleAction) Heartbeats() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.heartbeats
}

// Wait blocks until the action completes or ctx ends.
func (a *LifecycleAction) Wait(ctx context.Context) (string, error) {
	select {
	case <-a.done:
		r, _ := a.Result()
		return r, nil
	case <-ctx.Done():
		return "", fmt.Errorf("lifecycle action %s of %s on hook %s: %w", a.Token, a.InstanceID, a.Hook, ctx.Err())
	}
}

// NewLifecycle registers the lifecycle API on the proxy.
func NewLifecycle(p *Proxy, asg *autoscaling.Client, log *slog.Logger) *Lifecycle {
	l := &Lifecycle{asg: asg, log: log, actions: map[string]*LifecycleAction{}}
	p.HandleQuery("autoscaling", "CompleteLifecycleAction", l.complete)
	p.HandleQuery("autoscaling", "RecordLifecycleActionHeartbeat", l.heartbeat)
	p.HandleQuery("autoscaling", "DescribeAutoScalingGroups", l.overlay(p))
	p.HandleQuery("autoscaling", "DescribeAutoScalingInstances", l.overlay(p))
	return l
}

// Start puts instanceID in the wait state of the group's hook for
// transition and returns the action (nil when the group has no such hook).
func (l *Lifecycle) Start(ctx context.Context, group, instanceID, transition string) (*LifecycleAction, error) {
	out, err := l.asg.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: &group})
	if err != nil {
		return nil, fmt.Errorf("describe lifecycle hooks of %s: %w", group, err)
	}
	for _, h := range out.LifecycleHooks {
		if h.LifecycleTransition == nil || *h.LifecycleTransition != transition {
			continue
		}
		hb := 3600 * time.Second
		if h.HeartbeatTimeout != nil {
			hb = time.Duration(*h.HeartbeatTimeout) * time.Second
		}
		def := "ABANDON"
		if h.DefaultResult != nil {
			def = *h.DefaultResult
		}
		now := time.Now()
		a := &LifecycleAction{
			Group: group, Hook: *h.LifecycleHookName, InstanceID: instanceID, Token: lambdaruntime.NewRequestID(),
			Transition: transition, HeartbeatTimeout: hb, DefaultResult: def, Started: now,
			deadline: now.Add(hb), global: now.Add(min(100*hb, 48*time.Hour)), done: make(chan struct{}),
		}
		a.timer = time.AfterFunc(hb, func() { l.expire(a) })
		l.mu.Lock()
		l.actions[a.Token] = a
		l.mu.Unlock()
		return a, nil
	}
	return nil, nil
}

func (l *Lifecycle) expire(a *LifecycleAction) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.result != "" {
		return
	}
	if d := time.Until(a.deadline); d > 0 { // a heartbeat moved the deadline
		a.timer = time.AfterFunc(d, func() { l.expire(a) })
		return
	}
	a.result, a.by = a.DefaultResult, "timeout"
	close(a.done)
	l.log.Warn("lifecycle action timed out", "instance", a.InstanceID, "hook", a.Hook, "result", a.result)
}

// Active returns the instance's actions still waiting.
func (l *Lifecycle) Active(instanceID string) []*LifecycleAction {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*LifecycleAction
	for _, a := range l.actions {
		if a.InstanceID == instanceID && !a.completed() {
			out = append(out, a)
		}
	}
	return out
}

func (a *LifecycleAction) completed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.result != ""
}

// find returns the active action matching the request, or the AWS
// ValidationError message.
func (l *Lifecycle) find(form url.Values) (*LifecycleAction, string) {
	group := form.Get("AutoScalingGroupName")
	hook := form.Get("LifecycleHookName")
	inst := form.Get("InstanceId")
	token := form.Get("LifecycleActionToken")
	switch {
	case group == "":
		return nil, "1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null"
	case hook == "":
		return nil, "1 validation error detected: Value null at 'lifecycleHookName' failed to satisfy constraint: Member must not be null"
	case inst == "" && token == "":
		return nil, "Either an InstanceId or a LifecycleActionToken must be specified"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.actions {
		if a.Group != group || a.Hook != hook {
			continue
		}
		if a.completed() || time.Now().After(a.global) {
			continue
		}
		if token != "" && a.Token != token {
			continue
		}
		if inst != "" && a.InstanceID != inst {
			continue
		}
		return a, ""
	}
	if token != "" {
		return nil, "No active Lifecycle Action found with token " + token
	}
	return nil, "No active Lifecycle Action found with instance ID " + inst
}

func (l *Lifecycle) complete(w http.ResponseWriter, _ *http.Request, form url.Values, _ []byte) {
	result := form.Get("LifecycleActionResult")
	if result != "CONTINUE" && result != "ABANDON" {
		writeQueryError(w, http.StatusBadRequest, "ValidationError",
			fmt.Sprintf("Lifecycle action result %q is invalid; it must be CONTINUE or ABANDON", result))
		return
	}
	a, msg := l.find(form)
	if a == nil {
		writeQueryError(w, http.StatusBadRequest, "ValidationError", msg)
		return
	}
	a.mu.Lock()
	if a.result != "" { // lost a race with another completion
		a.mu.Unlock()
		writeQueryError(w, http.StatusBadRequest, "ValidationError", "No active Lifecycle Action found with instance ID "+a.InstanceID)
		return
	}
	a.result, a.by = result, "api"
	a.completions++
	a.timer.Stop()
	close(a.done)
	a.mu.Unlock()
	l.log.Info("lifecycle action completed", "instance", a.InstanceID, "hook", a.Hook, "result", result)
	writeQueryResult(w, "CompleteLifecycleAction", "")
}

func (l *Lifecycle) heartbeat(w http.ResponseWriter, _ *http.Request, form url.Values, _ []byte) {
	a, msg := l.find(form)
	if a == nil {
		writeQueryError(w, http.StatusBadRequest, "ValidationError", msg)
		return
	}
	a.mu.Lock()
	a.heartbeats++
	a.deadline = time.Now().Add(a.HeartbeatTimeout)
	if a.deadline.After(a.global) {
		a.deadline = a.global
	}
	a.mu.Unlock()
	writeQueryResult(w, "RecordLifecycleActionHeartbeat", "")
}

// writeQueryResult writes an awsquery success response for action with the
// given inner result XML.
func writeQueryResult(w http.ResponseWriter, action, inner string) {
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<%sResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><%sResult>%s</%sResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>`,
		action, action, inner, action, lambdaruntime.NewRequestID(), action)
}

var instanceIDTag = regexp.MustCompile(`<InstanceId>(i-[0-9a-f]+)</InstanceId>`)

// overlay forwards a Describe call to moto and shows the instances waiting
// on a hook in their wait state (moto has every instance InService).
func (l *Lifecycle) overlay(p *Proxy) queryHandler {
	return func(w http.ResponseWriter, r *http.Request, _ url.Values, body []byte) {
		f, err := p.forward(r, body)
		if err != nil {
			writeQueryError(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
			return
		}
		if f.Status != http.StatusOK {
			f.write(w, f.Body)
			return
		}
		f.write(w, []byte(l.rewriteStates(string(f.Body))))
	}
}

func (l *Lifecycle) rewriteStates(doc string) string {
	var b strings.Builder
	last := 0
	for _, m := range instanceIDTag.FindAllStringSubmatchIndex(doc, -1) {
		id := doc[m[2]:m[3]]
		state := ""
		for _, a := range l.Active(id) {
			if a.Transition == "autoscaling:EC2_INSTANCE_LAUNCHING" {
				state = "Pending:Wait"
			} else {
				state = "Terminating:Wait"
			}
		}
		if state == "" {
			continue
		}
		start := strings.LastIndex(doc[:m[0]], "<member>")
		end := strings.Index(doc[m[1]:], "</member>")
		if start < last || end < 0 {
			continue
		}
		end += m[1]
		block := doc[start:end]
		block = strings.Replace(block, "<LifecycleState>InService</LifecycleState>", "<LifecycleState>"+state+"</LifecycleState>", 1)
		b.WriteString(doc[last:start])
		b.WriteString(block)
		last = end
	}
	b.WriteString(doc[last:])
	return b.String()
}
