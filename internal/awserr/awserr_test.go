package awserr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func api(code, msg string) error { return &smithy.GenericAPIError{Code: code, Message: msg} }

func txCancel(reasons ...string) error {
	var rs []types.CancellationReason
	for _, r := range reasons {
		rs = append(rs, types.CancellationReason{Code: aws.String(r)})
	}
	return &types.TransactionCanceledException{Message: aws.String("Transaction cancelled"), CancellationReasons: rs}
}

func httpErr(status int, err error) error {
	return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: err}}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, None},
		{"ec2 throttle", api("RequestLimitExceeded", "Request limit exceeded."), Retryable},
		{"ddb throttle", api("ThrottlingException", "Rate exceeded"), Retryable},
		{"ddb throughput", &types.ProvisionedThroughputExceededException{Message: aws.String("x")}, Retryable},
		{"s3 slowdown", api("SlowDown", "Please reduce your request rate."), Retryable},
		{"internal", api("InternalError", "An internal error has occurred"), Retryable},
		{"body cut short", fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), Retryable},
		{"server fault", &smithy.GenericAPIError{Code: "Weird", Fault: smithy.FaultServer}, Retryable},
		{"http 503 no code", httpErr(503, errors.New("unavailable")), Retryable},
		{"http 429", httpErr(429, errors.New("slow down")), Retryable},
		{"wrapped throttle", fmt.Errorf("attach vol-1: %w", api("RequestLimitExceeded", "")), Retryable},
		{"volume not found", api("InvalidVolume.NotFound", "The volume 'vol-1' does not exist."), NotFound},
		{"attachment not found", api("InvalidAttachment.NotFound", ""), NotFound},
		{"instance not found", api("InvalidInstanceID.NotFound", ""), NotFound},
		{"s3 head 404", httpErr(404, errors.New("not found")), NotFound},
		{"ddb table missing", &types.ResourceNotFoundException{Message: aws.String("Requested resource not found")}, NotFound},
		{"condition", &types.ConditionalCheckFailedException{Message: aws.String("The conditional request failed")}, Conflict},
		{"tx condition", txCancel("None", "ConditionalCheckFailed"), Conflict},
		{"tx conflict only", txCancel("TransactionConflict", "None"), Retryable},
		{"tx throttled", txCancel("ThrottlingError"), Retryable},
		{"tx conflict and condition", txCancel("TransactionConflict", "ConditionalCheckFailed"), Conflict},
		{"validation", api("ValidationError", "bad"), Invalid},
		{"incorrect state", api("IncorrectState", "vol is in use"), Invalid},
		{"ctx cancelled", context.Canceled, Unknown},
		{"deadline wrapped", fmt.Errorf("x: %w", context.DeadlineExceeded), Unknown},
		{"conn refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, Retryable},
		{"plain", errors.New("boom"), Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestPredicates(t *testing.T) {
	if !IsConditionFailed(txCancel("None", "ConditionalCheckFailed", "None")) || IsConditionFailed(txCancel("TransactionConflict")) {
		t.Error("IsConditionFailed on transactions")
	}
	if got := CancellationReasons(fmt.Errorf("wrap: %w", txCancel("None", "ConditionalCheckFailed"))); len(got) != 2 || got[1] != "ConditionalCheckFailed" {
		t.Errorf("CancellationReasons = %v", got)
	}
	if !IsLifecycleActionGone(api("ValidationError", "No active Lifecycle Action found with token 87654321-4321")) {
		t.Error("no active lifecycle action not recognized")
	}
	if IsLifecycleActionGone(api("ValidationError", "1 validation error detected: LifecycleActionResult")) {
		t.Error("other ValidationError taken for an ended action")
	}
	if !IsDeviceInUse(api("InvalidParameterValue", "Invalid value '/dev/sdf' for unixDevice. Attachment point /dev/sdf is already in use")) {
		t.Error("device in use not recognized")
	}
	if IsDeviceInUse(api("InvalidParameterValue", "Value (gp9) for parameter volumeType is invalid")) {
		t.Error("other InvalidParameterValue taken for device in use")
	}
	if !IsIncorrectState(api("IncorrectState", "")) || !IsIncorrectState(api("VolumeInUse", "")) || IsIncorrectState(api("InternalError", "")) {
		t.Error("IsIncorrectState")
	}
	if !IsThrottle(api("RequestLimitExceeded", "")) || IsThrottle(api("InternalError", "")) {
		t.Error("IsThrottle")
	}
}

func TestRetry(t *testing.T) {
	fast := Backoff{Initial: time.Millisecond, Factor: 2, Max: 4 * time.Millisecond, Attempts: 5}
	calls := 0
	err := Retry(context.Background(), fast, func(context.Context) error {
		calls++
		if calls < 3 {
			return api("RequestLimitExceeded", "")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("throttled twice then ok: err=%v calls=%d", err, calls)
	}
	calls = 0
	err = Retry(context.Background(), fast, func(context.Context) error { calls++; return api("InvalidVolume.NotFound", "") })
	if calls != 1 || !IsNotFound(err) {
		t.Errorf("not-found must not retry: calls=%d err=%v", calls, err)
	}
	calls = 0
	err = Retry(context.Background(), fast, func(context.Context) error { calls++; return api("InternalError", "") })
	if calls != 5 || !IsRetryable(err) {
		t.Errorf("attempts bound: calls=%d err=%v", calls, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Retry(ctx, Backoff{Initial: time.Hour, Factor: 1}, func(context.Context) error { return api("InternalError", "") })
	if !errors.Is(err, context.Canceled) || Code(err) != "InternalError" {
		t.Errorf("cancelled retry should carry both errors: %v", err)
	}
}

func TestBackoffDelayBounds(t *testing.T) {
	b := Backoff{Initial: time.Second, Factor: 1.8, Max: 10 * time.Second}
	for n := 0; n < 20; n++ {
		d := b.Delay(n)
		if d <= 0 || d > 10*time.Second {
			t.Fatalf("Delay(%d) = %v out of bounds", n, d)
		}
	}
	if d := b.Delay(0); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("Delay(0) = %v, want within [0.5s, 1s]", d)
	}
}
