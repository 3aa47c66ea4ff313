package awsfake_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
)

// TestSSMRateLimitRounding: a percentage rounds down, never below the
// floor (1 for MaxConcurrency, 0 for MaxErrors), as AWS documents for its
// percentage rate controls; counts are taken as they are.
func TestSSMRateLimitRounding(t *testing.T) {
	for _, c := range []struct {
		spec           string
		targets, floor int
		want           int
	}{
		{"50%", 3, 1, 1}, // 1.5 → 1 (the case: one copy rounded up to 2)
		{"50%", 4, 1, 2},
		{"1%", 3, 1, 1},   // 0.03 → 0 → the floor
		{"100%", 3, 1, 3}, // all
		{"10", 3, 1, 10},
		{"25%", 3, 0, 0},  // MaxErrors: 0.75 → 0: the first error stops the rest
		{"10%", 50, 0, 5}, // the guide's example: the sixth error stops the rest
		{"0", 7, 0, 0},
	} {
		if got := awsfake.SSMRateLimit(c.spec, c.targets, c.floor); got != c.want {
			t.Errorf("SSMRateLimit(%q, %d targets, floor %d) = %d, want %d", c.spec, c.targets, c.floor, got, c.want)
		}
	}
}

// TestSSMMaxConcurrencyPercentOfThreeRunsOneAtATime: "50%" of 3 targets
// never has two invocations running at once.
func TestSSMMaxConcurrencyPercentOfThreeRunsOneAtATime(t *testing.T) {
	f := awsfake.NewSSM()
	applyDoc(f)
	for i := 0; i < 3; i++ {
		f.AddInstance(fmt.Sprintf("i-%017x", i), map[string]string{"volsd:pool": "web"})
	}
	var running, peak atomic.Int64
	f.Runner = func(ctx context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		n := running.Add(1)
		if n > peak.Load() {
			peak.Store(n)
		}
		time.Sleep(30 * time.Millisecond)
		running.Add(-1)
		return awsfake.SSMResult{Status: types.CommandInvocationStatusSuccess}
	}
	if _, err := f.SendCommand(context.Background(), &ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"),
		Targets: poolTarget("web"), MaxConcurrency: aws.String("50%")}); err != nil {
		t.Fatal(err)
	}
	f.Wait()
	if p := peak.Load(); p != 1 {
		t.Errorf("MaxConcurrency 50%% of 3 targets: %d ran at once, want 1", p)
	}
}

// TestSSMMaxErrorsCancelsTheRest: MaxErrors "0" with MaxConcurrency 1 on
// three failing targets: the first fails, the two not yet sent end
// Cancelled and never run.
func TestSSMMaxErrorsCancelsTheRest(t *testing.T) {
	f := awsfake.NewSSM()
	applyDoc(f)
	for i := 0; i < 3; i++ {
		f.AddInstance(fmt.Sprintf("i-%017x", i), map[string]string{"volsd:pool": "web"})
	}
	var runs atomic.Int64
	f.Runner = func(ctx context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		runs.Add(1)
		return awsfake.SSMResult{Status: types.CommandInvocationStatusFailed, ResponseCode: 1, Stderr: "boom"}
	}
	out, err := f.SendCommand(context.Background(), &ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"),
		Targets: poolTarget("web"), MaxConcurrency: aws.String("1"), MaxErrors: aws.String("0")})
	if err != nil {
		t.Fatal(err)
	}
	f.Wait()
	failed, cancelled := 0, 0
	for _, st := range f.InvocationStatuses(aws.ToString(out.Command.CommandId)) {
		switch st {
		case types.CommandInvocationStatusFailed:
			failed++
		case types.CommandInvocationStatusCancelled:
			cancelled++
		}
	}
	if failed != 1 || cancelled != 2 || runs.Load() != 1 {
		t.Errorf("%d failed, %d cancelled, %d ran; want 1 failed, 2 cancelled, 1 ran", failed, cancelled, runs.Load())
	}
}

// TestSSMOverHTTP: the SDK's own client against the fake's HTTP front
// sends a command, reads the invocation (first InvocationDoesNotExist, then
// its output and times) and gets AWS's error codes back.
func TestSSMOverHTTP(t *testing.T) {
	f := awsfake.NewSSM()
	applyDoc(f)
	f.AddInstance("i-00000000000000001", map[string]string{"volsd:pool": "web"})
	f.Runner = func(ctx context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		return awsfake.SSMResult{Status: types.CommandInvocationStatusSuccess, Stdout: "seq " + inv.Parameters["upTo"][0]}
	}
	handlers := f.JSONHandlers()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h, ok := handlers[r.Header.Get("X-Amz-Target")]
		if !ok {
			http.Error(w, "no such operation", http.StatusNotFound)
			return
		}
		h(w, r, body)
	}))
	defer srv.Close()
	client := ssm.New(ssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")})
	ctx := context.Background()
	out, err := client.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"),
		Targets: poolTarget("web"), Parameters: map[string][]string{"upTo": {"7"}}})
	if err != nil {
		t.Fatal(err)
	}
	if out.Command.RequestedDateTime == nil || time.Since(*out.Command.RequestedDateTime) > time.Minute || aws.ToString(out.Command.MaxConcurrency) != "50" {
		t.Errorf("command %+v", out.Command)
	}
	f.Wait()
	in := &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String("i-00000000000000001")}
	if _, err := client.GetCommandInvocation(ctx, in); awserr.Code(err) != "InvocationDoesNotExist" {
		t.Errorf("first read: %v, want InvocationDoesNotExist", err)
	}
	inv, err := client.GetCommandInvocation(ctx, in)
	if err != nil || inv.Status != types.CommandInvocationStatusSuccess || aws.ToString(inv.StandardOutputContent) != "seq 7" || inv.ResponseCode != 0 {
		t.Errorf("invocation %+v, %v", inv, err)
	}
	_, err = client.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"),
		Targets: poolTarget("web"), Parameters: map[string][]string{"upTo": {"1; rm -rf /"}}})
	if awserr.Code(err) != "InvalidParameters" {
		t.Errorf("hostile parameter: %v, want InvalidParameters", err)
	}
	_, err = client.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"),
		Targets: poolTarget("web"), MaxConcurrency: aws.String("0")})
	if awserr.Code(err) != "ValidationException" {
		t.Errorf("MaxConcurrency 0: %v, want ValidationException", err)
	}
	list, err := client.ListCommandInvocations(ctx, &ssm.ListCommandInvocationsInput{CommandId: out.Command.CommandId, Details: true})
	if err != nil || len(list.CommandInvocations) != 1 || aws.ToString(list.CommandInvocations[0].CommandPlugins[0].Output) != "seq 7" {
		t.Errorf("list %+v, %v", list, err)
	}
}
