package harness

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/documents"
	"github.com/volsd/volsd/internal/awsfake"
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

// LoadDocuments parses volsd's SSM documents as infra/documents holds them,
// named volsd-<Kind> as in docs/contracts.md (the whole-system run takes
// them from the synthesized template instead: Wiring.Documents).
func LoadDocuments() (map[string]Document, error) {
	docs := map[string]Document{}
	for _, kind := range events.DocumentKinds {
		src, err := documents.Source(kind)
		if err != nil {
			return nil, err
		}
		d, err := ParseDocument(events.DefaultDocumentName(kind), src)
		if err != nil {
			return nil, err
		}
		docs[d.Name] = d
	}
	return docs, nil
}

// RunCommand is SSM Run Command for the simulated fleet: the one model of
// Run Command (internal/awsfake.SSM: validation, targets, MaxConcurrency,
// MaxErrors, invocation visibility, status events) served over HTTP on the
// proxy, with an SSM agent on each instance: every invocation runs the
// document's volsd-agent command as a real process on the instance. An
// instance is a target while it runs in EC2 (moto) and its agent is online
// (the fleet has it).
type RunCommand struct {
	// SSM is the model; its OnEvent and OnCommandEvent are the EventBridge
	// events of the invocations and commands.
	SSM   *awsfake.SSM
	fleet ManagedFleet
	ec2   *ec2.Client // moto, for the instances' tags and states
	docs  map[string]Document
	log   *slog.Logger
	// BeforeRun, if set, runs before each invocation's process starts (fault
	// injection: it may return a context that gets cancelled to kill it).
	BeforeRun func(ctx context.Context, commandID, instanceID, document string) context.Context
}

// NewRunCommand registers the Run Command API on the proxy.
func NewRunCommand(p *Proxy, fleet ManagedFleet, ec2c *ec2.Client, docs map[string]Document, account, region string, log *slog.Logger) *RunCommand {
	rc := &RunCommand{SSM: awsfake.NewSSM(), fleet: fleet, ec2: ec2c, docs: docs, log: log}
	rc.SSM.Account, rc.SSM.Region = account, region
	// In SSM an invocation becomes readable a moment after SendCommand.
	rc.SSM.InvisibleReads, rc.SSM.InvisibleFor = 0, 200*time.Millisecond
	rc.SSM.Runner = rc.invoke
	for name, d := range docs {
		patterns := map[string]string{}
		for pn, dp := range d.Params {
			if dp.AllowedPattern != nil {
				patterns[pn] = dp.AllowedPattern.String()
			} else {
				patterns[pn] = ""
			}
		}
		rc.SSM.AddDocument(name, patterns)
	}
	for target, h := range rc.SSM.JSONHandlers() {
		if target == "AmazonSSM.SendCommand" {
			h = rc.syncThen(h)
		}
		p.HandleJSON(target, h)
	}
	return rc
}

// syncThen brings the model's managed instances up to date before a
// SendCommand resolves its targets: the running EC2 instances whose agent
// is online, with their EC2 tags.
func (rc *RunCommand) syncThen(h awsfake.Handler) awsfake.Handler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if err := rc.sync(r.Context()); err != nil {
			awsfake.WriteJSONError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
			return
		}
		h(w, r, body)
	}
}

func (rc *RunCommand) sync(ctx context.Context) error {
	online := map[string]bool{}
	for _, id := range rc.fleet.ManagedIDs() {
		online[id] = true
	}
	p := ec2.NewDescribeInstancesPaginator(rc.ec2, &ec2.DescribeInstancesInput{})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("managed instances: %w", err)
		}
		for _, res := range out.Reservations {
			for _, i := range res.Instances {
				id := aws.ToString(i.InstanceId)
				if !online[id] || i.State == nil || i.State.Name != types.InstanceStateNameRunning {
					rc.SSM.RemoveInstance(id)
					continue
				}
				tags := map[string]string{}
				for _, t := range i.Tags {
					tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
				}
				rc.SSM.AddInstance(id, tags)
			}
		}
	}
	return nil
}

// Wait waits for the commands in flight.
func (rc *RunCommand) Wait() { rc.SSM.Wait() }

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

// invoke is the instance's SSM agent running one invocation: the
// document's steps in order, each line as the agent's process with the
// step's timeout, stopping at the first failure.
func (rc *RunCommand) invoke(ctx context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
	inst, ok := rc.fleet.Managed(inv.InstanceID)
	if !ok {
		return awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusFailed, ResponseCode: -1, Stderr: "Undeliverable: the instance's SSM agent is offline"}
	}
	doc := rc.docs[inv.DocumentName]
	params := map[string][]string{}
	for name, p := range doc.Params {
		params[name] = []string{p.Default}
	}
	for name, v := range inv.Parameters {
		params[name] = v
	}
	if rc.BeforeRun != nil {
		ctx = rc.BeforeRun(ctx, inv.CommandID, inv.InstanceID, doc.Name)
	}
	var all CommandOutput
	for _, step := range doc.Steps {
		for _, line := range step.Commands {
			args, err := argv(line, params)
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
	rc.log.Debug("command invocation", "command", inv.CommandID, "document", inv.DocumentName, "instance", inv.InstanceID, "exit", all.ExitCode, "timedOut", all.TimedOut)
	res := awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusSuccess, ResponseCode: int32(all.ExitCode), Stdout: all.Stdout, Stderr: all.Stderr}
	switch {
	case all.TimedOut:
		res.Status = ssmtypes.CommandInvocationStatusTimedOut
	case all.ExitCode != 0:
		res.Status = ssmtypes.CommandInvocationStatusFailed
	}
	return res
}

// Invocations returns the invocations of a command (for tests and the
// narration): instance → status.
func (rc *RunCommand) Invocations(commandID string) map[string]string {
	out := map[string]string{}
	for id, st := range rc.SSM.InvocationStatuses(commandID) {
		out[id] = string(st)
	}
	return out
}

// CommandIDs lists the commands sent, oldest first, with their documents.
func (rc *RunCommand) CommandIDs() []CommandSummary {
	var out []CommandSummary
	for _, c := range rc.SSM.Commands() {
		out = append(out, CommandSummary{ID: aws.ToString(c.CommandId), Document: aws.ToString(c.DocumentName),
			Params: c.Parameters, Targets: int(c.TargetCount), Status: string(c.Status)})
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
