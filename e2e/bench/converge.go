package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/lambdaruntime"
)

// ConvergeOptions size the converge benchmark.
type ConvergeOptions struct {
	Root, WorkDir        string
	Instances            int // in service when the one-file pushes run
	Tree                 harness.TreeSpec
	Runs                 int
	DynamoDBURL, MotoURL string
	Log                  func(format string, args ...any)
}

// ConvergeStages are the stages of one push, in order; their seconds add
// up to the whole (push start → `--wait` returned).
var ConvergeStages = []string{"cli", "sqsToPushLambda", "pushLambdaToSendCommand", "sendCommandToAgentStart", "agents", "report", "waitSees"}

// convergeStageNames describe the stages for the report.
var convergeStageNames = map[string]string{
	"cli":                     "CLI: start → SQS SendMessage returned (hash, one PUT, manifest read, send)",
	"sqsToPushLambda":         "SQS → push Lambda handed the batch (event source: receive, batching window)",
	"pushLambdaToSendCommand": "push Lambda: journal append → SendCommand",
	"sendCommandToAgentStart": "SendCommand → the first invocation started (Run Command delivery)",
	"agents":                  "the invocations: first started → last ended (`volsd-agent apply` on each instance, as many at once as the command's MaxConcurrency allows)",
	"report":                  "report: last invocation ended → report Lambda wrote the results",
	"waitSees":                "`--wait` sees it: report written → the CLI returned",
}

// ConvergeResult is push → every instance reported, for a one-file change.
type ConvergeResult struct {
	Instances int `json:"instances"`
	Runs      int `json:"runs"`
	Files     int `json:"files"`
	// Seconds is `volsd push --wait FILE DEST` from its start until it
	// returned with every instance at the new seq.
	Seconds Sample `json:"seconds"`
	// Stages are the seconds of each stage (ConvergeStages).
	Stages map[string]Sample `json:"stagesSeconds"`
	// AgentApply is each agent's own duration of the apply (its report);
	// Invocation each invocation's start → end in Run Command (the agent
	// process, its start-up included).
	AgentApply Sample `json:"agentApplySeconds"`
	Invocation Sample `json:"invocationSeconds"`
	// MaxConcurrency is the SendCommand's (the push Lambda's setting).
	MaxConcurrency string `json:"maxConcurrency"`
	// Window is the push queue's batching window the template gives the
	// event source, in seconds.
	Window Num    `json:"batchingWindowSeconds"`
	Setup  string `json:"setup"`
}

// RunConverge measures, in the local whole system (e2e/harness: real
// Lambda bootstraps, real agents on loop-device volumes, DynamoDB Local,
// moto behind the proxy, the real CLI), the time from `volsd push --wait`
// of one changed file until it returns with every one of Instances
// in-service instances at the new seq, Runs times, with each stage timed
// from what the parts record: the CLI's own send time, the push and
// report Lambdas' Runtime API (handed, returned), Run Command's command
// and invocation times.
func RunConverge(ctx context.Context, o ConvergeOptions) (*ConvergeResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.Instances <= 0 {
		o.Instances = 3
	}
	res := &ConvergeResult{Instances: o.Instances, Runs: o.Runs, Setup: fmt.Sprintf(
		"The local whole system (`e2e/harness`, the template's wiring): %d instances in service with real agents, the content pushed first; then %%d times one file of the tree is changed and pushed with `volsd push --wait FILE DEST`. "+
			"**converge** is from the CLI's start until it returned with every instance reported at the new seq. The stages are timed from what the parts record: the CLI's send time, the push and report Lambdas' Runtime API (invocation handed out, response posted), Run Command's SendCommand and each invocation's start and end.", o.Instances)}
	dir, err := os.MkdirTemp(o.WorkDir, "converge-")
	if err != nil {
		return nil, err
	}
	if os.Getenv("VOLSD_E2E_KEEP") == "" {
		defer os.RemoveAll(dir)
	}
	o.Log("building the Lambda bootstraps, volsd-agent and volsd for this machine")
	bins, err := harness.Build(ctx, o.Root, filepath.Join(dir, "build"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "cluster"), 0o755); err != nil {
		return nil, err
	}
	obs := &lambdaLog{}
	c, err := harness.Start(ctx, harness.Options{
		DynamoDBURL: o.DynamoDBURL, MotoURL: o.MotoURL, Binaries: bins, WorkDir: filepath.Join(dir, "cluster"),
		Pool:      "converge-" + randomName()[:4],
		IdlePerAZ: (o.Instances + 1) / 2, VolumeSizeGiB: 1, ReleasePolicy: "delete",
		Observe: obs.add,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer func() {
		if cerr := c.Close(); cerr != nil {
			o.Log("cleanup: %v", cerr)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("start the local system: %w", err)
	}
	res.Window = Num(c.Wiring.Push.Window.Seconds())
	fail := func(format string, args ...any) error {
		return fmt.Errorf(format+" (logs: %s)", append(args, c.LogDir())...)
	}
	outputs, err := c.OutputsFile()
	if err != nil {
		return nil, err
	}
	if _, err := c.Schedule(ctx, "reconcile"); err != nil {
		return nil, fail("reconcile: %v", err)
	}
	launches, err := c.Group.ScaleOut(ctx, o.Instances)
	if err != nil {
		return nil, fail("scale out: %v", err)
	}
	if _, err := c.Group.WaitInService(ctx, launches); err != nil {
		return nil, fail("instances entering service: %v", err)
	}
	src := filepath.Join(dir, "content", "site")
	st, err := harness.GenerateTree(src, o.Tree)
	if err != nil {
		return nil, err
	}
	res.Files = st.Files
	if _, err := c.CLI(ctx, "push", "--outputs", outputs, "--wait", "--timeout", "5m", src, "site"); err != nil {
		return nil, fail("push the content: %v", err)
	}
	if err := c.Settle(ctx); err != nil {
		return nil, err
	}
	o.Log("%d instances in service, %d files pushed; batching window %s", o.Instances, st.Files, c.Wiring.Push.Window)

	var total []time.Duration
	stages := map[string][]float64{}
	var applies, invocations []float64
	for run := 0; run < o.Runs; run++ {
		settle()
		name := fmt.Sprintf("converge-%02d.html", run)
		file := filepath.Join(src, name)
		if err := os.WriteFile(file, fmt.Appendf(nil, "<p>run %d of the converge benchmark, %s</p>\n", run, time.Now().UTC().Format(time.RFC3339Nano)), 0o644); err != nil {
			return nil, err
		}
		start := time.Now()
		out, err := c.CLI(ctx, "push", "--outputs", outputs, "--json", "--wait", "--timeout", "2m", file, "site/"+name)
		end := time.Now()
		if err != nil {
			return nil, fail("run %d: %v", run+1, err)
		}
		var pushed struct {
			Sent struct {
				RequestID string    `json:"requestId"`
				SentAt    time.Time `json:"sentAt"`
			} `json:"sent"`
			Wait struct {
				Seq       int64 `json:"seq"`
				Outcome   string
				Instances []struct{ InstanceID string } `json:"instances"`
			} `json:"wait"`
		}
		if err := json.Unmarshal([]byte(out.Stdout), &pushed); err != nil {
			return nil, fail("run %d: the CLI's JSON: %v: %s", run+1, err, out.Stdout)
		}
		if n := len(pushed.Wait.Instances); n != o.Instances {
			return nil, fail("run %d: --wait saw %d instances, want %d", run+1, n, o.Instances)
		}
		if err := c.Settle(ctx); err != nil {
			return nil, err
		}
		cs, err := convergeStages(ctx, c, obs, start, pushed.Sent.SentAt, end)
		if err != nil {
			return nil, fail("run %d: %v", run+1, err)
		}
		st := cs.stages
		invocations = append(invocations, cs.invocations...)
		res.MaxConcurrency = cs.maxConcurrency
		total = append(total, end.Sub(start))
		for k, v := range st {
			stages[k] = append(stages[k], v)
		}
		applies = append(applies, cs.agent...)
		var parts []string
		for _, k := range ConvergeStages {
			parts = append(parts, fmt.Sprintf("%s %.3f", k, st[k]))
		}
		o.Log("run %d/%d: %.2f s (seq %d): %s", run+1, o.Runs, end.Sub(start).Seconds(), pushed.Wait.Seq, strings.Join(parts, ", "))
	}
	res.Seconds = Seconds(total)
	res.Stages = map[string]Sample{}
	for k, v := range stages {
		res.Stages[k] = NewSample("s", v)
	}
	res.AgentApply = NewSample("s", applies)
	res.Invocation = NewSample("s", invocations)
	res.Setup = fmt.Sprintf(res.Setup, o.Runs)
	if errs := c.AsyncErrors(); len(errs) > 0 {
		return nil, fail("asynchronous invocations failed: %v", errors.Join(errs...))
	}
	return res, nil
}

// convergeRun is what one push's parts recorded.
type convergeRun struct {
	stages         map[string]float64 // ConvergeStages
	agent          []float64          // each agent's own apply duration
	invocations    []float64          // each invocation's start → end
	maxConcurrency string
}

// convergeStages splits one push (start → end, sent at sentAt) into
// ConvergeStages from what the parts recorded after start.
func convergeStages(ctx context.Context, c *harness.Cluster, obs *lambdaLog, start, sentAt, end time.Time) (*convergeRun, error) {
	handed, ok := obs.first("push", lambdaruntime.Handed, start)
	if !ok {
		return nil, errors.New("no push Lambda invocation after the push started")
	}
	var cmdID string
	var requested time.Time
	cr := &convergeRun{stages: map[string]float64{}}
	for _, sc := range c.RunCommand.SSM.Commands() {
		if aws.ToString(sc.DocumentName) == "volsd-Apply" && sc.RequestedDateTime != nil && !sc.RequestedDateTime.Before(start) {
			cmdID, requested, cr.maxConcurrency = aws.ToString(sc.CommandId), *sc.RequestedDateTime, aws.ToString(sc.MaxConcurrency)
			break
		}
	}
	if cmdID == "" {
		return nil, errors.New("no volsd-Apply command after the push started")
	}
	var firstStart, lastEnd time.Time
	for id := range c.RunCommand.Invocations(cmdID) {
		inv, err := c.RunCommand.SSM.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: &cmdID, InstanceId: &id})
		if err != nil {
			return nil, fmt.Errorf("invocation of %s on %s: %w", cmdID, id, err)
		}
		s, err1 := time.Parse("2006-01-02T15:04:05.000Z", aws.ToString(inv.ExecutionStartDateTime))
		e, err2 := time.Parse("2006-01-02T15:04:05.000Z", aws.ToString(inv.ExecutionEndDateTime))
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("invocation of %s on %s: %w", cmdID, id, err)
		}
		if firstStart.IsZero() || s.Before(firstStart) {
			firstStart = s
		}
		if e.After(lastEnd) {
			lastEnd = e
		}
		cr.invocations = append(cr.invocations, e.Sub(s).Seconds())
		var rep struct {
			Duration float64 `json:"duration"`
		}
		if lines := strings.Split(strings.TrimSpace(aws.ToString(inv.StandardOutputContent)), "\n"); json.Unmarshal([]byte(lines[len(lines)-1]), &rep) == nil {
			cr.agent = append(cr.agent, rep.Duration)
		}
	}
	// The report Lambda writes the results, then measures the reported
	// lag (a few more reads) before it returns: a --wait that reads soon
	// can return first; its stage is then 0.
	reported, ok := obs.first("report", lambdaruntime.Returned, lastEnd.Add(-time.Millisecond))
	if !ok {
		return nil, fmt.Errorf("no report Lambda response after the last invocation's end (%s)", lastEnd.Format(time.StampMilli))
	}
	if reported.After(end) {
		reported = end
	}
	bounds := []time.Time{start, sentAt, handed, requested, firstStart, lastEnd, reported, end}
	for i, k := range ConvergeStages {
		cr.stages[k] = bounds[i+1].Sub(bounds[i]).Seconds()
	}
	return cr, nil
}

// lambdaLog keeps the Lambdas' Runtime API observations.
type lambdaLog struct {
	mu  sync.Mutex
	obs []fnObservation
}

type fnObservation struct {
	fn string
	lambdaruntime.Observation
}

func (l *lambdaLog) add(fn string, o lambdaruntime.Observation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.obs = append(l.obs, fnObservation{fn, o})
}

// first returns the time of fn's first observation of kind at or after t.
func (l *lambdaLog) first(fn string, kind lambdaruntime.ObservationKind, t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var at []time.Time
	for _, o := range l.obs {
		if o.fn == fn && o.Kind == kind && !o.At.Before(t) {
			at = append(at, o.At)
		}
	}
	if len(at) == 0 {
		return time.Time{}, false
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	return at[0], true
}
