// Package awsfake holds hand-written fakes of the AWS APIs volsd calls. They
// behave like AWS where volsd depends on it: resources move through their
// asynchronous states over (configurable) time, errors carry AWS's codes and
// messages, idempotency tokens are honoured, and faults (throttling, server
// errors, errors after the call took effect) can be injected per call.
package awsfake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/internal/awserr"
)

// EC2Config sets the fake's region, zones, clock and how long asynchronous
// state changes take. Zero delays make a change visible at the next call.
type EC2Config struct {
	Region string   // default us-east-1
	AZs    []string // zones that exist; default <region>a, b, c
	// Now is the clock (default time.Now); tests may pass a manual one.
	Now func() time.Time
	// CreateDelay: volume creating → available.
	CreateDelay time.Duration
	// AttachDelay: attachment attaching → attached.
	AttachDelay time.Duration
	// DetachDelay: attachment detaching → gone (volume available).
	DetachDelay time.Duration
	// DeleteDelay: volume deleting → gone.
	DeleteDelay time.Duration
	// SnapshotDelay: snapshot pending → completed.
	SnapshotDelay time.Duration
	// ModifyDelay: modification modifying → optimizing (the new size is
	// visible from then on); OptimizeDelay: optimizing → completed.
	ModifyDelay, OptimizeDelay time.Duration
	// TerminateDelay: instance shutting-down → terminated.
	TerminateDelay time.Duration
	// TerminatedVisible is how long a terminated instance still shows in
	// DescribeInstances (AWS: about an hour); 0 = forever.
	TerminatedVisible time.Duration
	// DescribeLimit is EC2's request-rate limit of the account's
	// non-mutating (Describe*) actions: a token bucket; a call that finds
	// it empty fails with RequestLimitExceeded. Zero: no limit.
	DescribeLimit RequestLimit
}

// RequestLimit is one of EC2's request token buckets: Burst tokens at
// most, Refill tokens added per second. AWS's default for an account's
// non-mutating actions is Burst 100, Refill 20 (EC2 API reference,
// "Request throttling").
type RequestLimit struct {
	Burst, Refill float64
}

// DefaultDescribeLimit is AWS's default bucket for non-mutating actions.
var DefaultDescribeLimit = RequestLimit{Burst: 100, Refill: 20}

// EC2 is an in-memory EC2 of volumes, instances and snapshots in one region.
// It implements the SDK methods volsd uses, with the SDK's signatures. It is
// safe for concurrent use.
type EC2 struct {
	cfg EC2Config

	mu        sync.Mutex
	volumes   map[string]*fakeVolume
	instances map[string]*fakeInstance
	snapshots map[string]*fakeSnapshot
	tokens    map[string]volumeToken
	calls     map[string]int
	before    func(op string) error
	after     func(op string) error
	queued    map[string][]error
	stuck     map[string]bool // volume IDs whose attachments never complete
	failNext  map[string]bool // volume IDs (or "*") whose creation ends in error
	// The Describe* token bucket (DescribeLimit).
	bucket    float64
	bucketAt  time.Time
	throttled map[string]int
}

type fakeVolume struct {
	id, az, volType, kms, snapshot string
	size, iops, throughput, init   int32
	encrypted                      bool
	tags                           map[string]string
	created                        time.Time
	state                          types.VolumeState
	due                            time.Time // when creating/deleting ends
	failCreate                     bool
	att                            *fakeAttachment
	mods                           []*fakeModification // oldest first
}

// fakeModification is one ModifyVolume of a volume's size.
type fakeModification struct {
	from, to     int32
	state        types.VolumeModificationState
	start, due   time.Time // due: when the current state ends
	optimizeDone time.Time
}

type fakeAttachment struct {
	instance, device string
	state            types.VolumeAttachmentState
	since, due       time.Time
}

type fakeInstance struct {
	id, az, root string
	state        types.InstanceStateName
	tags         map[string]string
	launched     time.Time
	due          time.Time // shutting-down/stopping ends
	goneAt       time.Time // terminated since
	extra        []string  // device names taken by non-pool volumes (instance store, ENI-less)
}

type fakeSnapshot struct {
	id, volume string
	size       int32
	tags       map[string]string
	state      types.SnapshotState
	started    time.Time
	due        time.Time
	failed     bool
	encrypted  bool
}

type volumeToken struct {
	volumeID string
	params   string
}

// NewEC2 returns an empty fake EC2.
func NewEC2(cfg EC2Config) *EC2 {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if len(cfg.AZs) == 0 {
		cfg.AZs = []string{cfg.Region + "a", cfg.Region + "b", cfg.Region + "c"}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &EC2{
		cfg:       cfg,
		volumes:   map[string]*fakeVolume{},
		instances: map[string]*fakeInstance{},
		snapshots: map[string]*fakeSnapshot{},
		tokens:    map[string]volumeToken{},
		calls:     map[string]int{},
		queued:    map[string][]error{},
		stuck:     map[string]bool{},
		failNext:  map[string]bool{},
	}
}

// Errors as EC2 returns them.

// EC2Error returns an EC2 client error with code and message.
func EC2Error(code, format string, args ...any) error {
	return &smithy.GenericAPIError{Code: code, Message: fmt.Sprintf(format, args...), Fault: smithy.FaultClient}
}

// EC2Throttle is the error EC2 returns when an account's request rate is exceeded.
func EC2Throttle() error {
	return &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded.", Fault: smithy.FaultClient}
}

// EC2ServerError is an EC2 5xx.
func EC2ServerError() error {
	return &smithy.GenericAPIError{Code: "InternalError", Message: "An internal error has occurred", Fault: smithy.FaultServer}
}

// SetFaults installs fault injectors: before is asked ahead of each call and
// its error returned instead of doing the call; after is asked once a call
// took effect and its error returned instead of the result (the response
// was lost). Either may be nil. op is the SDK method name.
func (f *EC2) SetFaults(before, after func(op string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before, f.after = before, after
}

// FailNext makes the next call of op fail with err before it takes effect
// (one error per call; queue several for several calls).
func (f *EC2) FailNext(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queued[op] = append(f.queued[op], err)
}

// Calls returns how many times op was called (including failed calls).
func (f *EC2) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// StickAttachments makes attachments of volumeID stay "attaching" until
// the volume is detached (on = false lets new attachments complete).
func (f *EC2) StickAttachments(volumeID string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stuck[volumeID] = on
}

// FailNextCreate makes the next CreateVolume end in state "error" instead
// of "available".
func (f *EC2) FailNextCreate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext["*"] = true
}

// start opens an API call: it fails with ctx's error when ctx has ended,
// else takes f.mu and begins op. On success f.mu is held (the caller
// unlocks it); on error it is not.
func (f *EC2) start(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	if err := f.begin(op); err != nil {
		f.mu.Unlock()
		return err
	}
	return nil
}

// begin counts the call, brings every resource up to date, and returns an
// injected error if any. f.mu must be held.
func (f *EC2) begin(op string) error {
	f.calls[op]++
	if err := f.takeToken(op); err != nil {
		return err
	}
	f.advance()
	if q := f.queued[op]; len(q) > 0 {
		f.queued[op] = q[1:]
		return q[0]
	}
	if f.before != nil {
		return f.before(op)
	}
	return nil
}

// takeToken takes a token of the Describe* bucket for a non-mutating op.
// f.mu must be held.
func (f *EC2) takeToken(op string) error {
	lim := f.cfg.DescribeLimit
	if lim.Burst <= 0 || !strings.HasPrefix(op, "Describe") {
		return nil
	}
	now := f.now()
	if f.bucketAt.IsZero() {
		f.bucket, f.bucketAt = lim.Burst, now
	}
	f.bucket = min(lim.Burst, f.bucket+now.Sub(f.bucketAt).Seconds()*lim.Refill)
	f.bucketAt = now
	if f.bucket < 1 {
		if f.throttled == nil {
			f.throttled = map[string]int{}
		}
		f.throttled[op]++
		return EC2Throttle()
	}
	f.bucket--
	return nil
}

// SetDescribeLimit replaces the Describe* bucket (full at once).
func (f *EC2) SetDescribeLimit(lim RequestLimit) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg.DescribeLimit, f.bucketAt = lim, time.Time{}
}

// Throttled returns how many calls of op the Describe* bucket refused.
func (f *EC2) Throttled(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.throttled[op]
}

// end returns the injected "lost response" error for op, if any.
func (f *EC2) end(op string) error {
	if f.after != nil {
		return f.after(op)
	}
	return nil
}

func (f *EC2) now() time.Time { return f.cfg.Now().UTC() }

// advance applies every state change that is due. f.mu must be held.
func (f *EC2) advance() {
	now := f.now()
	for id, v := range f.volumes {
		switch {
		case v.state == types.VolumeStateCreating && !now.Before(v.due):
			v.state = types.VolumeStateAvailable
			if v.failCreate {
				v.state = types.VolumeStateError
			}
		case v.state == types.VolumeStateDeleting && !now.Before(v.due):
			delete(f.volumes, id)
			continue
		}
		for _, m := range v.mods {
			if m.state == types.VolumeModificationStateModifying && !now.Before(m.due) {
				m.state, v.size = types.VolumeModificationStateOptimizing, m.to
			}
			if m.state == types.VolumeModificationStateOptimizing && !now.Before(m.optimizeDone) {
				m.state = types.VolumeModificationStateCompleted
			}
		}
		if a := v.att; a != nil {
			switch {
			case a.state == types.VolumeAttachmentStateAttaching && !now.Before(a.due) && !f.stuck[id]:
				a.state = types.VolumeAttachmentStateAttached
			case a.state == types.VolumeAttachmentStateDetaching && !now.Before(a.due):
				v.att = nil
				v.state = types.VolumeStateAvailable
			}
		}
	}
	for id, in := range f.instances {
		switch {
		case in.state == types.InstanceStateNameShuttingDown && !now.Before(in.due):
			in.state = types.InstanceStateNameTerminated
			in.goneAt = now
		case in.state == types.InstanceStateNameStopping && !now.Before(in.due):
			in.state = types.InstanceStateNameStopped
		case in.state == types.InstanceStateNamePending && !now.Before(in.due):
			in.state = types.InstanceStateNameRunning
		case in.state == types.InstanceStateNameTerminated && f.cfg.TerminatedVisible > 0 && now.Sub(in.goneAt) > f.cfg.TerminatedVisible:
			delete(f.instances, id)
		}
	}
	for _, s := range f.snapshots {
		if s.state == types.SnapshotStatePending && !now.Before(s.due) {
			s.state = types.SnapshotStateCompleted
			if s.failed {
				s.state = types.SnapshotStateError
			}
		}
	}
}

func newID(prefix string) string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])[:17]
}

// InstanceSpec describes an instance to add with AddInstance.
type InstanceSpec struct {
	ID    string // default: a new i-… ID
	AZ    string // default: the first zone
	State types.InstanceStateName
	Tags  map[string]string
	// RootDevice is the root volume's device (default /dev/xvda).
	RootDevice string
	// OtherDevices are further taken device names (e.g. /dev/sdf for an
	// instance-store or non-pool volume).
	OtherDevices []string
	// PendingFor keeps a new instance "pending" (not attachable) this long.
	PendingFor time.Duration
}

// AddInstance adds a running (or spec.State) instance and returns its ID.
func (f *EC2) AddInstance(spec InstanceSpec) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec.ID == "" {
		spec.ID = newID("i")
	}
	if spec.AZ == "" {
		spec.AZ = f.cfg.AZs[0]
	}
	if spec.State == "" {
		spec.State = types.InstanceStateNameRunning
		if spec.PendingFor > 0 {
			spec.State = types.InstanceStateNamePending
		}
	}
	if spec.RootDevice == "" {
		spec.RootDevice = "/dev/xvda"
	}
	f.instances[spec.ID] = &fakeInstance{
		id: spec.ID, az: spec.AZ, root: spec.RootDevice, state: spec.State, tags: copyTags(spec.Tags),
		launched: f.now(), extra: slices.Clone(spec.OtherDevices), due: f.now().Add(spec.PendingFor),
	}
	return spec.ID
}

// TerminateInstance starts terminating an instance, as a Spot interruption
// or a manual terminate would: it goes shutting-down, then terminated after
// TerminateDelay; its volumes are detached (attachments in progress are
// dropped). Unknown or already terminated instances are ignored.
func (f *EC2) TerminateInstance(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	in := f.instances[id]
	if in == nil || in.state == types.InstanceStateNameShuttingDown || in.state == types.InstanceStateNameTerminated {
		return
	}
	now := f.now()
	in.state, in.due = types.InstanceStateNameShuttingDown, now.Add(f.cfg.TerminateDelay)
	for _, v := range f.volumes {
		if v.att != nil && v.att.instance == id && v.att.state != types.VolumeAttachmentStateDetaching {
			v.att.state, v.att.due = types.VolumeAttachmentStateDetaching, now.Add(f.cfg.DetachDelay)
		}
	}
	f.advance()
}

// StopInstance stops a running instance (as a warm pool does); its volumes
// stay attached.
func (f *EC2) StopInstance(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in := f.instances[id]; in != nil && in.state == types.InstanceStateNameRunning {
		in.state, in.due = types.InstanceStateNameStopping, f.now().Add(f.cfg.TerminateDelay)
		f.advance()
	}
}

// StartInstance starts a stopped instance.
func (f *EC2) StartInstance(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in := f.instances[id]; in != nil && in.state == types.InstanceStateNameStopped {
		in.state, in.due = types.InstanceStateNamePending, f.now()
		f.advance()
	}
}

// VolumeSpec describes a volume to add with AddVolume (e.g. an orphan).
type VolumeSpec struct {
	ID         string
	AZ         string
	SizeGiB    int32
	Type       string // default gp3
	SnapshotID string
	Tags       map[string]string
	Created    time.Time // default now
}

// AddVolume adds an available volume and returns its ID.
func (f *EC2) AddVolume(spec VolumeSpec) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec.ID == "" {
		spec.ID = newID("vol")
	}
	if spec.AZ == "" {
		spec.AZ = f.cfg.AZs[0]
	}
	if spec.Type == "" {
		spec.Type = "gp3"
	}
	if spec.SizeGiB == 0 {
		spec.SizeGiB = 8
	}
	if spec.Created.IsZero() {
		spec.Created = f.now()
	}
	f.volumes[spec.ID] = &fakeVolume{
		id: spec.ID, az: spec.AZ, size: spec.SizeGiB, volType: spec.Type, snapshot: spec.SnapshotID,
		tags: copyTags(spec.Tags), created: spec.Created.UTC(), state: types.VolumeStateAvailable, encrypted: true,
	}
	return spec.ID
}

// SnapshotSpec describes a snapshot to add with AddSnapshot.
type SnapshotSpec struct {
	ID       string
	VolumeID string
	SizeGiB  int32
	Tags     map[string]string
	State    types.SnapshotState // default completed
}

// AddSnapshot adds a snapshot and returns its ID.
func (f *EC2) AddSnapshot(spec SnapshotSpec) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec.ID == "" {
		spec.ID = newID("snap")
	}
	if spec.SizeGiB == 0 {
		spec.SizeGiB = 8
	}
	if spec.State == "" {
		spec.State = types.SnapshotStateCompleted
	}
	f.snapshots[spec.ID] = &fakeSnapshot{
		id: spec.ID, volume: spec.VolumeID, size: spec.SizeGiB, tags: copyTags(spec.Tags),
		state: spec.State, started: f.now(), encrypted: true,
	}
	return spec.ID
}

// VolumeView is what the fake holds about one volume, for test assertions.
type VolumeView struct {
	ID, AZ, SnapshotID, KmsKeyID, Type  string
	SizeGiB, IOPS, Throughput, InitRate int32
	Encrypted                           bool
	State                               types.VolumeState
	Tags                                map[string]string
	Created                             time.Time
	// Instance, Device and Attachment describe the attachment, if any.
	Instance, Device string
	Attachment       types.VolumeAttachmentState
}

func (v *fakeVolume) view() VolumeView {
	out := VolumeView{
		ID: v.id, AZ: v.az, SnapshotID: v.snapshot, KmsKeyID: v.kms, Type: v.volType, SizeGiB: v.size,
		IOPS: v.iops, Throughput: v.throughput, InitRate: v.init, Encrypted: v.encrypted, State: v.state,
		Tags: copyTags(v.tags), Created: v.created,
	}
	if v.att != nil {
		out.Instance, out.Device, out.Attachment = v.att.instance, v.att.device, v.att.state
	}
	return out
}

// Volume returns the fake's view of one volume (false once it is gone).
func (f *EC2) Volume(id string) (VolumeView, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	v, ok := f.volumes[id]
	if !ok {
		return VolumeView{}, false
	}
	return v.view(), true
}

// Volumes returns every volume that exists, sorted by ID.
func (f *EC2) Volumes() []VolumeView {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	out := make([]VolumeView, 0, len(f.volumes))
	for _, v := range f.volumes {
		out = append(out, v.view())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// InstanceState returns an instance's state ("" if unknown).
func (f *EC2) InstanceState(id string) types.InstanceStateName {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	if in := f.instances[id]; in != nil {
		return in.state
	}
	return ""
}

// InstanceAZ returns an instance's zone ("" if unknown).
func (f *EC2) InstanceAZ(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in := f.instances[id]; in != nil {
		return in.az
	}
	return ""
}

// SetSnapshotState changes a snapshot's state (e.g. to error).
func (f *EC2) SetSnapshotState(id string, st types.SnapshotState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.snapshots[id]; s != nil {
		s.state = st
	}
}

// --- volumes ---

var volumeTypes = map[string]bool{"gp2": true, "gp3": true, "io1": true, "io2": true, "st1": true, "sc1": true, "standard": true}

// CreateVolume creates a volume in state creating; it becomes available
// after CreateDelay. A repeated ClientToken with the same parameters returns
// the first call's volume; with other parameters it fails with
// IdempotentParameterMismatch.
func (f *EC2) CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, _ ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	const op = "CreateVolume"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	az, vt := aws.ToString(in.AvailabilityZone), string(in.VolumeType)
	if vt == "" {
		vt = "gp2"
	}
	switch {
	case az == "":
		return nil, EC2Error("MissingParameter", "The request must contain the parameter AvailabilityZone")
	case !slices.Contains(f.cfg.AZs, az):
		return nil, EC2Error("InvalidParameterValue", "Invalid availability zone: [%s]", az)
	case !volumeTypes[vt]:
		return nil, EC2Error("InvalidParameterValue", "Value (%s) for parameter volumeType is invalid.", vt)
	case in.Size == nil && in.SnapshotId == nil:
		return nil, EC2Error("MissingParameter", "The request must contain the parameter size or snapshotId")
	case in.Iops != nil && (vt == "gp2" || vt == "st1" || vt == "sc1" || vt == "standard"):
		return nil, EC2Error("InvalidParameterCombination", "The parameter iops is not supported for %s volumes.", vt)
	case in.Iops == nil && (vt == "io1" || vt == "io2"):
		return nil, EC2Error("MissingParameter", "The request must contain the parameter iops")
	case in.Throughput != nil && vt != "gp3":
		return nil, EC2Error("InvalidParameterCombination", "The parameter throughput is not supported for %s volumes.", vt)
	case in.VolumeInitializationRate != nil && in.SnapshotId == nil:
		return nil, EC2Error("InvalidParameterCombination", "The parameter VolumeInitializationRate can only be specified when creating a volume from a snapshot.")
	case in.VolumeInitializationRate != nil && (*in.VolumeInitializationRate < 100 || *in.VolumeInitializationRate > 300):
		return nil, EC2Error("InvalidParameterValue", "Value (%d) for parameter VolumeInitializationRate is invalid. Valid values are 100-300 MiB/s.", *in.VolumeInitializationRate)
	case in.KmsKeyId != nil && !aws.ToBool(in.Encrypted):
		return nil, EC2Error("InvalidParameterDependency", "The parameter KmsKeyId requires the parameter Encrypted to be set.")
	}
	size := aws.ToInt32(in.Size)
	if sid := aws.ToString(in.SnapshotId); sid != "" {
		s := f.snapshots[sid]
		if s == nil {
			return nil, EC2Error("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", sid)
		}
		if s.state != types.SnapshotStateCompleted {
			return nil, EC2Error("IncorrectState", "Snapshot '%s' is not 'completed'.", sid)
		}
		if size == 0 {
			size = s.size
		}
		if size < s.size {
			return nil, EC2Error("InvalidParameterValue", "Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB", size, sid, s.size)
		}
	}
	if size < 1 || size > 16384 {
		return nil, EC2Error("InvalidParameterValue", "Volume size %d is out of range 1-16384 GiB.", size)
	}
	tags := map[string]string{}
	for _, ts := range in.TagSpecifications {
		if ts.ResourceType != types.ResourceTypeVolume {
			return nil, EC2Error("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", ts.ResourceType)
		}
		for _, t := range ts.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
	}
	params := fmt.Sprint(az, vt, size, aws.ToInt32(in.Iops), aws.ToInt32(in.Throughput), aws.ToString(in.SnapshotId),
		aws.ToBool(in.Encrypted), aws.ToString(in.KmsKeyId), aws.ToInt32(in.VolumeInitializationRate), sortedTags(tags))
	if tok := aws.ToString(in.ClientToken); tok != "" {
		if len(tok) > 64 {
			return nil, EC2Error("InvalidParameterValue", "Value (%s) for parameter clientToken is invalid. Tokens must be at most 64 ASCII characters.", tok)
		}
		if prev, ok := f.tokens[tok]; ok {
			if prev.params != params {
				return nil, EC2Error("IdempotentParameterMismatch", "The client token you have provided is associated with a resource that is already deleted or has different parameters.")
			}
			if v := f.volumes[prev.volumeID]; v != nil {
				return f.volumeOut(v), f.end(op)
			}
			// Deleted since: AWS still answers with the original volume.
			return &ec2.CreateVolumeOutput{VolumeId: aws.String(prev.volumeID), AvailabilityZone: aws.String(az),
				State: types.VolumeStateDeleted, Size: aws.Int32(size)}, f.end(op)
		}
	}
	now := f.now()
	v := &fakeVolume{
		id: newID("vol"), az: az, volType: vt, size: size, iops: aws.ToInt32(in.Iops), throughput: aws.ToInt32(in.Throughput),
		init: aws.ToInt32(in.VolumeInitializationRate), encrypted: aws.ToBool(in.Encrypted), kms: aws.ToString(in.KmsKeyId),
		snapshot: aws.ToString(in.SnapshotId), tags: tags, created: now, state: types.VolumeStateCreating,
		due: now.Add(f.cfg.CreateDelay), failCreate: f.failNext["*"],
	}
	delete(f.failNext, "*")
	if v.encrypted && v.kms == "" {
		v.kms = "arn:aws:kms:" + f.cfg.Region + ":123456789012:alias/aws/ebs"
	}
	if vt == "gp3" {
		if v.iops == 0 {
			v.iops = 3000
		}
		if v.throughput == 0 {
			v.throughput = 125
		}
	}
	f.volumes[v.id] = v
	if tok := aws.ToString(in.ClientToken); tok != "" {
		f.tokens[tok] = volumeToken{volumeID: v.id, params: params}
	}
	out := f.volumeOut(v)
	f.advance() // a zero delay makes it available at once, as moto does
	return out, f.end(op)
}

func (f *EC2) volumeOut(v *fakeVolume) *ec2.CreateVolumeOutput {
	d := v.describe()
	return &ec2.CreateVolumeOutput{
		VolumeId: d.VolumeId, AvailabilityZone: d.AvailabilityZone, CreateTime: d.CreateTime, Encrypted: d.Encrypted,
		KmsKeyId: d.KmsKeyId, Iops: d.Iops, Throughput: d.Throughput, Size: d.Size, SnapshotId: d.SnapshotId,
		State: d.State, Tags: d.Tags, VolumeType: d.VolumeType, VolumeInitializationRate: d.VolumeInitializationRate,
	}
}

func (v *fakeVolume) describe() types.Volume {
	out := types.Volume{
		VolumeId: aws.String(v.id), AvailabilityZone: aws.String(v.az), CreateTime: aws.Time(v.created),
		Encrypted: aws.Bool(v.encrypted), Size: aws.Int32(v.size), State: v.state, VolumeType: types.VolumeType(v.volType),
		Tags: tagList(v.tags),
	}
	if v.kms != "" {
		out.KmsKeyId = aws.String(v.kms)
	}
	if v.iops != 0 {
		out.Iops = aws.Int32(v.iops)
	}
	if v.throughput != 0 {
		out.Throughput = aws.Int32(v.throughput)
	}
	if v.init != 0 {
		out.VolumeInitializationRate = aws.Int32(v.init)
	}
	if v.snapshot != "" {
		out.SnapshotId = aws.String(v.snapshot)
	}
	if a := v.att; a != nil {
		out.Attachments = []types.VolumeAttachment{{
			VolumeId: aws.String(v.id), InstanceId: aws.String(a.instance), Device: aws.String(a.device),
			State: a.state, AttachTime: aws.Time(a.since), DeleteOnTermination: aws.Bool(false),
		}}
	}
	return out
}

// DescribeVolumes lists volumes by ID (an unknown ID fails the whole call
// with InvalidVolume.NotFound, as in AWS) and/or filters, paginated.
// Supported filters: volume-id, status, availability-zone, snapshot-id,
// attachment.instance-id, attachment.status, attachment.device, tag:<key>,
// tag-key.
func (f *EC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, _ ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	const op = "DescribeVolumes"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	if len(in.VolumeIds) > 0 && in.MaxResults != nil {
		return nil, EC2Error("InvalidParameterCombination", "The parameter volumeSet cannot be used with the parameter maxResults")
	}
	page, next, err := list(f.volumes, in.VolumeIds, in.Filters, in.MaxResults, in.NextToken, (*fakeVolume).filterValues, (*fakeVolume).describe,
		func(missing []string) error {
			return EC2Error("InvalidVolume.NotFound", "The volume '%s' does not exist.", strings.Join(missing, ","))
		})
	if err != nil {
		return nil, err
	}
	return &ec2.DescribeVolumesOutput{Volumes: page, NextToken: next}, f.end(op)
}

func (v *fakeVolume) filterValues(name string) ([]string, bool) {
	var inst, state, dev []string // no attachment: no values
	if v.att != nil {
		inst, state, dev = []string{v.att.instance}, []string{string(v.att.state)}, []string{v.att.device}
	}
	return fieldValues(name, map[string][]string{
		"volume-id": {v.id}, "status": {string(v.state)}, "availability-zone": {v.az}, "snapshot-id": {v.snapshot},
		"volume-type": {v.volType}, "attachment.instance-id": inst, "attachment.status": state, "attachment.device": dev,
	}, v.tags)
}

// volume returns the volume vid, or EC2's InvalidVolume.NotFound. f.mu
// must be held.
func (f *EC2) volume(vid string) (*fakeVolume, error) {
	if v := f.volumes[vid]; v != nil {
		return v, nil
	}
	return nil, EC2Error("InvalidVolume.NotFound", "The volume '%s' does not exist.", vid)
}

// validDevice reports whether name is a device name EC2 accepts for an EBS
// attachment on Nitro/HVM instances.
func validDevice(name string) bool {
	if rest, ok := strings.CutPrefix(name, "/dev/sd"); ok {
		return len(rest) == 1 && rest[0] >= 'a' && rest[0] <= 'z' || len(rest) == 2 && rest[0] >= 'a' && rest[0] <= 'z' && rest[1] >= 'a' && rest[1] <= 'z'
	}
	if rest, ok := strings.CutPrefix(name, "/dev/xvd"); ok {
		return len(rest) == 1 && rest[0] >= 'a' && rest[0] <= 'z' || len(rest) == 2 && rest[0] >= 'a' && rest[0] <= 'z' && rest[1] >= 'a' && rest[1] <= 'z'
	}
	return false
}

// sameDevice reports whether two device names address the same slot
// (/dev/sdf and /dev/xvdf are one).
func sameDevice(a, b string) bool {
	norm := func(s string) string {
		if r, ok := strings.CutPrefix(s, "/dev/xvd"); ok {
			return "/dev/sd" + r
		}
		return s
	}
	return norm(a) == norm(b)
}

// AttachVolume starts attaching an available volume to a running or stopped
// instance in the same zone at a free device name; the attachment becomes
// attached after AttachDelay (unless StickAttachments).
func (f *EC2) AttachVolume(ctx context.Context, in *ec2.AttachVolumeInput, _ ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error) {
	const op = "AttachVolume"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	vid, iid, dev := aws.ToString(in.VolumeId), aws.ToString(in.InstanceId), aws.ToString(in.Device)
	v, err := f.volume(vid)
	if err != nil {
		return nil, err
	}
	inst := f.instances[iid]
	switch {
	case inst == nil:
		return nil, EC2Error("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", iid)
	case !validDevice(dev):
		return nil, EC2Error("InvalidParameterValue", "Value (%s) for parameter device is invalid. %s is not a valid EBS device name.", dev, dev)
	case inst.state != types.InstanceStateNameRunning && inst.state != types.InstanceStateNameStopped:
		return nil, EC2Error("IncorrectInstanceState", "The instance '%s' is not in a valid state for this operation.", iid)
	case v.az != inst.az:
		return nil, EC2Error("InvalidVolume.ZoneMismatch", "The volume '%s' is not in the same availability zone as instance '%s'", vid, iid)
	case v.att != nil || v.state == types.VolumeStateInUse:
		return nil, EC2Error("VolumeInUse", "%s is already attached to an instance", vid)
	case v.state != types.VolumeStateAvailable:
		return nil, EC2Error("IncorrectState", "%s is not 'available'.", vid)
	}
	if f.deviceTaken(inst, dev) {
		return nil, EC2Error("InvalidParameterValue", "Invalid value '%s' for unixDevice. Attachment point %s is already in use", dev, dev)
	}
	now := f.now()
	v.state = types.VolumeStateInUse
	v.att = &fakeAttachment{instance: iid, device: dev, state: types.VolumeAttachmentStateAttaching, since: now, due: now.Add(f.cfg.AttachDelay)}
	out := &ec2.AttachVolumeOutput{
		VolumeId: aws.String(vid), InstanceId: aws.String(iid), Device: aws.String(dev),
		State: types.VolumeAttachmentStateAttaching, AttachTime: aws.Time(now), DeleteOnTermination: aws.Bool(false),
	}
	f.advance()
	return out, f.end(op)
}

func (f *EC2) deviceTaken(inst *fakeInstance, dev string) bool {
	if sameDevice(inst.root, dev) {
		return true
	}
	for _, d := range inst.extra {
		if sameDevice(d, dev) {
			return true
		}
	}
	for _, v := range f.volumes {
		if v.att != nil && v.att.instance == inst.id && sameDevice(v.att.device, dev) {
			return true
		}
	}
	return false
}

// DetachVolume starts detaching a volume (attaching or attached); the
// volume is available after DetachDelay. Detaching an available volume is
// IncorrectState; naming another instance is InvalidAttachment.NotFound.
func (f *EC2) DetachVolume(ctx context.Context, in *ec2.DetachVolumeInput, _ ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error) {
	const op = "DetachVolume"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	vid, iid := aws.ToString(in.VolumeId), aws.ToString(in.InstanceId)
	v, err := f.volume(vid)
	if err != nil {
		return nil, err
	}
	switch {
	case v.att == nil:
		return nil, EC2Error("IncorrectState", "Volume '%s' is in the '%s' state.", vid, v.state)
	case iid != "" && v.att.instance != iid:
		return nil, EC2Error("InvalidAttachment.NotFound", "Volume %s can not be detached from %s because it is not attached", vid, iid)
	case in.Device != nil && !sameDevice(*in.Device, v.att.device):
		return nil, EC2Error("InvalidAttachment.NotFound", "Volume %s is not attached at %s", vid, *in.Device)
	}
	now := f.now()
	if v.att.state != types.VolumeAttachmentStateDetaching {
		v.att.state, v.att.due = types.VolumeAttachmentStateDetaching, now.Add(f.cfg.DetachDelay)
	}
	out := &ec2.DetachVolumeOutput{
		VolumeId: aws.String(vid), InstanceId: aws.String(v.att.instance), Device: aws.String(v.att.device),
		State: types.VolumeAttachmentStateDetaching, AttachTime: aws.Time(v.att.since), DeleteOnTermination: aws.Bool(false),
	}
	f.advance()
	return out, f.end(op)
}

// DeleteVolume starts deleting an available (or failed) volume; it is gone
// after DeleteDelay. An attached volume is VolumeInUse; a volume still
// creating is IncorrectState; deleting twice is fine.
func (f *EC2) DeleteVolume(ctx context.Context, in *ec2.DeleteVolumeInput, _ ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error) {
	const op = "DeleteVolume"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	vid := aws.ToString(in.VolumeId)
	v, err := f.volume(vid)
	if err != nil {
		return nil, err
	}
	switch {
	case v.att != nil:
		return nil, EC2Error("VolumeInUse", "Volume %s is currently attached to %s", vid, v.att.instance)
	case v.state == types.VolumeStateCreating:
		return nil, EC2Error("IncorrectState", "The volume '%s' is 'creating'", vid)
	}
	if v.state != types.VolumeStateDeleting {
		v.state, v.due = types.VolumeStateDeleting, f.now().Add(f.cfg.DeleteDelay)
	}
	f.advance()
	return &ec2.DeleteVolumeOutput{}, f.end(op)
}

// ModifyVolume changes a volume's size as EBS does: only an available or
// in-use volume, only larger (InvalidParameterValue otherwise), never while
// a modification is modifying or optimizing (IncorrectModificationState),
// never within 6 hours of the last one (VolumeModificationRateExceeded).
// The new size shows once the modification reaches optimizing.
func (f *EC2) ModifyVolume(ctx context.Context, in *ec2.ModifyVolumeInput, _ ...func(*ec2.Options)) (*ec2.ModifyVolumeOutput, error) {
	const op = "ModifyVolume"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	vid := aws.ToString(in.VolumeId)
	v, err := f.volume(vid)
	if err != nil {
		return nil, err
	}
	switch {
	case v.state != types.VolumeStateAvailable && v.state != types.VolumeStateInUse:
		return nil, EC2Error("IncorrectState", "The volume '%s' is '%s'", vid, v.state)
	case in.Size == nil || in.VolumeType != "" || in.Iops != nil || in.Throughput != nil:
		return nil, EC2Error("InvalidParameterValue", "this fake modifies the size only")
	case aws.ToInt32(in.Size) <= v.size:
		return nil, EC2Error("InvalidParameterValue", "New size cannot be smaller than existing size")
	}
	now := f.now()
	if n := len(v.mods); n > 0 {
		last := v.mods[n-1]
		if last.state == types.VolumeModificationStateModifying || last.state == types.VolumeModificationStateOptimizing {
			return nil, EC2Error("IncorrectModificationState", "Cannot modify volume %s: a modification is %s", vid, last.state)
		}
		if now.Sub(last.start) < awserr.EBSModificationCooldown {
			return nil, EC2Error("VolumeModificationRateExceeded", "You've reached the maximum modification rate per volume limit. Wait at least 6 hours between modifications per EBS volume.")
		}
	}
	m := &fakeModification{from: v.size, to: aws.ToInt32(in.Size), state: types.VolumeModificationStateModifying, start: now,
		due: now.Add(f.cfg.ModifyDelay), optimizeDone: now.Add(f.cfg.ModifyDelay + f.cfg.OptimizeDelay)}
	v.mods = append(v.mods, m)
	f.advance()
	return &ec2.ModifyVolumeOutput{VolumeModification: m.view(vid)}, f.end(op)
}

// DescribeVolumesModifications lists every modification of the given
// volumes (an unknown ID fails the call with InvalidVolume.NotFound).
func (f *EC2) DescribeVolumesModifications(ctx context.Context, in *ec2.DescribeVolumesModificationsInput, _ ...func(*ec2.Options)) (*ec2.DescribeVolumesModificationsOutput, error) {
	const op = "DescribeVolumesModifications"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	out := &ec2.DescribeVolumesModificationsOutput{}
	for _, id := range in.VolumeIds {
		v, err := f.volume(id)
		if err != nil {
			return nil, err
		}
		for _, m := range v.mods {
			out.VolumesModifications = append(out.VolumesModifications, *m.view(id))
		}
	}
	return out, f.end(op)
}

func (m *fakeModification) view(id string) *types.VolumeModification {
	return &types.VolumeModification{
		VolumeId: aws.String(id), ModificationState: m.state, StartTime: aws.Time(m.start),
		OriginalSize: aws.Int32(m.from), TargetSize: aws.Int32(m.to),
	}
}

// --- instances ---

var instanceCodes = map[types.InstanceStateName]int32{
	types.InstanceStateNamePending: 0, types.InstanceStateNameRunning: 16, types.InstanceStateNameShuttingDown: 32,
	types.InstanceStateNameTerminated: 48, types.InstanceStateNameStopping: 64, types.InstanceStateNameStopped: 80,
}

// DescribeInstances lists instances by ID (an unknown ID fails the call with
// InvalidInstanceID.NotFound) and/or filters: instance-id,
// instance-state-name, availability-zone, tag:<key>, tag-key. Each instance
// comes in its own reservation, with its block device mappings.
func (f *EC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	const op = "DescribeInstances"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	if len(in.InstanceIds) > 0 && in.MaxResults != nil {
		return nil, EC2Error("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	page, next, err := list(f.instances, in.InstanceIds, in.Filters, in.MaxResults, in.NextToken, (*fakeInstance).filterValues,
		func(inst *fakeInstance) types.Reservation {
			return types.Reservation{ReservationId: aws.String("r-" + inst.id[2:]), Instances: []types.Instance{f.describeInstance(inst)}}
		},
		func(missing []string) error {
			return EC2Error("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", missing[0])
		})
	if err != nil {
		return nil, err
	}
	return &ec2.DescribeInstancesOutput{Reservations: page, NextToken: next}, f.end(op)
}

func (inst *fakeInstance) filterValues(name string) ([]string, bool) {
	return fieldValues(name, map[string][]string{
		"instance-id": {inst.id}, "instance-state-name": {string(inst.state)}, "availability-zone": {inst.az},
	}, inst.tags)
}

func (f *EC2) describeInstance(inst *fakeInstance) types.Instance {
	out := types.Instance{
		InstanceId: aws.String(inst.id), Placement: &types.Placement{AvailabilityZone: aws.String(inst.az)},
		State:          &types.InstanceState{Name: inst.state, Code: aws.Int32(instanceCodes[inst.state])},
		RootDeviceName: aws.String(inst.root), RootDeviceType: types.DeviceTypeEbs, LaunchTime: aws.Time(inst.launched),
		Tags: tagList(inst.tags), InstanceType: types.InstanceTypeT4gMicro,
	}
	if inst.state == types.InstanceStateNameTerminated {
		return out // no block devices any more
	}
	out.BlockDeviceMappings = append(out.BlockDeviceMappings, types.InstanceBlockDeviceMapping{
		DeviceName: aws.String(inst.root),
		Ebs:        &types.EbsInstanceBlockDevice{VolumeId: aws.String("vol-root" + inst.id[2:]), Status: types.AttachmentStatusAttached, DeleteOnTermination: aws.Bool(true)},
	})
	for _, d := range inst.extra {
		out.BlockDeviceMappings = append(out.BlockDeviceMappings, types.InstanceBlockDeviceMapping{
			DeviceName: aws.String(d),
			Ebs:        &types.EbsInstanceBlockDevice{VolumeId: aws.String("vol-extra" + inst.id[2:]), Status: types.AttachmentStatusAttached, DeleteOnTermination: aws.Bool(true)},
		})
	}
	ids := make([]string, 0)
	for id, v := range f.volumes {
		if v.att != nil && v.att.instance == inst.id {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := f.volumes[id].att
		out.BlockDeviceMappings = append(out.BlockDeviceMappings, types.InstanceBlockDeviceMapping{
			DeviceName: aws.String(a.device),
			Ebs:        &types.EbsInstanceBlockDevice{VolumeId: aws.String(id), Status: types.AttachmentStatus(a.state), AttachTime: aws.Time(a.since), DeleteOnTermination: aws.Bool(false)},
		})
	}
	return out
}

// --- snapshots (used by the snapshot Lambda's tests) ---

// CreateSnapshot starts a snapshot of a volume (pending → completed after
// SnapshotDelay).
func (f *EC2) CreateSnapshot(ctx context.Context, in *ec2.CreateSnapshotInput, _ ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error) {
	const op = "CreateSnapshot"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	vid := aws.ToString(in.VolumeId)
	v, err := f.volume(vid)
	if err != nil {
		return nil, err
	}
	switch {
	case v.state != types.VolumeStateAvailable && v.state != types.VolumeStateInUse:
		return nil, EC2Error("IncorrectState", "The volume '%s' is '%s'", vid, v.state)
	}
	tags := map[string]string{}
	for _, ts := range in.TagSpecifications {
		if ts.ResourceType != types.ResourceTypeSnapshot {
			return nil, EC2Error("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", ts.ResourceType)
		}
		for _, t := range ts.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
	}
	now := f.now()
	s := &fakeSnapshot{id: newID("snap"), volume: vid, size: v.size, tags: tags, state: types.SnapshotStatePending,
		started: now, due: now.Add(f.cfg.SnapshotDelay), encrypted: v.encrypted}
	f.snapshots[s.id] = s
	d := s.describe()
	f.advance()
	return &ec2.CreateSnapshotOutput{SnapshotId: d.SnapshotId, VolumeId: d.VolumeId, VolumeSize: d.VolumeSize,
		State: types.SnapshotStatePending, StartTime: d.StartTime, Tags: d.Tags, Encrypted: d.Encrypted,
		Progress: aws.String("0%"), Description: in.Description}, f.end(op)
}

func (s *fakeSnapshot) describe() types.Snapshot {
	prog := "0%"
	if s.state == types.SnapshotStateCompleted {
		prog = "100%"
	}
	return types.Snapshot{
		SnapshotId: aws.String(s.id), VolumeId: aws.String(s.volume), VolumeSize: aws.Int32(s.size), State: s.state,
		StartTime: aws.Time(s.started), Tags: tagList(s.tags), Encrypted: aws.Bool(s.encrypted), Progress: aws.String(prog),
		OwnerId: aws.String("123456789012"),
	}
}

// DescribeSnapshots lists snapshots by ID (unknown ID: InvalidSnapshot.NotFound)
// and/or filters: snapshot-id, status, volume-id, tag:<key>, tag-key.
func (f *EC2) DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	const op = "DescribeSnapshots"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	page, next, err := list(f.snapshots, in.SnapshotIds, in.Filters, in.MaxResults, in.NextToken, (*fakeSnapshot).filterValues, (*fakeSnapshot).describe,
		func(missing []string) error {
			return EC2Error("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", missing[0])
		})
	if err != nil {
		return nil, err
	}
	return &ec2.DescribeSnapshotsOutput{Snapshots: page, NextToken: next}, f.end(op)
}

func (s *fakeSnapshot) filterValues(name string) ([]string, bool) {
	return fieldValues(name, map[string][]string{
		"snapshot-id": {s.id}, "status": {string(s.state)}, "volume-id": {s.volume},
	}, s.tags)
}

// DeleteSnapshot deletes a snapshot; one that a creating volume is being
// restored from is InvalidSnapshot.InUse.
func (f *EC2) DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	const op = "DeleteSnapshot"
	if err := f.start(ctx, op); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	sid := aws.ToString(in.SnapshotId)
	if f.snapshots[sid] == nil {
		return nil, EC2Error("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", sid)
	}
	for _, v := range f.volumes {
		if v.snapshot == sid && v.state == types.VolumeStateCreating {
			return nil, EC2Error("InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s", sid, v.id)
		}
	}
	delete(f.snapshots, sid)
	return &ec2.DeleteSnapshotOutput{}, f.end(op)
}

// --- filters, tags, pages ---

// matchFilters applies EC2 filter semantics: every filter must match, a
// filter matches when any of its values equals any of the resource's values
// ('*' and '?' wildcards allowed). values reports the resource's values for a
// filter name and whether the name is known.
func matchFilters(filters []types.Filter, values func(string) ([]string, bool)) (bool, error) {
	for _, fl := range filters {
		name := aws.ToString(fl.Name)
		have, known := values(name)
		if !known {
			return false, EC2Error("InvalidParameterValue", "The filter '%s' is invalid", name)
		}
		hit := false
		for _, want := range fl.Values {
			for _, h := range have {
				if wildcard(want, h) {
					hit = true
				}
			}
		}
		if !hit {
			return false, nil
		}
	}
	return true, nil
}

// fieldValues answers a filter name from a resource's fields (filter name →
// its values; nil: none) and its tags (tagFilterValues).
func fieldValues(name string, fields map[string][]string, tags map[string]string) ([]string, bool) {
	if v, ok := fields[name]; ok {
		return v, true
	}
	return tagFilterValues(tags, name)
}

func tagFilterValues(tags map[string]string, name string) ([]string, bool) {
	if k, ok := strings.CutPrefix(name, "tag:"); ok {
		if v, ok := tags[k]; ok {
			return []string{v}, true
		}
		return nil, true
	}
	if name == "tag-key" {
		keys := make([]string, 0, len(tags))
		for k := range tags {
			keys = append(keys, k)
		}
		return keys, true
	}
	return nil, false
}

// wildcard matches s against pattern with EC2's * and ? wildcards.
func wildcard(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == s
	}
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case '*':
		for i := 0; i <= len(s); i++ {
			if wildcard(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	case '?':
		return s != "" && wildcard(pattern[1:], s[1:])
	}
	return s != "" && s[0] == pattern[0] && wildcard(pattern[1:], s[1:])
}

// paginate cuts items into a page of maxResults (5..1000, default all)
// starting at the offset that next encodes.
// list is the selection of a Describe* call over resources keyed by ID:
// every ID of ids must exist (else notFound of the missing ones, in ids'
// order); the resources named by ids (all when none are) that match
// filters (by values), described, ordered by ID, one page of them.
func list[R, T any](all map[string]*R, ids []string, filters []types.Filter, maxResults *int32, nextToken *string,
	values func(*R, string) ([]string, bool), describe func(*R) T, notFound func(missing []string) error) ([]T, *string, error) {
	var missing []string
	for _, id := range ids {
		if all[id] == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, nil, notFound(missing)
	}
	var keys []string
	for id, r := range all {
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		ok, err := matchFilters(filters, func(name string) ([]string, bool) { return values(r, name) })
		if err != nil {
			return nil, nil, err
		}
		if ok {
			keys = append(keys, id)
		}
	}
	sort.Strings(keys)
	var match []T
	for _, id := range keys {
		match = append(match, describe(all[id]))
	}
	return paginate(match, maxResults, nextToken)
}

func paginate[T any](items []T, maxResults *int32, next *string) ([]T, *string, error) {
	start := 0
	if next != nil && *next != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(*next, "page-"))
		if err != nil || n < 0 || n > len(items) {
			return nil, nil, EC2Error("InvalidParameterValue", "The token '%s' is invalid", *next)
		}
		start = n
	}
	if maxResults == nil {
		return items[start:], nil, nil
	}
	m := int(*maxResults)
	if m < 5 || m > 1000 {
		return nil, nil, EC2Error("InvalidParameterValue", "Value ( %d ) for parameter maxResults is invalid. Parameter must be between 5 and 1000.", m)
	}
	end := min(start+m, len(items))
	if end < len(items) {
		return items[start:end], aws.String("page-" + strconv.Itoa(end)), nil
	}
	return items[start:end], nil, nil
}

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func tagList(m map[string]string) []types.Tag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func sortedTags(m map[string]string) string {
	var b strings.Builder
	for _, t := range tagList(m) {
		b.WriteString(*t.Key + "=" + *t.Value + ";")
	}
	return b.String()
}
