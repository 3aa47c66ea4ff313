package awsfake_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
)

// ec2Clock is a clock tests move by hand.
type ec2Clock = awsfake.Clock

func newEC2Clock() *ec2Clock { return awsfake.NewClock(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)) }

func newFakeEC2(c *ec2Clock) *awsfake.EC2 {
	return awsfake.NewEC2(awsfake.EC2Config{
		Now: c.Now, CreateDelay: 3 * time.Second, AttachDelay: 2 * time.Second, DetachDelay: 2 * time.Second,
		DeleteDelay: time.Second, SnapshotDelay: 10 * time.Second, TerminateDelay: 5 * time.Second,
	})
}

var fakeCtx = context.Background()

func ec2CreateVolume(t *testing.T, f *awsfake.EC2, az, token string) string {
	t.Helper()
	in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String(az), Size: aws.Int32(10), VolumeType: types.VolumeTypeGp3,
		Encrypted: aws.Bool(true), TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume,
			Tags: []types.Tag{{Key: aws.String("volsd:pool"), Value: aws.String("web")}}}}}
	if token != "" {
		in.ClientToken = aws.String(token)
	}
	out, err := f.CreateVolume(fakeCtx, in)
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	return aws.ToString(out.VolumeId)
}

func ec2VolumeState(t *testing.T, f *awsfake.EC2, id string) awsfake.VolumeView {
	t.Helper()
	v, ok := f.Volume(id)
	if !ok {
		t.Fatalf("volume %s is gone", id)
	}
	return v
}

func ec2WantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := awserr.Code(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

func TestVolumeCreatingBecomesAvailableAfterDelay(t *testing.T) {
	c := newEC2Clock()
	f := newFakeEC2(c)
	id := ec2CreateVolume(t, f, "us-east-1a", "")
	v := ec2VolumeState(t, f, id)
	if v.State != types.VolumeStateCreating || !v.Encrypted || v.Tags["volsd:pool"] != "web" || v.IOPS != 3000 {
		t.Fatalf("new volume: %+v", v)
	}
	inst := f.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1a"})
	_, err := f.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &id, InstanceId: &inst, Device: aws.String("/dev/sdf")})
	ec2WantCode(t, err, "IncorrectState")
	c.Advance(3 * time.Second)
	if v := ec2VolumeState(t, f, id); v.State != types.VolumeStateAvailable {
		t.Fatalf("after the delay: %s", v.State)
	}
}

func TestClientTokenIdempotency(t *testing.T) {
	f := newFakeEC2(newEC2Clock())
	a := ec2CreateVolume(t, f, "us-east-1a", "tok-1")
	b := ec2CreateVolume(t, f, "us-east-1a", "tok-1")
	if a != b {
		t.Fatalf("same token gave %s and %s", a, b)
	}
	if c := ec2CreateVolume(t, f, "us-east-1a", "tok-2"); c == a {
		t.Fatal("another token gave the same volume")
	}
	_, err := f.CreateVolume(fakeCtx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), Size: aws.Int32(10),
		VolumeType: types.VolumeTypeGp3, Encrypted: aws.Bool(true), ClientToken: aws.String("tok-1")})
	ec2WantCode(t, err, "IdempotentParameterMismatch")
	if n := len(f.Volumes()); n != 2 {
		t.Fatalf("%d volumes, want 2", n)
	}
}

func TestCreateVolumeValidation(t *testing.T) {
	f := newFakeEC2(newEC2Clock())
	snap := f.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 20})
	cases := []struct {
		name string
		in   ec2.CreateVolumeInput
		code string
	}{
		{"unknown zone", ec2.CreateVolumeInput{AvailabilityZone: aws.String("mars-1a"), Size: aws.Int32(1)}, "InvalidParameterValue"},
		{"no size", ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a")}, "MissingParameter"},
		{"gp2 with iops", ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), VolumeType: types.VolumeTypeGp2, Iops: aws.Int32(3000)}, "InvalidParameterCombination"},
		{"io2 without iops", ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), VolumeType: types.VolumeTypeIo2}, "MissingParameter"},
		{"init rate without snapshot", ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), VolumeInitializationRate: aws.Int32(200)}, "InvalidParameterCombination"},
		{"missing snapshot", ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String("snap-00000000000000000")}, "InvalidSnapshot.NotFound"},
		{"smaller than snapshot", ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(10), SnapshotId: &snap}, "InvalidParameterValue"},
		{"kms without encryption", ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), KmsKeyId: aws.String("k")}, "InvalidParameterDependency"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.CreateVolume(fakeCtx, &tc.in)
			ec2WantCode(t, err, tc.code)
			if awserr.Classify(err) != awserr.Invalid && awserr.Classify(err) != awserr.NotFound {
				t.Fatalf("class %s", awserr.Classify(err))
			}
		})
	}
	out, err := f.CreateVolume(fakeCtx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: &snap,
		Size: aws.Int32(20), VolumeInitializationRate: aws.Int32(200)})
	if err != nil || aws.ToString(out.SnapshotId) != snap || aws.ToInt32(out.VolumeInitializationRate) != 200 {
		t.Fatalf("from snapshot: %+v %v", out, err)
	}
}

func TestAttachDetachLifecycle(t *testing.T) {
	c := newEC2Clock()
	f := newFakeEC2(c)
	inst := f.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1a", OtherDevices: []string{"/dev/sdf"}})
	other := f.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1b"})
	id := ec2CreateVolume(t, f, "us-east-1a", "")
	c.Advance(3 * time.Second)

	attach := func(vol, in, dev string) error {
		_, err := f.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &in, Device: &dev})
		return err
	}
	err := attach(id, inst, "/dev/xvdf") // same slot as /dev/sdf
	if !awserr.IsDeviceInUse(err) {
		t.Fatalf("taken device: %v", err)
	}
	if err := attach(id, inst, "/dev/xvda"); !awserr.IsDeviceInUse(err) {
		t.Fatalf("root device: %v", err)
	}
	ec2WantCode(t, attach(id, inst, "/dev/foo"), "InvalidParameterValue")
	ec2WantCode(t, attach(id, other, "/dev/sdg"), "InvalidVolume.ZoneMismatch")
	ec2WantCode(t, attach(id, "i-00000000000000000", "/dev/sdg"), "InvalidInstanceID.NotFound")
	if err := attach(id, inst, "/dev/sdg"); err != nil {
		t.Fatal(err)
	}
	if v := ec2VolumeState(t, f, id); v.State != types.VolumeStateInUse || v.Attachment != types.VolumeAttachmentStateAttaching || v.Device != "/dev/sdg" {
		t.Fatalf("attaching: %+v", v)
	}
	ec2WantCode(t, attach(id, inst, "/dev/sdh"), "VolumeInUse")
	_, err = f.DeleteVolume(fakeCtx, &ec2.DeleteVolumeInput{VolumeId: &id})
	ec2WantCode(t, err, "VolumeInUse")
	c.Advance(2 * time.Second)
	if v := ec2VolumeState(t, f, id); v.Attachment != types.VolumeAttachmentStateAttached {
		t.Fatalf("attached: %+v", v)
	}
	out, err := f.DescribeInstances(fakeCtx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst}})
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	for _, m := range out.Reservations[0].Instances[0].BlockDeviceMappings {
		devs = append(devs, aws.ToString(m.DeviceName))
	}
	if strings.Join(devs, ",") != "/dev/xvda,/dev/sdf,/dev/sdg" {
		t.Fatalf("block devices %v", devs)
	}

	_, err = f.DetachVolume(fakeCtx, &ec2.DetachVolumeInput{VolumeId: &id, InstanceId: &other})
	ec2WantCode(t, err, "InvalidAttachment.NotFound")
	if _, err := f.DetachVolume(fakeCtx, &ec2.DetachVolumeInput{VolumeId: &id, InstanceId: &inst}); err != nil {
		t.Fatal(err)
	}
	if v := ec2VolumeState(t, f, id); v.Attachment != types.VolumeAttachmentStateDetaching {
		t.Fatalf("detaching: %+v", v)
	}
	c.Advance(2 * time.Second)
	_, err = f.DetachVolume(fakeCtx, &ec2.DetachVolumeInput{VolumeId: &id, InstanceId: &inst})
	ec2WantCode(t, err, "IncorrectState")
	if _, err := f.DeleteVolume(fakeCtx, &ec2.DeleteVolumeInput{VolumeId: &id}); err != nil {
		t.Fatal(err)
	}
	if v := ec2VolumeState(t, f, id); v.State != types.VolumeStateDeleting {
		t.Fatalf("deleting: %s", v.State)
	}
	c.Advance(time.Second)
	_, err = f.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	ec2WantCode(t, err, "InvalidVolume.NotFound")
	_, err = f.DeleteVolume(fakeCtx, &ec2.DeleteVolumeInput{VolumeId: &id})
	if !awserr.IsNotFound(err) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestStuckAttachmentAndTerminationMidAttach(t *testing.T) {
	c := newEC2Clock()
	f := newFakeEC2(c)
	inst := f.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1a"})
	id := ec2CreateVolume(t, f, "us-east-1a", "")
	c.Advance(3 * time.Second)
	f.StickAttachments(id, true)
	if _, err := f.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &id, InstanceId: &inst, Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Hour)
	if v := ec2VolumeState(t, f, id); v.Attachment != types.VolumeAttachmentStateAttaching {
		t.Fatalf("stuck attachment completed: %+v", v)
	}
	f.TerminateInstance(inst)
	if got := f.InstanceState(inst); got != types.InstanceStateNameShuttingDown {
		t.Fatalf("instance %s", got)
	}
	c.Advance(5 * time.Second)
	if v := ec2VolumeState(t, f, id); v.State != types.VolumeStateAvailable || v.Instance != "" {
		t.Fatalf("volume after termination: %+v", v)
	}
	if got := f.InstanceState(inst); got != types.InstanceStateNameTerminated {
		t.Fatalf("instance %s", got)
	}
	_, err := f.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &id, InstanceId: &inst, Device: aws.String("/dev/sdf")})
	ec2WantCode(t, err, "IncorrectInstanceState")
}

func TestDescribeFiltersAndPages(t *testing.T) {
	c := newEC2Clock()
	f := newFakeEC2(c)
	for i := 0; i < 12; i++ {
		ec2CreateVolume(t, f, []string{"us-east-1a", "us-east-1b"}[i%2], "")
	}
	f.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1a", Tags: map[string]string{"volsd:pool": "other"}})
	var seen []string
	in := &ec2.DescribeVolumesInput{MaxResults: aws.Int32(5), Filters: []types.Filter{
		{Name: aws.String("tag:volsd:pool"), Values: []string{"web"}},
	}}
	for pages := 0; ; pages++ {
		out, err := f.DescribeVolumes(fakeCtx, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range out.Volumes {
			seen = append(seen, *v.VolumeId)
		}
		if out.NextToken == nil {
			if pages != 2 {
				t.Fatalf("%d pages, want 3", pages+1)
			}
			break
		}
		in.NextToken = out.NextToken
	}
	if len(seen) != 12 {
		t.Fatalf("saw %d pool volumes, want 12", len(seen))
	}
	out, err := f.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("availability-zone"), Values: []string{"us-east-1b"}},
		{Name: aws.String("status"), Values: []string{"creating"}},
	}})
	if err != nil || len(out.Volumes) != 6 {
		t.Fatalf("zone+status filter: %d %v", len(out.Volumes), err)
	}
	_, err = f.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
	ec2WantCode(t, err, "InvalidParameterValue")
	_, err = f.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{VolumeIds: []string{seen[0], "vol-00000000000000000"}})
	ec2WantCode(t, err, "InvalidVolume.NotFound")
	out, err = f.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("volume-id"), Values: []string{seen[0], "vol-00000000000000000"}}}})
	if err != nil || len(out.Volumes) != 1 {
		t.Fatalf("volume-id filter with a missing ID: %d %v", len(out.Volumes), err)
	}
}

func TestInjectedFaults(t *testing.T) {
	f := newFakeEC2(newEC2Clock())
	f.FailNext("CreateVolume", awsfake.EC2Throttle())
	_, err := f.CreateVolume(fakeCtx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	if !awserr.IsThrottle(err) || !awserr.IsRetryable(err) {
		t.Fatalf("queued throttle: %v", err)
	}
	if len(f.Volumes()) != 0 {
		t.Fatal("a call failed before taking effect created a volume")
	}
	// A lost response: the call takes effect, the caller sees a 5xx.
	f.SetFaults(nil, func(op string) error {
		if op == "CreateVolume" {
			return awsfake.EC2ServerError()
		}
		return nil
	})
	_, err = f.CreateVolume(fakeCtx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), ClientToken: aws.String("t")})
	if !awserr.IsRetryable(err) {
		t.Fatalf("lost response: %v", err)
	}
	f.SetFaults(nil, nil)
	out, err := f.CreateVolume(fakeCtx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), ClientToken: aws.String("t")})
	if err != nil || len(f.Volumes()) != 1 || *out.VolumeId != f.Volumes()[0].ID {
		t.Fatalf("retry with the same token: %v, %d volumes", err, len(f.Volumes()))
	}
	if n := f.Calls("CreateVolume"); n != 3 {
		t.Fatalf("%d CreateVolume calls counted, want 3", n)
	}
	cctx, cancel := context.WithCancel(fakeCtx)
	cancel()
	if _, err := f.DescribeVolumes(cctx, &ec2.DescribeVolumesInput{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

func TestConcurrentAttachesOfOneVolume(t *testing.T) {
	c := newEC2Clock()
	f := newFakeEC2(c)
	id := ec2CreateVolume(t, f, "us-east-1a", "")
	c.Advance(3 * time.Second)
	var insts []string
	for i := 0; i < 20; i++ {
		insts = append(insts, f.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1a"}))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for _, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &id, InstanceId: &in, Device: aws.String("/dev/sdf")})
			if err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			} else if awserr.Code(err) != "VolumeInUse" {
				t.Errorf("loser: %v", err)
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d attaches won, want 1", won)
	}
}

func TestPendingInstanceIsNotAttachable(t *testing.T) {
	c := newEC2Clock()
	f := newFakeEC2(c)
	inst := f.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1a", PendingFor: time.Minute})
	id := ec2CreateVolume(t, f, "us-east-1a", "")
	c.Advance(3 * time.Second)
	attach := func() error {
		_, err := f.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &id, InstanceId: &inst, Device: aws.String("/dev/sdf")})
		return err
	}
	if f.InstanceState(inst) != types.InstanceStateNamePending {
		t.Fatalf("state %s", f.InstanceState(inst))
	}
	ec2WantCode(t, attach(), "IncorrectInstanceState")
	c.Advance(time.Minute)
	if err := attach(); err != nil {
		t.Fatal(err)
	}
}

// TestDescribeRequestLimit: Describe* calls share EC2's token bucket
// (Burst at once, Refill per second); a call finding it empty fails with
// RequestLimitExceeded (a throttle to awserr); mutating calls are not
// counted against it.
func TestDescribeRequestLimit(t *testing.T) {
	ctx := context.Background()
	clock := newEC2Clock()
	f := awsfake.NewEC2(awsfake.EC2Config{Now: clock.Now, DescribeLimit: awsfake.RequestLimit{Burst: 5, Refill: 2}})
	for i := 0; i < 5; i++ {
		if _, err := f.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	_, err := f.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if !awserr.IsThrottle(err) || awserr.Code(err) != "RequestLimitExceeded" {
		t.Fatalf("sixth Describe call: %v; want RequestLimitExceeded", err)
	}
	if _, err := f.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)}); err != nil {
		t.Fatalf("a mutating call with the Describe bucket empty: %v", err)
	}
	clock.Advance(time.Second) // 2 tokens back
	for i := 0; i < 2; i++ {
		if _, err := f.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
			t.Fatalf("call %d after the refill: %v", i+1, err)
		}
	}
	if _, err := f.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); !awserr.IsThrottle(err) {
		t.Fatalf("third call after a 2-token refill: %v; want throttled", err)
	}
	if n := f.Throttled("DescribeVolumes") + f.Throttled("DescribeInstances"); n != 2 {
		t.Fatalf("throttled calls: %d; want 2", n)
	}
}
