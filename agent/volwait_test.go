package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/testenv"
)

// countingEC2 counts the DescribeVolumes calls the agent makes.
type countingEC2 struct {
	EC2
	describeVolumes atomic.Int64
}

func (c *countingEC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	c.describeVolumes.Add(1)
	return c.EC2.DescribeVolumes(ctx, in, optFns...)
}

// plugRootDevice publishes the instance's root volume (moto made it at
// RunInstances) as udev does on Nitro: nvme0n1 with its partition and
// namespace links, none of which is the pool volume.
func (in *instance) plugRootDevice(t testing.TB) string {
	t.Helper()
	out, err := motoEC2(t).DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{in.id}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	root := ""
	for _, v := range out.Volumes {
		if id := aws.ToString(v.VolumeId); id != in.volume {
			root = id
		}
	}
	if root == "" {
		t.Fatalf("moto shows no root volume attached to %s", in.id)
	}
	devDir := filepath.Join(filepath.Dir(in.cfg.DeviceRoot), "nodes")
	for _, d := range []string{in.cfg.DeviceRoot, devDir, filepath.Join(in.cfg.SysfsRoot, "class", "block", "nvme0n1", "device")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"nvme0n1", "nvme0n1p1"} {
		if err := os.WriteFile(filepath.Join(devDir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(in.cfg.SysfsRoot, "class", "block", "nvme0n1", "device", "serial"), []byte(volSerial(root)+"        \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := ebsLinkPrefix + volSerial(root)
	for link, target := range map[string]string{name: "nvme0n1", name + "-part1": "nvme0n1p1", name + "_1": "nvme0n1"} {
		if err := os.Symlink(filepath.Join("..", "nodes", target), filepath.Join(in.cfg.DeviceRoot, link)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// attachNow attaches the pool volume in EC2 and, after a moment, plugs its
// device, as an EBS attachment completes.
func (in *instance) attachNow(t testing.TB) {
	if _, err := motoEC2(t).AttachVolume(context.Background(), &ec2.AttachVolumeInput{VolumeId: &in.volume, InstanceId: &in.id, Device: aws.String("/dev/sdf")}); err != nil {
		t.Error(err)
		return
	}
	time.Sleep(200 * time.Millisecond)
	in.plugDevice(t)
}

// TestUpLearnsOfItsVolumeFromTheMachine: up waits for the pool volume's
// device on the machine (the by-id directory), not by polling EC2. A boot
// whose volume arrives seconds after up started makes at most two
// DescribeVolumes calls (the 2 s polling made one per 2 s); a restart with
// the volume already there makes one; a volume of no pool arriving first
// costs one more and is never mounted.
func TestUpLearnsOfItsVolumeFromTheMachine(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("index.html", gen("index", 700), 0o644)
	w.put("news/a.html", gen("a", 300), 0o644)

	boot := func(t *testing.T, in *instance) (Report, error) {
		var r Report
		err := in.agent.Up(context.Background(), &r)
		return r, err
	}
	check := func(t *testing.T, in *instance, r Report, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("up: %v", err)
		}
		if r.Volume != in.volume || r.Device != in.dev || r.Seq != 2 {
			t.Fatalf("up reported volume %s device %s seq %d; want %s on %s at seq 2", r.Volume, r.Device, r.Seq, in.volume, in.dev)
		}
		assertTree(t, in.cfg.MountPath, w.model)
		if len(in.asg.completed) != 1 {
			t.Fatalf("hook completions: %d", len(in.asg.completed))
		}
	}

	t.Run("cold boot, the volume arrives after 5s", func(t *testing.T) {
		ec := &countingEC2{EC2: motoEC2(t)}
		in := launchInstance(t, w, "", ec, false)
		in.plugRootDevice(t)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(5 * time.Second)
			in.attachNow(t)
		}()
		r, err := boot(t, in)
		wg.Wait()
		check(t, in, r, err)
		if n := ec.describeVolumes.Load(); n > 2 {
			t.Fatalf("up made %d DescribeVolumes calls for one boot; want at most 2", n)
		}
	})

	t.Run("restart with the volume attached", func(t *testing.T) {
		ec := &countingEC2{EC2: motoEC2(t)}
		in := launchInstance(t, w, "", ec, true)
		in.plugRootDevice(t)
		r, err := boot(t, in)
		check(t, in, r, err)
		if n := ec.describeVolumes.Load(); n != 1 {
			t.Fatalf("up made %d DescribeVolumes calls with its volume already there; want 1", n)
		}
	})

	t.Run("a volume of no pool arrives first", func(t *testing.T) {
		ec := &countingEC2{EC2: motoEC2(t)}
		in := launchInstance(t, w, "", ec, false)
		in.plugRootDevice(t)
		c := motoEC2(t)
		other, err := c.CreateVolume(context.Background(), &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		otherDev, _ := loopDevice(t, 16)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Second)
			if _, err := c.AttachVolume(context.Background(), &ec2.AttachVolumeInput{VolumeId: other.VolumeId, InstanceId: &in.id, Device: aws.String("/dev/sdg")}); err != nil {
				t.Error(err)
				return
			}
			foreign := &instance{volume: aws.ToString(other.VolumeId), dev: otherDev, cfg: in.cfg}
			foreign.plugDevice(t)
			time.Sleep(3 * time.Second)
			in.attachNow(t)
		}()
		r, err := boot(t, in)
		wg.Wait()
		check(t, in, r, err)
		if n := ec.describeVolumes.Load(); n > 3 {
			t.Fatalf("up made %d DescribeVolumes calls; want at most 3 (start, the foreign device, the pool device)", n)
		}
	})

	t.Run("a link whose device has another serial is never taken", func(t *testing.T) {
		in := launchInstance(t, w, "", nil, false)
		in.plugDevice(t)
		serial := filepath.Join(in.cfg.SysfsRoot, "class", "block", filepath.Base(in.dev), "device", "serial")
		if err := os.WriteFile(serial, []byte("vol0000000000000000\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		in.agent.cfg.DeviceWait = Duration(time.Second)
		_, err := boot(t, in)
		if KindOf(err) != KindNotReady || !strings.Contains(err.Error(), "has serial") {
			t.Fatalf("up: %v; want not ready naming the serial mismatch", err)
		}
	})
}

// throttlingEC2 refuses the first n DescribeVolumes calls as EC2's request
// limit does (RequestLimitExceeded).
type throttlingEC2 struct {
	EC2
	n atomic.Int64
}

func (c *throttlingEC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	if c.n.Add(-1) >= 0 {
		return nil, &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	}
	return c.EC2.DescribeVolumes(ctx, in, optFns...)
}

// TestVolumeWaitOutlastsThrottling: in a mass scale-out EC2's Describe
// bucket stays empty for longer than the API backoff's 8 tries. up's wait
// for its volume keeps asking, spaced by the throttle backoff, within
// DeviceWait, and finds its volume; before, it gave up after 8 throttled
// tries and up exited retryable (systemd restarted it into the same
// throttling).
func TestVolumeWaitOutlastsThrottling(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	ec := &throttlingEC2{EC2: motoEC2(t)}
	ec.n.Store(20)
	in := launchInstance(t, w, "", ec, true)
	in.agent.throttleWait = awserr.Backoff{Initial: time.Millisecond, Factor: 2, Max: 10 * time.Millisecond}
	in.plugDevice(t)
	vol, dev, calls, err := in.agent.WaitForVolume(context.Background(), in.id)
	if err != nil {
		t.Fatalf("wait for the volume under throttling: %v", err)
	}
	if vol != in.volume || dev != in.dev {
		t.Fatalf("found %s on %s; want %s on %s", vol, dev, in.volume, in.dev)
	}
	if calls <= 20 {
		t.Fatalf("%d DescribeVolumes calls; the 20 throttled ones were not made", calls)
	}
}
