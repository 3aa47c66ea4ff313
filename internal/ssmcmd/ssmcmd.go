// Package ssmcmd is volsd's one wait for the result of a Run Command
// invocation (GetCommandInvocation until the invocation is final), used by
// the snapshot Lambda (freeze, thaw), the report Lambda and the pool's
// release before terminate, so all three share one rule of which statuses
// are final.
package ssmcmd

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/internal/awserr"
)

// API is the SSM call a Waiter makes.
type API interface {
	GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error)
}

// Final reports whether an invocation in status s has ended: Success,
// Failed, TimedOut, Cancelled (and any status Run Command may add). Pending,
// InProgress, Delayed (the instance is unreachable; SSM tries again) and
// Cancelling (it becomes Cancelled, or ends otherwise if the agent finished
// first) are not, nor "" (no status read yet).
func Final(s types.CommandInvocationStatus) bool {
	switch s {
	case types.CommandInvocationStatusPending, types.CommandInvocationStatusInProgress,
		types.CommandInvocationStatusDelayed, types.CommandInvocationStatusCancelling, "":
		return false
	}
	return true
}

// Waiter waits for invocations. The zero value (with SSM set) reads at
// once and then every Delay.
type Waiter struct {
	SSM API
	// Delay is the n-th wait (0-based) before reading again after a read
	// found the invocation missing or not final, or met a retryable error
	// (nil: one second each).
	Delay func(n int) time.Duration
	// Sleep waits d or until ctx ends (nil: awserr.Sleep); tests and the
	// pool's clock replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// WaitFirst waits Delay(0) before the first read too: right after
	// SendCommand the invocation does not exist yet.
	WaitFirst bool
}

// Wait reads the invocation of command on instance until it is final and
// returns it, whatever its status: the caller decides what Failed or
// Cancelled means. An invocation not visible yet (InvocationDoesNotExist,
// normal right after SendCommand), not final, or a retryable error is read
// again after a wait; any other error of GetCommandInvocation is returned at
// once. When ctx ends first, the error is a *NotFinalError.
func (w Waiter) Wait(ctx context.Context, command, instance string) (*ssm.GetCommandInvocationOutput, error) {
	sleep := w.Sleep
	if sleep == nil {
		sleep = awserr.Sleep
	}
	delay := w.Delay
	if delay == nil {
		delay = func(int) time.Duration { return time.Second }
	}
	var last error
	waits := 0
	for n := 0; ; n++ {
		if n > 0 || w.WaitFirst {
			if err := sleep(ctx, delay(waits)); err != nil {
				return nil, &NotFinalError{Command: command, Instance: instance, Reads: n, Last: last, Err: err}
			}
			waits++
		}
		out, err := w.SSM.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{
			CommandId: aws.String(command), InstanceId: aws.String(instance),
		})
		switch {
		case err == nil && Final(out.Status):
			return out, nil
		case err == nil:
			last = fmt.Errorf("invocation still %s", statusText(out.Status))
		case awserr.IsInvocationMissing(err) || awserr.IsRetryable(err):
			last = err
		case ctx.Err() != nil:
			return nil, &NotFinalError{Command: command, Instance: instance, Reads: n + 1, Last: last, Err: err}
		default:
			return nil, fmt.Errorf("get command invocation %s on %s: %w", command, instance, err)
		}
	}
}

func statusText(s types.CommandInvocationStatus) string {
	if s == "" {
		return "without a status"
	}
	return string(s)
}

// NotFinalError is a wait that ended (its context did) before the
// invocation was final.
type NotFinalError struct {
	Command, Instance string
	Reads             int   // GetCommandInvocation calls made
	Last              error // what the last read found (nil: none made)
	Err               error // why the wait ended: ctx's error
}

func (e *NotFinalError) Error() string {
	last := "no read made"
	if e.Last != nil {
		last = e.Last.Error()
	}
	return fmt.Sprintf("invocation %s on %s: no result in time: not readable or not final after %d reads (last: %s): %v", e.Command, e.Instance, e.Reads, last, e.Err)
}

func (e *NotFinalError) Unwrap() []error {
	if e.Last == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Last}
}
