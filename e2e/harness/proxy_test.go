package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/lambdaruntime"
	"github.com/volsd/volsd/internal/testenv"
)

// fakeFleet is a hand-written ManagedFleet and InstanceDevices.
type fakeFleet struct {
	mu    sync.Mutex
	insts map[string]*fakeInstance
	trees map[string]DeviceTree
}

type fakeInstance struct {
	mu    sync.Mutex
	calls [][]string
	out   CommandOutput
}

func (f *fakeInstance) RunAgent(_ context.Context, args []string, _ time.Duration) CommandOutput {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, args)
	return f.out
}

func (f *fakeInstance) Calls() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string{}, f.calls...)
}

func (f *fakeFleet) Managed(id string) (ManagedInstance, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.insts[id]
	return in, ok
}

func (f *fakeFleet) ManagedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.insts))
}

func (f *fakeFleet) DeviceTree(id string) (DeviceTree, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.trees[id]
	return t, ok
}

type proxyEnv struct {
	proxy *Proxy
	life  *Lifecycle
	ebs   *EBS
	rc    *RunCommand
	disks *Disks
	fleet *fakeFleet
	// moto directly
	ec2 *ec2.Client
	asg *autoscaling.Client
	// through the proxy
	cfg aws.Config

	mu     sync.Mutex
	events []events.CommandStatus
}

func newProxyEnv(t *testing.T) *proxyEnv {
	t.Helper()
	moto := testenv.Moto(t)
	motoURL := testenv.Endpoint(t, testenv.EnvMoto)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := NewProxy(motoURL, log)
	if err != nil {
		t.Fatal(err)
	}
	e := &proxyEnv{proxy: p, fleet: &fakeFleet{insts: map[string]*fakeInstance{}, trees: map[string]DeviceTree{}},
		ec2: ec2.NewFromConfig(moto), asg: autoscaling.NewFromConfig(moto)}
	e.disks, err = NewDisks(filepath.Join(t.TempDir(), "ebs"))
	if err != nil {
		t.Fatal(err)
	}
	e.life = NewLifecycle(p, e.asg, log)
	e.ebs = NewEBS(p, e.ec2, e.disks, e.fleet, log)
	docs, err := LoadDocuments()
	if err != nil {
		t.Fatal(err)
	}
	e.rc = NewRunCommand(p, e.fleet, e.ec2, docs, Account, Region, log)
	e.rc.SSM.OnEvent = func(raw []byte) {
		var d events.CommandStatus
		if _, err := events.DecodeDetail(raw, events.DetailTypeSSMStatus, &d); err != nil {
			t.Errorf("status event %s: %v", raw, err)
		}
		e.mu.Lock()
		e.events = append(e.events, d)
		e.mu.Unlock()
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.rc.Wait()
		e.ebs.Close()
		_ = e.disks.Close()
		_ = p.Close()
	})
	e.cfg = testenv.Config(t, p.URL())
	e.cfg.RetryMaxAttempts = 1 // see the errors themselves
	return e
}

// runInstance launches a moto instance in az with tags.
func (e *proxyEnv) runInstance(t *testing.T, az string, tags map[string]string) string {
	t.Helper()
	var ts []ec2types.Tag
	for k, v := range tags {
		ts = append(ts, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	in := &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12c6146b"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		Placement: &ec2types.Placement{AvailabilityZone: aws.String(az)},
	}
	if len(ts) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: ts}}
	}
	out, err := e.ec2.RunInstances(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func (e *proxyEnv) statusEvents() []events.CommandStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]events.CommandStatus{}, e.events...)
}

func wantCode(t *testing.T, err error, code, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s", code)
	}
	if awserr.Code(err) != code || !strings.Contains(awserr.Message(err), msgPart) {
		t.Fatalf("error %v; want %s containing %q", err, code, msgPart)
	}
}

func TestProxyLifecycleActions(t *testing.T) {
	e := newProxyEnv(t)
	ctx := context.Background()
	group := testenv.UniqueName(t, "asg")
	lt := testenv.UniqueName(t, "lt")
	if _, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: &lt,
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-12c6146b")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &group, MinSize: aws.Int32(0), MaxSize: aws.Int32(5), DesiredCapacity: aws.Int32(0),
		AvailabilityZones: []string{"us-east-1a"},
		LaunchTemplate:    &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: &lt},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.asg.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{
		AutoScalingGroupName: &group, LifecycleHookName: aws.String("volsd-launch"),
		LifecycleTransition: aws.String(events.TransitionLaunching), HeartbeatTimeout: aws.Int32(2), DefaultResult: aws.String("ABANDON"),
	}); err != nil {
		t.Fatal(err)
	}
	i1 := e.runInstance(t, "us-east-1a", nil)
	i2 := e.runInstance(t, "us-east-1a", nil)
	if _, err := e.asg.AttachInstances(ctx, &autoscaling.AttachInstancesInput{AutoScalingGroupName: &group, InstanceIds: []string{i1, i2}}); err != nil {
		t.Fatal(err)
	}
	a1, err := e.life.Start(ctx, group, i1, "us-east-1a", events.TransitionLaunching)
	if err != nil || a1 == nil {
		t.Fatalf("start action: %v, %v", a1, err)
	}
	a2, err := e.life.Start(ctx, group, i2, "us-east-1a", events.TransitionLaunching)
	if err != nil {
		t.Fatal(err)
	}
	asg := autoscaling.NewFromConfig(e.cfg)

	d, err := asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{group}})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range d.AutoScalingGroups[0].Instances {
		if in.LifecycleState != asgtypes.LifecycleStatePendingWait {
			t.Errorf("%s is %s while its launch hook is open; want Pending:Wait", aws.ToString(in.InstanceId), in.LifecycleState)
		}
	}

	complete := func(inst, token, result string) error {
		in := &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: &group, LifecycleHookName: aws.String("volsd-launch"),
			LifecycleActionResult: aws.String(result)}
		if inst != "" {
			in.InstanceId = &inst
		}
		if token != "" {
			in.LifecycleActionToken = &token
		}
		_, err := asg.CompleteLifecycleAction(ctx, in)
		return err
	}
	wantCode(t, complete(i1, "", "MAYBE"), "ValidationError", "CONTINUE or ABANDON")
	wantCode(t, complete(i1, a2.Token, "CONTINUE"), "ValidationError", "No active Lifecycle Action found with token "+a2.Token)
	if _, err := asg.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: &group, LifecycleHookName: aws.String("volsd-launch"), InstanceId: &i1}); err != nil {
		t.Fatal(err)
	}
	if err := complete(i1, a1.Token, "CONTINUE"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a1.Done():
	default:
		t.Fatal("action not done after CompleteLifecycleAction")
	}
	if r, timedOut := a1.Result(); r != "CONTINUE" || timedOut || a1.Heartbeats() != 1 {
		t.Errorf("result %s timedOut %v heartbeats %d", r, timedOut, a1.Heartbeats())
	}
	err = complete(i1, "", "CONTINUE")
	wantCode(t, err, "ValidationError", "No active Lifecycle Action found with instance ID "+i1)
	if !awserr.IsLifecycleActionGone(err) {
		t.Errorf("awserr.IsLifecycleActionGone(%v) = false; volsd must see a repeated completion as done", err)
	}

	// i2: a heartbeat at 1 s moves the 2 s deadline to 3 s; then the default result.
	time.Sleep(time.Second)
	if _, err := asg.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: &group, LifecycleHookName: aws.String("volsd-launch"), LifecycleActionToken: &a2.Token}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // 2.5 s after start: past the first deadline
	select {
	case <-a2.Done():
		t.Fatal("action timed out although a heartbeat extended it")
	default:
	}
	r, err := a2.Wait(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, timedOut := a2.Result(); r != "ABANDON" || !timedOut {
		t.Errorf("timed-out action: %s (timedOut %v); want the hook's default ABANDON", r, timedOut)
	}
	wantCode(t, complete(i2, "", "CONTINUE"), "ValidationError", "No active Lifecycle Action")
	if a, _ := e.life.Start(ctx, group, i1, "us-east-1a", events.TransitionTerminating); a != nil {
		t.Error("an action started for a transition the group has no hook for")
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestProxyRunCommandByTagAndByID(t *testing.T) {
	e := newProxyEnv(t)
	ctx := context.Background()
	pool := testenv.UniqueName(t, "pool")
	tagged1 := e.runInstance(t, "us-east-1a", map[string]string{"volsd:pool": pool})
	tagged2 := e.runInstance(t, "us-east-1b", map[string]string{"volsd:pool": pool})
	unmanagedTagged := e.runInstance(t, "us-east-1a", map[string]string{"volsd:pool": pool})
	untagged := e.runInstance(t, "us-east-1a", nil)
	report := `{"command":"apply","instance":"i-x","seq":7,"head":7}`
	for _, id := range []string{tagged1, tagged2, untagged} {
		e.fleet.insts[id] = &fakeInstance{out: CommandOutput{Stdout: "progress\n" + report + "\n"}}
	}
	client := ssm.NewFromConfig(e.cfg)
	out, err := client.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName:   aws.String("volsd-Apply"),
		Targets:        []ssmtypes.Target{{Key: aws.String("tag:volsd:pool"), Values: []string{pool}}},
		Parameters:     map[string][]string{"upTo": {"7"}},
		MaxConcurrency: aws.String("50%"), MaxErrors: aws.String("25%"),
	})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Command.CommandId)
	_, err = client.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: &id, InstanceId: aws.String(tagged1)})
	wantCode(t, err, "InvocationDoesNotExist", "") // right after SendCommand, as in SSM
	if out.Command.TargetCount != 2 {
		t.Errorf("TargetCount %d; want the 2 managed instances with the tag (not %s, not managed; not %s, untagged)", out.Command.TargetCount, unmanagedTagged, untagged)
	}
	e.rc.Wait()
	for _, inst := range []string{tagged1, tagged2} {
		calls := e.fleet.insts[inst].Calls()
		if len(calls) != 1 || strings.Join(calls[0], " ") != "apply --upto 7" {
			t.Errorf("%s ran %v; want [apply --upto 7]", inst, calls)
		}
		inv, err := client.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: &id, InstanceId: aws.String(inst)})
		if err != nil {
			t.Fatal(err)
		}
		if inv.Status != ssmtypes.CommandInvocationStatusSuccess || inv.ResponseCode != 0 {
			t.Errorf("%s: status %s code %d", inst, inv.Status, inv.ResponseCode)
		}
		if r, err := events.ParseAgentReport(aws.ToString(inv.StandardOutputContent)); err != nil || r.Seq != 7 {
			t.Errorf("report from StandardOutputContent: %+v, %v", r, err)
		}
	}
	if calls := e.fleet.insts[untagged].Calls(); len(calls) != 0 {
		t.Errorf("untagged instance ran %v", calls)
	}
	_, err = client.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: &id, InstanceId: &untagged})
	wantCode(t, err, "InvocationDoesNotExist", "")
	list, err := client.ListCommandInvocations(ctx, &ssm.ListCommandInvocationsInput{CommandId: &id, Details: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.CommandInvocations) != 2 || len(list.CommandInvocations[0].CommandPlugins) != 1 ||
		!strings.Contains(aws.ToString(list.CommandInvocations[0].CommandPlugins[0].Output), `"seq":7`) {
		t.Errorf("ListCommandInvocations: %+v", list.CommandInvocations)
	}
	if cmds := e.rc.CommandIDs(); len(cmds) != 1 || cmds[0].Status != string(ssmtypes.CommandStatusSuccess) || cmds[0].Targets != 2 {
		t.Errorf("commands: %+v", cmds)
	}
	// Two status events per invocation: InProgress, then Success.
	byInst := map[string][]string{}
	for _, ev := range e.statusEvents() {
		if ev.CommandID == id {
			byInst[ev.InstanceID] = append(byInst[ev.InstanceID], ev.Status)
		}
	}
	for _, inst := range []string{tagged1, tagged2} {
		if got := strings.Join(byInst[inst], ","); got != "InProgress,Success" {
			t.Errorf("status events for %s: %s; want InProgress,Success", inst, got)
		}
	}

	// By ID: an unmanaged instance is refused.
	_, err = client.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("volsd-Status"), InstanceIds: []string{tagged1, unmanagedTagged}})
	wantCode(t, err, "InvalidInstanceId", unmanagedTagged)
	out, err = client.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("volsd-Release"), InstanceIds: []string{untagged}})
	if err != nil || out.Command.TargetCount != 1 {
		t.Fatalf("SendCommand by ID: %+v, %v", out, err)
	}
	e.rc.Wait()
	if calls := e.fleet.insts[untagged].Calls(); len(calls) != 1 || calls[0][0] != "release" {
		t.Errorf("by ID: ran %v; want [release]", calls)
	}
}

func TestProxyRunCommandValidatesLikeSSM(t *testing.T) {
	e := newProxyEnv(t)
	ctx := context.Background()
	inst := e.runInstance(t, "us-east-1a", nil)
	e.fleet.insts[inst] = &fakeInstance{}
	client := ssm.NewFromConfig(e.cfg)
	for _, tc := range []struct {
		name string
		in   ssm.SendCommandInput
		code string
		msg  string
	}{
		{"hostile parameter", ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"), InstanceIds: []string{inst},
			Parameters: map[string][]string{"upTo": {"1; rm -rf /"}}}, "InvalidParameters", "allowed pattern"},
		{"unknown parameter", ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"), InstanceIds: []string{inst},
			Parameters: map[string][]string{"script": {"x"}}}, "InvalidParameters", "not defined"},
		{"unknown document", ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{inst}}, "InvalidDocument", "does not exist"},
		{"no target", ssm.SendCommandInput{DocumentName: aws.String("volsd-Thaw")}, "ValidationException", "InstanceIds or Targets"},
	} {
		_, err := client.SendCommand(ctx, &tc.in)
		t.Run(tc.name, func(t *testing.T) { wantCode(t, err, tc.code, tc.msg) })
	}
	if calls := e.fleet.insts[inst].Calls(); len(calls) != 0 {
		t.Errorf("refused commands ran: %v", calls)
	}
}

func TestProxyRunCommandMaxErrorsStopsTheRest(t *testing.T) {
	e := newProxyEnv(t)
	ctx := context.Background()
	pool := testenv.UniqueName(t, "pool")
	var ids []string
	for i := 0; i < 3; i++ {
		id := e.runInstance(t, "us-east-1a", map[string]string{"volsd:pool": pool})
		e.fleet.insts[id] = &fakeInstance{out: CommandOutput{ExitCode: 1, Stderr: "boom"}}
		ids = append(ids, id)
	}
	client := ssm.NewFromConfig(e.cfg)
	out, err := client.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("volsd-Apply"), MaxConcurrency: aws.String("1"), MaxErrors: aws.String("0"),
		Targets: []ssmtypes.Target{{Key: aws.String("tag:volsd:pool"), Values: []string{pool}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.rc.Wait()
	st := e.rc.Invocations(aws.ToString(out.Command.CommandId))
	failed, cancelled := 0, 0
	for _, s := range st {
		switch s {
		case "Failed":
			failed++
		case "Cancelled":
			cancelled++
		}
	}
	if failed != 1 || cancelled != 2 {
		t.Errorf("invocations %v; with MaxErrors 0 and MaxConcurrency 1 want 1 Failed then 2 Cancelled", st)
	}
	var failedID string
	for id, s := range st {
		if s == "Failed" {
			failedID = id
		}
	}
	if len(st) != len(ids) {
		t.Errorf("%d invocations for %d targets", len(st), len(ids))
	}
	inv, err := client.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String(failedID)})
	if err != nil || inv.Status != ssmtypes.CommandInvocationStatusFailed || inv.ResponseCode != 1 || aws.ToString(inv.StandardErrorContent) != "boom" {
		t.Errorf("failed invocation: %+v, %v", inv, err)
	}
}

func TestProxyEBSVolumesAreLoopDevices(t *testing.T) {
	testenv.RequireRoot(t, "the harness's EBS volumes (loop devices, mount)")
	e := newProxyEnv(t)
	ctx := context.Background()
	instA := e.runInstance(t, "us-east-1a", nil)
	instB := e.runInstance(t, "us-east-1b", nil)
	tree := DeviceTree{DeviceRoot: filepath.Join(t.TempDir(), "by-id"), SysfsRoot: filepath.Join(t.TempDir(), "sys")}
	e.fleet.trees[instA] = tree
	client := ec2.NewFromConfig(e.cfg)

	v, err := client.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), VolumeType: ec2types.VolumeTypeGp3})
	if err != nil {
		t.Fatal(err)
	}
	vol := aws.ToString(v.VolumeId)
	if !e.disks.HasVolume(vol) {
		t.Fatalf("no image for %s", vol)
	}
	if v.State != ec2types.VolumeStateCreating {
		t.Errorf("CreateVolume answered %s; EC2 answers creating", v.State)
	}
	_, err = client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &instA, Device: aws.String("/dev/sdf")})
	wantCode(t, err, "IncorrectState", "not 'available'")
	waitAvailable := func(id string) {
		waitFor(t, 5*time.Second, id+" available", func() bool {
			d, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
			return err == nil && d.Volumes[0].State == ec2types.VolumeStateAvailable
		})
	}
	waitAvailable(vol)
	if _, err := client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &instB, Device: aws.String("/dev/sdf")}); err == nil {
		t.Fatal("attached a us-east-1a volume to a us-east-1b instance")
	} else {
		wantCode(t, err, "InvalidVolume.ZoneMismatch", "same availability zone")
	}
	e.proxy.Faults.Throttle("ec2", "AttachVolume", 1)
	_, err = client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &instA, Device: aws.String("/dev/sdf")})
	wantCode(t, err, "RequestLimitExceeded", "Request limit exceeded")
	if !awserr.IsThrottle(err) {
		t.Errorf("awserr does not see %v as throttling", err)
	}
	if _, err := client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &instA, Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(tree.DeviceRoot, ByIDName(vol))
	if d, _ := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}); d.Volumes[0].Attachments[0].State != ec2types.VolumeAttachmentStateAttaching {
		t.Errorf("attachment right after AttachVolume: %s; want attaching", d.Volumes[0].Attachments[0].State)
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("device link present while attaching: %v", err)
	}
	waitFor(t, 5*time.Second, "attached", func() bool {
		d, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}})
		if err != nil || d.Volumes[0].Attachments[0].State != ec2types.VolumeAttachmentStateAttached {
			return false
		}
		_, err = os.Lstat(link)
		return err == nil
	})
	loop, err := filepath.EvalSymlinks(link)
	if err != nil || !strings.HasPrefix(loop, "/dev/loop") {
		t.Fatalf("by-id link %s: %q, %v", link, loop, err)
	}
	_, err = client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &instA, Device: aws.String("/dev/sdg")})
	wantCode(t, err, "VolumeInUse", "already attached")
	v2, err := client.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	waitAvailable(aws.ToString(v2.VolumeId))
	_, err = client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: v2.VolumeId, InstanceId: &instA, Device: aws.String("/dev/sdf")})
	wantCode(t, err, "InvalidParameterValue", "already in use")

	// Mount it, snapshot it, detach while mounted: busy until unmounted.
	run(t, "mkfs.ext4", "-q", loop)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", loop, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "index.html"), []byte("<h1>v1</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "fsfreeze", "-f", mnt)
	snap, err := client.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: &vol})
	run(t, "fsfreeze", "-u", mnt)
	if err != nil {
		t.Fatal(err)
	}
	det, err := client.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: &vol}) // no InstanceId: moto alone would crash
	if err != nil {
		t.Fatal(err)
	}
	if det.State != ec2types.VolumeAttachmentStateDetaching {
		t.Errorf("detach state %s", det.State)
	}
	time.Sleep(500 * time.Millisecond)
	if d, _ := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}); d.Volumes[0].State != ec2types.VolumeStateInUse ||
		len(d.Volumes[0].Attachments) != 1 || d.Volumes[0].Attachments[0].State != ec2types.VolumeAttachmentStateDetaching {
		t.Errorf("mounted volume after DetachVolume: %+v; EBS keeps it in-use, its attachment detaching, until unmounted", d.Volumes[0])
	}
	run(t, "umount", mnt)
	waitFor(t, 5*time.Second, "volume available after unmount", func() bool {
		d, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}})
		return err == nil && d.Volumes[0].State == ec2types.VolumeStateAvailable
	})
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("by-id link survived the detach: %v", err)
	}
	_, err = client.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: &vol})
	wantCode(t, err, "IncorrectState", "available")

	// A volume from the snapshot has the content.
	v3, err := client.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: snap.SnapshotId})
	if err != nil {
		t.Fatal(err)
	}
	waitAvailable(aws.ToString(v3.VolumeId))
	if _, err := client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: v3.VolumeId, InstanceId: &instA, Device: aws.String("/dev/sdh")}); err != nil {
		t.Fatal(err)
	}
	var loop3 string
	waitFor(t, 5*time.Second, "the device of the volume from the snapshot", func() bool {
		loop3, err = filepath.EvalSymlinks(filepath.Join(tree.DeviceRoot, ByIDName(aws.ToString(v3.VolumeId))))
		return err == nil
	})
	run(t, "mount", loop3, mnt)
	b, err := os.ReadFile(filepath.Join(mnt, "index.html"))
	run(t, "umount", mnt)
	if err != nil || string(b) != "<h1>v1</h1>" {
		t.Errorf("content of the volume from the snapshot: %q, %v", b, err)
	}
	if _, err := client.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: v3.VolumeId}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: v3.VolumeId}); err != nil {
		t.Fatal(err)
	}
	if e.disks.HasVolume(aws.ToString(v3.VolumeId)) {
		t.Error("image survived DeleteVolume")
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestProxyPassesS3AndSQSThrough(t *testing.T) {
	e := newProxyEnv(t)
	ctx := context.Background()
	s3c := s3.NewFromConfig(e.cfg)
	bucket := testenv.UniqueName(t, "b")
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("volsd"), 2<<20) // 10 MiB
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("blobs/x"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	got, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("blobs/x"), Range: aws.String("bytes=5-9")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(got.Body)
	if string(b) != "volsd" {
		t.Errorf("ranged GET through the proxy: %q", b)
	}
	_, err = s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("blobs/missing")})
	if !awserr.IsNotFound(err) {
		t.Errorf("HEAD of a missing blob: %v; want not found", err)
	}
	q := sqs.NewFromConfig(e.cfg)
	out, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(testenv.UniqueName(t, "q"))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: out.QueueUrl, MessageBody: aws.String(`{"version":1}`)}); err != nil {
		t.Fatal(err)
	}
	if e.proxy.Calls("sqs:SendMessage") != 1 || e.proxy.Calls("s3:PUT") < 1 {
		t.Errorf("proxy counters %v", e.proxy.CallCounts())
	}
}

func TestSQSSourceDeletesSuccessesAndRedrivesFailures(t *testing.T) {
	cfg := testenv.Moto(t)
	ctx := context.Background()
	q := sqs.NewFromConfig(cfg)
	dlq, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(testenv.UniqueName(t, "dlq"))})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: dlq.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	redrive := fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"2"}`, attrs.Attributes["QueueArn"])
	main, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(testenv.UniqueName(t, "q")),
		Attributes: map[string]string{"VisibilityTimeout": "1", "RedrivePolicy": redrive}})
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"ok-1", "fail", "ok-2"} {
		if _, err := q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: main.QueueUrl, MessageBody: aws.String(body)}); err != nil {
			t.Fatal(err)
		}
	}
	src := &SQSSource{SQS: q, QueueURL: aws.ToString(main.QueueUrl), QueueARN: "arn:aws:sqs:us-east-1:123456789012:q",
		Region: Region, Fn: sqsTestFunction(t), ReportBatchItemFailures: true, BatchSize: 10, Window: 300 * time.Millisecond, Pollers: 1,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	src.Start(ctx)
	defer src.Stop()
	var dead []string
	waitFor(t, 20*time.Second, "the failing message in the DLQ", func() bool {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: dlq.QueueUrl, MaxNumberOfMessages: 10})
		if err != nil {
			return false
		}
		for _, m := range out.Messages {
			dead = append(dead, aws.ToString(m.Body))
		}
		return len(dead) > 0
	})
	if strings.Join(dead, ",") != "fail" {
		t.Errorf("DLQ holds %v; want only the failing message", dead)
	}
	waitFor(t, 10*time.Second, "an empty queue", func() bool {
		idle, err := src.Idle(ctx)
		return err == nil && idle
	})
	st := src.Stats()
	if st.Deleted != 2 || st.ItemFailures < 2 {
		t.Errorf("stats %+v; want the 2 good messages deleted and the bad one failed on each of its 2 receives", st)
	}
}

func TestGroupBalancesLaunchesAndHoldsHooks(t *testing.T) {
	e := newProxyEnv(t)
	ctx := context.Background()
	name := testenv.UniqueName(t, "g")
	lt := testenv.UniqueName(t, "lt")
	vpc, err := e.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.9.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	subnets := map[string]string{}
	var ids []string
	for i, az := range []string{"us-east-1a", "us-east-1b"} {
		sn, err := e.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, AvailabilityZone: aws.String(az), CidrBlock: aws.String(fmt.Sprintf("10.9.%d.0/24", i))})
		if err != nil {
			t.Fatal(err)
		}
		subnets[az] = aws.ToString(sn.Subnet.SubnetId)
		ids = append(ids, subnets[az])
	}
	if _, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: &lt,
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-12c6146b")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &name, MinSize: aws.Int32(0), MaxSize: aws.Int32(10), DesiredCapacity: aws.Int32(0),
		VPCZoneIdentifier: aws.String(strings.Join(ids, ",")), LaunchTemplate: &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: &lt},
	}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct{ name, tr, def string }{
		{"volsd-launch", events.TransitionLaunching, "ABANDON"}, {"volsd-terminate", events.TransitionTerminating, "CONTINUE"},
	} {
		if _, err := e.asg.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: &name, LifecycleHookName: aws.String(h.name),
			LifecycleTransition: aws.String(h.tr), HeartbeatTimeout: aws.Int32(30), DefaultResult: aws.String(h.def)}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var delivered []events.LifecycleAction
	var launched []string // "EC2 Instance Launch Successful" events
	booted := map[string]string{}
	var poweredOff []string
	g := &Group{Name: name, Pool: "p", Subnets: subnets, LaunchTemplate: lt, Region: Region, Account: Account,
		EC2: e.ec2, ASG: e.asg, Lifecycle: e.life, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Boot: func(_ context.Context, id, az string) error {
			mu.Lock()
			booted[id] = az
			mu.Unlock()
			return nil
		},
		PowerOff: func(_ context.Context, id string) error {
			mu.Lock()
			poweredOff = append(poweredOff, id)
			mu.Unlock()
			return nil
		},
		Deliver: func(_ context.Context, ev events.Envelope) {
			if ev.DetailType == events.DetailTypeLaunchSuccessful {
				var r events.LaunchResult
				if _, err := events.DecodeDetail(mustJSON(t, ev), ev.DetailType, &r); err != nil || r.Validate() != nil || r.AutoScalingGroupName != name {
					t.Errorf("launch successful event %+v: %v", ev, err)
				}
				mu.Lock()
				launched = append(launched, r.EC2InstanceID)
				mu.Unlock()
				return
			}
			var d events.LifecycleAction
			if _, err := events.DecodeDetail(mustJSON(t, ev), ev.DetailType, &d); err != nil || d.Validate() != nil {
				t.Errorf("lifecycle event %+v: %v", ev, err)
			}
			mu.Lock()
			delivered = append(delivered, d)
			mu.Unlock()
		},
	}
	ls, err := g.ScaleOut(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	perAZ := map[string]int{}
	for _, l := range ls {
		perAZ[l.AZ]++
		out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{l.InstanceID}})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(out.Reservations[0].Instances[0].Placement.AvailabilityZone); got != l.AZ {
			t.Errorf("%s launched in %s; the group engine chose %s", l.InstanceID, got, l.AZ)
		}
	}
	if perAZ["us-east-1a"] != 2 || perAZ["us-east-1b"] != 1 {
		t.Errorf("3 launches spread %v; want 2 and 1 over the two AZs", perAZ)
	}
	if len(delivered) != 3 || delivered[0].LifecycleTransition != events.TransitionLaunching || delivered[0].LifecycleHookName != "volsd-launch" {
		t.Fatalf("delivered %+v", delivered)
	}
	if len(g.InService()) != 0 {
		t.Errorf("instances in service before their hooks completed: %v", g.InService())
	}
	// The agent completes the first two; the third is abandoned and replaced.
	asg := autoscaling.NewFromConfig(e.cfg)
	for i, l := range ls {
		result := "CONTINUE"
		if i == 2 {
			result = "ABANDON"
		}
		if _, err := asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: &name,
			LifecycleHookName: aws.String("volsd-launch"), LifecycleActionToken: &l.Action.Token, LifecycleActionResult: aws.String(result)}); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		// Complete the replacement's hook once it is delivered.
		for {
			mu.Lock()
			n := len(delivered)
			var d events.LifecycleAction
			if n == 4 {
				d = delivered[3]
			}
			mu.Unlock()
			if n == 4 {
				_, _ = asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: &name,
					LifecycleHookName: aws.String("volsd-launch"), LifecycleActionToken: &d.LifecycleActionToken, LifecycleActionResult: aws.String("CONTINUE")})
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	results, err := g.WaitInService(ctxTimeout(t, 10*time.Second), ls)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 4 || results[2].Result != "ABANDON" || results[3].Result != "CONTINUE" {
		t.Errorf("results %+v; want the abandoned launch replaced", results)
	}
	if len(g.InService()) != 3 || len(poweredOff) != 1 || poweredOff[0] != ls[2].InstanceID {
		t.Errorf("in service %v, powered off %v", g.InService(), poweredOff)
	}
	mu.Lock()
	slices.Sort(launched)
	if !slices.Equal(launched, g.InService()) {
		t.Errorf("Launch Successful events for %v; want one for each instance that entered service %v (none for the abandoned one)", launched, g.InService())
	}
	mu.Unlock()
	d, err := e.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.AutoScalingGroups[0].Instances); n != 3 || aws.ToInt32(d.AutoScalingGroups[0].DesiredCapacity) != 3 {
		t.Errorf("moto's group has %d instances, desired %d; want 3 and 3", n, aws.ToInt32(d.AutoScalingGroups[0].DesiredCapacity))
	}

	// Scale in by 1: the AZ with the most instances loses its oldest; the
	// terminate hook holds it until completed.
	// ls[0] is the oldest instance, in us-east-1a, which has 2 of the 3.
	count := map[string]int{}
	for _, az := range g.Members() {
		count[az]++
	}
	if count["us-east-1a"] != 2 || ls[0].AZ != "us-east-1a" {
		t.Fatalf("members per AZ %v, first launch in %s", count, ls[0].AZ)
	}
	victimWant := ls[0].InstanceID
	done := make(chan []string, 1)
	go func() {
		gone, err := g.ScaleIn(ctx, 1)
		if err != nil {
			t.Error(err)
		}
		done <- gone
	}()
	var term events.LifecycleAction
	waitFor(t, 5*time.Second, "the terminate event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(delivered) > 4 {
			term = delivered[len(delivered)-1]
			return true
		}
		return false
	})
	if term.LifecycleTransition != events.TransitionTerminating || term.EC2InstanceID != victimWant {
		t.Errorf("terminate event %+v; want %s (the oldest, in the AZ with the most)", term, victimWant)
	}
	select {
	case <-done:
		t.Fatal("instance terminated before its terminate hook completed")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: &name,
		LifecycleHookName: aws.String("volsd-terminate"), InstanceId: &term.EC2InstanceID, LifecycleActionResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	if gone := <-done; len(gone) != 1 || gone[0] != term.EC2InstanceID {
		t.Errorf("terminated %v", gone)
	}
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{term.EC2InstanceID}})
	if err != nil || out.Reservations[0].Instances[0].State.Name != ec2types.InstanceStateNameTerminated {
		t.Errorf("scaled-in instance state: %+v, %v", out, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sqsTestFunction is the Runtime API's test function (it reports every
// SQS message whose body is "fail" as a batch item failure), built for t.
func sqsTestFunction(t *testing.T) *lambdaruntime.Function {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bootstrap")
	if out, err := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, "../../internal/lambdaruntime/testdata/testfn").CombinedOutput(); err != nil {
		t.Fatalf("build testfn: %v\n%s", err, out)
	}
	f := &lambdaruntime.Function{Name: "testfn", Bootstrap: bin, Timeout: 10 * time.Second, MaxConcurrency: 1, Region: Region, Account: Account}
	t.Cleanup(f.Close)
	return f
}
