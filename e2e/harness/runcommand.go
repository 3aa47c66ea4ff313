package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"gopkg.in/yaml.v3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/documents"
	"github.com/volsd/volsd/internal/lambdaruntime"
)

// AgentPath is where the SSM documents expect the agent (docs/contracts.md).
const AgentPath = "/usr/bin/volsd-agent"

// CommandOutput is what one run of a command on an instance produced.
type CommandOutput struct {
	Stdout, Stderr string
	ExitCode       int
	TimedOut       bool
}

// ManagedInstance is a simulated instance the SSM agent runs commands on.
type ManagedInstance interface {
	// RunAgent runs volsd-agent with args on the instance, killing it after
	// timeout.
	RunAgent(ctx context.Context, args []string, timeout time.Duration) CommandOutput
}

// ManagedFleet lists the instances registered with SSM (online agents).
type ManagedFleet interface {
	Managed(instanceID string) (ManagedInstance, bool)
	ManagedIDs() []string
}

// Document is an SSM Command document (schema 2.2, aws:runShellScript
// steps) as volsd's infra/documents define them.
type Document struct {
	Name   string
	Params map[string]DocParam
	Steps  []DocStep
}

// DocParam is one document parameter.
type DocParam struct {
	Default        string
	AllowedPattern *regexp.Regexp
}

// DocStep is one aws:runShellScript step.
type DocStep struct {
	Name     string
	Commands []string
	Timeout  time.Duration
}

// LoadDocuments parses volsd's SSM documents (infra/documents), named
// volsd-<Kind> as in docs/contracts.md.
func LoadDocuments() (map[string]Document, error) {
	docs := map[string]Document{}
	for _, kind := range documents.Kinds {
		src, err := documents.Source(kind)
		if err != nil {
			return nil, err
		}
		var raw struct {
			Parameters map[string]struct {
				Default        string `yaml:"default"`
				AllowedPattern string `yaml:"allowedPattern"`
			} `yaml:"parameters"`
			MainSteps []struct {
				Action string `yaml:"action"`
				Name   string `yaml:"name"`
				Inputs struct {
					TimeoutSeconds string   `yaml:"timeoutSeconds"`
					RunCommand     []string `yaml:"runCommand"`
				} `yaml:"inputs"`
			} `yaml:"mainSteps"`
		}
		if err := yaml.Unmarshal(src, &raw); err != nil {
			return nil, fmt.Errorf("document %s: %w", kind, err)
		}
		d := Document{Name: "volsd-" + kind, Params: map[string]DocParam{}}
		for name, p := range raw.Parameters {
			dp := DocParam{Default: p.Default}
			if p.AllowedPattern != "" {
				re, err := regexp.Compile(p.AllowedPattern)
				if err != nil {
					return nil, fmt.Errorf("document %s parameter %s: %w", kind, name, err)
				}
				dp.AllowedPattern = re
			}
			d.Params[name] = dp
		}
		for _, s := range raw.MainSteps {
			if s.Action != "aws:runShellScript" {
				return nil, fmt.Errorf("document %s step %s: action %s is not simulated", kind, s.Name, s.Action)
			}
			t := 3600 * time.Second
			if s.Inputs.TimeoutSeconds != "" {
				n, err := strconv.Atoi(s.Inputs.TimeoutSeconds)
				if err != nil {
					return nil, fmt.Errorf("document %s step %s: timeoutSeconds: %w", kind, s.Name, err)
				}
				t = time.Duration(n) * time.Second
			}
			d.Steps = append(d.Steps, DocStep{Name: s.Name, Commands: s.Inputs.RunCommand, Timeout: t})
		}
		docs[d.Name] = d
	}
	return docs, nil
}

// RunCommand is SSM Run Command for the simulated fleet: SendCommand by
// InstanceIds or by tag Targets, with MaxConcurrency and MaxErrors; each
// invocation runs the document's volsd-agent command as a real process on
// the instance; GetCommandInvocation, ListCommandInvocations and
// ListCommands answer like SSM; every invocation status change is an
// "EC2 Command Invocation Status-change Notification" event.
type RunCommand struct {
	fleet   ManagedFleet
	ec2     *ec2.Client // moto, for the instances' tags and states
	docs    map[string]Document
	log     *slog.Logger
	account string
	region  string
	// OnStatus receives every invocation status change (EventBridge).
	OnStatus func(events.Envelope)
	// BeforeRun, if set, runs before each invocation's process starts (fault
	// injection: it may return a context that gets cancelled to kill it).
	BeforeRun func(ctx context.Context, commandID, instanceID, document string) context.Context
	// InvocationDelay is how long after SendCommand an invocation stays
	// invisible to GetCommandInvocation (InvocationDoesNotExist), as in SSM;
	// no status event is sent before it is visible.
	InvocationDelay time.Duration

	mu       sync.Mutex
	commands map[string]*ssmCommand
	order    []string
	wg       sync.WaitGroup
}

// NewRunCommand registers the Run Command API on the proxy.
func NewRunCommand(p *Proxy, fleet ManagedFleet, ec2c *ec2.Client, docs map[string]Document, account, region string, log *slog.Logger) *RunCommand {
	rc := &RunCommand{fleet: fleet, ec2: ec2c, docs: docs, log: log, account: account, region: region,
		commands: map[string]*ssmCommand{}, InvocationDelay: 200 * time.Millisecond}
	p.HandleJSON("AmazonSSM.SendCommand", rc.sendCommand)
	p.HandleJSON("AmazonSSM.GetCommandInvocation", rc.getCommandInvocation)
	p.HandleJSON("AmazonSSM.ListCommandInvocations", rc.listCommandInvocations)
	p.HandleJSON("AmazonSSM.ListCommands", rc.listCommands)
	return rc
}

// Wait waits for the commands in flight.
func (rc *RunCommand) Wait() { rc.wg.Wait() }

type ssmTarget struct {
	Key    string   `json:"Key"`
	Values []string `json:"Values"`
}

type sendCommandInput struct {
	DocumentName    string              `json:"DocumentName"`
	DocumentVersion string              `json:"DocumentVersion,omitempty"`
	InstanceIds     []string            `json:"InstanceIds,omitempty"`
	Targets         []ssmTarget         `json:"Targets,omitempty"`
	Parameters      map[string][]string `json:"Parameters,omitempty"`
	TimeoutSeconds  int                 `json:"TimeoutSeconds,omitempty"`
	Comment         string              `json:"Comment,omitempty"`
	MaxConcurrency  string              `json:"MaxConcurrency,omitempty"`
	MaxErrors       string              `json:"MaxErrors,omitempty"`
}

type ssmCommand struct {
	in        sendCommandInput
	id        string
	requested time.Time
	params    map[string][]string // with defaults
	targets   []string            // resolved instance IDs, in order
	visible   time.Time           // when GetCommandInvocation starts to find the invocations
	invs      map[string]*ssmInvocation
	maxConc   int
	maxErrs   int
}

type ssmInvocation struct {
	instanceID string
	status     string // Pending, InProgress, Success, Failed, TimedOut, Cancelled
	details    string
	started    time.Time
	ended      time.Time
	out        CommandOutput
	code       int
}

var maxValueRe = regexp.MustCompile(`^([1-9][0-9]*|[0]|[1-9][0-9]%|[1-9]%|100%)$`)

func (rc *RunCommand) sendCommand(w http.ResponseWriter, r *http.Request, body []byte) {
	var in sendCommandInput
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	doc, ok := rc.docs[in.DocumentName]
	if !ok {
		writeJSONError(w, http.StatusBadRequest, "InvalidDocument", fmt.Sprintf("Document with name %s does not exist.", in.DocumentName))
		return
	}
	params := map[string][]string{}
	for name, vals := range in.Parameters {
		p, ok := doc.Params[name]
		if !ok {
			writeJSONError(w, http.StatusBadRequest, "InvalidParameters", fmt.Sprintf("Parameter %q is not defined in the document %s.", name, doc.Name))
			return
		}
		if len(vals) != 1 {
			writeJSONError(w, http.StatusBadRequest, "InvalidParameters", fmt.Sprintf("Parameter %q must have exactly one value for type String.", name))
			return
		}
		if p.AllowedPattern != nil && !p.AllowedPattern.MatchString(vals[0]) {
			writeJSONError(w, http.StatusBadRequest, "InvalidParameters",
				fmt.Sprintf("Parameter %q %q failed to satisfy constraint: allowedPattern: %s", name, vals[0], p.AllowedPattern))
			return
		}
		params[name] = vals
	}
	for name, p := range doc.Params {
		if _, ok := params[name]; !ok {
			params[name] = []string{p.Default}
		}
	}
	if (len(in.InstanceIds) == 0) == (len(in.Targets) == 0) {
		writeJSONError(w, http.StatusBadRequest, "ValidationException", "Exactly one of InstanceIds and Targets must be specified.")
		return
	}
	if in.MaxConcurrency == "" {
		in.MaxConcurrency = "50"
	}
	if in.MaxErrors == "" {
		in.MaxErrors = "0"
	}
	if !maxValueRe.MatchString(in.MaxConcurrency) || in.MaxConcurrency == "0" {
		writeJSONError(w, http.StatusBadRequest, "ValidationException", fmt.Sprintf("1 validation error detected: Value '%s' at 'maxConcurrency' failed to satisfy constraint", in.MaxConcurrency))
		return
	}
	if !maxValueRe.MatchString(in.MaxErrors) {
		writeJSONError(w, http.StatusBadRequest, "ValidationException", fmt.Sprintf("1 validation error detected: Value '%s' at 'maxErrors' failed to satisfy constraint", in.MaxErrors))
		return
	}
	targets, err := rc.resolve(r.Context(), in)
	if err != nil {
		var ae *apiError
		if asAPIError(err, &ae) {
			writeJSONError(w, http.StatusBadRequest, ae.code, ae.msg)
			return
		}
		writeJSONError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	c := &ssmCommand{in: in, id: lambdaruntime.NewRequestID(), requested: time.Now(), params: params, targets: targets, invs: map[string]*ssmInvocation{}}
	c.visible = c.requested.Add(rc.InvocationDelay)
	c.maxConc = limitOf(in.MaxConcurrency, len(targets), 1)
	c.maxErrs = limitOf(in.MaxErrors, len(targets), 0)
	for _, id := range targets {
		c.invs[id] = &ssmInvocation{instanceID: id, status: "Pending", details: "Pending", code: -1}
	}
	rc.mu.Lock()
	rc.commands[c.id] = c
	rc.order = append(rc.order, c.id)
	out := rc.commandJSON(c)
	rc.mu.Unlock()
	rc.wg.Add(1)
	go rc.run(c, doc)
	writeJSON(w, map[string]any{"Command": out})
}

type apiError struct{ code, msg string }

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func asAPIError(err error, target **apiError) bool {
	ae, ok := err.(*apiError)
	if ok {
		*target = ae
	}
	return ok
}

// limitOf turns "10" or "25%" into a count of n; percentages round down but
// never below floor.
func limitOf(v string, n, floor int) int {
	if strings.HasSuffix(v, "%") {
		pct, _ := strconv.Atoi(strings.TrimSuffix(v, "%"))
		return max(int(math.Floor(float64(n)*float64(pct)/100)), floor)
	}
	k, _ := strconv.Atoi(v)
	return max(k, floor)
}

// resolve finds the instances a command targets: running instances that
// are managed (their SSM agent is online), by ID or by tag.
func (rc *RunCommand) resolve(ctx context.Context, in sendCommandInput) ([]string, error) {
	if len(in.InstanceIds) > 0 {
		if len(in.InstanceIds) > 50 {
			return nil, &apiError{"ValidationException", "1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50"}
		}
		var bad []string
		for _, id := range in.InstanceIds {
			if _, ok := rc.fleet.Managed(id); !ok {
				bad = append(bad, id)
			}
		}
		if len(bad) > 0 {
			return nil, &apiError{"InvalidInstanceId", fmt.Sprintf("Instances [[%s]] not in a valid state for account %s", strings.Join(bad, ", "), rc.account)}
		}
		return dedupe(in.InstanceIds), nil
	}
	filters := []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"running"}}}
	var ids []string
	for _, t := range in.Targets {
		switch {
		case strings.HasPrefix(t.Key, "tag:"):
			filters = append(filters, types.Filter{Name: aws.String(t.Key), Values: t.Values})
		case t.Key == "tag-key":
			filters = append(filters, types.Filter{Name: aws.String("tag-key"), Values: t.Values})
		case t.Key == "InstanceIds":
			ids = append(ids, t.Values...)
		default:
			return nil, &apiError{"InvalidTarget", fmt.Sprintf("Target key %s is not supported here.", t.Key)}
		}
	}
	var found []string
	if len(filters) > 1 || len(ids) == 0 {
		in := &ec2.DescribeInstancesInput{Filters: filters}
		if len(ids) > 0 {
			in.InstanceIds = ids
		}
		p := ec2.NewDescribeInstancesPaginator(rc.ec2, in)
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("resolve targets: %w", err)
			}
			for _, res := range out.Reservations {
				for _, i := range res.Instances {
					found = append(found, aws.ToString(i.InstanceId))
				}
			}
		}
	} else {
		found = ids
	}
	var managed []string
	for _, id := range dedupe(found) {
		if _, ok := rc.fleet.Managed(id); ok {
			managed = append(managed, id)
		}
	}
	return managed, nil
}

func dedupe(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

var placeholderRe = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_.]+)\s*\}\}`)

// argv expands a runCommand line into the agent's arguments. The volsd
// documents run one plain command; anything a shell would interpret is
// refused rather than guessed at.
func argv(line string, params map[string][]string) ([]string, error) {
	var missing string
	expanded := placeholderRe.ReplaceAllStringFunc(line, func(m string) string {
		name := placeholderRe.FindStringSubmatch(m)[1]
		v, ok := params[name]
		if !ok || len(v) == 0 {
			missing = name
			return ""
		}
		return v[0]
	})
	if missing != "" {
		return nil, fmt.Errorf("runCommand %q: no value for parameter %s", line, missing)
	}
	if strings.ContainsAny(expanded, ";&|$`<>()'\"\\*?\n{}") {
		return nil, fmt.Errorf("runCommand %q is not a plain command; the simulation runs only the agent", expanded)
	}
	f := strings.Fields(expanded)
	if len(f) == 0 || f[0] != AgentPath {
		return nil, fmt.Errorf("runCommand %q does not run %s", expanded, AgentPath)
	}
	return f[1:], nil
}

func (rc *RunCommand) run(c *ssmCommand, doc Document) {
	defer rc.wg.Done()
	sem := make(chan struct{}, c.maxConc)
	var wg sync.WaitGroup
	errs := 0
	var mu sync.Mutex
	for _, id := range c.targets {
		mu.Lock()
		stop := errs > c.maxErrs
		mu.Unlock()
		if stop {
			rc.setStatus(c, id, "Cancelled", "Cancelled", CommandOutput{ExitCode: -1})
			continue
		}
		sem <- struct{}{}
		mu.Lock()
		stop = errs > c.maxErrs
		mu.Unlock()
		if stop {
			<-sem
			rc.setStatus(c, id, "Cancelled", "Cancelled", CommandOutput{ExitCode: -1})
			continue
		}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			defer func() { <-sem }()
			ok := rc.invoke(c, doc, id)
			if !ok {
				mu.Lock()
				errs++
				mu.Unlock()
			}
		}(id)
	}
	wg.Wait()
}

// invoke runs the document on one instance and reports whether it
// succeeded.
func (rc *RunCommand) invoke(c *ssmCommand, doc Document, id string) bool {
	inst, ok := rc.fleet.Managed(id)
	if !ok {
		rc.setStatus(c, id, "Failed", "Undeliverable", CommandOutput{ExitCode: -1})
		return false
	}
	rc.setStatus(c, id, "InProgress", "InProgress", CommandOutput{ExitCode: -1})
	ctx := context.Background()
	if rc.BeforeRun != nil {
		ctx = rc.BeforeRun(ctx, c.id, id, doc.Name)
	}
	var all CommandOutput
	for _, step := range doc.Steps {
		for _, line := range step.Commands {
			args, err := argv(line, c.params)
			if err != nil {
				all.Stderr += err.Error() + "\n"
				all.ExitCode = 1
				break
			}
			out := inst.RunAgent(ctx, args, step.Timeout)
			all.Stdout += out.Stdout
			all.Stderr += out.Stderr
			all.ExitCode, all.TimedOut = out.ExitCode, out.TimedOut
			if out.ExitCode != 0 || out.TimedOut {
				break
			}
		}
		if all.ExitCode != 0 || all.TimedOut {
			break
		}
	}
	switch {
	case all.TimedOut:
		rc.setStatus(c, id, "TimedOut", "ExecutionTimedOut", all)
	case all.ExitCode != 0:
		rc.setStatus(c, id, "Failed", "Failed", all)
	default:
		rc.setStatus(c, id, "Success", "Success", all)
		return true
	}
	return false
}

func (rc *RunCommand) setStatus(c *ssmCommand, id, status, details string, out CommandOutput) {
	if d := time.Until(c.visible); d > 0 {
		time.Sleep(d) // events only for invocations GetCommandInvocation can find
	}
	rc.mu.Lock()
	inv := c.invs[id]
	now := time.Now()
	if status == "InProgress" {
		inv.started = now
	} else if status != "Pending" {
		inv.ended = now
		inv.out = out
		inv.code = out.ExitCode
	}
	inv.status, inv.details = status, details
	rc.mu.Unlock()
	rc.log.Debug("command invocation", "command", c.id, "document", c.in.DocumentName, "instance", id, "status", status, "exit", out.ExitCode)
	if rc.OnStatus == nil {
		return
	}
	detail, _ := json.Marshal(events.CommandStatus{
		CommandID: c.id, DocumentName: c.in.DocumentName, InstanceID: id,
		RequestedDateTime: c.requested.UTC().Format("2006-01-02T15:04:05.000Z"),
		Status:            status, StatusDetails: details,
	})
	rc.OnStatus(events.Envelope{
		Version: "0", ID: lambdaruntime.NewRequestID(), DetailType: events.DetailTypeSSMStatus, Source: events.SourceSSM,
		Account: rc.account, Time: now.UTC().Truncate(time.Second), Region: rc.region,
		Resources: []string{fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", rc.region, rc.account, id)},
		Detail:    detail,
	})
}

func epoch(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return float64(t.UnixMilli()) / 1000
}

func isoOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// commandStatus aggregates the invocations (rc.mu held).
func commandStatus(c *ssmCommand) (status string, completed, errors int) {
	pending, running := 0, 0
	anyFailed, anyTimedOut, anyCancelled := false, false, false
	for _, inv := range c.invs {
		switch inv.status {
		case "Pending":
			pending++
		case "InProgress":
			running++
		case "Success":
			completed++
		case "Failed":
			completed++
			errors++
			anyFailed = true
		case "TimedOut":
			completed++
			errors++
			anyTimedOut = true
		case "Cancelled":
			completed++
			anyCancelled = true
		}
	}
	switch {
	case running > 0 || (pending > 0 && completed > 0):
		return "InProgress", completed, errors
	case pending > 0:
		return "Pending", completed, errors
	case anyFailed:
		return "Failed", completed, errors
	case anyTimedOut:
		return "TimedOut", completed, errors
	case anyCancelled:
		return "Cancelled", completed, errors
	}
	return "Success", completed, errors
}

func (rc *RunCommand) commandJSON(c *ssmCommand) map[string]any {
	status, completed, errs := commandStatus(c)
	targets := c.in.Targets
	if targets == nil {
		targets = []ssmTarget{}
	}
	ids := c.in.InstanceIds
	if ids == nil {
		ids = []string{}
	}
	return map[string]any{
		"CommandId": c.id, "DocumentName": c.in.DocumentName, "DocumentVersion": "$DEFAULT",
		"Comment": c.in.Comment, "ExpiresAfter": epoch(c.requested.Add(time.Hour)),
		"Parameters": c.params, "InstanceIds": ids, "Targets": targets,
		"RequestedDateTime": epoch(c.requested), "Status": status, "StatusDetails": status,
		"MaxConcurrency": c.in.MaxConcurrency, "MaxErrors": c.in.MaxErrors,
		"TargetCount": len(c.targets), "CompletedCount": completed, "ErrorCount": errs,
		"DeliveryTimedOutCount": 0, "TimeoutSeconds": max(c.in.TimeoutSeconds, 3600),
	}
}

func (rc *RunCommand) getCommandInvocation(w http.ResponseWriter, _ *http.Request, body []byte) {
	var in struct {
		CommandId, InstanceId, PluginName string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	c, ok := rc.commands[in.CommandId]
	if !ok {
		writeJSONError(w, http.StatusBadRequest, "InvalidCommandId", "")
		return
	}
	inv, ok := c.invs[in.InstanceId]
	if !ok || time.Now().Before(c.visible) {
		writeJSONError(w, http.StatusBadRequest, "InvocationDoesNotExist", "")
		return
	}
	doc := rc.docs[c.in.DocumentName]
	plugin := doc.Steps[0].Name
	if in.PluginName != "" {
		found := false
		for _, s := range doc.Steps {
			found = found || s.Name == in.PluginName
		}
		if !found {
			writeJSONError(w, http.StatusBadRequest, "InvalidPluginName", "")
			return
		}
		plugin = in.PluginName
	}
	stdout, stderr := "", ""
	if inv.status != "Pending" && inv.status != "InProgress" {
		// The first 24,000 characters of stdout and 8,000 of stderr.
		stdout, stderr = firstN(inv.out.Stdout, 24000), firstN(inv.out.Stderr, 8000)
	}
	elapsed := ""
	if !inv.started.IsZero() {
		end := inv.ended
		if end.IsZero() {
			end = time.Now()
		}
		elapsed = fmt.Sprintf("PT%.3fS", end.Sub(inv.started).Seconds())
	}
	writeJSON(w, map[string]any{
		"CommandId": c.id, "InstanceId": inv.instanceID, "Comment": c.in.Comment,
		"DocumentName": c.in.DocumentName, "DocumentVersion": "$DEFAULT", "PluginName": plugin,
		"ResponseCode": inv.code, "ExecutionStartDateTime": isoOrEmpty(inv.started),
		"ExecutionElapsedTime": elapsed, "ExecutionEndDateTime": isoOrEmpty(inv.ended),
		"Status": inv.status, "StatusDetails": inv.details,
		"StandardOutputContent": stdout, "StandardOutputUrl": "",
		"StandardErrorContent": stderr, "StandardErrorUrl": "",
		"CloudWatchOutputConfig": map[string]any{"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
	})
}

func firstN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func (rc *RunCommand) invocationJSON(c *ssmCommand, inv *ssmInvocation, details bool) map[string]any {
	m := map[string]any{
		"CommandId": c.id, "InstanceId": inv.instanceID, "InstanceName": "", "Comment": c.in.Comment,
		"DocumentName": c.in.DocumentName, "DocumentVersion": "$DEFAULT",
		"RequestedDateTime": epoch(c.requested), "Status": inv.status, "StatusDetails": inv.details,
		"StandardOutputUrl": "", "StandardErrorUrl": "", "CommandPlugins": []any{},
	}
	if details {
		doc := rc.docs[c.in.DocumentName]
		output := ""
		if inv.status != "Pending" && inv.status != "InProgress" {
			output = firstN(inv.out.Stdout, 2500)
		}
		m["CommandPlugins"] = []any{map[string]any{
			"Name": doc.Steps[0].Name, "Status": inv.status, "StatusDetails": inv.details,
			"ResponseCode": inv.code, "ResponseStartDateTime": epoch(inv.started),
			"ResponseFinishDateTime": epoch(inv.ended), "Output": output,
			"StandardOutputUrl": "", "StandardErrorUrl": "",
		}}
	}
	return m
}

func (rc *RunCommand) listCommandInvocations(w http.ResponseWriter, _ *http.Request, body []byte) {
	var in struct {
		CommandId, InstanceId string
		Details               bool
		MaxResults            int
		NextToken             string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if in.CommandId != "" {
		if _, ok := rc.commands[in.CommandId]; !ok {
			writeJSONError(w, http.StatusBadRequest, "InvalidCommandId", "")
			return
		}
	}
	var all []map[string]any
	for _, id := range rc.order {
		c := rc.commands[id]
		if in.CommandId != "" && id != in.CommandId {
			continue
		}
		for _, t := range c.targets {
			if in.InstanceId != "" && t != in.InstanceId {
				continue
			}
			all = append(all, rc.invocationJSON(c, c.invs[t], in.Details))
		}
	}
	page, next := paginate(all, in.MaxResults, in.NextToken)
	out := map[string]any{"CommandInvocations": page}
	if next != "" {
		out["NextToken"] = next
	}
	writeJSON(w, out)
}

func (rc *RunCommand) listCommands(w http.ResponseWriter, _ *http.Request, body []byte) {
	var in struct {
		CommandId, InstanceId string
		MaxResults            int
		NextToken             string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if in.CommandId != "" {
		if _, ok := rc.commands[in.CommandId]; !ok {
			writeJSONError(w, http.StatusBadRequest, "InvalidCommandId", "")
			return
		}
	}
	var all []map[string]any
	for _, id := range rc.order {
		c := rc.commands[id]
		if in.CommandId != "" && id != in.CommandId {
			continue
		}
		if in.InstanceId != "" {
			if _, ok := c.invs[in.InstanceId]; !ok {
				continue
			}
		}
		all = append(all, rc.commandJSON(c))
	}
	page, next := paginate(all, in.MaxResults, in.NextToken)
	out := map[string]any{"Commands": page}
	if next != "" {
		out["NextToken"] = next
	}
	writeJSON(w, out)
}

func paginate(all []map[string]any, max int, token string) ([]map[string]any, string) {
	if max <= 0 || max > 50 {
		max = 50
	}
	start, _ := strconv.Atoi(token)
	if start > len(all) {
		start = len(all)
	}
	end := min(start+max, len(all))
	page := all[start:end]
	if page == nil {
		page = []map[string]any{}
	}
	if end < len(all) {
		return page, strconv.Itoa(end)
	}
	return page, ""
}

// Invocations returns the invocations of a command (for tests and the
// narration): instance → status.
func (rc *RunCommand) Invocations(commandID string) map[string]string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string]string{}
	if c, ok := rc.commands[commandID]; ok {
		for id, inv := range c.invs {
			out[id] = inv.status
		}
	}
	return out
}

// CommandIDs lists the commands sent, oldest first, with their documents.
func (rc *RunCommand) CommandIDs() []CommandSummary {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []CommandSummary
	for _, id := range rc.order {
		c := rc.commands[id]
		st, _, _ := commandStatus(c)
		out = append(out, CommandSummary{ID: id, Document: c.in.DocumentName, Params: c.params, Targets: len(c.targets), Status: st})
	}
	return out
}

// CommandSummary describes one sent command.
type CommandSummary struct {
	ID       string
	Document string
	Params   map[string][]string
	Targets  int
	Status   string
}
