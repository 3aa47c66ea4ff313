package harness

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/infra/assembly"
)

// synthForTest synthesizes the pool stack for group "web" (the group of
// events/testdata) with stand-in Lambda code.
func synthForTest(t *testing.T, extra map[string]string) *assembly.Template {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, fn := range FunctionNames {
		p := filepath.Join(dir, "lambda", fn, "bootstrap")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cctx := map[string]string{"pool": "web", "asgName": "web", "azs": "us-east-1a,us-east-1b"}
	for k, v := range extra {
		cctx[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tpl, err := Synthesize(ctx, SynthInput{Root: root, Dir: dir, Context: cctx, LambdaDir: filepath.Join(dir, "lambda")})
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}

func testEvent(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "events", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWiringFollowsTheTemplate: the local run's wiring is what the
// synthesized template says — and when the template says something else
// (a changed resource, a changed pool setting), the wiring follows.
func TestWiringFollowsTheTemplate(t *testing.T) {
	tpl := synthForTest(t, map[string]string{"idlePerAz": "2", "volumeSizeGiB": "3"})
	w, err := ReadWiring(tpl)
	if err != nil {
		t.Fatal(err)
	}
	push, err := tpl.One("AWS::Lambda::Function", "PoolPush")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := w.Functions["push"].Timeout, time.Duration(push.Properties["Timeout"].(float64))*time.Second; got != want {
		t.Errorf("push timeout %s, template %s", got, want)
	}
	if got, want := w.Functions["push"].MemoryMiB, int(push.Properties["MemorySize"].(float64)); got != want {
		t.Errorf("push memory %d, template %d", got, want)
	}
	life := w.Functions["lifecycle"]
	if life.Env["VOLSD_IDLE_PER_AZ"] != "2" || life.Env["VOLSD_VOLUME_SIZE_GIB"] != "3" || life.Env["VOLSD_ASG"] != "web" {
		t.Errorf("lifecycle environment %v does not carry the pool settings it was synthesized with", life.Env)
	}
	if life.Env["VOLSD_TABLE"] != "<"+w.Table.LogicalID+">" {
		t.Errorf("VOLSD_TABLE = %q, want the table's reference", life.Env["VOLSD_TABLE"])
	}
	if life.MaxRetryAttempts == nil {
		t.Error("no asynchronous retry attempts read from the EventInvokeConfig")
	}
	if w.Push.Function != "push" || w.Push.BatchSize < 1 || !w.Push.ReportBatchItemFailures || w.Queue.MaxReceiveCount < 1 || w.Queue.VisibilityTimeout < w.Functions["push"].Timeout {
		t.Errorf("event source %+v, queue %+v", w.Push, w.Queue)
	}
	var hooks []string
	for _, h := range w.Hooks {
		hooks = append(hooks, h.Name)
		if h.HeartbeatTimeout <= 0 || (h.DefaultResult != "CONTINUE" && h.DefaultResult != "ABANDON") {
			t.Errorf("hook %+v", h)
		}
	}
	if !slices.Equal(hooks, []string{LaunchHookName, TerminateHookName}) {
		t.Errorf("hooks %v", hooks)
	}
	if d, ok := w.Documents["volsd-Apply"]; !ok || d.Params["upTo"].AllowedPattern == nil || len(d.Steps) != 1 {
		t.Errorf("volsd-Apply from the template: %+v (documents %v)", d, len(w.Documents))
	}
	if w.Table.TTLAttribute == "" || w.Table.Properties["KeySchema"] == nil {
		t.Errorf("table %+v", w.Table)
	}

	// Events are routed by the rules' patterns.
	for _, c := range []struct {
		event string
		want  []string
	}{
		{"launch.json", []string{"lifecycle"}},
		{"terminate.json", []string{"lifecycle"}},
		{"launch-successful.json", []string{"lifecycle"}},
		{"foreign-hook-launch.json", nil}, // another group's hook
		{"scheduled.json", nil},           // schedules are not patterns
	} {
		got, err := w.Route(testEvent(t, c.event))
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s routed to %v (%v), want %v", c.event, got, err, c.want)
		}
	}
	// SSM status events: the template's rules decide which reach the
	// report Lambda; the wiring routes exactly what the patterns match.
	ssmEvent := string(testEvent(t, "ssm-status.json"))
	failed := strings.ReplaceAll(ssmEvent, `"Success"`, `"Failed"`)
	command := strings.Replace(ssmEvent, "EC2 Command Invocation Status-change Notification", "EC2 Command Status-change Notification", 1)
	for _, ev := range []string{ssmEvent, failed, command, strings.ReplaceAll(failed, "volsd-Apply", "AWS-RunShellScript")} {
		var want []string
		for _, r := range w.Rules {
			if r.Pattern == nil {
				continue
			}
			if ok, err := assembly.MatchPattern(r.Pattern, []byte(ev)); err != nil || ok {
				want = append(want, r.Target)
			}
		}
		got, err := w.Route([]byte(ev))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("routed to %v (%v), the rules match %v: %s", got, err, want, ev)
		}
	}
	for _, ev := range []string{failed, command} {
		if got, _ := w.Route([]byte(ev)); !slices.Equal(got, []string{"report"}) {
			t.Errorf("routed to %v, want the report Lambda: %s", got, ev)
		}
	}
	if got, _ := w.Route([]byte(strings.ReplaceAll(failed, "volsd-Apply", "AWS-RunShellScript"))); len(got) != 0 {
		t.Errorf("another document's status reached %v", got)
	}
	if w.ScheduleRule("reconcile") == "" || w.ScheduleRule("snapshot") == "" || w.ScheduleRule("push") != "" {
		t.Errorf("schedules: reconcile %q snapshot %q push %q", w.ScheduleRule("reconcile"), w.ScheduleRule("snapshot"), w.ScheduleRule("push"))
	}

	// A changed template: the wiring follows each change.
	push.Properties["MemorySize"] = 1024.0
	esm, _ := tpl.One("AWS::Lambda::EventSourceMapping", "Push")
	esm.Properties["BatchSize"] = 7.0
	q := tpl.Resources[w.Queue.LogicalID]
	q.Properties["RedrivePolicy"].(map[string]any)["maxReceiveCount"] = 3.0
	q.Properties["VisibilityTimeout"] = 77.0
	for _, r := range tpl.OfType("AWS::AutoScaling::LifecycleHook") {
		if r.Properties["LifecycleHookName"] == LaunchHookName {
			r.Properties["HeartbeatTimeout"] = 123.0
		}
	}
	for _, r := range w.Rules {
		if dt, _ := r.Pattern["detail-type"].([]any); slices.Contains(dt, any("EC2 Instance-launch Lifecycle Action")) {
			r.Pattern["detail-type"] = []any{"EC2 Instance-terminate Lifecycle Action"} // the template's own map
		}
	}
	w2, err := ReadWiring(tpl)
	if err != nil {
		t.Fatal(err)
	}
	if w2.Functions["push"].MemoryMiB != 1024 || w2.Push.BatchSize != 7 || w2.Queue.MaxReceiveCount != 3 || w2.Queue.VisibilityTimeout != 77*time.Second {
		t.Errorf("after the change: push memory %d, batch %d, maxReceiveCount %d, visibility %s; want 1024, 7, 3, 77s",
			w2.Functions["push"].MemoryMiB, w2.Push.BatchSize, w2.Queue.MaxReceiveCount, w2.Queue.VisibilityTimeout)
	}
	if w2.Hooks[0].Name != LaunchHookName || w2.Hooks[0].HeartbeatTimeout != 123*time.Second {
		t.Errorf("after the change: hooks %+v", w2.Hooks)
	}
	if got, _ := w2.Route(testEvent(t, "launch.json")); len(got) != 0 {
		t.Errorf("a launch event still reaches %v after the rules stopped matching it", got)
	}
	if got, _ := w2.Route(testEvent(t, "terminate.json")); !slices.Equal(got, []string{"lifecycle"}) {
		t.Errorf("terminate routed to %v", got)
	}

	// Another pool setting: a new synth, and the environment follows it.
	w3, err := ReadWiring(synthForTest(t, map[string]string{"idlePerAz": "3", "logLevel": "debug", "releasePolicy": "delete"}))
	if err != nil {
		t.Fatal(err)
	}
	if e := w3.Functions["reconcile"].Env; e["VOLSD_IDLE_PER_AZ"] != "3" || e["VOLSD_LOG_LEVEL"] != "debug" || e["VOLSD_RELEASE_POLICY"] != "delete" {
		t.Errorf("reconcile environment %v does not follow idlePerAz=3 logLevel=debug releasePolicy=delete", e)
	}
}

func TestResolvePlaceholders(t *testing.T) {
	phys := map[string]string{"PoolTable1": "volsd-web-1", "PoolQueue2.Arn": "arn:aws:sqs:us-east-1:1:q"}
	if got, err := Resolve("<PoolTable1>", phys); err != nil || got != "volsd-web-1" {
		t.Errorf("Resolve table: %q %v", got, err)
	}
	if got, err := Resolve("x <PoolQueue2.Arn> y", phys); err != nil || got != "x arn:aws:sqs:us-east-1:1:q y" {
		t.Errorf("Resolve arn: %q %v", got, err)
	}
	if _, err := Resolve("<EbsKey3.Arn>", phys); err == nil {
		t.Error("a reference the run has no value for resolved")
	}
}
