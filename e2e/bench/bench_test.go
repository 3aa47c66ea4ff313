package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/testenv"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root: %v", err)
	}
	return root
}

// TestQuickControlPlane runs the cheap benchmarks (push fan-out,
// reconcile, Lambda start) at quick sizes, checks the figures they must
// show, and renders both reports.
func TestQuickControlPlane(t *testing.T) {
	ddb := testenv.Endpoint(t, testenv.EnvDynamoDB)
	moto := testenv.Endpoint(t, testenv.EnvMoto)
	root := repoRoot(t)
	res, err := Run(context.Background(), Options{
		Root: root, WorkDir: t.TempDir(), Quick: true, Parts: []string{"lambda", "reconcile", "fanout"},
		// Two functions keep the builds short: one that answers at once,
		// one that runs for real against the emulators.
		LambdaFunctions: []string{"push", "reconcile"},
		DeployedDir:     filepath.Join(root, "build", "lambda"), DynamoDBURL: ddb, MotoURL: moto, Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	sz := QuickSizes()

	// Push fan-out: one SendCommand per push, whatever the pool size; one
	// report (two status events) per instance.
	if len(res.Fanout.Cases) != len(sz.FanoutPools) {
		t.Fatalf("fan-out cases: %d", len(res.Fanout.Cases))
	}
	for _, c := range res.Fanout.Cases {
		if c.SendCommand.Median != 1 || c.SendCommand.Max != 1 {
			t.Errorf("%d instances: SendCommand per push %v, want 1", c.Instances, c.SendCommand.Values)
		}
		if int(c.ReportEvents.Median) != 2*c.Instances || int(c.ReportCalls["SSM.GetCommandInvocation"]) != c.Instances {
			t.Errorf("%d instances: %v report events, %v GetCommandInvocation", c.Instances, c.ReportEvents.Median, c.ReportCalls["SSM.GetCommandInvocation"])
		}
		if c.PushDynamoDB.Median != res.Fanout.Cases[0].PushDynamoDB.Median {
			t.Errorf("%d instances: %v DynamoDB ops in the push handler; %v with %d", c.Instances, c.PushDynamoDB.Median, res.Fanout.Cases[0].PushDynamoDB.Median, res.Fanout.Cases[0].Instances)
		}
		if res.SendCommandCallsPerPush[itoa(c.Instances)] != 1 {
			t.Errorf("sendcommand_calls_per_push[%d] = %v", c.Instances, res.SendCommandCallsPerPush[itoa(c.Instances)])
		}
	}

	// Reconcile: reads, no writes and no scans in a steady pool.
	for _, c := range res.Reconcile.Cases {
		if c.DynamoDBReads.Median < 4 || c.DynamoDBWrites.Max != 0 || c.Scans != 0 || int(c.ItemsRead.Median) < c.Records+c.Instances {
			t.Errorf("%d records: %+v", c.Records, c)
		}
		if res.ReconcileReads[itoa(c.Records)] != c.DynamoDBReads.Median {
			t.Errorf("reconcile_reads[%d] = %v", c.Records, res.ReconcileReads[itoa(c.Records)])
		}
	}

	// Lambda: both functions measured.
	for _, fn := range []string{"push", "reconcile"} {
		f, ok := res.Lambda.Functions[fn]
		if !ok || f.BootstrapBytes < 1<<20 || res.BootstrapBytes[fn] != f.BootstrapBytes || f.ZipBytes <= 0 || f.ZipBytes >= f.BootstrapBytes {
			t.Errorf("%s: sizes %+v", fn, f)
		}
		if f.Init.Median <= 0 || f.FirstReturn.Median < f.Init.Median || len(f.FirstReturn.Values) != sz.LambdaRuns {
			t.Errorf("%s: start %+v", fn, f)
		}
		if f.Outcome != "response" {
			t.Errorf("%s: first invocation ended with %q", fn, f.Outcome)
		}
	}
	// …with the memory the template gives them (push: its own).
	if m := res.Lambda.Functions["push"].MemoryMiB; m != push.FunctionMemoryMiB {
		t.Errorf("push started with %d MiB, the template gives it %d", m, push.FunctionMemoryMiB)
	}

	// Reports: the keys, and a markdown section per part run.
	js, err := JSON(res)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(js, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"apply_full_vs_rsync", "apply_delta_vs_rsync", "ttc_seconds", "ttc_copy_baseline_seconds",
		"sendcommand_calls_per_push", "reconcile_reads", "bootstrap_bytes"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("benchmarks.json has no %q", k)
		}
	}
	md := Markdown(res)
	for _, h := range []string{"## 3. Push fan-out cost", "## 4. Reconcile cost", "## 5. Lambda size and start", "## Machine", "## Reproduce"} {
		if !strings.Contains(md, h) {
			t.Errorf("benchmarks.md has no %q", h)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestQuickApply(t *testing.T) {
	testenv.RequireRoot(t, "the apply benchmark (loop devices, mkfs.ext4, mount)")
	ddb := testenv.Endpoint(t, testenv.EnvDynamoDB)
	sz := QuickSizes()
	res, err := RunApply(context.Background(), ApplyOptions{
		WorkDir: t.TempDir(), Tree: sz.Apply, DeltaFiles: sz.DeltaFiles, Runs: 2, DynamoDBURL: ddb, Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != sz.Apply.Files || res.DeltaFiles != sz.DeltaFiles || res.AgentFull.Median <= 0 || res.RsyncFull.Median <= 0 ||
		res.FullRatio <= 0 || res.AgentFetchedFull < res.Bytes || res.AgentFetchedDelta >= res.AgentFetchedFull {
		t.Errorf("%+v", res)
	}
}
