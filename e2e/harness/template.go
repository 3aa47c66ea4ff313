package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/volsd/volsd/infra/assembly"
)

// The template is the system: the local run takes its wiring from the
// pool stack the CDK app synthesizes (infra, `go run ./infra`, the same app
// `make synth` runs), not from copies. Wiring is what it reads: each
// Lambda's environment, timeout, memory and asynchronous retries, the
// EventBridge rules (patterns, schedules, targets), the SQS event source,
// the push queue and its redrive, the lifecycle hooks, the table and the
// SSM documents.
type Wiring struct {
	Functions map[string]FunctionSpec // by function name (lifecycle, push, …)
	Rules     []RuleSpec
	Push      EventSourceSpec
	Queue     QueueSpec
	Hooks     []HookSpec
	Table     TableSpec
	Documents map[string]Document // by document name
}

// FunctionSpec is one AWS::Lambda::Function with its EventInvokeConfig.
type FunctionSpec struct {
	LogicalID string
	// Env is the function's environment as the template has it; values
	// that are intrinsics (Ref, Fn::GetAtt) stay as Resolve placeholders
	// ("<LogicalID>", "<LogicalID.Arn>") for the local run to fill in.
	Env              map[string]string
	Timeout          time.Duration
	MemoryMiB        int
	MaxRetryAttempts *int // EventInvokeConfig MaximumRetryAttempts
}

// RuleSpec is one AWS::Events::Rule targeting a function.
type RuleSpec struct {
	LogicalID string
	Pattern   map[string]any // nil for a schedule
	Schedule  string
	Target    string // function name
	Enabled   bool
}

// EventSourceSpec is the push function's SQS event source mapping.
type EventSourceSpec struct {
	Function                string
	BatchSize               int
	Window                  time.Duration
	ReportBatchItemFailures bool
}

// QueueSpec is the push queue with its redrive.
type QueueSpec struct {
	LogicalID, DLQLogicalID string
	VisibilityTimeout       time.Duration
	MaxReceiveCount         int
	Retention               time.Duration
}

// HookSpec is one AWS::AutoScaling::LifecycleHook.
type HookSpec struct {
	Name, Transition, DefaultResult string
	HeartbeatTimeout                time.Duration
}

// TableSpec is the AWS::DynamoDB::Table.
type TableSpec struct {
	LogicalID    string
	Properties   map[string]any // as in the template
	TTLAttribute string
}

// ReadWiring takes the wiring out of a synthesized pool stack template.
func ReadWiring(t *assembly.Template) (*Wiring, error) {
	w := &Wiring{Functions: map[string]FunctionSpec{}, Documents: map[string]Document{}}
	byLogical := map[string]string{}
	for _, name := range FunctionNames {
		r, err := t.One("AWS::Lambda::Function", "Pool"+strings.ToUpper(name[:1])+name[1:])
		if err != nil {
			return nil, err
		}
		fs := FunctionSpec{LogicalID: r.ID, Env: map[string]string{}}
		vars, _ := r.Properties["Environment"].(map[string]any)
		env, _ := vars["Variables"].(map[string]any)
		for k, v := range env {
			s, err := assembly.Resolve(v)
			if err != nil {
				return nil, fmt.Errorf("%s environment %s: %w", r.ID, k, err)
			}
			fs.Env[k] = s
		}
		fs.Timeout = time.Duration(num(r.Properties["Timeout"], 3)) * time.Second
		fs.MemoryMiB = num(r.Properties["MemorySize"], 128)
		w.Functions[name] = fs
		byLogical[r.ID] = name
	}
	for _, r := range t.OfType("AWS::Lambda::EventInvokeConfig") {
		name := byLogical[refOf(r.Properties["FunctionName"])]
		if name == "" {
			continue
		}
		fs := w.Functions[name]
		n := num(r.Properties["MaximumRetryAttempts"], 2)
		fs.MaxRetryAttempts = &n
		w.Functions[name] = fs
	}
	for _, r := range t.OfType("AWS::Events::Rule") {
		targets, _ := r.Properties["Targets"].([]any)
		for _, x := range targets {
			tg, _ := x.(map[string]any)
			name := byLogical[getAttOf(tg["Arn"])]
			if name == "" {
				return nil, fmt.Errorf("rule %s targets %v, not a volsd function", r.ID, tg["Arn"])
			}
			rs := RuleSpec{LogicalID: r.ID, Target: name, Enabled: r.Properties["State"] != "DISABLED"}
			rs.Pattern, _ = r.Properties["EventPattern"].(map[string]any)
			rs.Schedule, _ = r.Properties["ScheduleExpression"].(string)
			w.Rules = append(w.Rules, rs)
		}
	}
	esm, err := t.One("AWS::Lambda::EventSourceMapping", "Push")
	if err != nil {
		return nil, err
	}
	w.Push = EventSourceSpec{Function: byLogical[refOf(esm.Properties["FunctionName"])], BatchSize: num(esm.Properties["BatchSize"], 10),
		Window: time.Duration(num(esm.Properties["MaximumBatchingWindowInSeconds"], 0)) * time.Second}
	rt, _ := esm.Properties["FunctionResponseTypes"].([]any)
	for _, x := range rt {
		w.Push.ReportBatchItemFailures = w.Push.ReportBatchItemFailures || x == "ReportBatchItemFailures"
	}
	q, ok := t.Resources[getAttOf(esm.Properties["EventSourceArn"])]
	if !ok || q.Type != "AWS::SQS::Queue" {
		return nil, fmt.Errorf("event source %s reads %v, not a queue of the template", esm.ID, esm.Properties["EventSourceArn"])
	}
	w.Queue = QueueSpec{LogicalID: q.ID, VisibilityTimeout: time.Duration(num(q.Properties["VisibilityTimeout"], 30)) * time.Second,
		Retention: time.Duration(num(q.Properties["MessageRetentionPeriod"], 345600)) * time.Second}
	if rp, ok := q.Properties["RedrivePolicy"].(map[string]any); ok {
		w.Queue.DLQLogicalID = getAttOf(rp["deadLetterTargetArn"])
		w.Queue.MaxReceiveCount = num(rp["maxReceiveCount"], 0)
	}
	for _, r := range t.OfType("AWS::AutoScaling::LifecycleHook") {
		p := r.Properties
		w.Hooks = append(w.Hooks, HookSpec{Name: str(p["LifecycleHookName"]), Transition: str(p["LifecycleTransition"]),
			DefaultResult: str(p["DefaultResult"]), HeartbeatTimeout: time.Duration(num(p["HeartbeatTimeout"], 3600)) * time.Second})
	}
	sort.Slice(w.Hooks, func(i, j int) bool { return w.Hooks[i].Name < w.Hooks[j].Name })
	tbl, err := t.One("AWS::DynamoDB::Table", "Table")
	if err != nil {
		return nil, err
	}
	w.Table = TableSpec{LogicalID: tbl.ID, Properties: tbl.Properties}
	if ttl, ok := tbl.Properties["TimeToLiveSpecification"].(map[string]any); ok && ttl["Enabled"] == true {
		w.Table.TTLAttribute = str(ttl["AttributeName"])
	}
	for _, r := range t.OfType("AWS::SSM::Document") {
		d, err := parseDocument(str(r.Properties["Name"]), r.Properties["Content"])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.ID, err)
		}
		w.Documents[d.Name] = d
	}
	if len(w.Documents) == 0 {
		return nil, fmt.Errorf("%s has no AWS::SSM::Document", t.Name)
	}
	return w, nil
}

// Route returns the functions whose enabled rules' patterns match event,
// in rule order, as EventBridge routes it (infra/assembly's matcher).
func (w *Wiring) Route(event []byte) ([]string, error) {
	var out []string
	for _, r := range w.Rules {
		if !r.Enabled || r.Pattern == nil {
			continue
		}
		ok, err := assembly.MatchPattern(r.Pattern, event)
		if err != nil {
			return nil, fmt.Errorf("rule %s: %w", r.LogicalID, err)
		}
		if ok {
			out = append(out, r.Target)
		}
	}
	return out, nil
}

// ScheduleRule returns the logical ID of the enabled schedule rule that
// targets fn ("" when the template schedules fn nowhere).
func (w *Wiring) ScheduleRule(fn string) string {
	for _, r := range w.Rules {
		if r.Enabled && r.Target == fn && r.Schedule != "" {
			return r.LogicalID
		}
	}
	return ""
}

var placeholderValue = regexp.MustCompile(`<[^<>]+>`)

// Resolve fills the template's placeholders in v ("<LogicalID>" for a Ref,
// "<LogicalID.Attr>" for a Fn::GetAtt) with the local run's physical
// values; a placeholder the run has no value for is an error.
func Resolve(v string, physical map[string]string) (string, error) {
	var missing []string
	out := placeholderValue.ReplaceAllStringFunc(v, func(m string) string {
		p, ok := physical[m[1:len(m)-1]]
		if !ok {
			missing = append(missing, m)
		}
		return p
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no local value for %s", strings.Join(missing, ", "))
	}
	return out, nil
}

func num(v any, def int) int {
	switch x := v.(type) {
	case float64:
		return int(x)
	case string:
		if n, err := strconv.Atoi(x); err == nil {
			return n
		}
	}
	return def
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func refOf(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["Ref"].(string)
	return s
}

func getAttOf(v any) string {
	m, _ := v.(map[string]any)
	parts, _ := m["Fn::GetAtt"].([]any)
	if len(parts) != 2 {
		return ""
	}
	s, _ := parts[0].(string)
	return s
}

// parseDocument reads an SSM Command document's content (schema 2.2,
// aws:runShellScript steps) as the template carries it.
func parseDocument(name string, content any) (Document, error) {
	b, err := json.Marshal(content)
	if err != nil {
		return Document{}, err
	}
	return ParseDocument(name, b)
}

// ParseDocument parses an SSM Command document (JSON or YAML; schema 2.2,
// aws:runShellScript steps).
func ParseDocument(name string, src []byte) (Document, error) {
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
		return Document{}, fmt.Errorf("document %s: %w", name, err)
	}
	d := Document{Name: name, Params: map[string]DocParam{}}
	for pn, p := range raw.Parameters {
		dp := DocParam{Default: p.Default}
		if p.AllowedPattern != "" {
			re, err := regexp.Compile(p.AllowedPattern)
			if err != nil {
				return Document{}, fmt.Errorf("document %s parameter %s: %w", name, pn, err)
			}
			dp.AllowedPattern = re
		}
		d.Params[pn] = dp
	}
	for _, s := range raw.MainSteps {
		if s.Action != "aws:runShellScript" {
			return Document{}, fmt.Errorf("document %s step %s: action %s is not simulated", name, s.Name, s.Action)
		}
		t := 3600 * time.Second
		if s.Inputs.TimeoutSeconds != "" {
			n, err := strconv.Atoi(s.Inputs.TimeoutSeconds)
			if err != nil {
				return Document{}, fmt.Errorf("document %s step %s: timeoutSeconds: %w", name, s.Name, err)
			}
			t = time.Duration(n) * time.Second
		}
		d.Steps = append(d.Steps, DocStep{Name: s.Name, Commands: s.Inputs.RunCommand, Timeout: t})
	}
	return d, nil
}

// SynthInput is what the pool stack is synthesized for.
type SynthInput struct {
	Root      string            // module root (go.mod)
	Dir       string            // where the cloud assembly and the run's template go
	Context   map[string]string // CDK context (-c key=value): pool, asgName, …
	LambdaDir string            // lambdaDir: <dir>/<function>/bootstrap
}

var (
	infraBuild  sync.Mutex
	infraBinary = map[string]string{} // module root → built CDK app
	synthMu     sync.Mutex
	synthCache  = map[string][]byte{} // settings → template with placeholder names
)

// Placeholder names the pool stack is synthesized with; Synthesize puts
// the run's pool and group in their place, as stack parameters would be
// filled in, so runs that differ only by names share one synth.
const (
	placeholderPool  = "volsdplaceholderpool"
	placeholderGroup = "volsd-placeholder-group"
)

// Synthesize runs the CDK app (infra) as `cdk synth` runs it (CDK_OUTDIR,
// CDK_CONTEXT_JSON) and returns the pool stack's template for the pool and
// group of in.Context. The app is built once per process; a synth is made
// once per distinct set of other settings and build of the app (one at a
// time: each is a Node.js process; kept under build/harness), with
// placeholder names that are then filled in.
func Synthesize(ctx context.Context, in SynthInput) (*assembly.Template, error) {
	cctx := map[string]string{}
	for k, v := range in.Context {
		cctx[k] = v
	}
	pool, group := cctx["pool"], cctx["asgName"]
	if pool == "" || group == "" {
		return nil, fmt.Errorf("synthesize: context needs pool and asgName, got %v", cctx)
	}
	cctx["pool"], cctx["asgName"] = placeholderPool, placeholderGroup
	key, _ := json.Marshal(cctx) // sorted keys
	cctx["lambdaDir"] = in.LambdaDir
	synthMu.Lock()
	raw, err := cachedSynth(ctx, in, string(key), cctx)
	synthMu.Unlock()
	if err != nil {
		return nil, err
	}
	quote := func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) }
	filled := strings.NewReplacer(placeholderGroup, quote(group), placeholderPool, quote(pool)).Replace(string(raw))
	path := filepath.Join(in.Dir, "volsd-"+pool+".template.json")
	if err := os.WriteFile(path, []byte(filled), 0o644); err != nil {
		return nil, err
	}
	t, err := assembly.ReadTemplate(path)
	if err != nil {
		return nil, err
	}
	t.Name = "volsd-" + pool
	return t, nil
}

// cachedSynth returns the template for the settings key: from this
// process's cache, from the one under build/harness (named by the hash of
// the built CDK app and the settings, so a change to the app or the
// construct synthesizes again), or from a new synth. synthMu is held.
func cachedSynth(ctx context.Context, in SynthInput, key string, cctx map[string]string) ([]byte, error) {
	if raw, ok := synthCache[key]; ok {
		return raw, nil
	}
	bin, err := buildInfra(ctx, in.Root)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(bin)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return nil, err
	}
	h.Write([]byte(key))
	file := filepath.Join(filepath.Dir(bin), "synth-"+hex.EncodeToString(h.Sum(nil))[:32]+".template.json")
	raw, err := os.ReadFile(file)
	if err != nil {
		if raw, err = synthesize(ctx, in.Root, filepath.Join(in.Dir, "cdk.out"), cctx); err != nil {
			return nil, err
		}
		tmp := file + ".tmp" + strconv.Itoa(os.Getpid())
		if err := os.WriteFile(tmp, raw, 0o644); err == nil {
			_ = os.Rename(tmp, file)
		}
	}
	synthCache[key] = raw
	return raw, nil
}

// synthesize runs the app into out and returns the pool stack's template.
func synthesize(ctx context.Context, root, out string, cctx map[string]string) ([]byte, error) {
	bin, err := buildInfra(ctx, root)
	if err != nil {
		return nil, err
	}
	cj, _ := json.Marshal(cctx)
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CDK_OUTDIR="+out, "CDK_CONTEXT_JSON="+string(cj),
		"JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20", "CDK_DEFAULT_ACCOUNT=", "CDK_DEFAULT_REGION=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("synthesize the pool stack (%s with context %s): %v\n%s", bin, cj, err, lastLines(string(b), 20))
	}
	a, err := assembly.Read(out)
	if err != nil {
		return nil, err
	}
	name := "volsd-" + cctx["pool"]
	t, ok := a.Stacks[name]
	if !ok {
		return nil, fmt.Errorf("the cloud assembly in %s has no stack %s", out, name)
	}
	return os.ReadFile(t.File)
}

func buildInfra(ctx context.Context, root string) (string, error) {
	infraBuild.Lock()
	defer infraBuild.Unlock()
	if bin, ok := infraBinary[root]; ok {
		return bin, nil
	}
	bin := filepath.Join(root, "build", "harness", "infra") // build/ is git-ignored
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./infra")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the CDK app: %v\n%s", err, b)
	}
	infraBinary[root] = bin
	return bin, nil
}
