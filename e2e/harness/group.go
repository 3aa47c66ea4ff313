package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
)

// Group plays the scaling side of an Auto Scaling group that moto only
// stores: it launches instances balanced over the group's AZs (moto puts
// every instance in the first subnet), attaches them to the moto group,
// holds them in Pending:Wait while the launch hook's action is open, sends
// the lifecycle events (EventBridge → the lifecycle Lambda), and on scale-in
// picks instances by the default termination policy, holds them in
// Terminating:Wait and terminates them once the hook completes. ABANDON on
// launch terminates the instance and launches a replacement, as Auto
// Scaling does.
type Group struct {
	Name           string
	Pool           string
	Subnets        map[string]string // AZ → subnet ID
	LaunchTemplate string
	Region         string
	Account        string

	EC2       *ec2.Client         // moto
	ASG       *autoscaling.Client // moto
	Lifecycle *Lifecycle
	Log       *slog.Logger
	// Boot starts the simulated machine of a new instance.
	Boot func(ctx context.Context, id, az string) error
	// PowerOff stops the simulated machine and detaches its volumes (before
	// the instance is terminated in EC2).
	PowerOff func(ctx context.Context, id string) error
	// Stuck is closed once the instance's agent cannot come up without help
	// (why says with which error); nil = never.
	Stuck func(id string) (stuck <-chan struct{}, why func() error)
	// Deliver sends a lifecycle event to its EventBridge target.
	Deliver func(ctx context.Context, ev events.Envelope)
	// DuplicateEvents delivers every lifecycle event twice (EventBridge
	// delivers at least once).
	DuplicateEvents bool

	mu      sync.Mutex
	members map[string]*member
	history []Activity
}

type member struct {
	id, az   string
	launched time.Time
	state    string // Pending:Wait, InService, Terminating:Wait
	event    events.Envelope
}

// Activity is one scaling activity, for the narration.
type Activity struct {
	Time        time.Time
	InstanceID  string
	AZ          string
	Description string
}

// Launch is one instance being launched.
type Launch struct {
	InstanceID string
	AZ         string
	Action     *LifecycleAction // nil without a launch hook
	Event      events.Envelope
}

// History returns the scaling activities so far.
func (g *Group) History() []Activity {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Activity{}, g.history...)
}

func (g *Group) record(id, az, what string) {
	g.mu.Lock()
	g.history = append(g.history, Activity{Time: time.Now(), InstanceID: id, AZ: az, Description: what})
	g.mu.Unlock()
	g.Log.Info("scaling activity", "instance", id, "az", az, "activity", what)
}

// InService lists the in-service instance IDs, sorted.
func (g *Group) InService() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return inState(g.members, "InService")
}

// inState lists the IDs of members in state, sorted.
func inState(members map[string]*member, state string) []string {
	var ids []string
	for id, m := range members {
		if m.state == state {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Members maps each instance of the group to its AZ.
func (g *Group) Members() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]string{}
	for id, m := range g.members {
		out[id] = m.az
	}
	return out
}

func (g *Group) azCounts() map[string]int {
	counts := map[string]int{}
	for az := range g.Subnets {
		counts[az] = 0
	}
	for _, m := range g.members {
		if m.state != "Terminating:Wait" {
			counts[m.az]++
		}
	}
	return counts
}

// pickAZ returns the AZ with the fewest instances (balanced launches).
func (g *Group) pickAZ() string { return fewest(g.azCounts()) }

// fewest returns the AZ with the lowest count (the first by name on a tie).
func fewest(counts map[string]int) string {
	azs := slices.Sorted(maps.Keys(counts))
	best := azs[0]
	for _, az := range azs {
		if counts[az] < counts[best] {
			best = az
		}
	}
	return best
}

// ScaleOut launches n instances and returns them in Pending:Wait (their
// launch events sent). Wait for them with WaitInService.
func (g *Group) ScaleOut(ctx context.Context, n int) ([]*Launch, error) {
	var out []*Launch
	for i := 0; i < n; i++ {
		g.mu.Lock()
		if g.members == nil {
			g.members = map[string]*member{}
		}
		az := g.pickAZ()
		g.members["pending-"+fmt.Sprint(i)] = &member{az: az, state: "Pending"} // reserve the slot while launching
		g.mu.Unlock()
		l, err := g.launch(ctx, az)
		g.mu.Lock()
		delete(g.members, "pending-"+fmt.Sprint(i))
		g.mu.Unlock()
		if err != nil {
			return out, err
		}
		out = append(out, l)
	}
	return out, nil
}

// runInstance starts one instance of the launch template in az, tagged as
// the group tags its instances, and returns its ID.
func (g *Group) runInstance(ctx context.Context, az string) (string, error) {
	run, err := g.EC2.RunInstances(ctx, &ec2.RunInstancesInput{
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		LaunchTemplate: &ec2types.LaunchTemplateSpecification{LaunchTemplateName: &g.LaunchTemplate, Version: aws.String("$Latest")},
		SubnetId:       aws.String(g.Subnets[az]),
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{
				{Key: aws.String(events.TagPool), Value: &g.Pool},
				{Key: aws.String("Name"), Value: aws.String("volsd-" + g.Pool + "-web")},
			},
		}},
	})
	if err != nil {
		return "", fmt.Errorf("launch in %s: %w", az, err)
	}
	return aws.ToString(run.Instances[0].InstanceId), nil
}

func (g *Group) launch(ctx context.Context, az string) (*Launch, error) {
	id, err := g.runInstance(ctx, az)
	if err != nil {
		return nil, err
	}
	if _, err := g.ASG.AttachInstances(ctx, &autoscaling.AttachInstancesInput{AutoScalingGroupName: &g.Name, InstanceIds: []string{id}}); err != nil {
		return nil, fmt.Errorf("attach %s to group %s: %w", id, g.Name, err)
	}
	action, err := g.Lifecycle.Start(ctx, g.Name, id, az, events.TransitionLaunching)
	if err != nil {
		return nil, err
	}
	m := g.join(id, az, action)
	return g.boot(ctx, m, action, "Launching a new EC2 instance", g.Boot)
}

// join adds an instance to the group: in Pending:Wait while its launch
// action is open, else InService.
func (g *Group) join(id, az string, action *LifecycleAction) *member {
	m := &member{id: id, az: az, launched: time.Now(), state: "InService"}
	if action != nil {
		m.state = "Pending:Wait"
	}
	g.mu.Lock()
	if g.members == nil {
		g.members = map[string]*member{}
	}
	g.members[id] = m
	g.mu.Unlock()
	return m
}

// boot records the launch activity what, boots the instance's machine
// (with start) and sends its launch event when an action holds it.
func (g *Group) boot(ctx context.Context, m *member, action *LifecycleAction, what string, start func(ctx context.Context, id, az string) error) (*Launch, error) {
	g.record(m.id, m.az, what)
	if err := start(ctx, m.id, m.az); err != nil {
		return nil, fmt.Errorf("boot %s: %w", m.id, err)
	}
	l := &Launch{InstanceID: m.id, AZ: m.az, Action: action}
	if action != nil {
		l.Event = action.Event
		m.event = l.Event
		g.deliver(ctx, l.Event)
	}
	return l, nil
}

// enteredService sends the "EC2 Instance Launch Successful" event Auto
// Scaling sends once the instance is InService (the lifecycle Lambda then
// asks its agent for its status, so the instance shows ready with its
// seq).
func (g *Group) enteredService(ctx context.Context, id string) error {
	raw, err := g.Lifecycle.Model.LaunchSuccessful(g.Name, id)
	if err != nil {
		return err
	}
	var ev events.Envelope
	if err := json.Unmarshal(raw, &ev); err != nil {
		return err
	}
	g.deliver(ctx, ev)
	return nil
}

func (g *Group) deliver(ctx context.Context, ev events.Envelope) {
	g.Deliver(ctx, ev)
	if g.DuplicateEvents {
		g.Deliver(ctx, ev)
	}
}

// Redeliver sends a launch's lifecycle event again (EventBridge delivers at
// least once).
func (g *Group) Redeliver(ctx context.Context, l *Launch) { g.Deliver(ctx, l.Event) }

// LaunchResult is how a launch ended.
type LaunchResult struct {
	InstanceID string
	AZ         string
	Result     string // CONTINUE or ABANDON
	TimedOut   bool   // the hook's default result decided
	Took       time.Duration
}

// WaitInService waits until each launch's hook completes. CONTINUE puts the
// instance in service; ABANDON terminates it and launches a replacement,
// which is waited for too. It returns every outcome, in order.
func (g *Group) WaitInService(ctx context.Context, launches []*Launch) ([]LaunchResult, error) {
	var results []LaunchResult
	queue := append([]*Launch{}, launches...)
	for len(queue) > 0 {
		l := queue[0]
		queue = queue[1:]
		res, err := g.result(ctx, l)
		if err != nil {
			return results, err
		}
		results = append(results, res)
		if res.Result == "CONTINUE" {
			g.mu.Lock()
			if m := g.members[l.InstanceID]; m != nil {
				m.state = "InService"
			}
			g.mu.Unlock()
			g.record(l.InstanceID, l.AZ, "Instance entered service")
			if err := g.enteredService(ctx, l.InstanceID); err != nil {
				return results, fmt.Errorf("launch successful event of %s: %w", l.InstanceID, err)
			}
			continue
		}
		g.record(l.InstanceID, l.AZ, "Launch abandoned by the lifecycle hook; terminating and replacing")
		if err := g.terminate(ctx, l.InstanceID); err != nil {
			return results, err
		}
		repl, err := g.launch(ctx, g.pickAZ())
		if err != nil {
			return results, err
		}
		queue = append(queue, repl)
	}
	return results, nil
}

// result waits for a launch's action to complete (CONTINUE at once
// without one) and says how it ended.
func (g *Group) result(ctx context.Context, l *Launch) (LaunchResult, error) {
	res := LaunchResult{InstanceID: l.InstanceID, AZ: l.AZ, Result: "CONTINUE"}
	if l.Action == nil {
		return res, nil
	}
	r, err := g.waitAction(ctx, l)
	if err != nil {
		return res, err
	}
	_, res.TimedOut = l.Action.Result()
	res.Result, res.Took = r, time.Since(l.Action.Started)
	return res, nil
}

// waitAction waits for a launch's hook to complete, or fails as soon as
// the instance's agent is stuck, with the agent's error: the demo and the
// tests then say why at once instead of waiting out the hook's timeout.
func (g *Group) waitAction(ctx context.Context, l *Launch) (string, error) {
	if g.Stuck == nil {
		return l.Action.Wait(ctx)
	}
	stuck, why := g.Stuck(l.InstanceID)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stuck:
			cancel()
		case <-wctx.Done():
		}
	}()
	r, err := l.Action.Wait(wctx)
	if err != nil && ctx.Err() == nil {
		select {
		case <-stuck:
			return "", fmt.Errorf("launch of %s in %s cannot complete: %w", l.InstanceID, l.AZ, why())
		default:
		}
	}
	return r, err
}

// ScaleIn removes n instances: each is picked by the default termination
// policy (the AZ with the most instances, then the oldest instance), held in
// Terminating:Wait until the terminate hook completes (or times out), then
// terminated. It returns the terminated IDs.
func (g *Group) ScaleIn(ctx context.Context, n int) ([]string, error) {
	rs, err := g.ScaleInResults(ctx, n)
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.InstanceID
	}
	return ids, err
}

// TerminateResult is how one scale-in termination went.
type TerminateResult struct {
	InstanceID string
	AZ         string
	Result     string // the terminate hook's result
	TimedOut   bool   // the hook's default result decided (nobody completed it)
	Took       time.Duration
}

// ScaleInResults is ScaleIn with each termination's hook outcome.
func (g *Group) ScaleInResults(ctx context.Context, n int) ([]TerminateResult, error) {
	type pick struct {
		id, az string
		action *LifecycleAction
	}
	var picks []pick
	for i := 0; i < n; i++ {
		g.mu.Lock()
		counts := g.azCounts()
		var victim *member
		for _, m := range g.members {
			if m.state != "InService" {
				continue
			}
			if victim == nil || counts[m.az] > counts[victim.az] ||
				(counts[m.az] == counts[victim.az] && (m.launched.Before(victim.launched) ||
					(m.launched.Equal(victim.launched) && m.id < victim.id))) {
				victim = m
			}
		}
		if victim == nil {
			g.mu.Unlock()
			return nil, fmt.Errorf("scale in: no instance in service to remove")
		}
		victim.state = "Terminating:Wait"
		g.mu.Unlock()
		action, err := g.Lifecycle.Start(ctx, g.Name, victim.id, victim.az, events.TransitionTerminating)
		if err != nil {
			return nil, err
		}
		g.record(victim.id, victim.az, "Terminating EC2 instance (scale in)")
		if action != nil {
			g.deliver(ctx, action.Event)
		}
		picks = append(picks, pick{victim.id, victim.az, action})
	}
	var out []TerminateResult
	for _, p := range picks {
		r := TerminateResult{InstanceID: p.id, AZ: p.az, Result: "CONTINUE"}
		if p.action != nil {
			res, err := p.action.Wait(ctx)
			if err != nil {
				return out, err
			}
			_, r.TimedOut = p.action.Result()
			r.Result, r.Took = res, time.Since(p.action.Started)
		}
		if err := g.terminate(ctx, p.id); err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// terminate powers the instance off, terminates it in EC2 and removes it
// from the group (desired capacity decremented).
func (g *Group) terminate(ctx context.Context, id string) error {
	if err := g.PowerOff(ctx, id); err != nil {
		return fmt.Errorf("power off %s: %w", id, err)
	}
	_, err := g.ASG.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: &id, ShouldDecrementDesiredCapacity: aws.Bool(true),
	})
	if err != nil {
		return fmt.Errorf("terminate %s: %w", id, err)
	}
	g.mu.Lock()
	az := ""
	if m := g.members[id]; m != nil {
		az = m.az
	}
	delete(g.members, id)
	g.mu.Unlock()
	g.record(id, az, "Instance terminated")
	return nil
}
