// Package awserr is volsd's one place that classifies AWS errors: what to
// retry, what means "already done", what is a lost conditional write. Every
// other package asks it instead of matching error codes itself.
package awserr

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
)

// Class is what a caller should do about an error.
type Class int

// The classes, from "nothing wrong" to "give up".
const (
	None      Class = iota // nil error
	Retryable              // throttling, server faults, timeouts: try again with backoff
	NotFound               // the resource does not exist (for deletes: already done)
	Conflict               // a conditional write lost; re-read and decide again
	Invalid                // the request is wrong; retrying will not help
	Unknown                // anything else; treat as not retryable
)

func (c Class) String() string {
	return [...]string{"none", "retryable", "not-found", "conflict", "invalid", "unknown"}[c]
}

// Code returns the AWS error code of err ("" when err carries none).
func Code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// Message returns the AWS error message of err, or err.Error().
func Message(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

var throttleCodes = set(
	"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
	"TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestThrottled",
	"RequestLimitExceeded", "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
	"BandwidthLimitExceeded",
)

var transientCodes = set(
	"InternalError", "InternalFailure", "InternalServerError", "InternalServerException",
	"ServiceUnavailable", "ServiceUnavailableException", "Unavailable", "RequestTimeout",
	"RequestTimeoutException", "TransactionInProgressException", "TransactionConflictException",
	"IDPCommunicationError", "EC2ErrorResponse", "ServerError", "InternalServiceError",
	"ScalingActivityInProgress", "ResourceContention", "InsufficientVolumeCapacity",
)

var notFoundCodes = set(
	"ResourceNotFoundException", "NotFound", "NoSuchKey", "NoSuchBucket", "NoSuchEntity",
	"InvalidVolume.NotFound", "InvalidInstanceID.NotFound", "InvalidSnapshot.NotFound",
	"InvalidAttachment.NotFound", "InvalidVolumeID.NotFound", "InvocationDoesNotExist",
	"InvalidCommandId", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
	"InvalidDocument", "AutoScalingGroupNotFound",
)

var conflictCodes = set("ConditionalCheckFailedException", "TransactionCanceledException")

// Classify says what to do about err.
func Classify(err error) Class {
	if err == nil {
		return None
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The caller's own deadline: retrying inside it cannot help.
		return Unknown
	}
	code := Code(err)
	switch {
	case throttleCodes[code], transientCodes[code]:
		return Retryable
	case code == "TransactionCanceledException":
		if reasons := CancellationReasons(err); hasAny(reasons, "ThrottlingError", "TransactionConflict", "ProvisionedThroughputExceeded") && !hasAny(reasons, "ConditionalCheckFailed", "ValidationError") {
			return Retryable
		}
		return Conflict
	case conflictCodes[code]:
		return Conflict
	case notFoundCodes[code]:
		return NotFound
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorFault() == smithy.FaultServer {
		return Retryable
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch s := re.HTTPStatusCode(); {
		case s == 429 || s >= 500:
			return Retryable
		case s == 404 && code == "":
			return NotFound
		}
	}
	if isTimeout(err) {
		return Retryable
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return Retryable // a body cut short: the connection broke mid-response
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return Retryable // connection refused/reset: the endpoint may come back
	}
	if code != "" {
		return Invalid
	}
	return Unknown
}

// isTimeout says err is a network timeout (net.Error's Timeout).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IsRetryable reports whether err is worth retrying with backoff.
func IsRetryable(err error) bool { return Classify(err) == Retryable }

// IsThrottle reports whether err is a throttling error.
func IsThrottle(err error) bool { return throttleCodes[Code(err)] }

var accessDeniedCodes = set("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "UnauthorizedException")

// IsAccessDenied reports whether err says the caller's credentials may not
// make the call.
func IsAccessDenied(err error) bool { return accessDeniedCodes[Code(err)] }

// IsNotFound reports whether err says the resource does not exist.
func IsNotFound(err error) bool { return Classify(err) == NotFound }

// IsConditionFailed reports whether err is a lost conditional write
// (ConditionalCheckFailed, or a cancelled transaction with that reason).
func IsConditionFailed(err error) bool {
	switch Code(err) {
	case "ConditionalCheckFailedException":
		return true
	case "TransactionCanceledException":
		return hasAny(CancellationReasons(err), "ConditionalCheckFailed")
	}
	return false
}

// CancellationReasons returns the per-item reason codes of a cancelled
// DynamoDB transaction, in item order ("None" for items that were fine).
func CancellationReasons(err error) []string {
	var tc *types.TransactionCanceledException
	if !errors.As(err, &tc) {
		return nil
	}
	out := make([]string, len(tc.CancellationReasons))
	for i, r := range tc.CancellationReasons {
		out[i] = "None"
		if r.Code != nil {
			out[i] = *r.Code
		}
	}
	return out
}

// IsLifecycleActionGone reports whether a CompleteLifecycleAction or
// RecordLifecycleActionHeartbeat failed because the action no longer exists:
// it was completed already, timed out, or the token is stale. For a caller
// that wanted to complete it, that means done.
func IsLifecycleActionGone(err error) bool {
	if Code(err) != "ValidationError" {
		return false
	}
	m := strings.ToLower(Message(err))
	return strings.Contains(m, "no active lifecycle action") || strings.Contains(m, "lifecycle action") && strings.Contains(m, "not found")
}

// IsDeviceInUse reports whether AttachVolume failed because the device name
// is taken on that instance (try the next name).
func IsDeviceInUse(err error) bool {
	code := Code(err)
	m := strings.ToLower(Message(err))
	return (code == "InvalidParameterValue" || code == "InvalidParameterCombination") && strings.Contains(m, "already in use") ||
		code == "InvalidDevice.InUse"
}

// IsIncorrectState reports EC2's IncorrectState / VolumeInUse family: the
// resource is not in a state that allows the call right now.
func IsIncorrectState(err error) bool {
	switch Code(err) {
	case "IncorrectState", "IncorrectInstanceState", "VolumeInUse", "InvalidVolume.ZoneMismatch":
		return true
	}
	return false
}

// Backoff describes retry timing: Initial, multiplied by Factor each try, at
// most Max, with full jitter; Attempts bounds the tries (0 = until ctx ends).
type Backoff struct {
	Initial  time.Duration
	Factor   float64
	Max      time.Duration
	Attempts int
}

// DefaultBackoff suits AWS control-plane calls.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Factor: 2, Max: 5 * time.Second, Attempts: 8}

// Delay returns the jittered wait before try n (0-based).
func (b Backoff) Delay(n int) time.Duration {
	d := float64(b.Initial)
	for i := 0; i < n; i++ {
		d *= b.Factor
		if b.Max > 0 && d > float64(b.Max) {
			d = float64(b.Max)
			break
		}
	}
	return time.Duration(d/2 + rand.Float64()*d/2)
}

// Retry calls fn until it succeeds, fails with an error that is not
// Retryable or that the SDK's retryer already gave up on (SDKRetried: a
// client of NewRetryer retries its calls itself), the attempts run out, or
// ctx ends. It returns fn's last error. Around an SDK client it adds
// attempts only for what the SDK does not retry; around a fake or a step
// of several calls it is the retry.
func Retry(ctx context.Context, b Backoff, fn func(context.Context) error) error {
	for n := 0; ; n++ {
		err := fn(ctx)
		if err == nil || !retryAgain(err) || b.Attempts > 0 && n+1 >= b.Attempts {
			return err
		}
		if serr := Sleep(ctx, b.Delay(n)); serr != nil {
			return errors.Join(err, serr)
		}
	}
}

// Sleep waits d or until ctx ends, returning ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func set(codes ...string) map[string]bool {
	m := make(map[string]bool, len(codes))
	for _, c := range codes {
		m[c] = true
	}
	return m
}

func hasAny(have []string, want ...string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// IsBadDigest reports whether S3 refused a body because it does not match
// the checksum sent with it: the bytes read are not the bytes hashed.
func IsBadDigest(err error) bool {
	switch Code(err) {
	case "BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest":
		return true
	}
	return false
}
