package push_test

import (
	"context"
	"testing"

	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/push"
)

// TestOneFailingInstanceDoesNotStopThePush: with the pool's default rate
// controls, a push to 3 instances of which the first to run fails (a full
// disk, say) still runs on the other two. Run Command enforces MaxErrors
// (internal/awsfake models it, rounding percentages down): the old default
// "25%" of 3 targets allowed no error, so the first failure cancelled the
// command on every instance not yet reached.
func TestOneFailingInstanceDoesNotStopThePush(t *testing.T) {
	env, err := push.LoadEnv(envconfig.FromMap(map[string]string{"VOLSD_POOL": "web", "VOLSD_TABLE": "t", "VOLSD_BUCKET": "b"}))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, nil)
	r.cfg.MaxConcurrency, r.cfg.MaxErrors = env.MaxConcurrency, env.MaxErrors
	r.reset()
	for _, id := range []string{"i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"} {
		r.ssm.AddInstance(id, map[string]string{events.TagPool: "web"})
	}
	first := make(chan string, 1)
	r.ssm.Runner = func(_ context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		select {
		case first <- inv.InstanceID:
			return awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusFailed, ResponseCode: 1, Stderr: "no space left on device"}
		default:
			return awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusSuccess}
		}
	}
	blob := r.blob("<h1>hello</h1>")
	if resp := r.handle(batch(sqsMessage("m1", body(t, events.PushRequest{RequestID: "put-1", Op: events.OpPut, Path: "index.html", Blob: blob}), 1))); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("failures %+v\n%s", resp.BatchItemFailures, r.logs)
	}
	r.ssm.Wait()
	cmds := r.ssm.Commands()
	if len(cmds) != 1 {
		t.Fatalf("%d commands, want 1", len(cmds))
	}
	got := r.ssm.InvocationStatuses(*cmds[0].CommandId)
	n := map[ssmtypes.CommandInvocationStatus]int{}
	for _, s := range got {
		n[s]++
	}
	if n[ssmtypes.CommandInvocationStatusFailed] != 1 || n[ssmtypes.CommandInvocationStatusSuccess] != 2 {
		t.Fatalf("MaxConcurrency %s, MaxErrors %s: invocations %v; want 1 Failed and 2 Success (the failure of %s must not cancel the others)",
			env.MaxConcurrency, env.MaxErrors, got, <-first)
	}
}
