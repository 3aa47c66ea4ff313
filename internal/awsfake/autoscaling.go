package awsfake

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/events"
)

// AutoScalingConfig sets the fake's region, account and clock.
type AutoScalingConfig struct {
	Region  string // default us-east-1
	Account string // default 123456789012
	// Now is the clock (default time.Now).
	Now func() time.Time
	// EC2, when set, is where the group's instances live: Launch creates
	// them there and a finished terminate (or an abandoned launch)
	// terminates them there.
	EC2 *EC2
}

// AutoScaling is an in-memory Auto Scaling service: groups with lifecycle
// hooks, the lifecycle actions of launching and terminating instances (with
// tokens, heartbeats and expiry), and the EventBridge events they emit. It
// is safe for concurrent use.
type AutoScaling struct {
	cfg AutoScalingConfig

	mu      sync.Mutex
	groups  map[string]*fakeGroup
	actions map[string]*fakeAction // by token
	calls   map[string]int
	before  func(op string) error
	after   func(op string) error
	queued  map[string][]error
	seq     int
}

// GroupSpec describes a group to add with AddGroup.
type GroupSpec struct {
	Name                      string
	AZs                       []string
	MinSize, MaxSize, Desired int32
	Hooks                     []HookSpec
	// Tags are put on the group and propagated to instances it launches.
	Tags map[string]string
}

// HookSpec is one lifecycle hook.
type HookSpec struct {
	Name             string
	Transition       string        // events.TransitionLaunching or TransitionTerminating
	HeartbeatTimeout time.Duration // default 1h, as AWS
	DefaultResult    string        // CONTINUE or ABANDON; default ABANDON, as AWS
}

type fakeGroup struct {
	spec      GroupSpec
	created   time.Time
	instances map[string]*groupInstance
	// warm is the group's warm pool (nil: none); warmed its instances.
	warm   *WarmPoolSpec
	warmed map[string]*groupInstance
}

// WarmPoolSpec is a group's warm pool, as PutWarmPool sets it.
type WarmPoolSpec struct {
	// PoolState is where warmed instances wait: Stopped (default, as
	// AWS), Running or Hibernated.
	PoolState types.WarmPoolState
	MinSize   int32
}

// warmedState is the lifecycle state an instance waits in once warmed.
func (w *WarmPoolSpec) warmedState() types.LifecycleState {
	switch w.PoolState {
	case types.WarmPoolStateRunning:
		return types.LifecycleStateWarmedRunning
	case types.WarmPoolStateHibernated:
		return types.LifecycleStateWarmedHibernated
	}
	return types.LifecycleStateWarmedStopped
}

type groupInstance struct {
	id, az string
	state  types.LifecycleState
}

// ActionView is one lifecycle action as the fake sees it.
type ActionView struct {
	Token, Group, Hook, Instance, Transition string
	Origin, Destination                      string
	// Result is CONTINUE or ABANDON once decided: by a caller (Completed) or
	// by expiry (Expired, with the hook's default result).
	Result     string
	Completed  bool
	Expired    bool
	Heartbeats int
	Started    time.Time
	Deadline   time.Time
}

type fakeAction struct {
	ActionView
	timeout time.Duration
	limit   time.Time // global timeout: 100 heartbeat timeouts or 48 h
	def     string
}

// NewAutoScaling returns an empty fake Auto Scaling service.
func NewAutoScaling(cfg AutoScalingConfig) *AutoScaling {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Account == "" {
		cfg.Account = "123456789012"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &AutoScaling{cfg: cfg, groups: map[string]*fakeGroup{}, actions: map[string]*fakeAction{},
		calls: map[string]int{}, queued: map[string][]error{}}
}

// ASGError returns an Auto Scaling client error.
func ASGError(code, format string, args ...any) error {
	return &smithy.GenericAPIError{Code: code, Message: fmt.Sprintf(format, args...), Fault: smithy.FaultClient}
}

// ASGThrottle is Auto Scaling's throttling error.
func ASGThrottle() error {
	return &smithy.GenericAPIError{Code: "Throttling", Message: "Rate exceeded", Fault: smithy.FaultClient}
}

// ASGServerError is an Auto Scaling 5xx.
func ASGServerError() error {
	return &smithy.GenericAPIError{Code: "InternalFailure", Message: "An internal error occurred.", Fault: smithy.FaultServer}
}

// SetFaults installs fault injectors, as EC2.SetFaults.
func (a *AutoScaling) SetFaults(before, after func(op string) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.before, a.after = before, after
}

// FailNext makes the next call of op fail with err before it takes effect.
func (a *AutoScaling) FailNext(op string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queued[op] = append(a.queued[op], err)
}

// Calls returns how many times op was called.
func (a *AutoScaling) Calls(op string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[op]
}

// start opens an API call: it fails with ctx's error when ctx has ended,
// else takes a.mu and begins op. On success a.mu is held (the caller
// unlocks it); on error it is not.
func (a *AutoScaling) start(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	if err := a.begin(op); err != nil {
		a.mu.Unlock()
		return err
	}
	return nil
}

func (a *AutoScaling) begin(op string) error {
	a.calls[op]++
	a.advance()
	if q := a.queued[op]; len(q) > 0 {
		a.queued[op] = q[1:]
		return q[0]
	}
	if a.before != nil {
		return a.before(op)
	}
	return nil
}

func (a *AutoScaling) end(op string) error {
	if a.after != nil {
		return a.after(op)
	}
	return nil
}

func (a *AutoScaling) now() time.Time { return a.cfg.Now().UTC() }

// AddGroup adds (or replaces) a group.
func (a *AutoScaling) AddGroup(spec GroupSpec) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range spec.Hooks {
		if spec.Hooks[i].HeartbeatTimeout == 0 {
			spec.Hooks[i].HeartbeatTimeout = time.Hour
		}
		if spec.Hooks[i].DefaultResult == "" {
			spec.Hooks[i].DefaultResult = "ABANDON"
		}
	}
	a.groups[spec.Name] = &fakeGroup{spec: spec, created: a.now(), instances: map[string]*groupInstance{}, warmed: map[string]*groupInstance{}}
}

// PutWarmPool adds (or changes) a group's warm pool, as PutWarmPool does.
func (a *AutoScaling) PutWarmPool(group string, spec WarmPoolSpec) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.groups[group]
	if g == nil {
		return ASGError("ValidationError", "AutoScalingGroup name not found - %s", group)
	}
	switch spec.PoolState {
	case "":
		spec.PoolState = types.WarmPoolStateStopped
	case types.WarmPoolStateStopped, types.WarmPoolStateRunning, types.WarmPoolStateHibernated:
	default:
		return ASGError("ValidationError", "1 validation error detected: Value '%s' at 'poolState' failed to satisfy constraint: Member must satisfy enum value set: [Running, Stopped, Hibernated]", spec.PoolState)
	}
	g.warm = &spec
	return nil
}

// LaunchIntoWarmPool starts a new instance of group in az (in the linked
// EC2) into the group's warm pool and returns its ID and the launch
// lifecycle event (Origin EC2, Destination WarmPool; nil without a launch
// hook: the instance is warmed at once).
func (a *AutoScaling) LaunchIntoWarmPool(group, az string) (string, json.RawMessage, error) {
	id, az, err := a.runInstance("LaunchIntoWarmPool", group, az, func(g *fakeGroup) int { return len(g.warmed) })
	if err != nil {
		return "", nil, err
	}
	ev, err := a.AddToWarmPool(group, id, az)
	return id, ev, err
}

// runInstance creates an instance of group in the linked EC2, in az (""
// = the next of the group's AZs after count of its instances), tagged as
// Auto Scaling tags its instances; it returns its ID and AZ.
func (a *AutoScaling) runInstance(op, group, az string, count func(*fakeGroup) int) (string, string, error) {
	if a.cfg.EC2 == nil {
		return "", "", fmt.Errorf("awsfake: %s needs AutoScalingConfig.EC2", op)
	}
	a.mu.Lock()
	g := a.groups[group]
	if g == nil {
		a.mu.Unlock()
		return "", "", fmt.Errorf("awsfake: no group %q", group)
	}
	if az == "" {
		az = g.spec.AZs[count(g)%len(g.spec.AZs)]
	}
	tags := copyTags(g.spec.Tags)
	tags[events.TagGroup] = group
	a.mu.Unlock()
	return a.cfg.EC2.AddInstance(InstanceSpec{AZ: az, Tags: tags}), az, nil
}

// AddToWarmPool puts an instance created elsewhere (e.g. in moto) into
// group's warm pool, as a launch into the pool does: Warmed:Pending:Wait
// while the launch hook's action (Origin EC2, Destination WarmPool) is
// open; once it is completed CONTINUE the instance is warmed
// (Warmed:Stopped, stopped in the linked EC2, or the pool's other state).
// It returns the event (nil without a launch hook).
func (a *AutoScaling) AddToWarmPool(group, instanceID, az string) (json.RawMessage, error) {
	return a.enter(group, instanceID, az, events.LocationEC2, events.LocationWarmPool)
}

// enter starts the launch transition of an instance from origin into dest:
// the group (Pending, Pending:Wait while the launch hook's action is open,
// then InService) or its warm pool (Warmed:Pending, Warmed:Pending:Wait,
// then warmed). Without a launch hook it is at once InService or warmed.
// It returns the event (nil without a launch hook).
func (a *AutoScaling) enter(group, instanceID, az, origin, dest string) (json.RawMessage, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.groups[group]
	if g == nil {
		return nil, fmt.Errorf("awsfake: no group %q", group)
	}
	intoPool := dest == events.LocationWarmPool
	if intoPool && g.warm == nil {
		return nil, ASGError("ValidationError", "The group %s has no warm pool.", group)
	}
	gi := &groupInstance{id: instanceID, az: az, state: types.LifecycleStatePending}
	waiting := types.LifecycleStatePendingWait
	if intoPool {
		gi.state, waiting = types.LifecycleStateWarmedPending, types.LifecycleStateWarmedPendingWait
		g.warmed[instanceID] = gi
	} else {
		g.instances[instanceID] = gi
		delete(g.warmed, instanceID)
	}
	act := a.startAction(g, instanceID, events.TransitionLaunching, origin, dest)
	switch {
	case act != nil:
		gi.state = waiting
		return a.event(act)
	case intoPool:
		a.warm(g, gi)
	default:
		gi.state = types.LifecycleStateInService
	}
	return nil, nil
}

// warm puts a warm-pool instance in its waiting state (stopping it in the
// linked EC2 when the pool keeps instances stopped or hibernated). a.mu
// must be held.
func (a *AutoScaling) warm(g *fakeGroup, gi *groupInstance) {
	gi.state = g.warm.warmedState()
	if gi.state != types.LifecycleStateWarmedRunning && a.cfg.EC2 != nil {
		// The EC2 fake has its own lock; it never calls back into us.
		a.cfg.EC2.StopInstance(gi.id)
	}
}

// LeaveWarmPool moves a warmed instance of group's warm pool into the
// group, as a scale-out that draws on the pool does: the instance is
// started (in the linked EC2) and waits in Pending:Wait on the launch
// hook's action (Origin WarmPool, Destination AutoScalingGroup). An
// instance still being warmed (Warmed:Pending*) cannot leave yet. It
// returns the event (nil without a launch hook).
func (a *AutoScaling) LeaveWarmPool(group, instanceID string) (json.RawMessage, error) {
	a.mu.Lock()
	g := a.groups[group]
	if g == nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("awsfake: no group %q", group)
	}
	gi := g.warmed[instanceID]
	if gi == nil || g.warm == nil || gi.state != g.warm.warmedState() {
		state := types.LifecycleState("not in the warm pool")
		if gi != nil {
			state = gi.state
		}
		a.mu.Unlock()
		return nil, fmt.Errorf("awsfake: %s of group %q cannot leave the warm pool (%s)", instanceID, group, state)
	}
	az := gi.az
	a.mu.Unlock()
	if a.cfg.EC2 != nil {
		a.cfg.EC2.StartInstance(instanceID)
	}
	return a.LaunchExisting(group, instanceID, az, events.LocationWarmPool)
}

// WarmPoolInstances returns the instance IDs in group's warm pool with
// their lifecycle states.
func (a *AutoScaling) WarmPoolInstances(group string) map[string]types.LifecycleState {
	return a.states(group, func(g *fakeGroup) map[string]*groupInstance { return g.warmed })
}

// states maps the instances of one of group's sets to their lifecycle
// states.
func (a *AutoScaling) states(group string, set func(*fakeGroup) map[string]*groupInstance) map[string]types.LifecycleState {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance()
	out := map[string]types.LifecycleState{}
	if g := a.groups[group]; g != nil {
		for id, gi := range set(g) {
			out[id] = gi.state
		}
	}
	return out
}

// SetMaxSize changes a group's MaxSize.
func (a *AutoScaling) SetMaxSize(group string, max int32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if g := a.groups[group]; g != nil {
		g.spec.MaxSize = max
	}
}

func (a *AutoScaling) groupARN(name string) string {
	return fmt.Sprintf("arn:aws:autoscaling:%s:%s:autoScalingGroup:00000000-0000-4000-8000-000000000000:autoScalingGroupName/%s",
		a.cfg.Region, a.cfg.Account, name)
}

// Launch starts a new instance of group in az (in the linked EC2) and
// returns its ID and the launch lifecycle event (nil when the group has no
// launch hook: the instance is InService at once).
func (a *AutoScaling) Launch(group, az string) (string, json.RawMessage, error) {
	id, az, err := a.runInstance("Launch", group, az, func(g *fakeGroup) int { return len(g.instances) })
	if err != nil {
		return "", nil, err
	}
	ev, err := a.LaunchExisting(group, id, az, "")
	return id, ev, err
}

// LaunchExisting adds an instance created elsewhere (e.g. in moto) to group
// and starts its launch lifecycle action. from is "" for a new instance or
// events.LocationWarmPool for one leaving the warm pool. It returns the
// event (nil without a launch hook).
func (a *AutoScaling) LaunchExisting(group, instanceID, az, from string) (json.RawMessage, error) {
	origin := events.LocationEC2
	if from != "" {
		origin = from
	}
	return a.enter(group, instanceID, az, origin, events.LocationASG)
}

// LaunchSuccessful returns the "EC2 Instance Launch Successful" event Auto
// Scaling sends once an instance of group is InService (after its launch
// hooks completed CONTINUE, or at once without one); an error while the
// instance is not InService.
func (a *AutoScaling) LaunchSuccessful(group, instanceID string) (json.RawMessage, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance()
	g := a.groups[group]
	if g == nil {
		return nil, fmt.Errorf("awsfake: no group %q", group)
	}
	gi := g.instances[instanceID]
	if gi == nil || gi.state != types.LifecycleStateInService {
		return nil, fmt.Errorf("awsfake: %s of group %q is not InService", instanceID, group)
	}
	a.seq++
	now := a.now()
	detail, err := json.Marshal(events.LaunchResult{
		Origin: events.LocationEC2, Destination: events.LocationASG, AutoScalingGroupName: group,
		EC2InstanceID: instanceID, ActivityID: fmt.Sprintf("%08x-0000-4000-8000-%012x", a.seq, now.UnixNano()&0xffffffffffff),
		StatusCode: "InProgress",
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(events.Envelope{
		Version: "0", ID: fmt.Sprintf("evt-launched-%s-%d", instanceID, a.seq), DetailType: events.DetailTypeLaunchSuccessful,
		Source: events.SourceAutoScaling, Account: a.cfg.Account, Time: now.Truncate(time.Second), Region: a.cfg.Region,
		Resources: []string{a.groupARN(group), "arn:aws:ec2:" + a.cfg.Region + ":" + a.cfg.Account + ":instance/" + instanceID},
		Detail:    detail,
	})
}

// QueryHandlers is the fake's HTTP front for the lifecycle actions (the
// awsquery protocol, Action=<Op>).
func (a *AutoScaling) QueryHandlers() map[string]Handler {
	return map[string]Handler{
		"CompleteLifecycleAction":        QueryOp("CompleteLifecycleAction", a.CompleteLifecycleAction),
		"RecordLifecycleActionHeartbeat": QueryOp("RecordLifecycleActionHeartbeat", a.RecordLifecycleActionHeartbeat),
	}
}

// Terminate starts terminating an instance of group and returns the
// terminate lifecycle event (nil without a terminate hook: the instance is
// terminated at once). to is "" or events.LocationWarmPool (scale-in back
// into the warm pool).
func (a *AutoScaling) Terminate(group, instanceID, to string) (json.RawMessage, error) {
	a.mu.Lock()
	g := a.groups[group]
	var gi *groupInstance
	origin := events.LocationASG
	if g != nil {
		gi = g.instances[instanceID]
		if w := g.warmed[instanceID]; gi == nil && w != nil {
			// An instance of the warm pool leaves it terminated (a pool
			// shrinking), through Warmed:Terminating:Wait.
			gi, origin, to = w, events.LocationWarmPool, ""
		}
	}
	if gi == nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("awsfake: %s is not an instance of group %q", instanceID, group)
	}
	dest := events.LocationEC2
	if to != "" {
		dest = to
	}
	act := a.startAction(g, instanceID, events.TransitionTerminating, origin, dest)
	if act == nil {
		a.terminated(g, act0(instanceID, origin, dest))
		a.mu.Unlock()
		return nil, nil
	}
	gi.state = types.LifecycleStateTerminatingWait
	if origin == events.LocationWarmPool {
		gi.state = types.LifecycleStateWarmedTerminatingWait
	}
	ev, err := a.event(act)
	a.mu.Unlock()
	return ev, err
}

// startAction creates the pending action of the group's hook for
// transition, or returns nil if there is no such hook. a.mu must be held.
func (a *AutoScaling) startAction(g *fakeGroup, instanceID, transition, origin, dest string) *fakeAction {
	for _, h := range g.spec.Hooks {
		if h.Transition != transition {
			continue
		}
		a.seq++
		now := a.now()
		limit := 100 * h.HeartbeatTimeout
		if limit > 48*time.Hour {
			limit = 48 * time.Hour
		}
		act := &fakeAction{
			ActionView: ActionView{
				Token: fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", a.seq, a.seq&0xffff, a.seq&0xfff, a.seq&0xfff, now.UnixNano()&0xffffffffffff),
				Group: g.spec.Name, Hook: h.Name, Instance: instanceID, Transition: transition,
				Origin: origin, Destination: dest, Started: now, Deadline: now.Add(h.HeartbeatTimeout),
			},
			timeout: h.HeartbeatTimeout, limit: now.Add(limit), def: h.DefaultResult,
		}
		a.actions[act.Token] = act
		return act
	}
	return nil
}

func (a *AutoScaling) event(act *fakeAction) (json.RawMessage, error) {
	dt := events.DetailTypeLaunch
	if act.Transition == events.TransitionTerminating {
		dt = events.DetailTypeTerminate
	}
	detail, err := json.Marshal(events.LifecycleAction{
		Origin: act.Origin, Destination: act.Destination, LifecycleActionToken: act.Token,
		AutoScalingGroupName: act.Group, LifecycleHookName: act.Hook, EC2InstanceID: act.Instance,
		LifecycleTransition: act.Transition,
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(events.Envelope{
		Version: "0", ID: fmt.Sprintf("evt-%s", act.Token), DetailType: dt, Source: events.SourceAutoScaling,
		Account: a.cfg.Account, Time: act.Started.Truncate(time.Second), Region: a.cfg.Region,
		Resources: []string{a.groupARN(act.Group)}, Detail: detail,
	})
}

// advance expires actions whose heartbeat timeout passed, applying the
// hook's default result. a.mu must be held.
func (a *AutoScaling) advance() {
	now := a.now()
	for _, act := range a.actions {
		if act.Result == "" && (now.After(act.Deadline) || now.After(act.limit)) {
			act.Expired = true
			a.decide(act, act.def)
		}
	}
}

// decide applies result to a pending action. a.mu must be held.
func (a *AutoScaling) decide(act *fakeAction, result string) {
	act.Result = result
	g := a.groups[act.Group]
	if g == nil {
		return
	}
	switch {
	case act.Transition == events.TransitionLaunching && act.Destination == events.LocationWarmPool:
		gi := g.warmed[act.Instance]
		switch {
		case gi == nil:
		case result == "CONTINUE" && g.warm != nil:
			// Warmed:Pending:Proceed, then the pool's waiting state.
			a.warm(g, gi)
		default:
			// ABANDON: the instance is terminated, not warmed.
			delete(g.warmed, act.Instance)
			a.terminateEC2(act.Instance)
		}
	case act.Transition == events.TransitionLaunching && result == "CONTINUE":
		if gi := g.instances[act.Instance]; gi != nil {
			gi.state = types.LifecycleStateInService
		}
	case act.Transition == events.TransitionLaunching:
		// ABANDON: the group terminates the instance (no terminate hook).
		delete(g.instances, act.Instance)
		a.terminateEC2(act.Instance)
	default:
		a.terminated(g, act)
	}
}

// act0 is the action-less view of a terminate without a hook.
func act0(instance, origin, dest string) *fakeAction {
	return &fakeAction{ActionView: ActionView{Instance: instance, Origin: origin, Destination: dest, Transition: events.TransitionTerminating}}
}

// terminated ends a terminate transition: the instance leaves the group or
// the warm pool and is terminated, or, with Destination WarmPool (scale-in
// with instance reuse), goes back into the warm pool and waits there
// warmed. a.mu must be held.
func (a *AutoScaling) terminated(g *fakeGroup, act *fakeAction) {
	gi := g.instances[act.Instance]
	delete(g.instances, act.Instance)
	if act.Origin == events.LocationWarmPool {
		delete(g.warmed, act.Instance)
	}
	if act.Destination == events.LocationWarmPool {
		if gi != nil && g.warm != nil {
			g.warmed[act.Instance] = gi
			a.warm(g, gi)
		}
		// Without a warm pool set (PutWarmPool) the caller plays it: the
		// instance only leaves the group.
		return
	}
	a.terminateEC2(act.Instance)
}

func (a *AutoScaling) terminateEC2(id string) {
	if a.cfg.EC2 != nil {
		// The EC2 fake has its own lock; it never calls back into us.
		a.cfg.EC2.TerminateInstance(id)
	}
}

// ExpireAll lets every pending action time out now (default results).
func (a *AutoScaling) ExpireAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, act := range a.actions {
		if act.Result == "" {
			act.Expired = true
			a.decide(act, act.def)
		}
	}
}

// Actions returns every action, oldest first.
func (a *AutoScaling) Actions() []ActionView {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance()
	out := make([]ActionView, 0, len(a.actions))
	for _, act := range a.actions {
		out = append(out, act.ActionView)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Started.Before(out[j].Started) || out[i].Started.Equal(out[j].Started) && out[i].Token < out[j].Token
	})
	return out
}

// Action returns the action with token.
func (a *AutoScaling) Action(token string) (ActionView, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance()
	act, ok := a.actions[token]
	if !ok {
		return ActionView{}, false
	}
	return act.ActionView, true
}

// GroupInstances returns the group's instance IDs with their lifecycle states.
func (a *AutoScaling) GroupInstances(group string) map[string]types.LifecycleState {
	return a.states(group, func(g *fakeGroup) map[string]*groupInstance { return g.instances })
}

// find returns the pending action a Complete/Heartbeat call addresses, or
// the ValidationError AWS gives when there is none.
func (a *AutoScaling) find(group, hook, token, instance string) (*fakeAction, error) {
	switch {
	case group == "":
		return nil, ASGError("ValidationError", "1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	case hook == "":
		return nil, ASGError("ValidationError", "1 validation error detected: Value null at 'lifecycleHookName' failed to satisfy constraint: Member must not be null")
	case token == "" && instance == "":
		return nil, ASGError("ValidationError", "Either LifecycleActionToken or InstanceId must be specified.")
	}
	if token != "" {
		act := a.actions[token]
		if act == nil || act.Result != "" || act.Group != group || act.Hook != hook || instance != "" && act.Instance != instance {
			return nil, ASGError("ValidationError", "No active Lifecycle Action found with token %s", token)
		}
		return act, nil
	}
	for _, act := range a.actions {
		if act.Result == "" && act.Group == group && act.Hook == hook && act.Instance == instance {
			return act, nil
		}
	}
	return nil, ASGError("ValidationError", "No active Lifecycle Action found with instance ID %s", instance)
}

// CompleteLifecycleAction decides a pending lifecycle action, found by
// token or instance ID. A completed, expired or unknown action is the
// ValidationError "No active Lifecycle Action found with …".
func (a *AutoScaling) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, _ ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	const op = "CompleteLifecycleAction"
	if err := a.start(ctx, op); err != nil {
		return nil, err
	}
	defer a.mu.Unlock()
	res := aws.ToString(in.LifecycleActionResult)
	if res != "CONTINUE" && res != "ABANDON" {
		return nil, ASGError("ValidationError", "Invalid lifecycle action result %q: must be CONTINUE or ABANDON", res)
	}
	act, err := a.find(aws.ToString(in.AutoScalingGroupName), aws.ToString(in.LifecycleHookName),
		aws.ToString(in.LifecycleActionToken), aws.ToString(in.InstanceId))
	if err != nil {
		return nil, err
	}
	act.Completed = true
	a.decide(act, res)
	return &autoscaling.CompleteLifecycleActionOutput{}, a.end(op)
}

// RecordLifecycleActionHeartbeat restarts a pending action's heartbeat
// timeout (never past the global timeout).
func (a *AutoScaling) RecordLifecycleActionHeartbeat(ctx context.Context, in *autoscaling.RecordLifecycleActionHeartbeatInput, _ ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error) {
	const op = "RecordLifecycleActionHeartbeat"
	if err := a.start(ctx, op); err != nil {
		return nil, err
	}
	defer a.mu.Unlock()
	act, err := a.find(aws.ToString(in.AutoScalingGroupName), aws.ToString(in.LifecycleHookName),
		aws.ToString(in.LifecycleActionToken), aws.ToString(in.InstanceId))
	if err != nil {
		return nil, err
	}
	act.Heartbeats++
	act.Deadline = a.now().Add(act.timeout)
	if act.Deadline.After(act.limit) {
		act.Deadline = act.limit
	}
	return &autoscaling.RecordLifecycleActionHeartbeatOutput{}, a.end(op)
}

// DescribeAutoScalingGroups describes the named groups (all without
// names); unknown names are left out, as in AWS.
func (a *AutoScaling) DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	const op = "DescribeAutoScalingGroups"
	if err := a.start(ctx, op); err != nil {
		return nil, err
	}
	defer a.mu.Unlock()
	names := make([]string, 0, len(a.groups))
	for n := range a.groups {
		if len(in.AutoScalingGroupNames) == 0 || slices.Contains(in.AutoScalingGroupNames, n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := &autoscaling.DescribeAutoScalingGroupsOutput{}
	for _, n := range names {
		g := a.groups[n]
		desc := types.AutoScalingGroup{
			AutoScalingGroupName: aws.String(n), AutoScalingGroupARN: aws.String(a.groupARN(n)),
			AvailabilityZones: slices.Clone(g.spec.AZs), MinSize: aws.Int32(g.spec.MinSize), MaxSize: aws.Int32(g.spec.MaxSize),
			DesiredCapacity: aws.Int32(g.spec.Desired), CreatedTime: aws.Time(g.created), HealthCheckType: aws.String("EC2"),
			DefaultCooldown: aws.Int32(300),
		}
		ids := make([]string, 0, len(g.instances))
		for id := range g.instances {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			gi := g.instances[id]
			desc.Instances = append(desc.Instances, types.Instance{
				InstanceId: aws.String(id), AvailabilityZone: aws.String(gi.az), LifecycleState: gi.state,
				HealthStatus: aws.String("Healthy"), ProtectedFromScaleIn: aws.Bool(false),
			})
		}
		if g.warm != nil {
			desc.WarmPoolConfiguration = g.warm.configuration()
			desc.WarmPoolSize = aws.Int32(int32(len(g.warmed)))
		}
		for k, v := range g.spec.Tags {
			desc.Tags = append(desc.Tags, types.TagDescription{Key: aws.String(k), Value: aws.String(v),
				PropagateAtLaunch: aws.Bool(true), ResourceId: aws.String(n), ResourceType: aws.String("auto-scaling-group")})
		}
		out.AutoScalingGroups = append(out.AutoScalingGroups, desc)
	}
	return out, a.end(op)
}

func (w *WarmPoolSpec) configuration() *types.WarmPoolConfiguration {
	return &types.WarmPoolConfiguration{PoolState: w.PoolState, MinSize: aws.Int32(w.MinSize)}
}

// DescribeWarmPool describes a group's warm pool and its instances (all in
// one page). A group without a warm pool has no configuration and no
// instances, as in AWS; an unknown group is a ValidationError.
func (a *AutoScaling) DescribeWarmPool(ctx context.Context, in *autoscaling.DescribeWarmPoolInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeWarmPoolOutput, error) {
	const op = "DescribeWarmPool"
	if err := a.start(ctx, op); err != nil {
		return nil, err
	}
	defer a.mu.Unlock()
	name := aws.ToString(in.AutoScalingGroupName)
	g := a.groups[name]
	if g == nil {
		return nil, ASGError("ValidationError", "AutoScalingGroup name not found - %s", name)
	}
	out := &autoscaling.DescribeWarmPoolOutput{}
	if g.warm == nil {
		return out, a.end(op)
	}
	out.WarmPoolConfiguration = g.warm.configuration()
	ids := make([]string, 0, len(g.warmed))
	for id := range g.warmed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		gi := g.warmed[id]
		out.Instances = append(out.Instances, types.Instance{
			InstanceId: aws.String(id), AvailabilityZone: aws.String(gi.az), LifecycleState: gi.state,
			HealthStatus: aws.String("Healthy"), ProtectedFromScaleIn: aws.Bool(false),
		})
	}
	return out, a.end(op)
}
