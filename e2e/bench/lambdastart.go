package bench

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// LambdaOptions configure the Lambda size and start benchmark.
type LambdaOptions struct {
	Root    string
	WorkDir string
	// Functions to measure; empty = every functions/<name>/main.go.
	Functions []string
	// Runs is the measured cold starts per function (after one unmeasured
	// start that warms the page cache).
	Runs int
	// DeployedDir holds the `make build` artifacts
	// (<DeployedDir>/<name>/bootstrap, linux/arm64); when a bootstrap is
	// missing there it is built into WorkDir with the Makefile's flags.
	DeployedDir          string
	DynamoDBURL, MotoURL string
	// Quick skips the linux/arm64 build when DeployedDir lacks a bootstrap
	// (sizes then come from this machine's build) and builds for this
	// machine without -trimpath and -ldflags, so the build cache of the
	// other tests serves it.
	Quick bool
	Log   func(format string, args ...any)
}

// LambdaFunction is one function's size and start.
type LambdaFunction struct {
	// MemoryMiB is the function's memory in the synthesized template, the
	// sandbox's memory in the measured starts.
	MemoryMiB int `json:"memoryMiB"`
	// BootstrapBytes is the size of the deployed bootstrap
	// (build/lambda/<name>/bootstrap, linux/arm64, -trimpath -s -w).
	BootstrapBytes int64  `json:"bootstrapBytes"`
	BootstrapArch  string `json:"bootstrapArch"`
	// ZipBytes is the deployment package: the bootstrap zipped (deflate).
	ZipBytes int64 `json:"zipBytes"`
	// HostBytes is the same build for this machine, the one started here.
	HostBytes int64 `json:"hostBytes"`
	// Event is what the first invocation handled.
	Event string `json:"event"`
	// Init: process start → the runtime's first GET …/invocation/next.
	Init Sample `json:"initMs"`
	// FirstReturn: process start → the first handler return posted back.
	FirstReturn Sample `json:"firstReturnMs"`
	// Warm: a second invocation on the same process, handed out → returned.
	Warm    Sample `json:"warmMs"`
	Outcome string `json:"outcome"`
}

// LambdaResult is the Lambda benchmark.
type LambdaResult struct {
	Functions map[string]LambdaFunction `json:"functions"`
	Runs      int                       `json:"runs"`
	HostArch  string                    `json:"hostArch"`
}

// FunctionNames lists functions/<name>/main.go under root, sorted.
func FunctionNames(root string) ([]string, error) {
	ms, err := filepath.Glob(filepath.Join(root, "functions", "*", "main.go"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range ms {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, errors.New("no functions/<name>/main.go")
	}
	return names, nil
}

// BuildBootstraps builds each function as <dir>/<name>/bootstrap for
// goos/goarch with the Makefile's flags (-tags lambda.norpc -trimpath
// -ldflags '-s -w', CGO off); without release, only -tags lambda.norpc.
func BuildBootstraps(ctx context.Context, root, dir, goos, goarch string, functions []string, release bool) (map[string]string, error) {
	out := map[string]string{}
	for _, fn := range functions {
		bs := filepath.Join(dir, fn, "bootstrap")
		if err := os.MkdirAll(filepath.Dir(bs), 0o755); err != nil {
			return nil, err
		}
		args := []string{"build", "-tags", "lambda.norpc"}
		if release {
			args = append(args, "-trimpath", "-ldflags", "-s -w")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, "-o", bs, "./functions/"+fn)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s for %s/%s: %v\n%s", fn, goos, goarch, err, b)
		}
		out[fn] = bs
	}
	return out, nil
}

// zipSize is the size of a zip holding file as "bootstrap" (deflate), as
// the deployment package.
func zipSize(file string) (int64, error) {
	in, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	tmp, err := os.CreateTemp("", "volsd-bench-*.zip")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	zw := zip.NewWriter(tmp)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "bootstrap", Method: zip.Deflate})
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(w, in); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	st, err := tmp.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// RunLambda measures every function's bootstrap size and its start through
// the Runtime API, against a small real backend (DynamoDB Local table, an
// empty Auto Scaling group, bucket and VPC in moto), so each function's
// cold start loads its real configuration and AWS clients.
func RunLambda(ctx context.Context, o LambdaOptions) (*LambdaResult, error) {
	if o.Runs <= 0 {
		o.Runs = 10
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	fns := o.Functions
	if len(fns) == 0 {
		var err error
		if fns, err = FunctionNames(o.Root); err != nil {
			return nil, err
		}
	}
	res := &LambdaResult{Functions: map[string]LambdaFunction{}, Runs: o.Runs, HostArch: runtime.GOOS + "/" + runtime.GOARCH}

	deployed := map[string]string{}
	var missing []string
	for _, fn := range fns {
		p := filepath.Join(o.DeployedDir, fn, "bootstrap")
		if _, err := os.Stat(p); o.DeployedDir != "" && err == nil {
			deployed[fn] = p
		} else {
			missing = append(missing, fn)
		}
	}
	if len(missing) > 0 && !o.Quick {
		o.Log("building %s for linux/arm64 (not in %s)", strings.Join(missing, ", "), o.DeployedDir)
		built, err := BuildBootstraps(ctx, o.Root, filepath.Join(o.WorkDir, "lambda-arm64"), "linux", "arm64", missing, true)
		if err != nil {
			return nil, err
		}
		for k, v := range built {
			deployed[k] = v
		}
	}
	o.Log("building %d bootstraps for %s (to start them here)", len(fns), res.HostArch)
	host, err := BuildBootstraps(ctx, o.Root, filepath.Join(o.WorkDir, "lambda-host"), runtime.GOOS, runtime.GOARCH, fns, !o.Quick)
	if err != nil {
		return nil, err
	}
	for _, fn := range missing {
		if o.Quick {
			deployed[fn] = host[fn] // quick: sizes of this machine's build
		}
	}

	env, err := lambdaBackend(ctx, o.DynamoDBURL, o.MotoURL)
	if err != nil {
		return nil, fmt.Errorf("backend for the Lambda starts: %w", err)
	}
	wiring, err := lambdaWiring(ctx, o, env)
	if err != nil {
		return nil, fmt.Errorf("the synthesized template of the Lambda starts: %w", err)
	}
	for _, fn := range fns {
		var f LambdaFunction
		st, err := os.Stat(deployed[fn])
		if err != nil {
			return nil, err
		}
		f.BootstrapBytes = st.Size()
		f.BootstrapArch = binaryArch(deployed[fn])
		if f.ZipBytes, err = zipSize(deployed[fn]); err != nil {
			return nil, err
		}
		if st, err = os.Stat(host[fn]); err != nil {
			return nil, err
		}
		f.HostBytes = st.Size()
		desc, ev := startEvent(fn, env.group)
		f.Event = desc
		spec, ok := wiring.Functions[fn]
		if !ok {
			return nil, fmt.Errorf("function %s is not in the synthesized template", fn)
		}
		vars, err := env.functionEnv(wiring, spec)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		f.MemoryMiB = spec.MemoryMiB
		var inits, firsts, warms []time.Duration
		for i := 0; i <= o.Runs; i++ {
			cs, err := measureColdStart(ctx, "volsd-bench-"+fn, host[fn], vars, spec.MemoryMiB, [][]byte{ev, ev}, 60*time.Second)
			if err != nil {
				return nil, err
			}
			if i == 0 {
				f.Outcome = cs.Outcome
				continue // warms the page cache; not measured
			}
			if cs.Outcome != f.Outcome {
				return nil, fmt.Errorf("%s: run %d ended with %q, the first with %q", fn, i, cs.Outcome, f.Outcome)
			}
			inits, firsts, warms = append(inits, cs.Init), append(firsts, cs.FirstReturn), append(warms, cs.Warm)
		}
		f.Init, f.FirstReturn, f.Warm = Millis(inits), Millis(firsts), Millis(warms)
		o.Log("%-10s %6.1f MiB (%s), init %5.1f ms, first return %6.1f ms, warm %5.1f ms: %s", fn,
			float64(f.BootstrapBytes)/(1<<20), f.BootstrapArch, float64(f.Init.Median), float64(f.FirstReturn.Median), float64(f.Warm.Median), f.Outcome)
		res.Functions[fn] = f
	}
	return res, nil
}

// binaryArch reads the ELF machine of a binary.
func binaryArch(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	var h [20]byte
	if _, err := io.ReadFull(f, h[:]); err != nil || string(h[:4]) != "\x7fELF" {
		return "unknown"
	}
	switch uint16(h[18]) | uint16(h[19])<<8 {
	case 0xb7:
		return "linux/arm64"
	case 0x3e:
		return "linux/amd64"
	}
	return "other"
}

type lambdaEnv struct {
	table, bucket, group string
	azs                  []string
	// vars are what Lambda itself and the local run add to a function's
	// environment: region, credentials, the emulators' endpoints.
	vars []string
}

// lambdaWiring synthesizes the pool stack (infra, as the whole-system
// harness does) for the bench's pool and group and reads each function's
// environment and memory from it, so the starts measure what is deployed.
// The pool keeps no idle volumes (idlePerAz 0): reconcile and snapshot run
// on an empty pool.
func lambdaWiring(ctx context.Context, o LambdaOptions, env lambdaEnv) (*harness.Wiring, error) {
	assets := filepath.Join(o.WorkDir, "lambda-assets")
	for _, fn := range harness.FunctionNames { // synth needs an asset for every function
		if err := os.MkdirAll(filepath.Join(assets, fn), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(assets, fn, "bootstrap"), []byte("#!/bin/sh\n# bench synth stand-in for "+fn+"\n"), 0o755); err != nil {
			return nil, err
		}
	}
	tpl, err := harness.Synthesize(ctx, harness.SynthInput{Root: o.Root, Dir: o.WorkDir, LambdaDir: assets,
		Context: map[string]string{"pool": benchLambdaPool, "asgName": env.group, "azs": strings.Join(env.azs, ","), "idlePerAz": "0"}})
	if err != nil {
		return nil, err
	}
	return harness.ReadWiring(tpl)
}

// benchLambdaPool is the pool the Lambda starts run for.
const benchLambdaPool = "bench"

// functionEnv is spec's environment as the template sets it, its
// references resolved to the bench's table and bucket, plus env.vars.
func (env lambdaEnv) functionEnv(w *harness.Wiring, spec harness.FunctionSpec) ([]string, error) {
	phys := map[string]string{w.Table.LogicalID: env.table}
	for name, v := range spec.Env {
		if name == "VOLSD_BUCKET" {
			// "<LogicalID>" of the origin bucket.
			phys[strings.Trim(v, "<>")] = env.bucket
		}
	}
	out := slices.Clone(env.vars)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		v, err := harness.Resolve(spec.Env[k], phys)
		if err != nil {
			return nil, fmt.Errorf("environment %s=%s: %w", k, spec.Env[k], err)
		}
		out = append(out, k+"="+v)
	}
	return out, nil
}

// lambdaBackend creates what the functions' configuration names (a table,
// a bucket, an empty group in two AZs) and returns them with the variables
// Lambda and the local run add to every function's environment.
func lambdaBackend(ctx context.Context, ddbURL, motoURL string) (lambdaEnv, error) {
	if ddbURL == "" || motoURL == "" {
		return lambdaEnv{}, errors.New("emulator endpoints missing (VOLSD_TEST_DYNAMODB_ENDPOINT, VOLSD_TEST_MOTO_ENDPOINT); run under scripts/with-emulators.sh")
	}
	ddb, err := ddbClient(ctx, ddbURL)
	if err != nil {
		return lambdaEnv{}, err
	}
	moto, err := awsConfig(ctx, motoURL)
	if err != nil {
		return lambdaEnv{}, err
	}
	suffix := randomName()
	table, bucket, group, lt := "volsd-bench-"+suffix, "volsd-bench-"+suffix, "volsd-bench-"+suffix, "volsd-bench-lt-"+suffix
	if err := store.CreateTable(ctx, ddb, table); err != nil {
		return lambdaEnv{}, err
	}
	s3c := s3.NewFromConfig(moto, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		return lambdaEnv{}, fmt.Errorf("create bucket: %w", err)
	}
	e := ec2.NewFromConfig(moto)
	if _, err := e.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: &lt,
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-12c6146b"), InstanceType: ec2types.InstanceTypeM7gLarge},
	}); err != nil {
		return lambdaEnv{}, fmt.Errorf("create launch template: %w", err)
	}
	azs := []string{region + "a", region + "b"}
	if _, err := autoscaling.NewFromConfig(moto).CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &group, AvailabilityZones: azs,
		LaunchTemplate: &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: &lt, Version: aws.String("$Latest")},
		MinSize:        aws.Int32(0), MaxSize: aws.Int32(4), DesiredCapacity: aws.Int32(0),
	}); err != nil {
		return lambdaEnv{}, fmt.Errorf("create group: %w", err)
	}
	vars := map[string]string{
		"PATH":       "/usr/local/bin:/usr/bin:/bin",
		"AWS_REGION": region, "AWS_DEFAULT_REGION": region,
		"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
		"AWS_ENDPOINT_URL": motoURL, "AWS_ENDPOINT_URL_DYNAMODB": ddbURL,
		"AWS_CONFIG_FILE": "/nonexistent/volsd-bench", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/volsd-bench",
	}
	var out []string
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return lambdaEnv{table: table, bucket: bucket, group: group, azs: azs, vars: out}, nil
}

// startEvent is the first (cold) event of a function: one it handles
// without changing anything. Reconcile and snapshot run for real on the
// empty pool.
func startEvent(fn, group string) (string, []byte) {
	schedule := func() []byte {
		b, _ := json.Marshal(events.Envelope{
			Version: "0", ID: "bench-" + fn, DetailType: events.DetailTypeSchedule, Source: events.SourceSchedule,
			Account: "123456789012", Time: time.Now().UTC().Truncate(time.Second), Region: region,
			Resources: []string{"arn:aws:events:us-east-1:123456789012:rule/volsd-bench-" + fn}, Detail: json.RawMessage(`{}`),
		})
		return b
	}
	switch fn {
	case "lifecycle":
		b, _ := json.Marshal(events.TestNotification{
			AccountID: "123456789012", RequestID: "bench", Service: "AWS Auto Scaling", Event: events.TestNotificationEvent,
			AutoScalingGroupName: group, Time: time.Now().UTC().Format(time.RFC3339),
			AutoScalingGroupARN: "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0:autoScalingGroupName/" + group,
		})
		return "autoscaling:TEST_NOTIFICATION (ignored)", b
	case "push":
		return "an empty SQS batch", []byte(`{"Records":[]}`)
	case "report":
		detail, _ := json.Marshal(events.CommandStatus{CommandID: "00000000-0000-0000-0000-000000000000", DocumentName: "AWS-RunShellScript",
			InstanceID: "i-0123456789abcdef0", RequestedDateTime: time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), Status: "Success", StatusDetails: "Success"})
		b, _ := json.Marshal(events.Envelope{Version: "0", ID: "bench-report", DetailType: events.DetailTypeSSMStatus, Source: events.SourceSSM,
			Account: "123456789012", Time: time.Now().UTC(), Region: region, Detail: detail})
		return "a Run Command status event of another document (ignored)", b
	case "reconcile", "snapshot":
		return "a Scheduled Event: a full run on an empty pool (DynamoDB Local, moto)", schedule()
	}
	return "a Scheduled Event", schedule()
}
