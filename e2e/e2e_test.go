// Package e2e holds volsd's end-to-end tests: the whole system on one
// machine (DynamoDB Local, moto behind the gap-filling proxy, the five
// Lambda bootstraps behind local Runtime API servers, simulated instances
// running the real agent on loop-device volumes, the real CLI), telling the
// demo's story at a small size and a story of faults.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/e2e/story"
	"github.com/volsd/volsd/internal/testenv"
)

var (
	buildOnce sync.Once
	bins      *harness.Binaries
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func binaries(t *testing.T) *harness.Binaries {
	t.Helper()
	buildOnce.Do(func() {
		root, err := harness.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		buildDir, err = os.MkdirTemp("", "volsd-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		// With the pid, a later run cleans up after this one if it is killed.
		if buildErr = os.WriteFile(filepath.Join(buildDir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); buildErr != nil {
			return
		}
		bins, buildErr = harness.Build(context.Background(), root, buildDir)
	})
	if buildErr != nil {
		t.Fatalf("build the Lambdas, agent and CLI: %v", buildErr)
	}
	return bins
}

// tWriter sends narration lines to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func startCluster(t *testing.T, opts harness.Options) *harness.Cluster {
	t.Helper()
	testenv.RequireRoot(t, "the end-to-end tests (loop devices, mount)")
	opts.DynamoDBURL = testenv.Endpoint(t, testenv.EnvDynamoDB)
	opts.MotoURL = testenv.Endpoint(t, testenv.EnvMoto)
	opts.Binaries = binaries(t)
	opts.Pool = testenv.UniqueName(t, "e2e")
	opts.Log = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Starting includes a synth of the pool stack (a Node.js process; one
	// per distinct setting, one at a time) that takes a minute or more on
	// a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := harness.Start(ctx, opts)
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c)
		}
		if err := c.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("start the local system: %v", err)
	}
	return c
}

// dumpLogs prints the end of every component log of a failed test.
func dumpLogs(t *testing.T, c *harness.Cluster) {
	files, _ := filepath.Glob(filepath.Join(c.LogDir(), "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("---- %s (last %d lines)\n%s", filepath.Base(f), len(lines), strings.Join(lines, "\n"))
	}
	if c.Proxy == nil || c.RunCommand == nil || c.Group == nil || c.Fleet == nil {
		return // the cluster did not start that far
	}
	t.Logf("proxy calls: %v", c.Proxy.CallCounts())
	for _, s := range c.RunCommand.CommandIDs() {
		t.Logf("command %s %s %v: %d targets, %s", s.ID, s.Document, s.Params, s.Targets, s.Status)
	}
	for _, a := range c.Group.History() {
		t.Logf("activity %s %s %s: %s", a.Time.Format("15:04:05.000"), a.InstanceID, a.AZ, a.Description)
	}
	for _, in := range c.Fleet.All() {
		for _, r := range in.Runs() {
			rep := "no report"
			if r.Report != nil {
				rep = fmt.Sprintf("seq %d head %d applied %d error %q", r.Report.Seq, r.Report.Head, r.Report.Applied, r.Report.Error)
			}
			t.Logf("agent %s %v: exit %d in %.1fs, %s; %s", in.ID, r.Args, r.ExitCode, r.Duration.Seconds(), rep, r.Stderr)
		}
	}
}

// TestStory is `make demo`'s story at a small size: idle pool, launch,
// push and converge, scale out with current content, delete, scale in with
// recycle, snapshot, refresh from the snapshot, catch up only what came
// after it, status.
func TestStory(t *testing.T) {
	t.Parallel()
	c := startCluster(t, harness.Options{
		IdlePerAZ: 2, VolumeSizeGiB: 1, ReleasePolicy: "recycle",
		LambdaEnv:       map[string]string{"VOLSD_REFRESH_BEHIND": "1"},
		QueueVisibility: 20 * time.Second,
		ApplyInterval:   0, // convergence only through SSM commands
	})
	checkWiredFromTemplate(t, c, []string{
		"push queue visibility: 6m0s → 20s", "push timeout: 1m0s → 20s", "extra Lambda variable VOLSD_REFRESH_BEHIND=1"})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	n := story.NewNarrator(tWriter{t})
	res, err := story.Run(ctx, c, n, story.TestSizes())
	if err != nil {
		t.Fatal(err)
	}
	if res.CaughtUp < 1 || int64(res.CaughtUp) != res.Head-res.SnapshotSeq {
		t.Errorf("caught up %d entries; head %d, snapshot %d", res.CaughtUp, res.Head, res.SnapshotSeq)
	}
	n.Summary()
}

// checkWiredFromTemplate: every Lambda runs with the synthesized template's
// environment (references resolved), timeout and memory, and the run
// deviates from the template exactly where its options asked (deviations).
func checkWiredFromTemplate(t *testing.T, c *harness.Cluster, deviations []string) {
	t.Helper()
	if got := c.Deviations(); !slices.Equal(got, deviations) {
		t.Errorf("deviations from the template %q, want %q", got, deviations)
	}
	for _, fn := range harness.FunctionNames {
		spec, f := c.Wiring.Functions[fn], c.Functions[fn]
		if f.MemoryMiB != spec.MemoryMiB || (fn != "push" && f.Timeout != spec.Timeout) {
			t.Errorf("%s runs with %d MiB and %s; the template says %d MiB and %s", fn, f.MemoryMiB, f.Timeout, spec.MemoryMiB, spec.Timeout)
		}
		for k, v := range spec.Env {
			want := k + "=" + v
			if strings.HasPrefix(v, "<") { // a reference: resolved to this run's resource
				want = k + "="
			}
			found := false
			for _, e := range f.Env {
				found = found || e == want || (strings.HasPrefix(v, "<") && strings.HasPrefix(e, want) && !strings.Contains(e, "<"))
			}
			if !found {
				t.Errorf("%s: the template sets %s=%s; the function's environment has no such value", fn, k, v)
			}
		}
	}
}

// TestFaults: a push with a missing blob, duplicate lifecycle events, a
// throttled AttachVolume and an agent killed during apply; the system
// converges and reports the rejected request.
func TestFaults(t *testing.T) {
	t.Parallel()
	c := startCluster(t, harness.Options{
		IdlePerAZ: 1, VolumeSizeGiB: 1, ReleasePolicy: "recycle",
		QueueVisibility: 10 * time.Second, PushTimeout: 10 * time.Second,
		ApplyInterval: 3 * time.Second, // the agent's timer converges a killed apply
	})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	n := story.NewNarrator(tWriter{t})
	if err := story.Faults(ctx, c, n, story.TestFaultSizes()); err != nil {
		t.Fatal(err)
	}
	n.Summary()
}

// TestLaunchFailsFastWithoutRsync: instances whose agents cannot run rsync
// (a PATH without it, like a minimal image) make the launch fail within
// seconds with the agent's own error, not at the launch hook's timeout.
func TestLaunchFailsFastWithoutRsync(t *testing.T) {
	t.Parallel()
	path, err := harness.ProgramDir(t.TempDir(), "rsync")
	if err != nil {
		t.Fatal(err)
	}
	hook := 3 * time.Minute
	c := startCluster(t, harness.Options{
		IdlePerAZ: 1, VolumeSizeGiB: 1, ReleasePolicy: "recycle",
		LaunchHeartbeat: hook, AgentPath: path,
	})
	ctx, cancel := context.WithTimeout(context.Background(), hook)
	defer cancel()
	launches, err := c.Group.ScaleOut(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	results, err := c.Group.WaitInService(ctx, launches)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("launch without rsync ended %+v; want an error naming the agent's failure", results)
	}
	id := launches[0].InstanceID
	for _, want := range []string{id, "volsd-agent up", "rsync is not installed (install the rsync package"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("launch error %q does not say %q", err, want)
		}
	}
	if ctx.Err() != nil || took >= hook/2 {
		t.Errorf("the launch failed after %s; the hook's timeout is %s: it must fail as soon as the agent is stuck", took.Round(time.Second), hook)
	}
	t.Logf("launch of %s failed after %s: %v", id, took.Round(100*time.Millisecond), err)
}

// TestPoison: a poisoned entry with the real agents — status shows the
// stall, a new instance waits in up, volsd repair, every instance
// converges and the new one enters service.
func TestPoison(t *testing.T) {
	t.Parallel()
	c := startCluster(t, harness.Options{
		IdlePerAZ: 1, VolumeSizeGiB: 1, ReleasePolicy: "recycle",
		QueueVisibility: 10 * time.Second, PushTimeout: 10 * time.Second,
		ApplyInterval: 0, // convergence through SSM commands and up's own retries
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	n := story.NewNarrator(tWriter{t})
	if err := story.Poison(ctx, c, n, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	n.Summary()
}
