package pool_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

func completeHook(a *awsfake.AutoScaling, act awsfake.ActionView, result string) error {
	_, err := a.CompleteLifecycleAction(bg, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName: aws.String(act.Group), LifecycleHookName: aws.String(act.Hook),
		LifecycleActionToken: aws.String(act.Token), LifecycleActionResult: aws.String(result),
	})
	return err
}

// checkAttached asserts that instance id holds exactly one volume, in-use,
// in its zone, and that EC2 shows it attached there.
func checkAttached(t *testing.T, e *env, id string) store.Volume {
	t.Helper()
	held := e.held(id)
	if len(held) != 1 {
		t.Fatalf("instance %s holds %d volumes: %+v", id, len(held), held)
	}
	v := held[0]
	if v.State != store.VolumeInUse || v.AZ != e.ec2.InstanceAZ(id) || v.Device == "" {
		t.Fatalf("instance %s (%s) holds %+v", id, e.ec2.InstanceAZ(id), v)
	}
	ev, ok := e.ec2.Volume(v.VolumeID)
	if !ok || ev.Instance != id || ev.Attachment != types.VolumeAttachmentStateAttached || ev.Device != v.Device {
		t.Fatalf("EC2 view of %s: %+v", v.VolumeID, ev)
	}
	if in := e.instance(id); in.VolumeID != v.VolumeID {
		t.Fatalf("instance record binds %q, not %s", in.VolumeID, v.VolumeID)
	}
	return v
}

func TestLaunchClaimsAnIdleVolumeInItsZone(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{CreateDelay: 3 * time.Millisecond, AttachDelay: 3 * time.Millisecond})
	e.seedIdle()
	before := map[string]bool{}
	for _, v := range e.volumes() {
		before[v.VolumeID] = true
	}
	id, raw := e.launch("us-east-1b")
	e.mustHandle(raw)
	v := checkAttached(t, e, id)
	if !before[v.VolumeID] || v.Device != "/dev/sdf" {
		t.Fatalf("got %s at %s; want one of the idle volumes at /dev/sdf", v.VolumeID, v.Device)
	}
	if act := e.action(raw); act.Result != "" {
		t.Fatalf("the launch completed the hook (%s); the agent must", act.Result)
	}
	if got := e.idle(); got["us-east-1b"] != 1 || got["us-east-1a"] != 2 {
		t.Fatalf("idle after claim: %v", got)
	}
	if len(e.metrics.lines("")) == 0 || !strings.Contains(e.metrics.String(), `"ClaimLatency"`) || !strings.Contains(e.metrics.String(), `"AttachLatency"`) {
		t.Fatalf("no claim/attach latency metrics:\n%s", e.metrics.String())
	}
	// Delivered again: nothing changes.
	e.mustHandle(raw)
	if again := checkAttached(t, e, id); again.VolumeID != v.VolumeID || again.Rev != v.Rev {
		t.Fatalf("redelivery changed the volume: %+v → %+v", v, again)
	}
}

func TestLaunchCreatesOnDemandFromNewestSnapshot(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{CreateDelay: 5 * time.Millisecond}, withConfig(func(c *pool.Config) {
		c.IdlePerAZ = 0
		c.KMSKeyID = "arn:aws:kms:us-east-1:123456789012:key/abc"
		c.IOPS, c.Throughput, c.InitRate = 4000, 250, 200
		c.SourceSnapshot = "snap-0000000000000aaaa"
	}))
	old := e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 10})
	newest := e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 10})
	pending := e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 10})
	for _, s := range []store.Snapshot{
		{Pool: "web", SnapshotID: old, State: store.SnapshotCompleted, Seq: 40},
		{Pool: "web", SnapshotID: newest, State: store.SnapshotCompleted, Seq: 90},
		{Pool: "web", SnapshotID: pending, State: store.SnapshotPending, Seq: 120},
	} {
		if _, err := e.store.PutSnapshot(bg, s); err != nil {
			t.Fatal(err)
		}
	}
	id, raw := e.launch("us-east-1c")
	e.mustHandle(raw)
	v := checkAttached(t, e, id)
	ev, _ := e.ec2.Volume(v.VolumeID)
	if v.Seq != 90 || v.SnapshotID != newest || ev.SnapshotID != newest {
		t.Fatalf("volume from %s at seq %d (EC2 %s); want %s at 90", v.SnapshotID, v.Seq, ev.SnapshotID, newest)
	}
	if !ev.Encrypted || ev.KmsKeyID != e.cfg.KMSKeyID || ev.IOPS != 4000 || ev.Throughput != 250 || ev.InitRate != 200 ||
		ev.SizeGiB != 10 || ev.Type != "gp3" || ev.Tags[events.TagPool] != "web" || ev.Tags["Name"] != "volsd-web" {
		t.Fatalf("created volume %+v", ev)
	}
	if !strings.Contains(e.metrics.String(), `"PoolMiss":1`) {
		t.Fatalf("no PoolMiss metric:\n%s", e.metrics.String())
	}
}

func TestLaunchWithoutSnapshotsUsesSourceOrBlank(t *testing.T) {
	for _, src := range []string{"", "source"} {
		t.Run("source="+src, func(t *testing.T) {
			e := newEnv(t, awsfake.EC2Config{}, withConfig(func(c *pool.Config) { c.IdlePerAZ = 0 }))
			if src != "" {
				e.cfg.SourceSnapshot = e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 8})
				e.cfg.InitRate = 150
				e.rebuild()
			}
			id, raw := e.launch("us-east-1a")
			e.mustHandle(raw)
			v := checkAttached(t, e, id)
			ev, _ := e.ec2.Volume(v.VolumeID)
			if v.Seq != 0 || v.SnapshotID != e.cfg.SourceSnapshot || ev.SnapshotID != e.cfg.SourceSnapshot {
				t.Fatalf("volume %+v from %q", v, ev.SnapshotID)
			}
			if src == "" && ev.InitRate != 0 || src != "" && ev.InitRate != 150 {
				t.Fatalf("init rate %d", ev.InitRate)
			}
		})
	}
}

// Duplicate deliveries of one launch, concurrent, with and without idle
// volumes, end with exactly one volume for the instance and no leak.
func TestLaunchConcurrentDuplicatesGiveOneVolume(t *testing.T) {
	for _, idle := range []int{0, 2} {
		t.Run(map[int]string{0: "on-demand", 2: "claim"}[idle], func(t *testing.T) {
			e := newEnv(t, awsfake.EC2Config{CreateDelay: 5 * time.Millisecond, AttachDelay: 5 * time.Millisecond},
				withConfig(func(c *pool.Config) { c.IdlePerAZ = idle }),
				withTiming(func(tm *pool.Timing) { tm.OrphanGrace = 0 }))
			if idle > 0 {
				e.seedIdle()
			}
			id, raw := e.launch("us-east-1a")
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() { defer wg.Done(); errs <- e.handle(raw) }()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("delivery: %v", err)
				}
			}
			e.mustHandle(raw) // a late retry settles anything left mid-way
			v := checkAttached(t, e, id)
			attached := 0
			for _, ev := range e.ec2.Volumes() {
				if ev.Instance == id {
					attached++
				}
			}
			if attached != 1 {
				t.Fatalf("%d volumes attached to %s", attached, id)
			}
			// Whatever extra volumes the races made are pool volumes now.
			e.reconcile()
			e.reconcile()
			total := len(e.ec2.Volumes())
			if want := 1 + 3*idle; total != want || len(e.volumes()) != want {
				t.Fatalf("%d volumes in EC2, %d records; want %d (one in use + idle targets)", total, len(e.volumes()), want)
			}
			_ = v
		})
	}
}

func TestLaunchMovesOnWhenDeviceNameInUse(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	// The block device mappings did not show it, but /dev/sdf is taken.
	e.ec2.FailNext("AttachVolume", awsfake.EC2Error("InvalidParameterValue", "Invalid value '/dev/sdf' for unixDevice. Attachment point /dev/sdf is already in use"))
	e.mustHandle(raw)
	if v := checkAttached(t, e, id); v.Device != "/dev/sdg" {
		t.Fatalf("device %s, want /dev/sdg", v.Device)
	}
	// An instance whose mappings show sdf..sdh taken gets /dev/sdi.
	inst := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1b", OtherDevices: []string{"/dev/sdf", "/dev/xvdg", "sdh"}})
	raw2, err := e.asg.LaunchExisting(e.cfg.Group, inst, "us-east-1b", "")
	if err != nil {
		t.Fatal(err)
	}
	e.mustHandle(raw2)
	if v := checkAttached(t, e, inst); v.Device != "/dev/sdi" {
		t.Fatalf("device %s, want /dev/sdi", v.Device)
	}
}

func TestLaunchDetachesStuckAttachmentAndRetries(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{AttachDelay: time.Millisecond, DetachDelay: time.Millisecond},
		withConfig(func(c *pool.Config) { c.IdlePerAZ = 1 }))
	e.seedIdle()
	var vol string
	for _, v := range e.volumes() {
		if v.AZ == "us-east-1a" {
			vol = v.VolumeID
		}
	}
	e.ec2.StickAttachments(vol, true)
	id, raw := e.launch("us-east-1a")
	done := make(chan error, 1)
	go func() { done <- e.handle(raw) }()
	for e.ec2.Calls("DetachVolume") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	e.ec2.StickAttachments(vol, false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	v := checkAttached(t, e, id)
	if v.VolumeID != vol || v.Device != "/dev/sdg" {
		t.Fatalf("got %s at %s; want %s re-attached at the next device", v.VolumeID, v.Device, vol)
	}
	if len(e.logs.lines("attachment stuck")) == 0 {
		t.Fatal("no log line about the stuck attachment")
	}
}

func TestLaunchAbandonsWhenAttachmentStaysStuck(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{AttachDelay: time.Millisecond, DetachDelay: time.Millisecond},
		withConfig(func(c *pool.Config) { c.IdlePerAZ = 1 }))
	e.seedIdle()
	for _, v := range e.volumes() {
		e.ec2.StickAttachments(v.VolumeID, true)
	}
	id, raw := e.launch("us-east-1a")
	e.mustHandle(raw) // unrecoverable: no retry can help, so no error
	act := e.action(raw)
	if act.Result != "ABANDON" || !act.Completed {
		t.Fatalf("action %+v, want completed ABANDON", act)
	}
	in := e.instance(id)
	if !strings.Contains(in.LastError, "stuck attaching") || in.VolumeID != "" {
		t.Fatalf("instance record %+v", in)
	}
	if len(e.held(id)) != 0 {
		t.Fatalf("abandoned instance still holds %+v", e.held(id))
	}
	for _, ev := range e.ec2.Volumes() {
		if ev.Instance == id && ev.Attachment != types.VolumeAttachmentStateDetaching {
			t.Fatalf("volume %s still attached to the abandoned instance", ev.ID)
		}
	}
}

func TestLaunchInstanceTerminatedMidAttach(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{AttachDelay: time.Hour, DetachDelay: time.Millisecond, TerminateDelay: time.Millisecond})
	e.seedIdle()
	id, raw := e.launch("us-east-1c")
	done := make(chan error, 1)
	go func() { done <- e.handle(raw) }()
	for e.ec2.Calls("AttachVolume") == 0 {
		time.Sleep(2 * time.Millisecond)
	}
	e.ec2.TerminateInstance(id)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(e.held(id)) != 0 {
		t.Fatalf("terminated instance holds %+v", e.held(id))
	}
	if in := e.instance(id); in.VolumeID != "" {
		t.Fatalf("binding left: %+v", in)
	}
	for _, ev := range e.ec2.Volumes() {
		if ev.Instance == id {
			t.Fatalf("volume %s attached to a terminated instance", ev.ID)
		}
	}
	if len(e.logs.lines("launch stopped")) == 0 {
		t.Fatalf("no log line about the stop:\n%s", e.logs.String())
	}
	// Reconcile tops the zone up again.
	e.reconcile()
	if got := e.idle()["us-east-1c"]; got != 2 {
		t.Fatalf("idle in us-east-1c after reconcile: %d", got)
	}
}

func TestLaunchUnrecoverableCreateAbandons(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{}, withConfig(func(c *pool.Config) { c.IdlePerAZ = 0 }))
	id, raw := e.launch("us-east-1a")
	e.ec2.FailNext("CreateVolume", awsfake.EC2Error("InvalidKMSKey.InvalidState", "The KMS key provided is in an incorrect state"))
	e.mustHandle(raw)
	if act := e.action(raw); act.Result != "ABANDON" {
		t.Fatalf("action %+v", act)
	}
	if in := e.instance(id); !strings.Contains(in.LastError, "InvalidKMSKey.InvalidState") {
		t.Fatalf("instance error %q", in.LastError)
	}
}

func TestLaunchRetryableFailureReturnsError(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	e.ec2.SetFaults(func(op string) error {
		if op == "AttachVolume" {
			return awsfake.EC2Throttle()
		}
		return nil
	}, nil)
	err := e.handle(raw)
	if err == nil || !strings.Contains(err.Error(), "RequestLimitExceeded") {
		t.Fatalf("handle under throttling: %v", err)
	}
	if act := e.action(raw); act.Result != "" {
		t.Fatalf("a retryable failure completed the hook: %+v", act)
	}
	e.ec2.SetFaults(nil, nil)
	e.mustHandle(raw) // the retry resumes from the table
	checkAttached(t, e, id)
}

func TestLaunchFromWarmPoolKeepsItsVolume(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	e.mustHandle(raw)
	v := checkAttached(t, e, id)
	e.agentUp(raw, 0)
	// Scale-in back into the warm pool, then out again.
	traw, err := e.asg.Terminate(e.cfg.Group, id, "WarmPool")
	if err != nil {
		t.Fatal(err)
	}
	e.mustHandle(traw)
	if act := e.action(traw); act.Result != "CONTINUE" {
		t.Fatalf("warm-pool terminate action %+v", act)
	}
	e.ec2.StopInstance(id)
	if again := checkAttached(t, e, id); again.VolumeID != v.VolumeID {
		t.Fatal("volume changed going into the warm pool")
	}
	e.ec2.StartInstance(id)
	raw2, err := e.asg.LaunchExisting(e.cfg.Group, id, "us-east-1a", "WarmPool")
	if err != nil {
		t.Fatal(err)
	}
	e.mustHandle(raw2)
	if again := checkAttached(t, e, id); again.VolumeID != v.VolumeID || again.Rev != v.Rev {
		t.Fatalf("volume changed leaving the warm pool: %+v → %+v", v, again)
	}
}

// TestWarmPoolInstanceWaitsWarmed: an instance launched into the warm pool
// gets its volume and is recorded warmed (pushes do not wait for a stopped
// instance); leaving the pool it is launching again with the same volume;
// a scale-in back into the pool records it warmed again.
func TestWarmPoolInstanceWaitsWarmed(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	if err := e.asg.PutWarmPool(e.cfg.Group, awsfake.WarmPoolSpec{}); err != nil {
		t.Fatal(err)
	}
	id, raw, err := e.asg.LaunchIntoWarmPool(e.cfg.Group, "us-east-1a")
	if err != nil {
		t.Fatal(err)
	}
	e.mustHandle(raw)
	v := checkAttached(t, e, id)
	if in := e.instance(id); in.State != store.InstanceWarmed {
		t.Fatalf("instance going into the warm pool is recorded %q", in.State)
	}
	e.mustHandle(raw) // a duplicate event changes nothing
	if in := e.instance(id); in.State != store.InstanceWarmed {
		t.Fatalf("after a duplicate event: %q", in.State)
	}
	if err := completeHook(e.asg, e.action(raw), "CONTINUE"); err != nil { // the agent caught up
		t.Fatal(err)
	}
	raw2, err := e.asg.LeaveWarmPool(e.cfg.Group, id)
	if err != nil {
		t.Fatal(err)
	}
	e.mustHandle(raw2)
	if again := checkAttached(t, e, id); again.VolumeID != v.VolumeID {
		t.Fatalf("volume changed leaving the warm pool: %s → %s", v.VolumeID, again.VolumeID)
	}
	if in := e.instance(id); in.State != store.InstanceLaunching {
		t.Fatalf("instance leaving the warm pool is recorded %q", in.State)
	}
	e.agentUp(raw2, 0)
	traw, err := e.asg.Terminate(e.cfg.Group, id, "WarmPool")
	if err != nil {
		t.Fatal(err)
	}
	e.mustHandle(traw)
	if in := e.instance(id); in.State != store.InstanceWarmed || in.VolumeID != v.VolumeID {
		t.Fatalf("instance back in the warm pool: %+v", in)
	}
}

func TestHandlerIgnoresWhatIsNotItsJob(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	cases := []struct {
		name, event, log string
	}{
		{"test notification", `{"AccountId":"1","Event":"autoscaling:TEST_NOTIFICATION","AutoScalingGroupName":"web-asg"}`, "TEST_NOTIFICATION"},
		{"test notification in an envelope", `{"version":"0","detail-type":"EC2 Instance-launch Lifecycle Action","source":"aws.autoscaling","detail":{"Event":"autoscaling:TEST_NOTIFICATION"}}`, "TEST_NOTIFICATION"},
		{"other group", envelope("EC2 Instance-launch Lifecycle Action", "other-asg", "autoscaling:EC2_INSTANCE_LAUNCHING"), "another group"},
		{"schedule", `{"version":"0","detail-type":"Scheduled Event","source":"aws.events","detail":{}}`, "ignoring event"},
		{"not JSON", `{"version":`, "not an EventBridge event"},
		{"bad detail", `{"version":"0","detail-type":"EC2 Instance-launch Lifecycle Action","detail":[1]}`, "malformed lifecycle event"},
		{"bad instance id", strings.Replace(envelope("EC2 Instance-launch Lifecycle Action", "web-asg", "autoscaling:EC2_INSTANCE_LAUNCHING"), "i-0123456789abcdef0", "i-XYZ", 1), "malformed lifecycle event"},
		{"transition mismatch", envelope("EC2 Instance-launch Lifecycle Action", "web-asg", "autoscaling:EC2_INSTANCE_TERMINATING"), "does not match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.handle(json.RawMessage(tc.event)); err != nil {
				t.Fatalf("handle: %v", err)
			}
			if len(e.logs.lines(tc.log)) == 0 {
				t.Fatalf("no log line with %q:\n%s", tc.log, e.logs.String())
			}
		})
	}
	if n := e.ec2.Calls("DescribeInstances") + e.ec2.Calls("CreateVolume"); n != 0 {
		t.Fatalf("ignored events made %d EC2 calls", n)
	}
}

func envelope(detailType, group, transition string) string {
	b, _ := json.Marshal(map[string]any{
		"version": "0", "id": "e-1", "detail-type": detailType, "source": "aws.autoscaling", "account": "123456789012",
		"time": "2026-11-21T10:00:00Z", "region": "us-east-1", "resources": []string{},
		"detail": map[string]string{
			"LifecycleActionToken": "t-1", "AutoScalingGroupName": group, "LifecycleHookName": "volsd-launch",
			"EC2InstanceId": "i-0123456789abcdef0", "LifecycleTransition": transition,
		},
	})
	return string(b)
}

func TestLaunchWaitsForAPendingInstance(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	inst := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1c", PendingFor: 80 * time.Millisecond})
	raw, err := e.asg.LaunchExisting(e.cfg.Group, inst, "us-east-1c", "")
	if err != nil {
		t.Fatal(err)
	}
	// On a loaded machine the handler may reach AttachVolume after the 80 ms:
	// make sure its first attach meets the error EC2 gives a pending instance.
	e.ec2.FailNext("AttachVolume", awsfake.EC2Error("IncorrectInstanceState", "The instance '%s' is not in a valid state for this operation.", inst))
	e.mustHandle(raw)
	checkAttached(t, e, inst)
	if e.ec2.Calls("AttachVolume") < 2 {
		t.Fatalf("AttachVolume called %d times; the first should have met a pending instance", e.ec2.Calls("AttachVolume"))
	}
}

// TestLaunchDuplicatesUnderThrottledAttachDoNotAbandon: duplicate deliveries
// racing while AttachVolume is throttled converge on one attached volume and
// never abandon the hook. (The e2e fault story once caught two deliveries
// fencing each other's record after the attach until both gave up; this
// fake's timing does not reproduce that interleaving reliably, so this test
// guards the outcome, not that exact schedule.)
func TestLaunchDuplicatesUnderThrottledAttachDoNotAbandon(t *testing.T) {
	for run := 0; run < 5; run++ {
		e := newEnv(t, awsfake.EC2Config{AttachDelay: 100 * time.Millisecond})
		e.seedIdle()
		id, raw := e.launch("us-east-1a")
		e.ec2.FailNext("AttachVolume", awsfake.EC2Throttle())
		e.ec2.FailNext("AttachVolume", awsfake.EC2Throttle())
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); _ = e.handle(raw) }()
		}
		wg.Wait()
		for _, a := range e.asg.Actions() {
			if a.Instance == id && a.Result == "ABANDON" {
				t.Fatalf("run %d: launch of %s abandoned although its volume could be attached", run, id)
			}
		}
		checkAttached(t, e, id)
	}
}

// TestAttachWaitOutlastsThrottling: while the attachment completes, EC2
// throttles Describe calls (the account's bucket is nearly empty, as in a
// mass scale-out). The wait does not burn its retries on a throttled
// look: it looks again later, and the launch ends attached instead of
// failing.
func TestAttachWaitOutlastsThrottling(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{AttachDelay: 1500 * time.Millisecond})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	// Enough for the launch's reads before the attach; then one token
	// every 2 s.
	e.ec2.SetDescribeLimit(awsfake.RequestLimit{Burst: 4, Refill: 0.5})
	e.mustHandle(raw)
	checkAttached(t, e, id)
	if e.ec2.Throttled("DescribeVolumes") == 0 {
		t.Fatal("no DescribeVolumes call was throttled; the test did not exercise the wait under throttling")
	}
}

// TestLaunchOutlastsAThrottledDescribeInstances: in a mass scale-out EC2's
// Describe bucket stays empty for longer than the API backoff's 8 tries.
// The launch's DescribeInstances waits for it (within the invocation's
// deadline) instead of failing the invocation, and the launch ends
// attached. Before, the read gave up after 8 throttled tries and the
// invocation failed (Lambda retries it minutes later).
func TestLaunchOutlastsAThrottledDescribeInstances(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	for i := 0; i < 3*e.timing.API.Attempts; i++ {
		e.ec2.FailNext("DescribeInstances", awsfake.EC2Throttle())
	}
	before := e.ec2.Calls("DescribeInstances")
	if err := e.handle(raw); err != nil {
		t.Fatalf("a throttled DescribeInstances failed the launch: %v", err)
	}
	checkAttached(t, e, id)
	if n := e.ec2.Calls("DescribeInstances") - before; n <= 3*e.timing.API.Attempts {
		t.Fatalf("%d DescribeInstances calls; the throttles were not exercised", n)
	}
}
