package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// How up learns that its volume arrived (docs/agent.md "Boot"): from the
// machine, not by polling EC2. The NVMe driver and udev publish every EBS
// volume as <deviceRoot>/nvme-Amazon_Elastic_Block_Store_vol<id>; the
// agent watches that directory (inotify, with a fast local rescan as a
// safety net) and asks EC2 only what the machine cannot say: whether a
// device's volume carries the pool tag. A normal boot makes at most two
// DescribeVolumes calls: one at start (the pool volume may already be
// there: a restart, a warm-pool start, or a fast attach) and one when a
// new EBS device appears. Rechecks while nothing appears back off with
// jitter (volumeRecheck), so a slow attach costs a few calls, not one
// every two seconds.
var (
	// volumeRecheck spaces DescribeVolumes while no new device appears:
	// it only notices a changed plan (the lifecycle Lambda moved on to
	// another volume, which it does after an attachment stuck for 90 s
	// or a failed one) and says what EC2 shows meanwhile. The first comes
	// after 15–30 s, so a normal boot never makes one.
	volumeRecheck = awserr.Backoff{Initial: 30 * time.Second, Factor: 2, Max: 2 * time.Minute}
	// unknownRecheck spaces the lookups of a device whose volume EC2 does
	// not show yet (DescribeVolumes is eventually consistent).
	unknownRecheck = awserr.Backoff{Initial: 500 * time.Millisecond, Factor: 2, Max: 10 * time.Second}
	// deviceRescan is the local rescan of the device directory beside
	// inotify (and instead of it where the directory cannot be watched).
	deviceRescan, deviceRescanUnwatched = 250 * time.Millisecond, 50 * time.Millisecond
)

// ebsLinkName matches the by-id link udev makes for an EBS NVMe device,
// exactly (not its -part<N> or _<nsid> siblings); group 1 is the serial.
var ebsLinkName = regexp.MustCompile(`^` + ebsLinkPrefix + `(vol[0-9a-f]{8,17})$`)

// volumeFromSerial is the volume ID of an EBS NVMe serial.
func volumeFromSerial(serial string) string { return "vol-" + strings.TrimPrefix(serial, "vol") }

// ebsDevices lists the EBS volumes the machine shows now: volume ID →
// device, each confirmed by the serial of the device it names. problems
// says what did not check out (a link whose device has another serial).
// Without any by-id link (no udev rule), sysfs is scanned for serials.
func (a *Agent) ebsDevices() (devs map[string]string, problems []string) {
	devs = map[string]string{}
	ents, _ := os.ReadDir(a.cfg.DeviceRoot)
	for _, e := range ents {
		m := ebsLinkName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		link := filepath.Join(a.cfg.DeviceRoot, e.Name())
		target, err := filepath.EvalSymlinks(link)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", link, err))
			continue
		}
		got, err := a.readSerial(filepath.Base(target))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s -> %s: %v", link, target, err))
		case got != m[1]:
			problems = append(problems, fmt.Sprintf("%s -> %s has serial %q, not %q", link, target, got, m[1]))
		default:
			devs[volumeFromSerial(m[1])] = target
		}
	}
	if len(devs) > 0 || len(problems) > 0 {
		return devs, problems
	}
	blocks, _ := os.ReadDir(filepath.Join(a.cfg.SysfsRoot, "class", "block"))
	for _, e := range blocks {
		got, err := a.readSerial(e.Name())
		if err != nil || !ebsLinkName.MatchString(ebsLinkPrefix+got) {
			continue
		}
		dev := "/dev/" + e.Name()
		if !a.sameDevice(e.Name(), dev) {
			continue
		}
		devs[volumeFromSerial(got)] = dev
	}
	return devs, problems
}

// sameDevice reports whether dev is the block device sysfs lists as name
// (<sysfs>/class/block/<name>/dev holds its major:minor); without that
// attribute the name is taken as is.
func (a *Agent) sameDevice(name, dev string) bool {
	b, err := os.ReadFile(filepath.Join(a.cfg.SysfsRoot, "class", "block", name, "dev"))
	if err != nil {
		return true
	}
	var maj, min uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err != nil {
		return false
	}
	var st unix.Stat_t
	return unix.Stat(dev, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == unix.Mkdev(maj, min)
}

// deviceWatch wakes the wait when the device directory changes.
type deviceWatch struct {
	f       *os.File // the inotify descriptor; nil when not watching
	changed chan struct{}
}

// watchDevices starts an inotify watch on the device directory. A
// directory that does not exist (yet) is not watched; the wait then
// rescans it quickly instead.
func (a *Agent) watchDevices() *deviceWatch {
	w := &deviceWatch{changed: make(chan struct{}, 1)}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		a.log.Debug("no inotify; rescanning the device directory", "err", err)
		return w
	}
	if _, err := unix.InotifyAddWatch(fd, a.cfg.DeviceRoot, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_DELETE|unix.IN_MOVED_FROM|unix.IN_ATTRIB|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		a.log.Debug("cannot watch the device directory; rescanning it", "dir", a.cfg.DeviceRoot, "err", err)
		return w
	}
	// A non-blocking inotify descriptor is served by Go's poller: Read
	// blocks the goroutine, Close ends it.
	w.f = os.NewFile(uintptr(fd), "inotify:"+a.cfg.DeviceRoot)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := w.f.Read(buf); err != nil {
				return
			}
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

func (w *deviceWatch) close() {
	if w.f != nil {
		w.f.Close()
	}
}

// volumeWait is the state of one wait for the pool volume.
type volumeWait struct {
	a        *Agent
	instance string
	// pool: volume ID → whether it is a pool volume (EC2's answer).
	pool map[string]bool
	// target is the pool volume EC2 shows attaching or attached here.
	target string
	// why is what EC2 showed last, for the log and the timeout error.
	why   string
	calls int
	// deadline ends the wait (DeviceWait after its start).
	deadline time.Time
}

// waitVolume returns the pool volume attached to this instance and its
// device, waiting at most deviceWait for the lifecycle Lambda to attach
// it and for the device to appear.
func (a *Agent) waitVolume(ctx context.Context, instance string) (volume, device string, calls int, err error) {
	deadline := time.Now().Add(time.Duration(a.cfg.DeviceWait))
	w := &volumeWait{a: a, instance: instance, pool: map[string]bool{}, deadline: deadline}
	watch := a.watchDevices()
	defer watch.close()
	rescan := deviceRescan
	if watch.f == nil {
		rescan = deviceRescanUnwatched
	}
	// The watch is in place before the first look, so no device can
	// appear unseen between the two.
	if err := w.askAttached(ctx); err != nil {
		return "", "", w.calls, err
	}
	recheckAt := time.Now().Add(volumeRecheck.Delay(0))
	rechecks := 1
	var unknownAt time.Time
	unknowns := 0
	lastLog := ""
	for {
		devs, problems := a.ebsDevices()
		if w.target != "" {
			if dev, ok := devs[w.target]; ok {
				return w.target, dev, w.calls, nil
			}
		} else if fresh := w.unknown(devs); len(fresh) > 0 && !time.Now().Before(unknownAt) {
			missing, err := w.askByID(ctx, fresh)
			if err != nil {
				return "", "", w.calls, err
			}
			unknownAt = time.Time{}
			if missing {
				unknownAt = time.Now().Add(unknownRecheck.Delay(unknowns))
				unknowns++
			}
			continue
		}
		why := w.waitingFor(devs, problems)
		if why != lastLog {
			a.log.Info("waiting for the pool volume", "instance", instance, "why", why)
			lastLog = why
		}
		now := time.Now()
		if now.After(deadline) {
			if w.target != "" {
				return "", "", w.calls, notReady("device of %s did not appear within %s: %s", w.target, time.Duration(a.cfg.DeviceWait), why)
			}
			return "", "", w.calls, notReady("%s to %s after %s", why, instance, time.Duration(a.cfg.DeviceWait))
		}
		if !now.Before(recheckAt) {
			if err := w.askAttached(ctx); err != nil {
				return "", "", w.calls, err
			}
			recheckAt = time.Now().Add(volumeRecheck.Delay(rechecks))
			rechecks++
			continue
		}
		sleep := min(rescan, recheckAt.Sub(now), deadline.Sub(now)+time.Millisecond)
		if !unknownAt.IsZero() {
			sleep = min(sleep, max(0, unknownAt.Sub(now)))
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", "", w.calls, retryable("waiting for the pool volume: %v", ctx.Err())
		case <-watch.changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// unknown lists the devices' volumes EC2 has not been asked about.
func (w *volumeWait) unknown(devs map[string]string) []string {
	var out []string
	for id := range devs {
		if _, ok := w.pool[id]; !ok {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// describe runs one DescribeVolumes (all pages, retried). A throttled
// call waits on the agent's throttleWait as often as it takes until the
// wait's deadline, so a mass scale-out's agents spread out instead of
// failing and starting over.
func (w *volumeWait) describe(ctx context.Context, in *ec2.DescribeVolumesInput) ([]ec2types.Volume, error) {
	var vols []ec2types.Volume
	if !w.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, w.deadline)
		defer cancel()
	}
	err := awserr.RetryThrottled(ctx, awserr.DefaultBackoff, w.a.throttleWait, nil, func(ctx context.Context) error {
		vols = nil
		p := ec2.NewDescribeVolumesPaginator(w.a.ec2, in)
		for p.HasMorePages() {
			w.calls++
			page, err := p.NextPage(ctx)
			if err != nil {
				return err
			}
			vols = append(vols, page.Volumes...)
		}
		return nil
	})
	return vols, err
}

func (w *volumeWait) isPool(v ec2types.Volume) bool {
	for _, t := range v.Tags {
		if aws.ToString(t.Key) == events.TagPool {
			return aws.ToString(t.Value) == w.a.cfg.Pool
		}
	}
	return false
}

// askAttached asks EC2 which volumes are attached to this instance (any
// attachment state, with their tags): the pool volume among them becomes
// the target; every other one is known not to be it.
func (w *volumeWait) askAttached(ctx context.Context) error {
	vols, err := w.describe(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{w.instance}},
	}})
	if err != nil {
		return awsFailure(err, "describe volumes attached to %s", w.instance)
	}
	var attached, other []string
	w.target = ""
	for _, v := range vols {
		id := aws.ToString(v.VolumeId)
		state := ec2types.VolumeAttachmentStateDetached
		for _, at := range v.Attachments {
			if aws.ToString(at.InstanceId) == w.instance {
				state = at.State
			}
		}
		mine := state == ec2types.VolumeAttachmentStateAttaching || state == ec2types.VolumeAttachmentStateAttached || state == ec2types.VolumeAttachmentStateBusy
		w.pool[id] = mine && w.isPool(v)
		switch {
		case w.pool[id]:
			attached = append(attached, id+" ("+string(state)+")")
			w.target = id
		case w.isPool(v):
			other = append(other, id+" ("+string(state)+")")
		}
	}
	switch {
	case len(attached) > 1:
		return notReady("%d volumes of pool %s are attached to %s (%s); expected one", len(attached), w.a.cfg.Pool, w.instance, strings.Join(attached, ", "))
	case len(attached) == 1:
		w.why = "volume " + attached[0]
	case len(other) > 0:
		w.why = "pool volume not attached yet: " + strings.Join(other, ", ")
	default:
		w.why = "no volume of pool " + w.a.cfg.Pool + " is attached"
	}
	return nil
}

// askByID asks EC2 about the volumes of new devices. Devices are proof of
// the attachment; EC2 only says whether the volume is the pool's. missing
// reports volumes EC2 does not show yet.
func (w *volumeWait) askByID(ctx context.Context, ids []string) (missing bool, err error) {
	vols, err := w.describe(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
		{Name: aws.String("volume-id"), Values: ids},
	}})
	if err != nil {
		return false, awsFailure(err, "describe volumes %s", strings.Join(ids, ", "))
	}
	seen := map[string]bool{}
	for _, v := range vols {
		id := aws.ToString(v.VolumeId)
		seen[id] = true
		w.pool[id] = w.isPool(v)
		if w.pool[id] {
			if w.target != "" && w.target != id {
				return false, notReady("volumes %s and %s of pool %s are attached to %s; expected one", w.target, id, w.a.cfg.Pool, w.instance)
			}
			w.target = id
		}
	}
	for _, id := range ids {
		if !seen[id] {
			missing = true
		}
	}
	return missing, nil
}

// waitingFor says what the wait is waiting for.
func (w *volumeWait) waitingFor(devs map[string]string, problems []string) string {
	why := w.why
	if w.target != "" {
		why += "; its device " + ebsLinkPrefix + volSerial(w.target) + " is not here yet"
	}
	if len(problems) > 0 {
		why += "; " + strings.Join(problems, "; ")
	} else if len(devs) == 0 {
		why += fmt.Sprintf("; no EBS device in %s or %s", w.a.cfg.DeviceRoot, filepath.Join(w.a.cfg.SysfsRoot, "class", "block"))
	}
	return why
}

// WaitForVolume is up's wait for the pool volume and its device (the
// first steps of `volsd-agent up`, without IMDS, mount or catch-up), for
// the mass scale-out benchmark (e2e/bench). It returns the volume, its
// device and the DescribeVolumes calls it made.
func (a *Agent) WaitForVolume(ctx context.Context, instance string) (volume, device string, describeCalls int, err error) {
	return a.waitVolume(ctx, instance)
}
