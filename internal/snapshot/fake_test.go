package snapshot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/events"
)

func apiErr(code, msg string) error { return &smithy.GenericAPIError{Code: code, Message: msg} }

// ---- SSM with a simulated volsd-agent per instance ----

// fakeAgent is the agent on one instance as the fake SSM runs it.
type fakeAgent struct {
	volume  string
	seq     int64 // the volume's watermark
	frozen  bool
	history []string // "freeze", "thaw" in the order they ran
}

// sentCommand is one SendCommand the fake accepted.
type sentCommand struct {
	ID, Doc   string
	Instances []string
	Params    map[string][]string
	Delivery  int32
}

type fakeInvocation struct {
	doc, instance string
	status        ssmtypes.CommandInvocationStatus
	stdout        string
	polls         int
}

// fakeSSM behaves like SSM Run Command for volsd's documents: SendCommand
// checks the document and its parameter patterns, GetCommandInvocation
// answers InvocationDoesNotExist for the first polls, and the documents run
// a simulated agent that freezes and thaws.
type fakeSSM struct {
	mu     sync.Mutex
	agents map[string]*fakeAgent
	sent   []sentCommand
	invs   map[string]*fakeInvocation

	// NotYet is how many GetCommandInvocation calls per invocation answer
	// InvocationDoesNotExist first.
	NotYet int
	// FreezeHangs leaves volsd-Freeze InProgress forever although the
	// agent froze (a slow or lost status).
	FreezeHangs bool
	// FreezeFails makes volsd-Freeze fail with an agent error report on
	// these instances (the volume stays thawed).
	FreezeFails map[string]bool
	// ThrottleSends answers the first n SendCommand calls with throttling.
	ThrottleSends int
	// OnFreeze runs when a freeze succeeded on the agent.
	OnFreeze func(instance string)
}

var maxSecondsPattern = regexp.MustCompile(`^[0-9]{1,4}$`)

func newFakeSSM() *fakeSSM {
	return &fakeSSM{agents: map[string]*fakeAgent{}, invs: map[string]*fakeInvocation{}, FreezeFails: map[string]bool{}}
}

func (f *fakeSSM) addAgent(instance, volume string, seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents[instance] = &fakeAgent{volume: volume, seq: seq}
}

func (f *fakeSSM) agent(instance string) fakeAgent {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := *f.agents[instance]
	a.history = append([]string(nil), a.history...)
	return a
}

func (f *fakeSSM) commands() []sentCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sentCommand(nil), f.sent...)
}

func (f *fakeSSM) SendCommand(ctx context.Context, in *ssm.SendCommandInput, _ ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ThrottleSends > 0 {
		f.ThrottleSends--
		return nil, apiErr("ThrottlingException", "Rate exceeded")
	}
	doc := aws.ToString(in.DocumentName)
	if len(in.InstanceIds) == 0 && len(in.Targets) == 0 {
		return nil, apiErr("ValidationException", "either InstanceIds or Targets is required")
	}
	if t := aws.ToInt32(in.TimeoutSeconds); in.TimeoutSeconds != nil && (t < 30 || t > 2592000) {
		return nil, apiErr("ValidationException", fmt.Sprintf("TimeoutSeconds %d is outside 30..2592000", t))
	}
	switch doc {
	case "volsd-Freeze":
		if v := in.Parameters["maxSeconds"]; len(v) != 1 || !maxSecondsPattern.MatchString(v[0]) || len(in.Parameters) != 1 {
			return nil, apiErr("InvalidParameters", fmt.Sprintf("parameters %v do not match the document", in.Parameters))
		}
	case "volsd-Thaw":
		if len(in.Parameters) != 0 {
			return nil, apiErr("InvalidParameters", "volsd-Thaw takes no parameters")
		}
	default:
		return nil, apiErr("InvalidDocument", "document "+doc+" does not exist")
	}
	for _, id := range in.InstanceIds {
		if f.agents[id] == nil {
			return nil, apiErr("InvalidInstanceId", "instance "+id+" is not a managed instance")
		}
	}
	id := fmt.Sprintf("cmd-%04d", len(f.sent)+1)
	f.sent = append(f.sent, sentCommand{ID: id, Doc: doc, Instances: append([]string(nil), in.InstanceIds...),
		Params: in.Parameters, Delivery: aws.ToInt32(in.TimeoutSeconds)})
	for _, inst := range in.InstanceIds {
		f.invs[id+"/"+inst] = f.run(doc, inst)
	}
	return &ssm.SendCommandOutput{Command: &ssmtypes.Command{CommandId: aws.String(id), DocumentName: aws.String(doc)}}, nil
}

// run executes a document on the simulated agent (at once) and returns
// the invocation SSM will show.
func (f *fakeSSM) run(doc, instance string) *fakeInvocation {
	a := f.agents[instance]
	inv := &fakeInvocation{doc: doc, instance: instance, status: ssmtypes.CommandInvocationStatusSuccess}
	rep := events.AgentReport{Instance: instance, Volume: a.volume, Seq: a.seq, Head: a.seq, Mount: "/srv/volsd"}
	switch doc {
	case "volsd-Freeze":
		rep.Command = "freeze"
		if f.FreezeFails[instance] {
			inv.status = ssmtypes.CommandInvocationStatusFailed
			rep.Error, rep.ErrorKind = "volume not mounted", "not-ready"
			break
		}
		a.frozen = true
		a.history = append(a.history, "freeze")
		if f.FreezeHangs {
			inv.status = ssmtypes.CommandInvocationStatusInProgress
		}
		if f.OnFreeze != nil {
			f.OnFreeze(instance)
		}
	case "volsd-Thaw":
		rep.Command = "thaw"
		a.frozen = false
		a.history = append(a.history, "thaw")
	}
	b, _ := json.Marshal(rep)
	inv.stdout = "volsd-agent " + rep.Command + "\n" + string(b) + "\n"
	return inv
}

func (f *fakeSSM) GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, _ ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	inv := f.invs[aws.ToString(in.CommandId)+"/"+aws.ToString(in.InstanceId)]
	if inv == nil {
		return nil, apiErr("InvalidCommandId", "no command "+aws.ToString(in.CommandId))
	}
	inv.polls++
	if inv.polls <= f.NotYet {
		return nil, apiErr("InvocationDoesNotExist", "")
	}
	out := &ssm.GetCommandInvocationOutput{
		CommandId: in.CommandId, InstanceId: in.InstanceId, DocumentName: aws.String(inv.doc),
		Status: inv.status, StatusDetails: aws.String(string(inv.status)),
	}
	switch inv.status {
	case ssmtypes.CommandInvocationStatusSuccess:
		out.StandardOutputContent = aws.String(inv.stdout)
	case ssmtypes.CommandInvocationStatusFailed:
		out.StandardOutputContent, out.ResponseCode = aws.String(inv.stdout), 3
	}
	return out, nil
}

// ---- EC2 snapshots with asynchronous states and faults ----

type fakeSnapshot struct {
	s     ec2types.Snapshot
	inUse bool
	// vanish: another run deletes it just before this DeleteSnapshot
	// arrives, which then answers InvalidSnapshot.NotFound.
	vanish bool
}

// fakeEC2 keeps snapshots like EC2: CreateSnapshot starts one pending,
// complete/fail move it on, DescribeSnapshots filters by tag and volume and
// pages PageSize at a time, DeleteSnapshot answers InvalidSnapshot.NotFound
// and InvalidSnapshot.InUse.
type fakeEC2 struct {
	mu      sync.Mutex
	volumes map[string]bool
	snaps   map[string]*fakeSnapshot
	n       int
	now     func() time.Time

	PageSize int32
	// CreateErr fails CreateSnapshot.
	CreateErr error
	// CreateBlocks makes CreateSnapshot wait for ctx to end; Creating is
	// closed when the call arrives.
	CreateBlocks bool
	Creating     chan struct{}
	creates      int
	deletes      []string
}

func newFakeEC2(volumes ...string) *fakeEC2 {
	f := &fakeEC2{volumes: map[string]bool{}, snaps: map[string]*fakeSnapshot{}, PageSize: 2,
		Creating: make(chan struct{}), now: func() time.Time { return time.Now().UTC() }}
	for _, v := range volumes {
		f.volumes[v] = true
	}
	return f
}

func (f *fakeEC2) CreateSnapshot(ctx context.Context, in *ec2.CreateSnapshotInput, _ ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error) {
	f.mu.Lock()
	f.creates++
	block := f.CreateBlocks
	f.mu.Unlock()
	if block {
		close(f.Creating)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.CreateErr != nil {
		return nil, f.CreateErr
	}
	vol := aws.ToString(in.VolumeId)
	if !f.volumes[vol] {
		return nil, apiErr("InvalidVolume.NotFound", "The volume '"+vol+"' does not exist.")
	}
	var tags []ec2types.Tag
	for _, ts := range in.TagSpecifications {
		if ts.ResourceType != ec2types.ResourceTypeSnapshot {
			return nil, apiErr("InvalidParameterValue", "tag specification resource type must be snapshot")
		}
		tags = append(tags, ts.Tags...)
	}
	f.n++
	id := fmt.Sprintf("snap-%017x", f.n)
	f.snaps[id] = &fakeSnapshot{s: ec2types.Snapshot{
		SnapshotId: aws.String(id), VolumeId: aws.String(vol), State: ec2types.SnapshotStatePending,
		StartTime: aws.Time(f.now()), Tags: tags, Description: in.Description, Encrypted: aws.Bool(true),
		KmsKeyId: aws.String("arn:aws:kms:us-east-1:123456789012:key/pool-key"),
	}}
	s := f.snaps[id].s
	return &ec2.CreateSnapshotOutput{SnapshotId: s.SnapshotId, VolumeId: s.VolumeId, State: s.State, StartTime: s.StartTime, Tags: s.Tags}, nil
}

// put adds a snapshot directly (as another run or a person made it).
func (f *fakeEC2) put(vol string, state ec2types.SnapshotState, start time.Time, tags map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id := fmt.Sprintf("snap-%017x", f.n)
	s := ec2types.Snapshot{SnapshotId: aws.String(id), VolumeId: aws.String(vol), State: state, StartTime: aws.Time(start)}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s.Tags = append(s.Tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	f.snaps[id] = &fakeSnapshot{s: s}
	return id
}

func (f *fakeEC2) setState(id string, state ec2types.SnapshotState, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps[id].s.State = state
	f.snaps[id].s.StateMessage = aws.String(msg)
}

func (f *fakeEC2) setInUse(id string, inUse bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps[id].inUse = inUse
}

func (f *fakeEC2) setVanish(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps[id].vanish = true
}

func (f *fakeEC2) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.snaps {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (f *fakeEC2) createCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates
}

func tagValue(tags []ec2types.Tag, k string) (string, bool) {
	for _, t := range tags {
		if aws.ToString(t.Key) == k {
			return aws.ToString(t.Value), true
		}
	}
	return "", false
}

func (f *fakeEC2) DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var match []ec2types.Snapshot
	for _, fs := range f.snaps {
		ok := true
		for _, flt := range in.Filters {
			name := aws.ToString(flt.Name)
			var have string
			switch {
			case strings.HasPrefix(name, "tag:"):
				have, _ = tagValue(fs.s.Tags, strings.TrimPrefix(name, "tag:"))
				if _, has := tagValue(fs.s.Tags, strings.TrimPrefix(name, "tag:")); !has {
					ok = false
					continue
				}
			case name == "volume-id":
				have = aws.ToString(fs.s.VolumeId)
			case name == "status":
				have = string(fs.s.State)
			default:
				return nil, apiErr("InvalidParameterValue", "The filter '"+name+"' is invalid")
			}
			found := false
			for _, v := range flt.Values {
				found = found || v == have
			}
			ok = ok && found
		}
		if ok {
			match = append(match, fs.s)
		}
	}
	sort.Slice(match, func(i, j int) bool { return aws.ToString(match[i].SnapshotId) < aws.ToString(match[j].SnapshotId) })
	start := 0
	if in.NextToken != nil {
		n, err := strconv.Atoi(aws.ToString(in.NextToken))
		if err != nil {
			return nil, apiErr("InvalidParameterValue", "bad NextToken")
		}
		start = n
	}
	size := int(f.PageSize)
	if in.MaxResults != nil {
		size = int(*in.MaxResults)
	}
	end := min(start+size, len(match))
	out := &ec2.DescribeSnapshotsOutput{Snapshots: match[start:end]}
	if end < len(match) {
		out.NextToken = aws.String(strconv.Itoa(end))
	}
	return out, nil
}

func (f *fakeEC2) DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := aws.ToString(in.SnapshotId)
	fs := f.snaps[id]
	switch {
	case fs == nil:
		return nil, apiErr("InvalidSnapshot.NotFound", "The snapshot '"+id+"' does not exist.")
	case fs.vanish:
		delete(f.snaps, id)
		return nil, apiErr("InvalidSnapshot.NotFound", "The snapshot '"+id+"' does not exist.")
	case fs.inUse:
		return nil, apiErr("InvalidSnapshot.InUse", "The snapshot "+id+" is currently in use by ami-0123456789abcdef0")
	}
	delete(f.snaps, id)
	f.deletes = append(f.deletes, id)
	return &ec2.DeleteSnapshotOutput{}, nil
}

// ---- Auto Scaling ----

type fakeASG struct {
	mu        sync.Mutex
	group     string
	instances map[string]astypes.LifecycleState
}

func newFakeASG(group string) *fakeASG {
	return &fakeASG{group: group, instances: map[string]astypes.LifecycleState{}}
}

func (f *fakeASG) set(instance string, state astypes.LifecycleState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances[instance] = state
}

func (f *fakeASG) DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &autoscaling.DescribeAutoScalingGroupsOutput{}
	for _, name := range in.AutoScalingGroupNames {
		if name != f.group {
			continue // AWS returns no group rather than an error
		}
		g := astypes.AutoScalingGroup{AutoScalingGroupName: aws.String(name)}
		for id, st := range f.instances {
			g.Instances = append(g.Instances, astypes.Instance{InstanceId: aws.String(id), LifecycleState: st, HealthStatus: aws.String("Healthy")})
		}
		out.AutoScalingGroups = append(out.AutoScalingGroups, g)
	}
	return out, nil
}
