package awsfake_test

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
)

func newFakeASG(c *ec2Clock) (*awsfake.AutoScaling, *awsfake.EC2) {
	e := newFakeEC2(c)
	a := awsfake.NewAutoScaling(awsfake.AutoScalingConfig{Now: c.Now, EC2: e})
	a.AddGroup(awsfake.GroupSpec{
		Name: "web", AZs: []string{"us-east-1a", "us-east-1b"}, MaxSize: 10,
		Tags: map[string]string{"volsd:pool": "web"},
		Hooks: []awsfake.HookSpec{
			{Name: "volsd-launch", Transition: events.TransitionLaunching, HeartbeatTimeout: 10 * time.Minute, DefaultResult: "ABANDON"},
			{Name: "volsd-terminate", Transition: events.TransitionTerminating, HeartbeatTimeout: 5 * time.Minute, DefaultResult: "CONTINUE"},
		},
	})
	return a, e
}

func asgDecode(t *testing.T, raw []byte, detailType string) events.LifecycleAction {
	t.Helper()
	var a events.LifecycleAction
	if _, err := events.DecodeDetail(raw, detailType, &a); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("event does not validate: %v\n%s", err, raw)
	}
	return a
}

func asgComplete(a *awsfake.AutoScaling, act events.LifecycleAction, token, result string) error {
	_, err := a.CompleteLifecycleAction(fakeCtx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName: aws.String(act.AutoScalingGroupName), LifecycleHookName: aws.String(act.LifecycleHookName),
		LifecycleActionToken: aws.String(token), LifecycleActionResult: aws.String(result),
	})
	return err
}

func TestLaunchEventAndCompletion(t *testing.T) {
	c := newEC2Clock()
	a, e := newFakeASG(c)
	id, raw, err := a.Launch("web", "us-east-1b")
	if err != nil {
		t.Fatal(err)
	}
	act := asgDecode(t, raw, events.DetailTypeLaunch)
	if act.EC2InstanceID != id || act.LifecycleTransition != events.TransitionLaunching || act.AutoScalingGroupName != "web" || act.Origin != "EC2" {
		t.Fatalf("event detail %+v", act)
	}
	if e.InstanceAZ(id) != "us-east-1b" || e.InstanceState(id) != types.InstanceStateNameRunning {
		t.Fatalf("EC2 instance %s in %s", e.InstanceState(id), e.InstanceAZ(id))
	}
	if st := a.GroupInstances("web")[id]; st != asgtypes.LifecycleStatePendingWait {
		t.Fatalf("group state %s", st)
	}
	if err := asgComplete(a, act, "00000000-bad-token", "CONTINUE"); !awserr.IsLifecycleActionGone(err) {
		t.Fatalf("wrong token: %v", err)
	}
	if err := asgComplete(a, act, act.LifecycleActionToken, "MAYBE"); awserr.Code(err) != "ValidationError" || awserr.IsLifecycleActionGone(err) {
		t.Fatalf("bad result: %v", err)
	}
	if err := asgComplete(a, act, act.LifecycleActionToken, "CONTINUE"); err != nil {
		t.Fatal(err)
	}
	if st := a.GroupInstances("web")[id]; st != asgtypes.LifecycleStateInService {
		t.Fatalf("group state after CONTINUE: %s", st)
	}
	err = asgComplete(a, act, act.LifecycleActionToken, "CONTINUE")
	if !awserr.IsLifecycleActionGone(err) || awserr.IsRetryable(err) {
		t.Fatalf("second completion: %v", err)
	}
	v, _ := a.Action(act.LifecycleActionToken)
	if !v.Completed || v.Result != "CONTINUE" || v.Expired {
		t.Fatalf("action %+v", v)
	}
	// By instance ID once the action is done: no active action either.
	_, err = a.CompleteLifecycleAction(fakeCtx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName: aws.String("web"), LifecycleHookName: aws.String("volsd-launch"),
		InstanceId: aws.String(id), LifecycleActionResult: aws.String("CONTINUE"),
	})
	if !awserr.IsLifecycleActionGone(err) {
		t.Fatalf("by instance: %v", err)
	}
}

func TestAbandonedLaunchTerminatesInstance(t *testing.T) {
	c := newEC2Clock()
	a, e := newFakeASG(c)
	id, raw, err := a.Launch("web", "us-east-1a")
	if err != nil {
		t.Fatal(err)
	}
	act := asgDecode(t, raw, events.DetailTypeLaunch)
	if err := asgComplete(a, act, act.LifecycleActionToken, "ABANDON"); err != nil {
		t.Fatal(err)
	}
	c.Advance(5 * time.Second)
	if e.InstanceState(id) != types.InstanceStateNameTerminated {
		t.Fatalf("instance %s after ABANDON", e.InstanceState(id))
	}
	if _, in := a.GroupInstances("web")[id]; in {
		t.Fatal("abandoned instance still in the group")
	}
}

func TestExpiryHeartbeatAndGlobalTimeout(t *testing.T) {
	c := newEC2Clock()
	a, e := newFakeASG(c)
	id, raw, _ := a.Launch("web", "us-east-1a")
	act := asgDecode(t, raw, events.DetailTypeLaunch)
	hb := func() error {
		_, err := a.RecordLifecycleActionHeartbeat(fakeCtx, &autoscaling.RecordLifecycleActionHeartbeatInput{
			AutoScalingGroupName: aws.String("web"), LifecycleHookName: aws.String("volsd-launch"),
			LifecycleActionToken: aws.String(act.LifecycleActionToken), InstanceId: aws.String(id),
		})
		return err
	}
	// Heartbeats every 9 minutes keep a 10-minute action alive…
	for i := 0; i < 5; i++ {
		c.Advance(9 * time.Minute)
		if err := hb(); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
	}
	// …until it is left alone for longer than the timeout.
	c.Advance(11 * time.Minute)
	if err := hb(); !awserr.IsLifecycleActionGone(err) {
		t.Fatalf("heartbeat after expiry: %v", err)
	}
	if err := asgComplete(a, act, act.LifecycleActionToken, "CONTINUE"); !awserr.IsLifecycleActionGone(err) {
		t.Fatalf("complete after expiry: %v", err)
	}
	v, _ := a.Action(act.LifecycleActionToken)
	if !v.Expired || v.Result != "ABANDON" || v.Completed || v.Heartbeats != 5 {
		t.Fatalf("expired action %+v", v)
	}
	c.Advance(5 * time.Second)
	if e.InstanceState(id) != types.InstanceStateNameTerminated {
		t.Fatalf("default ABANDON left the instance %s", e.InstanceState(id))
	}

	// The global timeout (100 × heartbeat timeout) ends even a heartbeating action.
	a.AddGroup(awsfake.GroupSpec{Name: "short", AZs: []string{"us-east-1a"}, MaxSize: 1,
		Hooks: []awsfake.HookSpec{{Name: "h", Transition: events.TransitionLaunching, HeartbeatTimeout: time.Minute, DefaultResult: "CONTINUE"}}})
	_, raw, _ = a.Launch("short", "")
	act = asgDecode(t, raw, events.DetailTypeLaunch)
	for i := 0; i < 130; i++ {
		c.Advance(50 * time.Second)
		_, _ = a.RecordLifecycleActionHeartbeat(fakeCtx, &autoscaling.RecordLifecycleActionHeartbeatInput{
			AutoScalingGroupName: aws.String("short"), LifecycleHookName: aws.String("h"), LifecycleActionToken: aws.String(act.LifecycleActionToken),
		})
	}
	if v, _ := a.Action(act.LifecycleActionToken); !v.Expired || v.Result != "CONTINUE" {
		t.Fatalf("global timeout: %+v", v)
	}
}

func TestTerminateHookAndWarmPool(t *testing.T) {
	c := newEC2Clock()
	a, e := newFakeASG(c)
	id, raw, _ := a.Launch("web", "us-east-1a")
	_ = asgComplete(a, asgDecode(t, raw, events.DetailTypeLaunch), asgDecode(t, raw, events.DetailTypeLaunch).LifecycleActionToken, "CONTINUE")

	raw, err := a.Terminate("web", id, "")
	if err != nil {
		t.Fatal(err)
	}
	act := asgDecode(t, raw, events.DetailTypeTerminate)
	if act.LifecycleTransition != events.TransitionTerminating || act.Destination != "EC2" {
		t.Fatalf("terminate detail %+v", act)
	}
	if e.InstanceState(id) != types.InstanceStateNameRunning {
		t.Fatal("instance terminated before the hook completed")
	}
	if err := asgComplete(a, act, act.LifecycleActionToken, "CONTINUE"); err != nil {
		t.Fatal(err)
	}
	c.Advance(5 * time.Second)
	if e.InstanceState(id) != types.InstanceStateNameTerminated {
		t.Fatalf("instance %s after terminate CONTINUE", e.InstanceState(id))
	}

	// Back into the warm pool: the instance is not terminated.
	id2, raw, _ := a.Launch("web", "us-east-1a")
	_ = asgComplete(a, asgDecode(t, raw, events.DetailTypeLaunch), asgDecode(t, raw, events.DetailTypeLaunch).LifecycleActionToken, "CONTINUE")
	raw, _ = a.Terminate("web", id2, events.LocationWarmPool)
	act = asgDecode(t, raw, events.DetailTypeTerminate)
	if !act.IntoWarmPool() {
		t.Fatalf("destination %q", act.Destination)
	}
	_ = asgComplete(a, act, act.LifecycleActionToken, "CONTINUE")
	c.Advance(time.Minute)
	if e.InstanceState(id2) != types.InstanceStateNameRunning {
		t.Fatalf("warm-pool instance %s", e.InstanceState(id2))
	}
	out, err := a.DescribeAutoScalingGroups(fakeCtx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web", "nope"}})
	if err != nil || len(out.AutoScalingGroups) != 1 || aws.ToInt32(out.AutoScalingGroups[0].MaxSize) != 10 ||
		len(out.AutoScalingGroups[0].AvailabilityZones) != 2 {
		t.Fatalf("describe: %+v %v", out, err)
	}
}

// TestWarmPoolLifecycle plays a warm pool as AWS does: a launch into the
// pool waits in Warmed:Pending:Wait (Origin EC2, Destination WarmPool),
// CONTINUE stops the instance (Warmed:Stopped) with its volume attached, a
// scale-out draws on the pool (Origin WarmPool, Destination
// AutoScalingGroup: started, Pending:Wait, then InService); an abandoned
// warm launch terminates the instance, a warmed instance terminates through
// Warmed:Terminating:Wait, and a scale-in with reuse goes back warmed.
func TestWarmPoolLifecycle(t *testing.T) {
	c := newEC2Clock()
	a, e := newFakeASG(c)
	if _, _, err := a.LaunchIntoWarmPool("web", "us-east-1a"); err == nil {
		t.Fatal("a launch into the warm pool of a group without one succeeded")
	}
	ec2WantCode(t, a.PutWarmPool("web", awsfake.WarmPoolSpec{PoolState: "Frozen"}), "ValidationError")
	ec2WantCode(t, a.PutWarmPool("nope", awsfake.WarmPoolSpec{}), "ValidationError")
	if err := a.PutWarmPool("web", awsfake.WarmPoolSpec{MinSize: 2}); err != nil {
		t.Fatal(err)
	}

	id, raw, err := a.LaunchIntoWarmPool("web", "us-east-1a")
	if err != nil {
		t.Fatal(err)
	}
	act := asgDecode(t, raw, events.DetailTypeLaunch)
	if act.EC2InstanceID != id || act.LifecycleTransition != events.TransitionLaunching || act.Origin != "EC2" || act.Destination != "WarmPool" || !act.IntoWarmPool() {
		t.Fatalf("launch into the warm pool: detail %+v", act)
	}
	if st := a.WarmPoolInstances("web")[id]; st != asgtypes.LifecycleStateWarmedPendingWait {
		t.Fatalf("warm-pool state %q", st)
	}
	if _, in := a.GroupInstances("web")[id]; in {
		t.Fatal("an instance being warmed is listed in the group")
	}
	if _, err := a.LeaveWarmPool("web", id); err == nil {
		t.Fatal("an instance left the warm pool before it was warmed")
	}
	// The lifecycle Lambda attaches a volume meanwhile.
	vol := e.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1a", SizeGiB: 1})
	if _, err := e.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &id, Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Second)
	if err := asgComplete(a, act, act.LifecycleActionToken, "CONTINUE"); err != nil {
		t.Fatal(err)
	}
	c.Advance(5 * time.Second)
	if st := a.WarmPoolInstances("web")[id]; st != asgtypes.LifecycleStateWarmedStopped {
		t.Fatalf("warm-pool state after CONTINUE %q", st)
	}
	if e.InstanceState(id) != types.InstanceStateNameStopped {
		t.Fatalf("warmed instance is %s, not stopped", e.InstanceState(id))
	}
	if v := ec2VolumeState(t, e, vol); v.State != types.VolumeStateInUse {
		t.Fatalf("the warmed instance's volume is %s", v.State)
	}
	wp, err := a.DescribeWarmPool(fakeCtx, &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: aws.String("web")})
	if err != nil || len(wp.Instances) != 1 || wp.Instances[0].LifecycleState != asgtypes.LifecycleStateWarmedStopped ||
		wp.WarmPoolConfiguration.PoolState != asgtypes.WarmPoolStateStopped || aws.ToInt32(wp.WarmPoolConfiguration.MinSize) != 2 {
		t.Fatalf("DescribeWarmPool: %+v %v", wp, err)
	}
	groups, err := a.DescribeAutoScalingGroups(fakeCtx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web"}})
	if err != nil || len(groups.AutoScalingGroups[0].Instances) != 0 || aws.ToInt32(groups.AutoScalingGroups[0].WarmPoolSize) != 1 ||
		groups.AutoScalingGroups[0].WarmPoolConfiguration == nil {
		t.Fatalf("group description: %+v %v", groups, err)
	}

	// Scale out from the warm pool.
	raw, err = a.LeaveWarmPool("web", id)
	if err != nil {
		t.Fatal(err)
	}
	act = asgDecode(t, raw, events.DetailTypeLaunch)
	if act.Origin != "WarmPool" || act.Destination != "AutoScalingGroup" || !act.FromWarmPool() || act.EC2InstanceID != id {
		t.Fatalf("launch from the warm pool: detail %+v", act)
	}
	c.Advance(time.Second)
	if e.InstanceState(id) != types.InstanceStateNameRunning {
		t.Fatalf("instance leaving the warm pool is %s", e.InstanceState(id))
	}
	if st := a.GroupInstances("web")[id]; st != asgtypes.LifecycleStatePendingWait {
		t.Fatalf("group state %q", st)
	}
	if len(a.WarmPoolInstances("web")) != 0 {
		t.Fatal("the instance is still listed in the warm pool")
	}
	if v := ec2VolumeState(t, e, vol); v.State != types.VolumeStateInUse {
		t.Fatalf("the volume is %s after the start", v.State)
	}
	if err := asgComplete(a, act, act.LifecycleActionToken, "CONTINUE"); err != nil {
		t.Fatal(err)
	}
	if st := a.GroupInstances("web")[id]; st != asgtypes.LifecycleStateInService {
		t.Fatalf("group state after CONTINUE %q", st)
	}

	// Scale in with reuse: back into the pool, warmed and stopped.
	raw, _ = a.Terminate("web", id, events.LocationWarmPool)
	act = asgDecode(t, raw, events.DetailTypeTerminate)
	if act.Origin != "AutoScalingGroup" || act.Destination != "WarmPool" {
		t.Fatalf("scale-in into the warm pool: detail %+v", act)
	}
	_ = asgComplete(a, act, act.LifecycleActionToken, "CONTINUE")
	c.Advance(5 * time.Second)
	if st := a.WarmPoolInstances("web")[id]; st != asgtypes.LifecycleStateWarmedStopped || e.InstanceState(id) != types.InstanceStateNameStopped {
		t.Fatalf("after scale-in with reuse: %q, %s", st, e.InstanceState(id))
	}

	// A warmed instance terminated: Warmed:Terminating:Wait, then gone.
	raw, err = a.Terminate("web", id, "")
	if err != nil {
		t.Fatal(err)
	}
	act = asgDecode(t, raw, events.DetailTypeTerminate)
	if act.Origin != "WarmPool" || act.Destination != "EC2" {
		t.Fatalf("warm-pool terminate: detail %+v", act)
	}
	if st := a.WarmPoolInstances("web")[id]; st != asgtypes.LifecycleStateWarmedTerminatingWait {
		t.Fatalf("warm-pool terminate state %q", st)
	}
	_ = asgComplete(a, act, act.LifecycleActionToken, "CONTINUE")
	c.Advance(5 * time.Second)
	if _, in := a.WarmPoolInstances("web")[id]; in || e.InstanceState(id) != types.InstanceStateNameTerminated {
		t.Fatalf("warmed instance after terminate: in pool %v, %s", in, e.InstanceState(id))
	}

	// An abandoned warm launch terminates the instance.
	id2, raw, _ := a.LaunchIntoWarmPool("web", "us-east-1b")
	act = asgDecode(t, raw, events.DetailTypeLaunch)
	_ = asgComplete(a, act, act.LifecycleActionToken, "ABANDON")
	c.Advance(5 * time.Second)
	if _, in := a.WarmPoolInstances("web")[id2]; in || e.InstanceState(id2) != types.InstanceStateNameTerminated {
		t.Fatalf("abandoned warm launch: in pool %v, %s", in, e.InstanceState(id2))
	}

	// A Running pool keeps warmed instances running.
	if err := a.PutWarmPool("web", awsfake.WarmPoolSpec{PoolState: asgtypes.WarmPoolStateRunning}); err != nil {
		t.Fatal(err)
	}
	id3, raw, _ := a.LaunchIntoWarmPool("web", "us-east-1b")
	act = asgDecode(t, raw, events.DetailTypeLaunch)
	_ = asgComplete(a, act, act.LifecycleActionToken, "CONTINUE")
	c.Advance(5 * time.Second)
	if st := a.WarmPoolInstances("web")[id3]; st != asgtypes.LifecycleStateWarmedRunning || e.InstanceState(id3) != types.InstanceStateNameRunning {
		t.Fatalf("Running pool: %q, %s", st, e.InstanceState(id3))
	}
}
