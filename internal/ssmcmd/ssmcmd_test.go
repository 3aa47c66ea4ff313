package ssmcmd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
)

// run sends one command to i-1 on an awsfake SSM whose invocation stays
// InProgress until the test moves it, and returns the fake and the ID.
func run(t *testing.T, invisible int) (*awsfake.SSM, string) {
	t.Helper()
	f := awsfake.NewSSM()
	f.InvisibleReads = invisible
	f.AddInstance("i-1", nil)
	f.AddDocument("volsd-Release", nil)
	out, err := f.SendCommand(context.Background(), &ssm.SendCommandInput{DocumentName: aws.String("volsd-Release"), InstanceIds: []string{"i-1"}})
	if err != nil {
		t.Fatal(err)
	}
	return f, aws.ToString(out.Command.CommandId)
}

// steps is a Waiter's Sleep that, before read n+1, applies step n (if
// any) to the fake instead of waiting: the invocation's life is scripted
// read by read, without clocks.
type steps struct {
	t      *testing.T
	f      *awsfake.SSM
	cmd    string
	script []types.CommandInvocationStatus // "" leaves the status alone
	waits  []time.Duration
}

func (s *steps) sleep(ctx context.Context, d time.Duration) error {
	s.waits = append(s.waits, d)
	n := len(s.waits) - 1
	if n < len(s.script) && s.script[n] != "" {
		if err := s.f.Complete(s.cmd, "i-1", awsfake.SSMResult{Status: s.script[n], ResponseCode: 0}); err != nil {
			s.t.Fatal(err)
		}
	}
	return ctx.Err()
}

func waiter(f *awsfake.SSM, s *steps) Waiter {
	return Waiter{SSM: f, Sleep: s.sleep, Delay: func(n int) time.Duration { return time.Duration(n+1) * time.Millisecond }}
}

func TestFinal(t *testing.T) {
	for s, want := range map[types.CommandInvocationStatus]bool{
		types.CommandInvocationStatusPending: false, types.CommandInvocationStatusInProgress: false,
		types.CommandInvocationStatusDelayed: false, types.CommandInvocationStatusCancelling: false, "": false,
		types.CommandInvocationStatusSuccess: true, types.CommandInvocationStatusFailed: true,
		types.CommandInvocationStatusTimedOut: true, types.CommandInvocationStatusCancelled: true,
	} {
		if Final(s) != want {
			t.Errorf("Final(%q) = %v, want %v", s, !want, want)
		}
	}
}

// Cancelling is not final: the wait goes on until Cancelled, which is.
func TestCancellingWaitsForCancelled(t *testing.T) {
	f, cmd := run(t, 0)
	s := &steps{t: t, f: f, cmd: cmd, script: []types.CommandInvocationStatus{types.CommandInvocationStatusCancelling, "", types.CommandInvocationStatusCancelled}}
	out, err := waiter(f, s).Wait(context.Background(), cmd, "i-1")
	if err != nil || out.Status != types.CommandInvocationStatusCancelled {
		t.Fatalf("Wait = %v, %v; want Cancelled", out, err)
	}
	if got := f.Calls("GetCommandInvocation"); got != 4 { // InProgress, Cancelling, Cancelling, Cancelled
		t.Errorf("reads = %d, want 4", got)
	}
}

// Right after SendCommand the invocation does not exist: that is read
// through, like Delayed (the instance unreachable for now), to the result.
func TestMissingAndDelayedAreReadThrough(t *testing.T) {
	f, cmd := run(t, 3)
	s := &steps{t: t, f: f, cmd: cmd, script: []types.CommandInvocationStatus{"", "", types.CommandInvocationStatusDelayed, "", types.CommandInvocationStatusSuccess}}
	out, err := waiter(f, s).Wait(context.Background(), cmd, "i-1")
	if err != nil || out.Status != types.CommandInvocationStatusSuccess {
		t.Fatalf("Wait = %v, %v; want Success", out, err)
	}
	if got := f.Calls("GetCommandInvocation"); got != 6 { // 3 missing, Delayed, Delayed, Success
		t.Errorf("reads = %d, want 6", got)
	}
	if len(s.waits) != 5 || s.waits[0] != time.Millisecond || s.waits[4] != 5*time.Millisecond {
		t.Errorf("waits = %v, want Delay(0..4)", s.waits)
	}
}

// Throttling is read through; a refusal is returned at once.
func TestErrors(t *testing.T) {
	f, cmd := run(t, 0)
	f.FailNext("GetCommandInvocation", 2, &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"})
	s := &steps{t: t, f: f, cmd: cmd, script: []types.CommandInvocationStatus{"", types.CommandInvocationStatusFailed}}
	out, err := waiter(f, s).Wait(context.Background(), cmd, "i-1")
	if err != nil || out.Status != types.CommandInvocationStatusFailed {
		t.Fatalf("Wait after throttling = %v, %v; want Failed", out, err)
	}
	f2, cmd2 := run(t, 0)
	f2.FailNext("GetCommandInvocation", 1, &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "not authorized to perform ssm:GetCommandInvocation"})
	s2 := &steps{t: t, f: f2, cmd: cmd2}
	_, err = waiter(f2, s2).Wait(context.Background(), cmd2, "i-1")
	var nf *NotFinalError
	if !awserr.IsAccessDenied(err) || errors.As(err, &nf) || len(s2.waits) != 0 {
		t.Fatalf("denied read: err %v after %d waits, want the denial at once", err, len(s2.waits))
	}
}

// When the caller's deadline comes first, the error says so and what the
// last read found.
func TestDeadline(t *testing.T) {
	f, cmd := run(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	reads := 0
	w := Waiter{SSM: f, WaitFirst: true, Sleep: func(ctx context.Context, _ time.Duration) error {
		if reads++; reads == 4 {
			cancel() // the deadline
		}
		return ctx.Err()
	}}
	_, err := w.Wait(ctx, cmd, "i-1")
	var nf *NotFinalError
	if !errors.As(err, &nf) || !errors.Is(err, context.Canceled) || nf.Reads != 3 || !strings.Contains(err.Error(), "still Pending") {
		t.Fatalf("Wait = %v (%+v), want NotFinalError after 3 reads, last Pending", err, nf)
	}
	if got := f.Calls("GetCommandInvocation"); got != 3 {
		t.Errorf("reads = %d, want 3 (WaitFirst waits before the first)", got)
	}
}
