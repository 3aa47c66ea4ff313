// Package bench measures volsd against what users would run instead, each
// figure beside its baseline from the same run (issue 9, `make bench`):
//
//  1. apply vs rsync: the agent applying a sync of a generated tree (and a
//     1% delta) against plain `rsync -a` onto the same kind of
//     loop-mounted ext4;
//  2. time-to-content of a new instance in the local system (lifecycle
//     event → hook completed) for two content sizes, against copying the
//     whole content onto a fresh filesystem at boot;
//  3. push fan-out cost for pools of 1 to 1,000 instances: AWS calls,
//     DynamoDB operations and handler time per push;
//  4. reconcile cost for 100 to 10,000 volume records: DynamoDB reads, EC2
//     calls and time per run;
//  5. Lambda size and start through the Runtime API;
//  6. push cost (issue 23): `volsd push` of a 10,000-file tree (first, unchanged,
//     one file changed) against `aws s3 sync` of the same tree to the same
//     moto, the S3 calls of a one-file push, and the push Lambda on a
//     1M-entry manifest against a 1M-blob origin;
//  7. converge (issue 23): `volsd push --wait` of a one-file change until
//     all 3 in-service instances of the local system reported it, stage by
//     stage (converge.go).
//
// Every figure is the median of several runs. Run writes nothing; Report
// renders docs/benchmarks.md and docs/benchmarks.json.
package bench

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Parts are the benchmark names, in the order they run.
var Parts = []string{"lambda", "reconcile", "fanout", "apply", "ttc", "scaleout", "push", "converge"}

// Options configure a benchmark run.
type Options struct {
	Root    string // repository root
	WorkDir string // images, trees, builds; removed by the caller
	Quick   bool   // small sizes (VOLSD_BENCH_QUICK=1)
	Parts   []string
	// DeployedDir holds the `make build` bootstraps (build/lambda).
	DeployedDir          string
	DynamoDBURL, MotoURL string
	// Runs overrides every part's number of runs when > 0.
	Runs int
	// TTCSizes limits the time-to-content part to these content labels
	// (e.g. 2GiB; default: all).
	TTCSizes []string
	// ScaleOutSkipLimited leaves out the scale-out runs under EC2's
	// default Describe* limit.
	ScaleOutSkipLimited bool
	// LambdaFunctions limits the Lambda benchmark (default: all).
	LambdaFunctions []string
	// NoAgentGoBench leaves out the agent package's own benchmarks that
	// the apply part runs as a cross-check.
	NoAgentGoBench bool
	Log            func(format string, args ...any)
}

// Results is everything one run measured. The first keys are the issue's;
// the parts' details follow.
type Results struct {
	ApplyFullVsRsync        Num              `json:"apply_full_vs_rsync"`
	ApplyDeltaVsRsync       Num              `json:"apply_delta_vs_rsync"`
	TTCSeconds              map[string]Num   `json:"ttc_seconds"`
	TTCCopyBaselineSeconds  map[string]Num   `json:"ttc_copy_baseline_seconds"`
	SendCommandCallsPerPush map[string]Num   `json:"sendcommand_calls_per_push"`
	ReconcileReads          map[string]Num   `json:"reconcile_reads"`
	BootstrapBytes          map[string]int64 `json:"bootstrap_bytes"`
	// TTCBlankVolumeSeconds is the second time-to-content baseline: a new
	// instance on a blank volume that downloads everything at start.
	TTCBlankVolumeSeconds map[string]Num `json:"ttc_blank_volume_seconds"`
	// TTCWarmPoolSeconds is time-to-content of an instance started from
	// the warm pool with the part's entries pushed while it was stopped.
	TTCWarmPoolSeconds map[string]Num `json:"ttc_warm_pool_seconds,omitempty"`
	// DescribeVolumesPerBoot is the agent's DescribeVolumes calls per boot
	// in the time-to-content launches (the most any boot made).
	DescribeVolumesPerBoot Num `json:"describe_volumes_per_boot"`
	// ScaleOutDescribePerSecond is the mean Describe* rate of the mass
	// scale-out, agents and lifecycle Lambda, per agent design.
	ScaleOutDescribePerSecond map[string]Num `json:"scaleout_describe_calls_per_second,omitempty"`

	// Push cost (issue 23): CLI time ÷ aws s3 sync's, and S3 calls (CLI
	// and push Lambda) of a one-file push.
	PushOneFileVsS3Sync   Num `json:"push_one_file_vs_s3sync"`
	PushUnchangedVsS3Sync Num `json:"push_unchanged_vs_s3sync"`
	PushFirstVsS3Sync     Num `json:"push_first_vs_s3sync"`
	PushOneFileS3Calls    Num `json:"push_one_file_s3_calls"`
	// ReportSSMCallsPerPush are the report side's SSM reads per push by
	// pool size, reading the command's results in pages;
	// ReportSSMCallsPerPushBaseline one GetCommandInvocation per instance.
	ReportSSMCallsPerPush         map[string]Num `json:"report_ssm_calls_per_push"`
	ReportSSMCallsPerPushBaseline map[string]Num `json:"report_ssm_calls_per_push_baseline"`
	// ConvergeOneFileSeconds is `volsd push --wait` of a one-file change
	// until every in-service instance reported it (median).
	ConvergeOneFileSeconds Num `json:"converge_one_file_seconds"`

	Apply     *ApplyResult     `json:"apply,omitempty"`
	Converge  *ConvergeResult  `json:"converge,omitempty"`
	Push      *PushCostResult  `json:"push_cost,omitempty"`
	TTC       *TTCResult       `json:"ttc,omitempty"`
	Fanout    *FanoutResult    `json:"push_fanout,omitempty"`
	Reconcile *ReconcileResult `json:"reconcile,omitempty"`
	Lambda    *LambdaResult    `json:"lambda,omitempty"`
	ScaleOut  *ScaleOutResult  `json:"scaleout,omitempty"`

	// Failures maps a part to why it could not be measured.
	Failures map[string]string `json:"failures,omitempty"`
	// PartSeconds is how long each part took (setup included).
	PartSeconds map[string]Num `json:"part_seconds"`

	Machine  Machine   `json:"machine"`
	Quick    bool      `json:"quick"`
	Commit   string    `json:"commit"`
	Started  time.Time `json:"started"`
	Duration Num       `json:"duration_seconds"`
	Command  string    `json:"command"`
}

// Run runs the selected parts (all by default) and returns what they
// measured. A part that fails is recorded in Failures and the others
// still run; the error lists the failed parts.
func Run(ctx context.Context, o Options) (*Results, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	parts := o.Parts
	if len(parts) == 0 {
		parts = Parts
	}
	for _, p := range parts {
		if !contains(Parts, p) {
			return nil, fmt.Errorf("unknown part %q (parts: %s)", p, strings.Join(Parts, ", "))
		}
	}
	r := &Results{
		TTCSeconds: map[string]Num{}, TTCCopyBaselineSeconds: map[string]Num{}, TTCBlankVolumeSeconds: map[string]Num{}, TTCWarmPoolSeconds: map[string]Num{},
		SendCommandCallsPerPush: map[string]Num{}, ReportSSMCallsPerPush: map[string]Num{}, ReportSSMCallsPerPushBaseline: map[string]Num{}, ReconcileReads: map[string]Num{}, BootstrapBytes: map[string]int64{},
		ApplyFullVsRsync: Num(math.NaN()), ApplyDeltaVsRsync: Num(math.NaN()), DescribeVolumesPerBoot: Num(math.NaN()),
		PushOneFileVsS3Sync: Num(math.NaN()), PushUnchangedVsS3Sync: Num(math.NaN()), PushFirstVsS3Sync: Num(math.NaN()), PushOneFileS3Calls: Num(math.NaN()), ConvergeOneFileSeconds: Num(math.NaN()),
		Failures: map[string]string{}, PartSeconds: map[string]Num{},
		Quick: o.Quick, Started: time.Now().UTC().Truncate(time.Second), Commit: gitCommit(o.Root),
	}
	r.Machine = DescribeMachine(ctx, o.Root, o.WorkDir)
	sz := FullSizes()
	if o.Quick {
		sz = QuickSizes()
	}
	runs := func(n int) int {
		if o.Runs > 0 {
			return o.Runs
		}
		return n
	}
	logf := func(part string) func(string, ...any) {
		return func(f string, a ...any) { o.Log("["+part+"] "+f, a...) }
	}
	for _, part := range Parts {
		if !contains(parts, part) {
			continue
		}
		if err := ctx.Err(); err != nil {
			r.Failures[part] = "not run: " + err.Error()
			continue
		}
		start := time.Now()
		o.Log("[%s] start", part)
		var err error
		switch part {
		case "lambda":
			r.Lambda, err = RunLambda(ctx, LambdaOptions{
				Root: o.Root, WorkDir: o.WorkDir, Functions: o.LambdaFunctions, Runs: runs(sz.LambdaRuns), Quick: o.Quick, DeployedDir: o.DeployedDir,
				DynamoDBURL: o.DynamoDBURL, MotoURL: o.MotoURL, Log: logf(part),
			})
			if err == nil {
				for fn, f := range r.Lambda.Functions {
					r.BootstrapBytes[fn] = f.BootstrapBytes
				}
			}
		case "reconcile":
			r.Reconcile, err = RunReconcile(ctx, ReconcileOptions{
				Records: sz.ReconcileRecords, Journal: sz.ReconcileJournal, Runs: runs(sz.ReconcileRuns), DynamoDBURL: o.DynamoDBURL, Log: logf(part),
			})
			if err == nil {
				for _, c := range r.Reconcile.Cases {
					r.ReconcileReads[strconv.Itoa(c.Records)] = c.DynamoDBReads.Median
				}
			}
		case "fanout":
			r.Fanout, err = RunFanout(ctx, FanoutOptions{
				Pools: sz.FanoutPools, Runs: runs(sz.FanoutRuns), DynamoDBURL: o.DynamoDBURL, Log: logf(part),
			})
			if err == nil {
				for _, c := range r.Fanout.Cases {
					r.SendCommandCallsPerPush[strconv.Itoa(c.Instances)] = c.SendCommand.Median
					r.ReportSSMCallsPerPush[strconv.Itoa(c.Instances)] = c.ReportSSMReadsPaged.Median
					r.ReportSSMCallsPerPushBaseline[strconv.Itoa(c.Instances)] = c.ReportSSMReads.Median
				}
			}
		case "apply":
			if o.NoAgentGoBench {
				sz.AgentGoBench = 0
			}
			r.Apply, err = RunApply(ctx, ApplyOptions{
				WorkDir: o.WorkDir, Tree: sz.Apply, DeltaFiles: sz.DeltaFiles, Runs: runs(sz.ApplyRuns),
				DynamoDBURL: o.DynamoDBURL, Root: o.Root, GoBenchIterations: sz.AgentGoBench, Log: logf(part),
			})
			if err == nil {
				r.ApplyFullVsRsync, r.ApplyDeltaVsRsync = r.Apply.FullRatio, r.Apply.DeltaRatio
			}
		case "scaleout":
			r.ScaleOut, err = RunScaleOut(ctx, ScaleOutOptions{
				WorkDir: o.WorkDir, Instances: sz.ScaleOutInstances, AttachDelay: 5 * time.Second, DynamoDBURL: o.DynamoDBURL, SkipLimited: o.ScaleOutSkipLimited, Log: logf(part),
			})
			if err == nil {
				r.ScaleOutDescribePerSecond = map[string]Num{}
				for _, run := range r.ScaleOut.Runs {
					if run.Limited || run.Lambda == lambdaBefore {
						continue
					}
					r.ScaleOutDescribePerSecond[run.Design] = run.MeanPerSecond
				}
			}
		case "push":
			r.Push, err = RunPushCost(ctx, PushCostOptions{
				WorkDir: o.WorkDir, Tree: sz.PushTree, Runs: runs(sz.PushRuns), LambdaEntries: sz.PushLambdaEntries,
				DynamoDBURL: o.DynamoDBURL, MotoURL: o.MotoURL, Log: logf(part),
			})
			if err == nil {
				r.PushOneFileVsS3Sync, r.PushUnchangedVsS3Sync, r.PushFirstVsS3Sync = r.Push.ratios()
				r.PushOneFileS3Calls = r.Push.OneFileCLIS3Calls.Median + r.Push.OneFileLambdaS3Calls.Median
			}
		case "converge":
			r.Converge, err = RunConverge(ctx, ConvergeOptions{
				Root: o.Root, WorkDir: o.WorkDir, Instances: 3, Tree: sz.ConvergeTree, Runs: runs(sz.ConvergeRuns),
				DynamoDBURL: o.DynamoDBURL, MotoURL: o.MotoURL, Log: logf(part),
			})
			if err == nil {
				r.ConvergeOneFileSeconds = r.Converge.Seconds.Median
			}
		case "ttc":
			r.TTC, err = RunTTC(ctx, TTCOptions{
				Root: o.Root, WorkDir: o.WorkDir, Contents: ttcContents(sz.TTCContents, o.TTCSizes), Entries: sz.TTCEntries, Runs: runs(sz.TTCRuns),
				DynamoDBURL: o.DynamoDBURL, MotoURL: o.MotoURL, Log: logf(part),
			})
			if err == nil {
				for _, c := range r.TTC.Cases {
					if v := c.DescribeVolumes.Max; !math.IsNaN(float64(v)) && (math.IsNaN(float64(r.DescribeVolumesPerBoot)) || v > r.DescribeVolumesPerBoot) {
						r.DescribeVolumesPerBoot = v
					}
					r.TTCSeconds[c.Label] = c.Volsd.Median
					r.TTCCopyBaselineSeconds[c.Label] = c.Copy.Median
					r.TTCBlankVolumeSeconds[c.Label] = c.Blank.Median
					r.TTCWarmPoolSeconds[c.Label] = c.WarmPool.Median
				}
			}
		}
		r.PartSeconds[part] = Num(time.Since(start).Seconds())
		if err != nil {
			r.Failures[part] = err.Error()
			o.Log("[%s] FAILED after %s: %v", part, time.Since(start).Round(time.Second), err)
			continue
		}
		o.Log("[%s] done in %s", part, time.Since(start).Round(time.Second))
	}
	r.Duration = Num(time.Since(r.Started).Seconds())
	r.Machine.LoadEnd = LoadAverage()
	if len(r.Failures) > 0 {
		var names []string
		for p := range r.Failures {
			names = append(names, p)
		}
		sort.Strings(names)
		return r, fmt.Errorf("benchmarks failed: %s", strings.Join(names, ", "))
	}
	return r, nil
}

// ttcContents keeps the contents whose label is in labels (all when
// labels is empty).
func ttcContents(all []TTCContent, labels []string) []TTCContent {
	if len(labels) == 0 {
		return all
	}
	var out []TTCContent
	for _, c := range all {
		if contains(labels, c.Label) {
			out = append(out, c)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// gitCommit names the commit measured ("+dirty" when the tree differs).
func gitCommit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "+dirty"
	}
	return c
}
