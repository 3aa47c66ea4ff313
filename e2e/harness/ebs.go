package harness

import (
	"context"
	"encoding/xml"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/lambdaruntime"
)

// InstanceDevices finds the device tree of a simulated instance.
type InstanceDevices interface {
	DeviceTree(instanceID string) (DeviceTree, bool)
}

// EBS gives moto's EC2 volumes and snapshots real block devices and the
// checks moto skips: CreateVolume makes the image, CreateSnapshot copies it,
// AttachVolume refuses volumes in use, in another AZ or device names taken
// and then loop-attaches the image in the instance's device tree;
// DetachVolume fills in the instance moto needs, and keeps a mounted volume
// busy (state stays in-use) until it is unmounted, as EBS does, unless Force.
type EBS struct {
	p     *Proxy
	ec2   *ec2.Client // moto, directly
	disks *Disks
	fleet InstanceDevices
	log   *slog.Logger

	// CreateDelay is how long a new volume stays "creating"; AttachDelay how
	// long an attachment stays "attaching" before its device appears (EC2's
	// asynchronous states, which moto skips). Zero: at once.
	CreateDelay, AttachDelay time.Duration

	mu        sync.Mutex
	busy      map[string]bool      // volume ID → detach waiting for unmount
	creating  map[string]time.Time // volume ID → end of its creating state
	attaching map[string]time.Time // volume ID → end of its attaching state

	stop chan struct{}
	wg   sync.WaitGroup
}

// NewEBS registers the EC2 volume operations on the proxy.
func NewEBS(p *Proxy, ec2c *ec2.Client, disks *Disks, fleet InstanceDevices, log *slog.Logger) *EBS {
	e := &EBS{p: p, ec2: ec2c, disks: disks, fleet: fleet, log: log, stop: make(chan struct{}),
		busy: map[string]bool{}, creating: map[string]time.Time{}, attaching: map[string]time.Time{},
		CreateDelay: 300 * time.Millisecond, AttachDelay: 500 * time.Millisecond}
	p.HandleQuery("ec2", "CreateVolume", e.createVolume)
	p.HandleQuery("ec2", "DeleteVolume", e.deleteVolume)
	p.HandleQuery("ec2", "AttachVolume", e.attachVolume)
	p.HandleQuery("ec2", "DetachVolume", e.detachVolume)
	p.HandleQuery("ec2", "CreateSnapshot", e.createSnapshot)
	p.HandleQuery("ec2", "DeleteSnapshot", e.deleteSnapshot)
	p.HandleQuery("ec2", "DescribeVolumes", e.describeVolumes)
	p.HandleQuery("ec2", "ModifyVolume", e.modifyVolume)
	return e
}

// Close stops the busy-detach watchers.
func (e *EBS) Close() {
	close(e.stop)
	e.wg.Wait()
}

type createVolumeResult struct {
	VolumeID   string `xml:"volumeId"`
	Size       int64  `xml:"size"`
	SnapshotID string `xml:"snapshotId"`
}

type createSnapshotResult struct {
	SnapshotID string `xml:"snapshotId"`
	VolumeID   string `xml:"volumeId"`
}

func (e *EBS) createVolume(w http.ResponseWriter, r *http.Request, form url.Values, body []byte) {
	if form.Get("DryRun") == "true" {
		e.p.forwardTo(w, r, body)
		return
	}
	if snap := form.Get("SnapshotId"); snap != "" && !e.disks.hasSnapshot(snap) {
		// moto knows the snapshot (or will say it does not); its image is
		// missing only for snapshots made outside the proxy.
		e.log.Warn("CreateVolume from a snapshot without an image; the volume starts blank", "snapshot", snap)
	}
	f, err := e.p.forward(r, body)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	if f.Status != http.StatusOK {
		f.write(w, f.Body)
		return
	}
	var res createVolumeResult
	if err := xml.Unmarshal(f.Body, &res); err != nil || res.VolumeID == "" {
		writeEC2Error(w, http.StatusInternalServerError, "InternalError", fmt.Sprintf("proxy: cannot read moto's CreateVolume answer: %v", err))
		return
	}
	snap := res.SnapshotID
	if snap != "" && !e.disks.hasSnapshot(snap) {
		snap = ""
	}
	if err := e.disks.CreateVolume(res.VolumeID, res.Size, snap); err != nil {
		_, _ = e.ec2.DeleteVolume(r.Context(), &ec2.DeleteVolumeInput{VolumeId: &res.VolumeID})
		writeEC2Error(w, http.StatusInternalServerError, "InternalError", "proxy: volume image: "+err.Error())
		return
	}
	answer := f.Body
	if e.CreateDelay > 0 {
		e.mu.Lock()
		e.creating[res.VolumeID] = time.Now().Add(e.CreateDelay)
		e.mu.Unlock()
		answer = []byte(strings.Replace(string(answer), "<status>available</status>", "<status>creating</status>", 1))
	}
	f.write(w, answer)
}

// states returns the volumes now in a transient state the proxy plays.
func (e *EBS) states() (creating, attaching, busy map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	creating, attaching, busy = map[string]bool{}, map[string]bool{}, map[string]bool{}
	for id, until := range e.creating {
		if now.Before(until) {
			creating[id] = true
		} else {
			delete(e.creating, id)
		}
	}
	for id, until := range e.attaching {
		if now.Before(until) {
			attaching[id] = true
		} else {
			delete(e.attaching, id)
		}
	}
	for id := range e.busy {
		busy[id] = true
	}
	return creating, attaching, busy
}

func (e *EBS) deleteVolume(w http.ResponseWriter, r *http.Request, form url.Values, body []byte) {
	id := form.Get("VolumeId")
	if loop, ok := e.disks.Loop(id); ok {
		writeEC2Error(w, http.StatusBadRequest, "VolumeInUse", fmt.Sprintf("Volume %s is currently attached (%s)", id, loop))
		return
	}
	f, err := e.p.forward(r, body)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	if f.Status == http.StatusOK && form.Get("DryRun") != "true" {
		if err := e.disks.DeleteVolume(id); err != nil {
			e.log.Warn("delete volume image", "volume", id, "err", err)
		}
	}
	f.write(w, f.Body)
}

// modifyVolume lets moto record the modification (it completes at once),
// then grows the volume's image to the target size.
func (e *EBS) modifyVolume(w http.ResponseWriter, r *http.Request, form url.Values, body []byte) {
	id := form.Get("VolumeId")
	f, err := e.p.forward(r, body)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	if f.Status == http.StatusOK && form.Get("DryRun") != "true" && e.disks.HasVolume(id) {
		var res struct {
			Target int64 `xml:"volumeModification>targetSize"`
		}
		if err := xml.Unmarshal(f.Body, &res); err != nil || res.Target <= 0 {
			writeEC2Error(w, http.StatusInternalServerError, "InternalError", fmt.Sprintf("proxy: cannot read moto's ModifyVolume answer: %v", err))
			return
		}
		if err := e.disks.GrowVolume(id, res.Target); err != nil {
			writeEC2Error(w, http.StatusInternalServerError, "InternalError", "proxy: grow volume image: "+err.Error())
			return
		}
		e.log.Info("volume grown", "volume", id, "sizeGiB", res.Target)
	}
	f.write(w, f.Body)
}

func (e *EBS) createSnapshot(w http.ResponseWriter, r *http.Request, form url.Values, body []byte) {
	vol := form.Get("VolumeId")
	if form.Get("DryRun") == "true" || !e.disks.HasVolume(vol) {
		e.p.forwardTo(w, r, body) // moto answers the dry run or the unknown volume
		return
	}
	f, err := e.p.forward(r, body)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	if f.Status != http.StatusOK {
		f.write(w, f.Body)
		return
	}
	var res createSnapshotResult
	if err := xml.Unmarshal(f.Body, &res); err != nil || res.SnapshotID == "" {
		writeEC2Error(w, http.StatusInternalServerError, "InternalError", fmt.Sprintf("proxy: cannot read moto's CreateSnapshot answer: %v", err))
		return
	}
	// EBS takes the snapshot's point in time when CreateSnapshot returns;
	// copying before answering gives the same guarantee.
	if err := e.disks.Snapshot(vol, res.SnapshotID); err != nil {
		_, _ = e.ec2.DeleteSnapshot(r.Context(), &ec2.DeleteSnapshotInput{SnapshotId: &res.SnapshotID})
		writeEC2Error(w, http.StatusInternalServerError, "InternalError", "proxy: snapshot image: "+err.Error())
		return
	}
	f.write(w, f.Body)
}

func (e *EBS) deleteSnapshot(w http.ResponseWriter, r *http.Request, form url.Values, body []byte) {
	f, err := e.p.forward(r, body)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	if f.Status == http.StatusOK && form.Get("DryRun") != "true" {
		if err := e.disks.DeleteSnapshot(form.Get("SnapshotId")); err != nil {
			e.log.Warn("delete snapshot image", "snapshot", form.Get("SnapshotId"), "err", err)
		}
	}
	f.write(w, f.Body)
}

var attachmentSetRe = regexp.MustCompile(`(?s)<attachmentSet>.*?</attachmentSet>`)

// describeVolumes shows the states moto skips: a new volume creating, an
// attachment attaching, and a busy detach (requested, still mounted)
// detaching, as EC2 does.
func (e *EBS) describeVolumes(w http.ResponseWriter, r *http.Request, _ url.Values, body []byte) {
	creating, attaching, busy := e.states()
	if len(creating)+len(attaching)+len(busy) == 0 {
		e.p.forwardTo(w, r, body)
		return
	}
	f, err := e.p.forward(r, body)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	if f.Status != http.StatusOK {
		f.write(w, f.Body)
		return
	}
	out := string(f.Body)
	for id := range creating {
		out = rewriteVolumeStatus(out, id, "creating")
	}
	out = attachmentSetRe.ReplaceAllStringFunc(out, func(set string) string {
		for id := range attaching {
			if strings.Contains(set, "<volumeId>"+id+"</volumeId>") {
				return strings.Replace(set, "<status>attached</status>", "<status>attaching</status>", 1)
			}
		}
		for id := range busy {
			if strings.Contains(set, "<volumeId>"+id+"</volumeId>") {
				return strings.Replace(set, "<status>attached</status>", "<status>detaching</status>", 1)
			}
		}
		return set
	})
	f.write(w, []byte(out))
}

// rewriteVolumeStatus sets the volume-level <status> of volume id (the one
// after its own <volumeId>, before its attachmentSet) to state.
func rewriteVolumeStatus(doc, id, state string) string {
	tag := "<volumeId>" + id + "</volumeId>"
	from := 0
	for {
		i := strings.Index(doc[from:], tag)
		if i < 0 {
			return doc
		}
		i += from + len(tag)
		if !strings.HasPrefix(doc[i:], "<instanceId>") { // not an attachment's volumeId
			j := strings.Index(doc[i:], "<status>")
			k := strings.Index(doc[i:], "<attachmentSet>")
			if j >= 0 && (k < 0 || j < k) {
				j += i
				end := strings.Index(doc[j:], "</status>")
				if end > 0 {
					return doc[:j] + "<status>" + state + doc[j+end:]
				}
			}
			return doc
		}
		from = i
	}
}

func (e *EBS) describeVolume(ctx context.Context, id string) (*types.Volume, error) {
	out, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil {
		return nil, err
	}
	if len(out.Volumes) == 0 {
		return nil, nil
	}
	return &out.Volumes[0], nil
}

func (e *EBS) describeInstance(ctx context.Context, id string) (*types.Instance, error) {
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return nil, err
	}
	for _, res := range out.Reservations {
		for i := range res.Instances {
			return &res.Instances[i], nil
		}
	}
	return nil, nil
}

func (e *EBS) attachVolume(w http.ResponseWriter, r *http.Request, form url.Values, body []byte) {
	volID, instID, device := form.Get("VolumeId"), form.Get("InstanceId"), form.Get("Device")
	if form.Get("DryRun") == "true" || volID == "" || instID == "" || device == "" {
		e.p.forwardTo(w, r, body) // moto reports missing parameters
		return
	}
	ctx := r.Context()
	vol, err := e.describeVolume(ctx, volID)
	if err != nil || vol == nil {
		e.p.forwardTo(w, r, body) // moto's InvalidVolume.NotFound
		return
	}
	inst, err := e.describeInstance(ctx, instID)
	if err != nil || inst == nil {
		e.p.forwardTo(w, r, body) // moto's InvalidInstanceID.NotFound
		return
	}
	creating, _, busyNow := e.states()
	busy := busyNow[volID]
	switch {
	case vol.State == types.VolumeStateCreating || creating[volID]:
		writeEC2Error(w, http.StatusBadRequest, "IncorrectState", fmt.Sprintf("vol '%s' is not 'available'.", volID))
		return
	case vol.State == types.VolumeStateInUse || len(vol.Attachments) > 0 || busy:
		writeEC2Error(w, http.StatusBadRequest, "VolumeInUse", fmt.Sprintf("%s is already attached to an instance", volID))
		return
	case vol.State != types.VolumeStateAvailable:
		writeEC2Error(w, http.StatusBadRequest, "IncorrectState", fmt.Sprintf("Volume '%s' is in the '%s' state.", volID, vol.State))
		return
	case inst.State == nil || (inst.State.Name != types.InstanceStateNameRunning && inst.State.Name != types.InstanceStateNameStopped):
		state := "unknown"
		if inst.State != nil {
			state = string(inst.State.Name)
		}
		writeEC2Error(w, http.StatusBadRequest, "IncorrectInstanceState", fmt.Sprintf("Instance '%s' is not 'running'. It is '%s'.", instID, state))
		return
	case inst.Placement != nil && aws.ToString(inst.Placement.AvailabilityZone) != aws.ToString(vol.AvailabilityZone):
		writeEC2Error(w, http.StatusBadRequest, "InvalidVolume.ZoneMismatch",
			fmt.Sprintf("The volume '%s' is not in the same availability zone as instance '%s'", volID, instID))
		return
	}
	for _, m := range inst.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == device {
			writeEC2Error(w, http.StatusBadRequest, "InvalidParameterValue",
				fmt.Sprintf("Invalid value '%s' for unixDevice. Attachment point %s is already in use", device, device))
			return
		}
	}
	tree, simulated := e.fleet.DeviceTree(instID)
	f, err := e.p.forward(r, body)
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	if f.Status == http.StatusOK && simulated && e.disks.HasVolume(volID) {
		if e.AttachDelay > 0 {
			e.mu.Lock()
			e.attaching[volID] = time.Now().Add(e.AttachDelay)
			e.mu.Unlock()
		}
		if _, err := e.disks.AttachAfter(volID, tree, e.AttachDelay); err != nil {
			_, _ = e.ec2.DetachVolume(context.WithoutCancel(ctx), &ec2.DetachVolumeInput{VolumeId: &volID, InstanceId: &instID})
			writeEC2Error(w, http.StatusInternalServerError, "InternalError", "proxy: loop device: "+err.Error())
			return
		}
	}
	f.write(w, f.Body)
}

func (e *EBS) detachVolume(w http.ResponseWriter, r *http.Request, form url.Values, body []byte) {
	volID := form.Get("VolumeId")
	if form.Get("DryRun") == "true" || volID == "" {
		e.p.forwardTo(w, r, body)
		return
	}
	ctx := r.Context()
	vol, err := e.describeVolume(ctx, volID)
	if err != nil || vol == nil {
		e.p.forwardTo(w, r, body)
		return
	}
	if len(vol.Attachments) == 0 {
		writeEC2Error(w, http.StatusBadRequest, "IncorrectState", fmt.Sprintf("Volume '%s' is in the '%s' state.", volID, vol.State))
		return
	}
	att := vol.Attachments[0]
	attInst := aws.ToString(att.InstanceId)
	if inst := form.Get("InstanceId"); inst != "" && inst != attInst {
		writeEC2Error(w, http.StatusBadRequest, "InvalidAttachment.NotFound",
			fmt.Sprintf("Volume %s can not be detached from %s because it is not attached", volID, inst))
		return
	}
	if dev := form.Get("Device"); dev != "" && dev != aws.ToString(att.Device) {
		writeEC2Error(w, http.StatusBadRequest, "InvalidAttachment.NotFound",
			fmt.Sprintf("The volume %s is not attached to %s at %s", volID, attInst, dev))
		return
	}
	force := form.Get("Force") == "true"
	e.mu.Lock()
	busy := e.busy[volID]
	e.mu.Unlock()
	if !force {
		mps, err := e.disks.Mounted(volID)
		if err != nil {
			writeEC2Error(w, http.StatusInternalServerError, "InternalError", "proxy: "+err.Error())
			return
		}
		if busy || len(mps) > 0 {
			if !busy {
				e.log.Warn("DetachVolume of a mounted volume: it stays busy until unmounted", "volume", volID, "instance", attInst, "mount", mps)
				e.mu.Lock()
				e.busy[volID] = true
				e.mu.Unlock()
				e.wg.Add(1)
				go e.detachWhenUnmounted(volID, attInst)
			}
			writeDetaching(w, volID, attInst, aws.ToString(att.Device), att.AttachTime)
			return
		}
	}
	if err := e.disks.Detach(volID, force); err != nil {
		writeEC2Error(w, http.StatusInternalServerError, "InternalError", "proxy: "+err.Error())
		return
	}
	form.Set("InstanceId", attInst) // moto crashes without it
	f, err := e.p.forward(r, encodeForm(form))
	if err != nil {
		writeEC2Error(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
		return
	}
	e.mu.Lock()
	delete(e.busy, volID)
	delete(e.attaching, volID)
	e.mu.Unlock()
	f.write(w, f.Body)
}

func writeDetaching(w http.ResponseWriter, vol, inst, dev string, at *time.Time) {
	t := time.Now()
	if at != nil {
		t = *at
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<DetachVolumeResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>%s</requestId><volumeId>%s</volumeId><instanceId>%s</instanceId><device>%s</device><status>detaching</status><attachTime>%s</attachTime></DetachVolumeResponse>`,
		lambdaruntime.NewRequestID(), vol, inst, xmlEscape(dev), t.UTC().Format(time.RFC3339Nano))
}

// detachWhenUnmounted finishes a busy detach once nothing mounts the volume.
func (e *EBS) detachWhenUnmounted(volID, instID string) {
	defer e.wg.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
		e.mu.Lock()
		still := e.busy[volID]
		e.mu.Unlock()
		if !still { // a forced detach finished it
			return
		}
		mps, err := e.disks.Mounted(volID)
		if err != nil || len(mps) > 0 {
			continue
		}
		if err := e.disks.Detach(volID, false); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: &volID, InstanceId: &instID})
		cancel()
		if err != nil {
			e.log.Warn("finish busy detach in moto", "volume", volID, "err", err)
		}
		e.mu.Lock()
		delete(e.busy, volID)
		e.mu.Unlock()
		e.log.Info("busy volume unmounted and detached", "volume", volID, "instance", instID)
		return
	}
}

// RootVolume is the ID of the EBS volume at the instance's root device
// ("" when EC2 shows none).
func (e *EBS) RootVolume(ctx context.Context, instanceID string) (string, error) {
	inst, err := e.describeInstance(ctx, instanceID)
	if err != nil || inst == nil {
		return "", err
	}
	for _, m := range inst.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == aws.ToString(inst.RootDeviceName) && m.Ebs != nil {
			return aws.ToString(m.Ebs.VolumeId), nil
		}
	}
	return "", nil
}

// ForceDetachAll detaches every volume attached to instanceID (the instance
// is going away: EBS detaches its volumes at termination).
func (e *EBS) ForceDetachAll(ctx context.Context, instanceID string) error {
	out, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}},
	}})
	if err != nil {
		return err
	}
	for _, v := range out.Volumes {
		id := aws.ToString(v.VolumeId)
		if !e.disks.HasVolume(id) {
			continue // the root volume moto made; it goes with the instance
		}
		if err := e.disks.Detach(id, true); err != nil {
			return err
		}
		if _, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: &id, InstanceId: &instanceID, Force: aws.Bool(true)}); err != nil {
			return fmt.Errorf("detach %s from %s: %w", id, instanceID, err)
		}
		e.mu.Lock()
		delete(e.busy, id)
		e.mu.Unlock()
	}
	return nil
}
