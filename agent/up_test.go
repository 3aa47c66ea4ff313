package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// instance is a simulated EC2 instance: an instance and a pool volume
// attached to it in moto, a loop device standing for the volume's NVMe
// device, a by-id link and a sysfs serial pointing at it, and an agent
// configuration of its own.
type instance struct {
	id, volume string
	dev, img   string
	cfg        Config
	asg        *fakeAutoScaling
	agent      *Agent
}

func motoEC2(t testing.TB) *ec2.Client { return ec2.NewFromConfig(testenv.Moto(t)) }

// newInstance launches an instance in moto with a pool volume attached;
// img is the volume's image (a fresh blank one when "").
func newInstance(t testing.TB, w *world, img string) *instance {
	t.Helper()
	return launchInstance(t, w, img, nil, true)
}

// launchInstance is newInstance with the EC2 client the agent uses (nil:
// moto's) and, when attach is false, the volume neither attached nor its
// device plugged yet (attachNow does both).
func launchInstance(t testing.TB, w *world, img string, agentEC2 EC2, attach bool) *instance {
	t.Helper()
	ctx := context.Background()
	c := motoEC2(t)
	if agentEC2 == nil {
		agentEC2 = c
	}
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12345678"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		Placement: &ec2types.Placement{AvailabilityZone: aws.String("us-east-1a")},
	})
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{id: aws.ToString(run.Instances[0].InstanceId)}
	vol, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{
		AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: []ec2types.Tag{{Key: aws.String(events.TagPool), Value: aws.String(w.pool)}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	in.volume = aws.ToString(vol.VolumeId)
	if attach {
		if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: &in.volume, InstanceId: &in.id, Device: aws.String("/dev/sdf")}); err != nil {
			t.Fatal(err)
		}
	}
	if img == "" {
		in.dev, in.img = loopDevice(t, 64)
	} else {
		in.img = img
		in.dev = attachImage(t, img)
	}
	in.cfg = w.config(t)
	if attach {
		in.plugDevice(t)
	}
	in.asg = newFakeAutoScaling(in.id)
	in.agent = w.agent(t, in.cfg, Deps{
		IMDS:           fakeIMDS{imds.InstanceIdentityDocument{InstanceID: in.id, AvailabilityZone: "us-east-1a", Region: testenv.Region}},
		EC2:            agentEC2,
		AutoScaling:    in.asg,
		HeartbeatEvery: time.Millisecond,
	})
	unmountAtCleanup(t, in.cfg.MountPath)
	return in
}

// plugDevice makes the device appear: by-id link and sysfs serial.
func (in *instance) plugDevice(t testing.TB) {
	t.Helper()
	serial := volSerial(in.volume)
	if err := os.MkdirAll(in.cfg.DeviceRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(in.cfg.DeviceRoot, ebsLinkPrefix+serial)
	os.Remove(link)
	if err := os.Symlink(in.dev, link); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(in.cfg.SysfsRoot, "class", "block", filepath.Base(in.dev), "device")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "serial"), []byte(serial+"        \n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (in *instance) up(t testing.TB) Report {
	t.Helper()
	var r Report
	if err := in.agent.Up(context.Background(), &r); err != nil {
		t.Fatalf("up on %s: %v", in.id, err)
	}
	return r
}

// files maps each content file to its content, mode and mtime.
func filesWithTimes(t testing.TB, mount string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for p, f := range readTree(t, mount).files {
		fi, err := os.Lstat(filepath.Join(mount, p))
		if err != nil {
			t.Fatal(err)
		}
		out[p] = sum(f.data) + " " + fi.Mode().String() + " " + fi.ModTime().UTC().Format(time.RFC3339Nano)
	}
	return out
}

// TestUpBlankAndSnapshotVolumesConverge: a blank volume is formatted and
// replays from seq 1; a copy of a volume image at seq k (a stand-in for a
// snapshot) replays only k+1..n; the original, restarted (a warm start, no
// lifecycle action left), catches up too. All three end byte-identical to
// the journal, mtimes included.
func TestUpBlankAndSnapshotVolumesConverge(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	ctx := context.Background()
	// Entries 1..k.
	w.put("a/x.txt", gen("x1", 300), 0o644)
	w.sync("site", map[string]file{"index.html": {gen("i1", 500), 0o644}, "img/logo.png": {gen("logo", 90000), 0o644}})
	w.put("big.bin", gen("big", 3<<20), 0o600)
	k := int64(len(w.models) - 1)

	first := newInstance(t, w, "")
	r := first.up(t)
	if r.Seq != k || r.Applied != int(k) || r.Volume != first.volume || r.Device != first.dev || r.Instance != first.id {
		t.Fatalf("first up: %+v", r)
	}
	if fsType, _, err := probeFS(ctx, first.dev); err != nil || fsType != "ext4" {
		t.Fatalf("blank device not formatted ext4: %q %v", fsType, err)
	}
	if len(first.asg.completed) != 1 || aws.ToString(first.asg.completed[0].LifecycleActionResult) != "CONTINUE" ||
		aws.ToString(first.asg.completed[0].InstanceId) != first.id || aws.ToString(first.asg.completed[0].LifecycleHookName) != "volsd-launch" ||
		aws.ToString(first.asg.completed[0].AutoScalingGroupName) != "web-asg" {
		t.Fatalf("lifecycle completions: %+v", first.asg.completed)
	}
	if first.asg.heartbeats == 0 {
		t.Fatal("no lifecycle heartbeat while catching up")
	}
	if !hasMountOption(t, first.cfg.MountPath, "noatime") {
		t.Fatal("not mounted noatime")
	}
	assertTree(t, first.cfg.MountPath, w.models[k])

	// Snapshot stand-in: release, copy the image at seq k.
	var rel Report
	if err := first.agent.Release(ctx, &rel); err != nil || rel.Seq != k {
		t.Fatalf("release: %+v %v", rel, err)
	}
	snap := filepath.Join(t.TempDir(), "snapshot.img")
	run(t, "cp", "--sparse=always", first.img, snap)

	// Entries k+1..n.
	w.put("a/x.txt", gen("x2", 301), 0o644)
	w.del("site/img")
	w.sync("site", map[string]file{"index.html": {gen("i2", 501), 0o644}, "new/page.html": {gen("p", 77), 0o644}})
	w.put("late", gen("late", 1), 0o644)
	n := int64(len(w.models) - 1)

	fromSnap := newInstance(t, w, snap)
	r = fromSnap.up(t)
	if r.Seq != n || r.Applied != int(n-k) {
		t.Fatalf("up from the copy at seq %d: %+v; want %d entries applied", k, r, n-k)
	}
	assertTree(t, fromSnap.cfg.MountPath, w.models[n])

	blank := newInstance(t, w, "")
	r = blank.up(t)
	if r.Seq != n || r.Applied != int(n) {
		t.Fatalf("blank up: %+v", r)
	}
	assertTree(t, blank.cfg.MountPath, w.models[n])

	// The first instance restarts: its action is gone, which is fine.
	r = first.up(t)
	if r.Seq != n || r.Applied != int(n-k) {
		t.Fatalf("warm restart: %+v", r)
	}
	want := filesWithTimes(t, blank.cfg.MountPath)
	for _, other := range []*instance{first, fromSnap} {
		got := filesWithTimes(t, other.cfg.MountPath)
		if len(got) != len(want) {
			t.Fatalf("%s has %d files, blank has %d", other.id, len(got), len(want))
		}
		for p, v := range want {
			if got[p] != v {
				t.Errorf("%s: %s is %q, blank volume has %q", other.id, p, got[p], v)
			}
		}
	}
}

func hasMountOption(t testing.TB, dir, opt string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && unescapeMount(f[4]) == dir {
			return strings.Contains(","+f[5]+",", ","+opt+",")
		}
	}
	return false
}

func TestUpNeverFormatsAVolumeWithData(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("from-journal", gen("j", 10), 0o644)

	t.Run("ext4 with data and no watermark", func(t *testing.T) {
		in := newInstance(t, w, "")
		run(t, "mkfs.ext4", "-q", in.dev)
		tmp := t.TempDir()
		run(t, "mount", in.dev, tmp)
		if err := os.WriteFile(filepath.Join(tmp, "precious"), []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, "umount", tmp)
		r := in.up(t)
		if r.Seq != 1 {
			t.Fatalf("up: %+v", r)
		}
		if data, err := os.ReadFile(filepath.Join(in.cfg.MountPath, "precious")); err != nil || string(data) != "keep me" {
			t.Fatalf("data lost: %q %v", data, err)
		}
	})
	t.Run("no known signature but not blank", func(t *testing.T) {
		in := newInstance(t, w, "")
		noise := gen("noise", 4096)
		f, err := os.OpenFile(in.dev, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(noise, 8192); err != nil {
			t.Fatal(err)
		}
		f.Close()
		var r Report
		err = in.agent.Up(context.Background(), &r)
		if KindOf(err) != KindBadInput || !strings.Contains(err.Error(), "refusing to format") {
			t.Fatalf("up: %v (kind %s), want bad input refusing to format", err, KindOf(err))
		}
		got := make([]byte, len(noise))
		f, _ = os.Open(in.dev)
		_, _ = f.ReadAt(got, 8192)
		f.Close()
		if !bytes.Equal(got, noise) {
			t.Fatal("the device was written")
		}
		if isMountPoint(in.cfg.MountPath) {
			t.Fatal("mounted anyway")
		}
	})
	t.Run("another filesystem than configured", func(t *testing.T) {
		in := newInstance(t, w, "")
		run(t, "mkfs.ext4", "-q", in.dev)
		in.agent.cfg.FSType = "xfs"
		var r Report
		err := in.agent.Up(context.Background(), &r)
		if KindOf(err) != KindBadInput || !strings.Contains(err.Error(), "holds ext4, not xfs") {
			t.Fatalf("up: %v, want bad input naming both types", err)
		}
	})
}

func TestUpGrowsTheFilesystem(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("f", gen("f", 10), 0o644)
	in := newInstance(t, w, "")
	in.up(t)
	var rel Report
	if err := in.agent.Release(context.Background(), &rel); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(in.img, 160<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "losetup", "-c", in.dev)
	devSize, _ := deviceBytes(in.dev)
	fsSize, err := fsBytes(in.dev, "ext4")
	if err != nil || devSize != 160<<20 || fsSize > 64<<20 {
		t.Fatalf("device %d bytes, filesystem %d bytes (%v): the growth is not visible", devSize, fsSize, err)
	}
	// Unmounted, ext4 grows offline (e2fsck -f, resize2fs) before the
	// mount: no online-resize support needed.
	in.up(t)
	assertTree(t, in.cfg.MountPath, w.model)
	var st unix.Statfs_t
	if err := unix.Statfs(in.cfg.MountPath, &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Bsize; size < 140<<20 {
		t.Fatalf("filesystem is %d MiB after growing the device to 160 MiB", size>>20)
	}
}

// TestApplyGrowsTheFilesystemOnline: a volume that reconcile grew in place
// (ModifyVolume) while mounted is grown by the next apply — the timer's or
// a command's — without a reboot, and the report says the new size. XFS
// grows online here; ext4's online resize (EXT4_IOC_RESIZE_FS) needs
// CAP_SYS_RESOURCE, which this sandbox refuses, so ext4 is covered by the
// offline grow at up (TestUpGrowsTheFilesystem).
func TestApplyGrowsTheFilesystemOnline(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("f", gen("f", 10), 0o644)
	img := filepath.Join(t.TempDir(), "vol.img")
	if err := os.Truncate(mustCreate(t, img), 320<<20); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, w, img)
	in.agent.cfg.FSType = "xfs"
	in.up(t)
	if err := os.Truncate(in.img, 640<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "losetup", "-c", in.dev)
	w.put("g", gen("g", 10), 0o644)
	var r Report
	if err := in.agent.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	assertTree(t, in.cfg.MountPath, w.model)
	var st unix.Statfs_t
	if err := unix.Statfs(in.cfg.MountPath, &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Bsize; size < 500<<20 {
		t.Fatalf("filesystem is %d MiB after the device grew to 640 MiB", size>>20)
	}
	if r.SizeBytes < 500<<20 || r.FreeBytes <= 0 || r.UsedBytes <= 0 || r.UsedBytes+r.FreeBytes > r.SizeBytes {
		t.Fatalf("report says size %d, used %d, free %d", r.SizeBytes, r.UsedBytes, r.FreeBytes)
	}
}

func mustCreate(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

func TestUpWhenTheDeviceNeverAppears(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cases := map[string]func(in *instance){
		"no link, no serial": func(in *instance) {
			os.RemoveAll(in.cfg.DeviceRoot)
			os.RemoveAll(in.cfg.SysfsRoot)
		},
		"link to a device with another serial": func(in *instance) {
			serial := filepath.Join(in.cfg.SysfsRoot, "class", "block", filepath.Base(in.dev), "device", "serial")
			if err := os.WriteFile(serial, []byte("vol0000000000000000\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			in := newInstance(t, w, "")
			breakIt(in)
			in.agent.cfg.DeviceWait = Duration(time.Second)
			var r Report
			start := time.Now()
			err := in.agent.Up(context.Background(), &r)
			if KindOf(err) != KindNotReady || !strings.Contains(err.Error(), "did not appear within 1s") || !strings.Contains(err.Error(), in.volume) {
				t.Fatalf("up: %v (kind %s); want not ready naming the volume and the bound", err, KindOf(err))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("waited %s for a 1s bound", d)
			}
			if isMountPoint(in.cfg.MountPath) || len(in.asg.completed) != 0 {
				t.Fatal("mounted or completed the hook without a device")
			}
		})
	}
	t.Run("no volume attached", func(t *testing.T) {
		in := newInstance(t, w, "")
		in.agent.cfg.Pool = "other"
		in.agent.cfg.DeviceWait = Duration(500 * time.Millisecond)
		var r Report
		err := in.agent.Up(context.Background(), &r)
		if KindOf(err) != KindNotReady || !strings.Contains(err.Error(), "no volume of pool other is attached") {
			t.Fatalf("up: %v", err)
		}
	})
}

func TestUpLifecycleActionOutcomes(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("f", gen("f", 10), 0o644)
	t.Run("expired action is fine", func(t *testing.T) {
		in := newInstance(t, w, "")
		delete(in.asg.pending, in.id) // timed out before the agent came
		r := in.up(t)
		if r.Seq != 1 || r.Error != "" {
			t.Fatalf("up: %+v", r)
		}
	})
	t.Run("throttled completion is retried", func(t *testing.T) {
		in := newInstance(t, w, "")
		in.asg.failNext = &smithy.GenericAPIError{Code: "Throttling", Message: "Rate exceeded"}
		in.up(t)
		if len(in.asg.completed) != 1 {
			t.Fatalf("completions: %d", len(in.asg.completed))
		}
	})
	t.Run("denied completion is bad input naming the permission", func(t *testing.T) {
		in := newInstance(t, w, "")
		in.asg.failNext = &smithy.OperationError{ServiceID: "Auto Scaling", OperationName: "CompleteLifecycleAction",
			Err: &smithy.GenericAPIError{Code: "AccessDenied", Message: "User: arn:aws:sts::1:assumed-role/r/i-1 is not authorized to perform: autoscaling:CompleteLifecycleAction"}}
		var r Report
		err := in.agent.Up(context.Background(), &r)
		var ae *Error
		if !errors.As(err, &ae) || ae.Kind != KindBadInput || !strings.Contains(err.Error(), "AccessDenied") {
			t.Fatalf("up: %v", err)
		}
		if code := finish(&r, err); code != ExitBadInput || !strings.Contains(r.Error, "instance role lacks autoscaling:CompleteLifecycleAction") {
			t.Fatalf("up: exit %d: %s", code, r.Error)
		}
		// The content is in place; once the role is fixed, a second up
		// completes the hook.
		in.up(t)
		if len(in.asg.completed) != 1 {
			t.Fatalf("completions: %d", len(in.asg.completed))
		}
	})
}
