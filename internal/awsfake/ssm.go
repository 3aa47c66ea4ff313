// Package awsfake holds hand-written fakes of the AWS APIs volsd calls, one
// file per service. They implement the narrow interfaces their users
// declare, with the SDK's signatures, and behave like AWS: the same error
// codes and types, asynchronous states, and injectable faults (throttling,
// server errors) through FailNext and FailWhen.
package awsfake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
)

// SSMOutputLimit and SSMErrorLimit are how much of an invocation's stdout
// and stderr GetCommandInvocation returns: the first 24,000 and 8,000
// characters, as in AWS (the end of a long output is lost).
const (
	SSMOutputLimit = 24000
	SSMErrorLimit  = 8000
)

// SSM is a Systems Manager Run Command fake: managed instances with tags,
// Command documents with parameter patterns, SendCommand by InstanceIds or
// by Targets (tag:<key>, tag-key, InstanceIds) with AWS's validation of
// MaxConcurrency, MaxErrors, target and ID counts, per-instance invocations
// that are invisible to GetCommandInvocation right after SendCommand
// (InvocationDoesNotExist), run asynchronously by Runner at most
// MaxConcurrency at a time, and EventBridge status-change events through
// OnEvent. MaxErrors is enforced as Run Command does: once more
// invocations failed or timed out than it allows, the invocations not yet
// sent end Cancelled (running ones finish). It is safe for concurrent use;
// set the exported fields before the first call. Its HTTP front (JSON
// protocol, X-Amz-Target AmazonSSM.<Op>) is JSONHandlers.
type SSM struct {
	pipelineFaults

	// InvisibleReads is how many GetCommandInvocation calls per invocation
	// answer InvocationDoesNotExist before the invocation can be read, as
	// right after a SendCommand in AWS. Default 1.
	InvisibleReads int
	// InvisibleFor is how long after SendCommand the invocations stay
	// invisible (InvocationDoesNotExist) whatever the reads, as in AWS where
	// the delay is time; no status event is emitted before. 0 = none.
	InvisibleFor time.Duration
	// Runner runs one invocation and returns its result. When nil,
	// invocations stay InProgress until Complete is called.
	Runner func(ctx context.Context, inv SSMInvocation) SSMResult
	// OnEvent receives, for every status change of an invocation, the
	// EventBridge event AWS would emit ("EC2 Command Invocation
	// Status-change Notification"), as raw JSON.
	OnEvent func(raw []byte)
	// OnCommandEvent receives, when a command reaches a final status (every
	// invocation final), the event AWS emits for the whole command ("EC2
	// Command Status-change Notification"), after the last invocation's
	// event.
	OnCommandEvent func(raw []byte)
	// Region and Account appear in events. Defaults: us-east-1, 123456789012.
	Region, Account string

	mu        sync.Mutex
	instances map[string]map[string]string
	pings     map[string]ssmPing // DescribeInstanceInformation; absent: Online
	documents map[string]map[string]*regexp.Regexp
	commands  map[string]*ssmCommand
	order     []string
	running   sync.WaitGroup
	now       func() time.Time
}

// SSMInvocation is one instance's share of a command, as a Runner sees it.
type SSMInvocation struct {
	CommandID, InstanceID, DocumentName string
	Parameters                          map[string][]string
}

// SSMResult is how an invocation ended.
type SSMResult struct {
	Status         types.CommandInvocationStatus // Success, Failed, TimedOut, Cancelled
	ResponseCode   int32
	Stdout, Stderr string
}

type ssmCommand struct {
	cmd         types.Command
	visible     time.Time // InvisibleFor after SendCommand
	invocations map[string]*ssmInvocation
	ids         []string
	concurrency chan struct{}
	maxErrors   int // failed or timed-out invocations allowed before the rest are cancelled
	errors      int // failed or timed-out invocations so far
}

type ssmInvocation struct {
	status         types.CommandInvocationStatus
	reads          int
	code           int32
	stdout, stderr string
	start, end     time.Time
}

// NewSSM returns an SSM fake without instances or documents.
func NewSSM() *SSM {
	return &SSM{
		pipelineFaults: pipelineFaults{service: "SSM"},
		InvisibleReads: 1,
		instances:      map[string]map[string]string{},
		documents:      map[string]map[string]*regexp.Regexp{},
		commands:       map[string]*ssmCommand{},
		now:            func() time.Time { return time.Now().UTC() },
	}
}

// AddInstance registers a managed instance with its EC2 tags.
func (f *SSM) AddInstance(id string, tags map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := make(map[string]string, len(tags))
	for k, v := range tags {
		t[k] = v
	}
	f.instances[id] = t
}

// RemoveInstance deregisters an instance (terminated): later commands
// no longer reach it.
func (f *SSM) RemoveInstance(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.instances, id)
}

// AddDocument registers a Command document and its parameters with their
// allowedPatterns (an empty pattern allows any value).
func (f *SSM) AddDocument(name string, params map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := map[string]*regexp.Regexp{}
	for p, pat := range params {
		if pat == "" {
			pat = ".*"
		}
		ps[p] = regexp.MustCompile(pat)
	}
	f.documents[name] = ps
}

// Commands returns the commands sent so far, oldest first.
func (f *SSM) Commands() []types.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]types.Command, 0, len(f.order))
	for _, id := range f.order {
		out = append(out, f.commands[id].cmd)
	}
	return out
}

// Wait blocks until every invocation started by Runner has finished.
func (f *SSM) Wait() { f.running.Wait() }

var (
	ssmMaxConcurrency = regexp.MustCompile(`^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$`)
	ssmMaxErrors      = regexp.MustCompile(`^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$`)
	ssmTargetKey      = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=\-@]*$`)
)

func ssmValidation(format string, args ...any) error {
	return pipelineAPIError("ValidationException", fmt.Sprintf(format, args...), smithy.FaultClient)
}

// SendCommand validates the request as AWS does, resolves its targets among
// the registered instances and creates one Pending invocation per instance.
func (f *SSM) SendCommand(ctx context.Context, in *ssm.SendCommandInput, _ ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	if err := f.enter("SendCommand"); err != nil {
		return nil, err
	}
	fail := func(err error) (*ssm.SendCommandOutput, error) { return nil, f.wrap("SendCommand", err) }
	doc := aws.ToString(in.DocumentName)
	switch {
	case doc == "":
		return fail(ssmValidation("1 validation error detected: Value null at 'documentName' failed to satisfy constraint: Member must not be null"))
	case len(in.InstanceIds) > 0 && len(in.Targets) > 0:
		return fail(ssmValidation("Specify either InstanceIds or Targets, not both."))
	case len(in.InstanceIds) == 0 && len(in.Targets) == 0:
		return fail(ssmValidation("Specify either InstanceIds or Targets."))
	case len(in.InstanceIds) > 50:
		return fail(ssmValidation("1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50"))
	case len(in.Targets) > 5:
		return fail(ssmValidation("1 validation error detected: Value at 'targets' failed to satisfy constraint: Member must have length less than or equal to 5"))
	case in.MaxConcurrency != nil && !ssmMaxConcurrency.MatchString(*in.MaxConcurrency):
		return fail(ssmValidation("1 validation error detected: Value '%s' at 'maxConcurrency' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", *in.MaxConcurrency, ssmMaxConcurrency))
	case in.MaxErrors != nil && !ssmMaxErrors.MatchString(*in.MaxErrors):
		return fail(ssmValidation("1 validation error detected: Value '%s' at 'maxErrors' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", *in.MaxErrors, ssmMaxErrors))
	case len(aws.ToString(in.Comment)) > 100:
		return fail(ssmValidation("1 validation error detected: Value at 'comment' failed to satisfy constraint: Member must have length less than or equal to 100"))
	case in.TimeoutSeconds != nil && (*in.TimeoutSeconds < 30 || *in.TimeoutSeconds > 2592000):
		return fail(ssmValidation("1 validation error detected: Value '%d' at 'timeoutSeconds' failed to satisfy constraint: Member must have value between 30 and 2592000", *in.TimeoutSeconds))
	}
	for _, t := range in.Targets {
		k := aws.ToString(t.Key)
		switch {
		case k == "" || len(k) > 163 || !ssmTargetKey.MatchString(k):
			return fail(ssmValidation("1 validation error detected: Value '%s' at 'targets.member.key' failed to satisfy constraint", k))
		case len(t.Values) == 0 || len(t.Values) > 50:
			return fail(ssmValidation("1 validation error detected: Value at 'targets.member.values' failed to satisfy constraint: Member must have length between 1 and 50"))
		case k != "InstanceIds" && k != "tag-key" && !strings.HasPrefix(k, "tag:"):
			return fail(&types.InvalidParameters{Message: aws.String("Target key " + k + " is not supported by this fake (use tag:<key>, tag-key or InstanceIds)")})
		}
	}

	f.mu.Lock()
	params, ok := f.documents[doc]
	if !ok {
		f.mu.Unlock()
		return fail(&types.InvalidDocument{Message: aws.String("Document with name " + doc + " does not exist.")})
	}
	for name, vals := range in.Parameters {
		re, ok := params[name]
		if !ok {
			f.mu.Unlock()
			return fail(&types.InvalidParameters{Message: aws.String(fmt.Sprintf("Parameter %q is not defined in document %s.", name, doc))})
		}
		if len(vals) != 1 || !re.MatchString(vals[0]) {
			f.mu.Unlock()
			return fail(&types.InvalidParameters{Message: aws.String(fmt.Sprintf("Parameter %q value %q does not match the allowed pattern %s.", name, vals, re))})
		}
	}
	var ids []string
	if len(in.InstanceIds) > 0 {
		for _, id := range in.InstanceIds {
			if _, ok := f.instances[id]; !ok {
				f.mu.Unlock()
				return fail(&types.InvalidInstanceId{Message: aws.String("Instances [[" + id + "]] not in a valid state for account " + f.account())})
			}
		}
		ids = ssmDedupe(in.InstanceIds)
	} else {
		ids = f.resolveTargets(in.Targets)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	h := hex.EncodeToString(raw[:])
	id := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	now := f.now()
	maxConc := aws.ToString(in.MaxConcurrency)
	if maxConc == "" {
		maxConc = "50"
	}
	maxErr := aws.ToString(in.MaxErrors)
	if maxErr == "" {
		maxErr = "0"
	}
	c := &ssmCommand{
		cmd: types.Command{
			CommandId: aws.String(id), DocumentName: aws.String(doc), Comment: in.Comment,
			InstanceIds: append([]string(nil), in.InstanceIds...), Targets: append([]types.Target(nil), in.Targets...),
			Parameters: in.Parameters, MaxConcurrency: aws.String(maxConc), MaxErrors: aws.String(maxErr),
			RequestedDateTime: aws.Time(now), Status: types.CommandStatusPending, TargetCount: int32(len(ids)),
			TimeoutSeconds: in.TimeoutSeconds,
		},
		invocations: map[string]*ssmInvocation{},
		ids:         ids,
		concurrency: make(chan struct{}, SSMRateLimit(maxConc, len(ids), 1)),
		maxErrors:   SSMRateLimit(maxErr, len(ids), 0),
		visible:     now.Add(f.InvisibleFor),
	}
	for _, iid := range ids {
		c.invocations[iid] = &ssmInvocation{status: types.CommandInvocationStatusPending}
	}
	f.commands[id] = c
	f.order = append(f.order, id)
	runner := f.Runner
	if runner != nil {
		f.running.Add(len(ids))
	}
	out := c.cmd
	f.mu.Unlock()

	if runner != nil {
		for _, iid := range ids {
			go f.run(c, iid, runner)
		}
	}
	return &ssm.SendCommandOutput{Command: &out}, nil
}

// SSMRateLimit turns a Run Command rate control (MaxConcurrency or
// MaxErrors: a count such as "10" or a percentage of the targets such as
// "25%") into a count for targets targets, never below floor (1 for
// MaxConcurrency, 0 for MaxErrors). A percentage rounds down: the Run
// Command guide gives no rule for fractions, and this is the rule AWS
// documents for its other percentage rate controls (CloudFormation
// StackSets MaxConcurrentPercentage and FailureTolerancePercentage: "rounds
// down to the next whole number", 1 where that would be 0 for
// concurrency); it never lets more run at once, or fail, than the share
// asked for. So "50%" of 3 targets runs 1 at a time, and MaxErrors "10%"
// of 50 allows 5 errors: the sixth stops the rest, as the guide's example
// says.
func SSMRateLimit(spec string, targets, floor int) int {
	if p, ok := strings.CutSuffix(spec, "%"); ok {
		n, _ := strconv.Atoi(p)
		return max(floor, targets*n/100)
	}
	n, _ := strconv.Atoi(spec)
	return max(floor, n)
}

func ssmDedupe(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// resolveTargets returns the registered instances matching every target,
// sorted; call with f.mu held.
func (f *SSM) resolveTargets(targets []types.Target) []string {
	var ids []string
	for id, tags := range f.instances {
		match := true
		for _, t := range targets {
			k := aws.ToString(t.Key)
			ok := false
			for _, v := range t.Values {
				switch {
				case k == "InstanceIds":
					ok = ok || v == id
				case k == "tag-key":
					_, has := tags[v]
					ok = ok || has
				default:
					val, has := tags[strings.TrimPrefix(k, "tag:")]
					ok = ok || has && val == v
				}
			}
			match = match && ok
		}
		if match {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func (f *SSM) account() string {
	if f.Account != "" {
		return f.Account
	}
	return "123456789012"
}

// run executes one invocation under the command's concurrency limit.
func (f *SSM) run(c *ssmCommand, instanceID string, runner func(context.Context, SSMInvocation) SSMResult) {
	defer f.running.Done()
	c.concurrency <- struct{}{}
	defer func() { <-c.concurrency }()
	f.mu.Lock()
	over := c.errors > c.maxErrors
	f.mu.Unlock()
	if over { // MaxErrors reached: Run Command sends no more invocations
		f.setStatus(c, instanceID, SSMResult{Status: types.CommandInvocationStatusCancelled, ResponseCode: -1})
		return
	}
	f.setStatus(c, instanceID, SSMResult{Status: types.CommandInvocationStatusInProgress})
	res := runner(context.Background(), SSMInvocation{
		CommandID: aws.ToString(c.cmd.CommandId), InstanceID: instanceID,
		DocumentName: aws.ToString(c.cmd.DocumentName), Parameters: c.cmd.Parameters,
	})
	f.setStatus(c, instanceID, res)
}

// InvocationStatuses returns each invocation's status of a command, by
// instance ID (none for an unknown command).
func (f *SSM) InvocationStatuses(commandID string) map[string]types.CommandInvocationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]types.CommandInvocationStatus{}
	if c, ok := f.commands[commandID]; ok {
		for id, inv := range c.invocations {
			out[id] = inv.status
		}
	}
	return out
}

// JSONHandlers is the fake's HTTP front: a Handler per X-Amz-Target of the
// operations it models.
func (f *SSM) JSONHandlers() map[string]Handler {
	return map[string]Handler{
		"AmazonSSM.SendCommand":            JSONOp(f.SendCommand),
		"AmazonSSM.GetCommandInvocation":   JSONOp(f.GetCommandInvocation),
		"AmazonSSM.ListCommandInvocations": JSONOp(f.ListCommandInvocations),
	}
}

// Complete ends an invocation that no Runner handles, like an agent
// finishing: status Success, Failed, TimedOut, Cancelled, Undeliverable….
func (f *SSM) Complete(commandID, instanceID string, res SSMResult) error {
	f.mu.Lock()
	c, ok := f.commands[commandID]
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("awsfake: no command %s", commandID)
	}
	if _, ok := c.invocations[instanceID]; !ok {
		return fmt.Errorf("awsfake: command %s has no invocation on %s", commandID, instanceID)
	}
	f.setStatus(c, instanceID, SSMResult{Status: types.CommandInvocationStatusInProgress})
	f.setStatus(c, instanceID, res)
	return nil
}

func ssmTerminal(s types.CommandInvocationStatus) bool {
	switch s {
	case types.CommandInvocationStatusPending, types.CommandInvocationStatusInProgress, types.CommandInvocationStatusDelayed, types.CommandInvocationStatusCancelling:
		return false
	}
	return true
}

// setStatus moves an invocation to res.Status, updates the command's counts
// and status, and emits the status-change event.
func (f *SSM) setStatus(c *ssmCommand, instanceID string, res SSMResult) {
	if d := c.visible.Sub(f.now()); d > 0 {
		time.Sleep(d) // no event for an invocation GetCommandInvocation cannot find yet
	}
	f.mu.Lock()
	inv := c.invocations[instanceID]
	if inv.status == res.Status || ssmTerminal(inv.status) {
		f.mu.Unlock()
		return
	}
	now := f.now()
	inv.status = res.Status
	if res.Status == types.CommandInvocationStatusInProgress {
		inv.start = now
	}
	if ssmTerminal(res.Status) {
		inv.end, inv.code = now, res.ResponseCode
		inv.stdout, inv.stderr = ssmTruncate(res.Stdout, SSMOutputLimit), ssmTruncate(res.Stderr, SSMErrorLimit)
		c.cmd.CompletedCount++
		if res.Status != types.CommandInvocationStatusSuccess {
			c.cmd.ErrorCount++
		}
		if res.Status == types.CommandInvocationStatusFailed || res.Status == types.CommandInvocationStatusTimedOut {
			c.errors++ // what counts against MaxErrors
		}
	}
	c.cmd.Status = types.CommandStatusInProgress
	if int(c.cmd.CompletedCount) == len(c.ids) {
		c.cmd.Status = types.CommandStatusSuccess
		if c.cmd.ErrorCount > 0 {
			c.cmd.Status = types.CommandStatusFailed
		}
	}
	event := f.event(c, instanceID, inv, now)
	hook := f.OnEvent
	var cmdEvent []byte
	cmdHook := f.OnCommandEvent
	if cmdHook != nil && c.cmd.Status != types.CommandStatusInProgress {
		cmdEvent = f.commandEvent(c, now)
	}
	f.mu.Unlock()
	if hook != nil {
		hook(event)
	}
	if cmdEvent != nil {
		cmdHook(cmdEvent)
	}
}

// commandEvent builds the EventBridge event of a command's final status;
// call with f.mu held.
func (f *SSM) commandEvent(c *ssmCommand, now time.Time) []byte {
	return f.statusEvent("EC2 Command Status-change Notification", now, nil, map[string]string{
		"command-id":          aws.ToString(c.cmd.CommandId),
		"document-name":       aws.ToString(c.cmd.DocumentName),
		"requested-date-time": c.cmd.RequestedDateTime.Format("2006-01-02T15:04:05.000Z"),
		"status":              string(c.cmd.Status),
	})
}

func ssmTruncate(s string, limit int) string {
	if len(s) > limit {
		return s[:limit]
	}
	return s
}

// event builds the EventBridge event of an invocation's status change;
// call with f.mu held.
func (f *SSM) event(c *ssmCommand, instanceID string, inv *ssmInvocation, now time.Time) []byte {
	return f.statusEvent("EC2 Command Invocation Status-change Notification", now,
		[]string{"arn:aws:ec2:" + f.region() + ":" + f.account() + ":instance/" + instanceID},
		map[string]string{
			"command-id":          aws.ToString(c.cmd.CommandId),
			"document-name":       aws.ToString(c.cmd.DocumentName),
			"instance-id":         instanceID,
			"requested-date-time": c.cmd.RequestedDateTime.Format("2006-01-02T15:04:05.000Z"),
			"status":              string(inv.status),
			"status-details":      string(inv.status),
		})
}

func (f *SSM) region() string {
	if f.Region == "" {
		return "us-east-1"
	}
	return f.Region
}

// statusEvent is the EventBridge envelope (source aws.ssm) of one status
// change, as Run Command sends it.
func (f *SSM) statusEvent(detailType string, now time.Time, resources []string, detail map[string]string) []byte {
	if resources == nil {
		resources = []string{}
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	b, _ := json.Marshal(map[string]any{
		"version": "0", "id": hex.EncodeToString(raw[:]), "detail-type": detailType, "source": "aws.ssm",
		"account": f.account(), "time": now.Format(time.RFC3339Nano), "region": f.region(),
		"resources": resources, "detail": detail,
	})
	return b
}

func ssmNoInvocation() error { return &types.InvocationDoesNotExist{} }

// GetCommandInvocation returns one invocation; InvocationDoesNotExist for an
// unknown command or instance and for the first InvisibleReads reads.
// Stdout is empty until the invocation has succeeded or failed (AWS shows
// none for a timed-out or cancelled one); stderr until it has finished.
func (f *SSM) GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, _ ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	if err := f.enter("GetCommandInvocation"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.commands[aws.ToString(in.CommandId)]
	if !ok {
		return nil, f.wrap("GetCommandInvocation", ssmNoInvocation())
	}
	iid := aws.ToString(in.InstanceId)
	inv, ok := c.invocations[iid]
	if !ok {
		return nil, f.wrap("GetCommandInvocation", ssmNoInvocation())
	}
	if p := aws.ToString(in.PluginName); p != "" && p != "aws:runShellScript" {
		return nil, f.wrap("GetCommandInvocation", &types.InvalidPluginName{Message: aws.String("Plugin " + p + " is not part of the document.")})
	}
	if f.now().Before(c.visible) {
		return nil, f.wrap("GetCommandInvocation", ssmNoInvocation())
	}
	if inv.reads < f.InvisibleReads {
		inv.reads++
		return nil, f.wrap("GetCommandInvocation", ssmNoInvocation())
	}
	out := &ssm.GetCommandInvocationOutput{
		CommandId: c.cmd.CommandId, InstanceId: aws.String(iid), DocumentName: c.cmd.DocumentName,
		Comment: c.cmd.Comment, PluginName: aws.String("aws:runShellScript"),
		Status: inv.status, StatusDetails: aws.String(string(inv.status)), ResponseCode: -1,
		StandardOutputContent: aws.String(""), StandardErrorContent: aws.String(""),
		ExecutionStartDateTime: aws.String(""), ExecutionEndDateTime: aws.String(""),
	}
	if !inv.start.IsZero() {
		out.ExecutionStartDateTime = aws.String(inv.start.Format("2006-01-02T15:04:05.000Z"))
	}
	if ssmTerminal(inv.status) {
		out.ResponseCode = inv.code
		out.StandardErrorContent = aws.String(inv.stderr)
		// AWS: stdout is empty unless the execution succeeded or failed
		// (a timed-out or cancelled command shows none).
		if inv.status == types.CommandInvocationStatusSuccess || inv.status == types.CommandInvocationStatusFailed {
			out.StandardOutputContent = aws.String(inv.stdout)
		}
		out.ExecutionEndDateTime = aws.String(inv.end.Format("2006-01-02T15:04:05.000Z"))
	}
	return out, nil
}

// ListCommandInvocations lists the invocations of a command (or of every
// command) on an instance (or on every instance) in pages of MaxResults
// (1..50, default 50, as in AWS) with an opaque NextToken. With Details,
// each carries its plugin with the first 2,500 characters of output, as
// in AWS.
func (f *SSM) ListCommandInvocations(ctx context.Context, in *ssm.ListCommandInvocationsInput, _ ...func(*ssm.Options)) (*ssm.ListCommandInvocationsOutput, error) {
	if err := f.enter("ListCommandInvocations"); err != nil {
		return nil, err
	}
	limit := int(aws.ToInt32(in.MaxResults))
	switch {
	case in.MaxResults == nil:
		limit = ssmMaxListResults
	case limit < 1 || limit > ssmMaxListResults:
		return nil, f.wrap("ListCommandInvocations", ssmValidation("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to %d", limit, ssmMaxListResults))
	}
	skip := 0
	if tok := aws.ToString(in.NextToken); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, ssmTokenPrefix))
		if err != nil || !strings.HasPrefix(tok, ssmTokenPrefix) || n < 1 {
			return nil, f.wrap("ListCommandInvocations", pipelineAPIError("InvalidNextToken", "The specified token is not valid.", smithy.FaultClient))
		}
		skip = n
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cmds := f.order
	if id := aws.ToString(in.CommandId); id != "" {
		if _, ok := f.commands[id]; !ok {
			return nil, f.wrap("ListCommandInvocations", &types.InvalidCommandId{})
		}
		cmds = []string{id}
	}
	out := &ssm.ListCommandInvocationsOutput{}
	for _, cid := range cmds {
		c := f.commands[cid]
		for _, iid := range c.ids {
			if want := aws.ToString(in.InstanceId); want != "" && want != iid {
				continue
			}
			inv := c.invocations[iid]
			ci := types.CommandInvocation{
				CommandId: c.cmd.CommandId, InstanceId: aws.String(iid), DocumentName: c.cmd.DocumentName,
				Comment: c.cmd.Comment, RequestedDateTime: c.cmd.RequestedDateTime,
				Status: inv.status, StatusDetails: aws.String(string(inv.status)),
			}
			if in.Details {
				p := types.CommandPlugin{Name: aws.String("aws:runShellScript"), Status: types.CommandPluginStatus(inv.status), ResponseCode: -1}
				if ssmTerminal(inv.status) {
					outp := inv.stdout
					if len(outp) > 2500 {
						outp = outp[:2500]
					}
					p.Output, p.ResponseCode = aws.String(outp), inv.code
				}
				ci.CommandPlugins = []types.CommandPlugin{p}
			}
			out.CommandInvocations = append(out.CommandInvocations, ci)
		}
	}
	all := out.CommandInvocations
	out.CommandInvocations = all[min(skip, len(all)):min(skip+limit, len(all))]
	if skip+limit < len(all) {
		out.NextToken = aws.String(ssmTokenPrefix + strconv.Itoa(skip+limit))
	}
	return out, nil
}

// ssmMaxListResults is the largest page ListCommandInvocations returns.
const ssmMaxListResults = 50

// ssmTokenPrefix starts the fake's NextTokens (opaque to callers).
const ssmTokenPrefix = "fake-ssm-page-"

// pipelineFaults counts the calls of a push-pipeline fake (S3, SQS, SSM)
// and hands out injected errors. Its methods are promoted to the fakes.
type pipelineFaults struct {
	service string
	mu      sync.Mutex
	calls   map[string]int
	queued  map[string][]error
	hook    func(op string) error
}

// FailNext makes the next n calls of op fail with err (an AWS error such as
// &smithy.GenericAPIError{Code: "ThrottlingException"}); the calls are
// counted but change nothing. Faults queue up in the order given.
func (f *pipelineFaults) FailNext(op string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.queued == nil {
		f.queued = map[string][]error{}
	}
	for i := 0; i < n; i++ {
		f.queued[op] = append(f.queued[op], err)
	}
}

// FailWhen installs fn, asked before every call; a non-nil error fails that
// call. It lets a test throttle a share of calls or fail by call count.
// nil removes it.
func (f *pipelineFaults) FailWhen(fn func(op string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

// Calls returns how many times op was called, failed calls included.
func (f *pipelineFaults) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// enter counts a call of op and returns the injected fault for it, wrapped
// like the SDK wraps service errors.
func (f *pipelineFaults) enter(op string) error {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[op]++
	var err error
	if q := f.queued[op]; len(q) > 0 {
		err, f.queued[op] = q[0], q[1:]
	}
	hook := f.hook
	f.mu.Unlock()
	if err == nil && hook != nil {
		err = hook(op)
	}
	if err != nil {
		return f.wrap(op, err)
	}
	return nil
}

// wrap returns err as the SDK returns it: inside a *smithy.OperationError.
func (f *pipelineFaults) wrap(op string, err error) error {
	return &smithy.OperationError{ServiceID: f.service, OperationName: op, Err: err}
}

// pipelineAPIError is an AWS error with a code, as the SDK decodes unknown codes.
func pipelineAPIError(code, msg string, fault smithy.ErrorFault) *smithy.GenericAPIError {
	return &smithy.GenericAPIError{Code: code, Message: msg, Fault: fault}
}
