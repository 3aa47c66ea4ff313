package pool_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

// chaos decides faults with one seeded source.
type chaos struct {
	mu  sync.Mutex
	rng *rand.Rand
	on  atomic.Bool
}

func (c *chaos) chance(p float64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.Float64() < p
}

func (c *chaos) intn(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.IntN(n)
}

// fault returns an injected error for a call, or nil: throttling and
// server errors before the call, and (for writes) lost responses after it.
func (c *chaos) fault(throttle, server error) func(string) error {
	return func(string) error {
		if !c.on.Load() {
			return nil
		}
		switch {
		case c.chance(0.06):
			return throttle
		case c.chance(0.03):
			return server
		}
		return nil
	}
}

func (c *chaos) lost(server error) func(string) error {
	return func(op string) error {
		if c.on.Load() && op != "DescribeVolumes" && op != "DescribeInstances" && c.chance(0.03) {
			return server
		}
		return nil
	}
}

// cutKey carries a handler's cut: after a random number of calls the
// handler's context is cancelled, as when a Lambda is cut off mid-way.
type cutKey struct{}

type cut struct {
	n, limit atomic.Int64
	cancel   context.CancelFunc
}

func cutFrom(ctx context.Context) error {
	c, _ := ctx.Value(cutKey{}).(*cut)
	if c == nil {
		return ctx.Err()
	}
	if c.n.Add(1) >= c.limit.Load() {
		c.cancel()
		return context.Canceled
	}
	return ctx.Err()
}

// cutEC2, cutASG, cutSSM and cutDDB count calls against the handler's cut.
type cutEC2 struct{ pool.EC2 }

func (c cutEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	return c.EC2.DescribeInstances(ctx, in, o...)
}

func (c cutEC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, o ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	return c.EC2.DescribeVolumes(ctx, in, o...)
}

func (c cutEC2) CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, o ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	return c.EC2.CreateVolume(ctx, in, o...)
}

func (c cutEC2) AttachVolume(ctx context.Context, in *ec2.AttachVolumeInput, o ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	return c.EC2.AttachVolume(ctx, in, o...)
}

func (c cutEC2) DetachVolume(ctx context.Context, in *ec2.DetachVolumeInput, o ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	return c.EC2.DetachVolume(ctx, in, o...)
}

func (c cutEC2) DeleteVolume(ctx context.Context, in *ec2.DeleteVolumeInput, o ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	return c.EC2.DeleteVolume(ctx, in, o...)
}

type cutASG struct{ pool.AutoScaling }

func (c cutASG) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, o ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	return c.AutoScaling.CompleteLifecycleAction(ctx, in, o...)
}

type cutSSM struct {
	pool.SSM
	ch *chaos
}

func (c cutSSM) SendCommand(ctx context.Context, in *ssm.SendCommandInput, o ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	if err := cutFrom(ctx); err != nil {
		return nil, err
	}
	if c.ch.on.Load() && c.ch.chance(0.1) {
		return nil, &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"}
	}
	return c.SSM.SendCommand(ctx, in, o...)
}

// faultDDB injects DynamoDB throttling and 500s before calls, lost
// responses after writes, and counts calls against the handler's cut.
type faultDDB struct {
	store.DynamoDB
	ch *chaos
}

func (f faultDDB) before(ctx context.Context) error {
	if err := cutFrom(ctx); err != nil {
		return err
	}
	if !f.ch.on.Load() {
		return nil
	}
	switch {
	case f.ch.chance(0.03):
		return &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException", Message: "throughput exceeded"}
	case f.ch.chance(0.02):
		return &smithy.GenericAPIError{Code: "InternalServerError", Message: "Internal server error", Fault: smithy.FaultServer}
	}
	return nil
}

func (f faultDDB) after(err error) error {
	if err == nil && f.ch.on.Load() && f.ch.chance(0.02) {
		return &smithy.GenericAPIError{Code: "InternalServerError", Message: "Internal server error (response lost)", Fault: smithy.FaultServer}
	}
	return err
}

func (f faultDDB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	if err := f.before(ctx); err != nil {
		return nil, err
	}
	return f.DynamoDB.GetItem(ctx, in, o...)
}

func (f faultDDB) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	if err := f.before(ctx); err != nil {
		return nil, err
	}
	return f.DynamoDB.Query(ctx, in, o...)
}

func (f faultDDB) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if err := f.before(ctx); err != nil {
		return nil, err
	}
	out, err := f.DynamoDB.PutItem(ctx, in, o...)
	return out, f.after(err)
}

func (f faultDDB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if err := f.before(ctx); err != nil {
		return nil, err
	}
	out, err := f.DynamoDB.UpdateItem(ctx, in, o...)
	return out, f.after(err)
}

func (f faultDDB) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	if err := f.before(ctx); err != nil {
		return nil, err
	}
	out, err := f.DynamoDB.DeleteItem(ctx, in, o...)
	return out, f.after(err)
}

func (f faultDDB) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	if err := f.before(ctx); err != nil {
		return nil, err
	}
	out, err := f.DynamoDB.TransactWriteItems(ctx, in, o...)
	return out, f.after(err)
}

// delivery is one invocation of the lifecycle Lambda with an event.
type delivery struct {
	raw     json.RawMessage
	act     events.LifecycleAction
	attempt int
}

// TestChaos runs at least 500 randomized launches and terminations
// (hooked and hookless) with throttling, server errors, lost responses,
// duplicate, concurrent and reordered delivery, and handlers cut off at
// random calls, against the EC2/Auto Scaling fakes and DynamoDB Local; then
// it lets every pending event through without faults, reconciles until
// nothing changes, and checks the pool's invariants.
// VOLSD_CHAOS_SEED repeats a run's choices; VOLSD_CHAOS_OPS changes its length.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test is long")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VOLSD_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	ops := 520
	if s := os.Getenv("VOLSD_CHAOS_OPS"); s != "" {
		ops, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (VOLSD_CHAOS_SEED=%d repeats its choices and faults; goroutine timing still varies), %d operations", seed, seed, ops)
	ch := &chaos{rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}

	e := newEnv(t, awsfake.EC2Config{CreateDelay: 2 * time.Millisecond, AttachDelay: 2 * time.Millisecond,
		DetachDelay: 2 * time.Millisecond, DeleteDelay: time.Millisecond, TerminateDelay: time.Millisecond},
		withTiming(func(tm *pool.Timing) {
			tm.StuckAfter, tm.GoneGrace, tm.OrphanGrace = 400*time.Millisecond, 100*time.Millisecond, 800*time.Millisecond
			tm.ReleaseCommand = 30 * time.Millisecond
		}))
	e.ec2.SetFaults(ch.fault(awsfake.EC2Throttle(), awsfake.EC2ServerError()), ch.lost(awsfake.EC2ServerError()))
	e.asg.SetFaults(ch.fault(awsfake.ASGThrottle(), awsfake.ASGServerError()), ch.lost(awsfake.ASGServerError()))
	chaosStore := store.New(faultDDB{DynamoDB: e.db, ch: ch}, e.cfg.Table)
	build := func() *pool.Pool {
		return pool.New(e.cfg, pool.Deps{Store: chaosStore, EC2: cutEC2{e.ec2}, AutoScaling: cutASG{e.asg},
			SSM: cutSSM{SSM: e.ssm, ch: ch}, Log: e.logger(slog.LevelInfo), Timing: e.timing})
	}
	p := build()
	e.seedIdle()
	ch.on.Store(true)

	var (
		mu       sync.Mutex
		delayed  []delivery
		decided  = map[string]bool{} // terminate tokens a delivery finished
		stats    = map[string]int{}
		live     []string // instances launched and not yet terminated
		launched = map[string]string{}
	)
	count := func(k string) { mu.Lock(); stats[k]++; mu.Unlock() }

	agentUp := func(act events.LifecycleAction) {
		// The agent on the instance: once its volume is attached it
		// reports its seq and completes the launch hook.
		for i := 0; i < 5; i++ {
			in, err := e.store.GetInstance(bg, e.cfg.Pool, act.EC2InstanceID)
			if err != nil || in.VolumeID == "" || in.State != store.InstanceLaunching && in.State != store.InstanceReady {
				return
			}
			v, err := e.store.GetVolume(bg, e.cfg.Pool, in.VolumeID)
			if err != nil || v.State != store.VolumeInUse || v.InstanceID != in.InstanceID {
				return
			}
			in.Seq, in.LastReportAt = v.Seq, time.Now().UTC()
			if _, err := e.store.UpdateInstance(bg, in); err != nil {
				continue
			}
			e.ssm.setReport(in.InstanceID, v.VolumeID, v.Seq)
			_ = completeHook(e.asg, awsfake.ActionView{Group: act.AutoScalingGroupName, Hook: act.LifecycleHookName, Token: act.LifecycleActionToken}, "CONTINUE")
			return
		}
	}

	handle := func(d delivery) {
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		if ch.chance(0.25) {
			c := &cut{cancel: cancel}
			c.limit.Store(int64(1 + ch.intn(30)))
			ctx = context.WithValue(ctx, cutKey{}, c)
		}
		err := p.HandleLifecycle(ctx, d.raw)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			stats["failed deliveries"]++
			if d.attempt < 3 { // Lambda's async retries
				d.attempt++
				delayed = append(delayed, d)
			}
			return
		}
		stats["ok deliveries"]++
		if d.act.LifecycleTransition == events.TransitionTerminating {
			decided[d.act.LifecycleActionToken] = true
			return
		}
		mu.Unlock()
		if ch.chance(0.8) {
			agentUp(d.act)
		}
		mu.Lock()
	}

	work := make(chan delivery, 64)
	var wg, inflight sync.WaitGroup
	enqueue := func(d delivery) {
		inflight.Add(1)
		work <- d
	}
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				handle(d)
				inflight.Done()
			}
		}()
	}
	send := func(raw json.RawMessage) {
		var env events.Envelope
		var act events.LifecycleAction
		if err := json.Unmarshal(raw, &env); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(env.Detail, &act); err != nil {
			t.Fatal(err)
		}
		d := delivery{raw: raw, act: act}
		if ch.chance(0.1) { // even the first delivery may come late
			mu.Lock()
			delayed = append(delayed, d)
			mu.Unlock()
		} else {
			enqueue(d)
		}
		for n := ch.intn(3); n > 0; n-- { // duplicates: now (concurrent) or later (reordered)
			if ch.chance(0.5) {
				enqueue(d)
			} else {
				mu.Lock()
				delayed = append(delayed, d)
				mu.Unlock()
			}
		}
	}
	var reconciles sync.WaitGroup
	start := time.Now()
	for op := 0; op < ops; op++ {
		mu.Lock()
		nlive := len(live)
		mu.Unlock()
		switch r := ch.intn(100); {
		case r < 55 && nlive < 30 || nlive < 3:
			id, raw, err := e.asg.Launch(e.cfg.Group, testAZs[ch.intn(3)])
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			live = append(live, id)
			launched[id] = e.ec2.InstanceAZ(id)
			mu.Unlock()
			count("launches")
			send(raw)
		case r < 88:
			mu.Lock()
			i := ch.intn(len(live))
			id := live[i]
			live = append(live[:i], live[i+1:]...)
			mu.Unlock()
			raw, err := e.asg.Terminate(e.cfg.Group, id, "")
			if err != nil { // abandoned meanwhile
				count("terminations of gone instances")
				continue
			}
			count("terminations")
			send(raw)
		case r < 96:
			mu.Lock()
			i := ch.intn(len(live))
			id := live[i]
			live = append(live[:i], live[i+1:]...)
			mu.Unlock()
			e.ec2.TerminateInstance(id) // Spot: no hook
			count("hookless terminations")
		default:
			reconciles.Add(1)
			go func() {
				defer reconciles.Done()
				if _, err := p.Reconcile(bg); err != nil {
					count("failed reconciles")
				}
				count("reconciles")
			}()
		}
		// Let some delayed deliveries through, out of order.
		mu.Lock()
		var due []delivery
		for len(delayed) > 0 && ch.chance(0.4) {
			i := ch.intn(len(delayed))
			due = append(due, delayed[i])
			delayed = append(delayed[:i], delayed[i+1:]...)
		}
		mu.Unlock()
		for _, d := range due {
			enqueue(d)
		}
	}
	// Drain: deliver what is still delayed (retries too) until nothing is left.
	for {
		inflight.Wait()
		mu.Lock()
		due := delayed
		delayed = nil
		mu.Unlock()
		if len(due) == 0 {
			break
		}
		for _, d := range due {
			enqueue(d)
		}
	}
	close(work)
	wg.Wait()
	reconciles.Wait()
	t.Logf("chaos phase: %s, %v", time.Since(start).Round(time.Millisecond), stats)

	// Calm: no faults. Every lifecycle action still pending gets one more
	// delivery (EventBridge retries until the hook's timeout).
	ch.on.Store(false)
	e.timing.StuckAfter, e.timing.GoneGrace, e.timing.OrphanGrace = 0, 0, 0
	p = build()
	for _, a := range e.asg.Actions() {
		if a.Result != "" {
			continue
		}
		raw := lifecycleEvent(t, a)
		if err := p.HandleLifecycle(bg, raw); err != nil {
			t.Fatalf("calm delivery for %s %s: %v", a.Transition, a.Instance, err)
		}
		if a.Transition == events.TransitionTerminating {
			decided[a.Token] = true
		} else {
			var act events.LifecycleAction
			_ = json.Unmarshal(mustDetail(t, raw), &act)
			agentUp(act)
		}
	}
	// Launch actions of instances that terminated meanwhile never get a
	// CONTINUE from an agent: they time out.
	e.asg.ExpireAll()
	time.Sleep(10 * time.Millisecond)
	var runs int
	for runs = 1; runs <= 10; runs++ {
		rep, err := p.Reconcile(bg)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Changed() && rep.Complete && rep.Errors == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if runs > 10 {
		t.Fatalf("reconcile did not settle in 10 runs\n%s", tail(e.logs.String(), 60))
	}
	t.Logf("settled after %d reconcile runs; %s in all", runs, time.Since(start).Round(time.Millisecond))
	checkInvariants(t, e, decided)
}

// checkInvariants checks the pool's end state after chaos.
func checkInvariants(t *testing.T, e *env, decided map[string]bool) {
	t.Helper()
	vols := e.volumes()
	insts, err := e.store.ListInstances(bg, e.cfg.Pool)
	if err != nil {
		t.Fatal(err)
	}
	ec2v := map[string]awsfake.VolumeView{}
	for _, v := range e.ec2.Volumes() {
		ec2v[v.ID] = v
	}
	recs := map[string]store.Volume{}
	heldBy := map[string][]string{}
	for _, v := range vols {
		recs[v.VolumeID] = v
		switch v.State {
		case store.VolumeIdle, store.VolumeInUse:
		default:
			t.Errorf("volume %s left in state %s (%s)", v.VolumeID, v.State, v.LastError)
		}
		ev, ok := ec2v[v.VolumeID]
		if !ok {
			t.Errorf("recorded volume %s does not exist in EC2", v.VolumeID)
			continue
		}
		if v.AZ != ev.AZ {
			t.Errorf("volume %s recorded in %s, is in %s", v.VolumeID, v.AZ, ev.AZ)
		}
		switch v.State {
		case store.VolumeIdle:
			if ev.State != types.VolumeStateAvailable || ev.Instance != "" {
				t.Errorf("idle volume %s is %s attached to %q", v.VolumeID, ev.State, ev.Instance)
			}
		case store.VolumeInUse:
			heldBy[v.InstanceID] = append(heldBy[v.InstanceID], v.VolumeID)
			if ev.Instance != v.InstanceID || ev.Attachment != types.VolumeAttachmentStateAttached {
				t.Errorf("in-use volume %s of %s is attached to %q (%s)", v.VolumeID, v.InstanceID, ev.Instance, ev.Attachment)
			}
		}
	}
	for id, ev := range ec2v {
		if ev.Tags[events.TagPool] != e.cfg.Pool || ev.State == types.VolumeStateDeleting {
			continue
		}
		if _, ok := recs[id]; !ok {
			t.Errorf("pool volume %s (%s, attached to %q) is unknown to the table", id, ev.State, ev.Instance)
		}
	}
	bound := map[string]string{}
	for _, in := range insts {
		if in.VolumeID != "" {
			bound[in.InstanceID] = in.VolumeID
		}
	}
	running := 0
	for id, vs := range heldBy {
		if len(vs) > 1 {
			t.Errorf("instance %s holds %d volumes: %v", id, len(vs), vs)
		}
		if bound[id] != vs[0] {
			t.Errorf("instance %s holds %s but its record binds %q", id, vs[0], bound[id])
		}
	}
	for id, vol := range bound {
		if v, ok := recs[vol]; !ok || v.InstanceID != id || v.State != store.VolumeInUse {
			t.Errorf("instance %s binds %s, which is %+v", id, vol, v)
		}
	}
	for _, in := range e.ec2Instances() {
		if in.state != types.InstanceStateNameRunning {
			if len(heldBy[in.id]) != 0 {
				t.Errorf("%s instance %s holds %v", in.state, in.id, heldBy[in.id])
			}
			continue
		}
		running++
		vs := heldBy[in.id]
		if len(vs) != 1 {
			t.Errorf("live instance %s (%s) holds %d volumes", in.id, in.az, len(vs))
			continue
		}
		if recs[vs[0]].AZ != in.az {
			t.Errorf("live instance %s in %s holds %s in %s", in.id, in.az, vs[0], recs[vs[0]].AZ)
		}
	}
	idle := e.idle()
	for _, az := range testAZs {
		if idle[az] != e.cfg.IdlePerAZ {
			t.Errorf("%d idle volumes in %s, target %d", idle[az], az, e.cfg.IdlePerAZ)
		}
	}
	for _, a := range e.asg.Actions() {
		if a.Transition == events.TransitionTerminating && decided[a.Token] && !a.Completed && !a.Expired {
			t.Errorf("terminate action of %s: the handler finished but the hook is %+v", a.Instance, a)
		}
		if a.Transition == events.TransitionTerminating && a.Expired {
			t.Errorf("terminate action of %s expired: no handler completed it", a.Instance)
		}
	}
	t.Logf("end state: %d running instances each with one volume, idle %v, %d volumes in EC2", running, idle, len(ec2v))
	if t.Failed() {
		t.Log(tail(e.logs.String(), 80))
	}
}

type instanceInfo struct {
	id, az string
	state  types.InstanceStateName
}

// ec2Instances lists every instance the fake EC2 knows.
func (e *env) ec2Instances() []instanceInfo {
	out, err := e.ec2.DescribeInstances(bg, &ec2.DescribeInstancesInput{})
	if err != nil {
		e.t.Fatal(err)
	}
	var res []instanceInfo
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			res = append(res, instanceInfo{id: *in.InstanceId, az: *in.Placement.AvailabilityZone, state: in.State.Name})
		}
	}
	sort.Slice(res, func(i, j int) bool { return res[i].id < res[j].id })
	return res
}

func lifecycleEvent(t *testing.T, a awsfake.ActionView) json.RawMessage {
	t.Helper()
	dt := events.DetailTypeLaunch
	if a.Transition == events.TransitionTerminating {
		dt = events.DetailTypeTerminate
	}
	detail, _ := json.Marshal(events.LifecycleAction{Origin: a.Origin, Destination: a.Destination, LifecycleActionToken: a.Token,
		AutoScalingGroupName: a.Group, LifecycleHookName: a.Hook, EC2InstanceID: a.Instance, LifecycleTransition: a.Transition})
	raw, _ := json.Marshal(events.Envelope{Version: "0", ID: "retry-" + a.Token, DetailType: dt, Source: events.SourceAutoScaling, Detail: detail})
	return raw
}

func mustDetail(t *testing.T, raw json.RawMessage) json.RawMessage {
	var env events.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	return env.Detail
}

func tail(s string, lines int) string {
	n := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			n++
			if n > lines {
				return s[i+1:]
			}
		}
	}
	return s
}
