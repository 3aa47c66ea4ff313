package awserr

import (
	"context"
	"testing"
	"time"

	"github.com/aws/smithy-go"
)

// TestRetryThrottledOutlastsTheBackoff: a call throttled more often than
// the backoff's tries gets through (Retry gives up after b.Attempts); a
// server error keeps b's bound; ctx ends the wait.
func TestRetryThrottledOutlastsTheBackoff(t *testing.T) {
	b := Backoff{Initial: time.Millisecond, Factor: 2, Max: 4 * time.Millisecond, Attempts: 3}
	throttled := Backoff{Initial: time.Millisecond, Factor: 2, Max: 4 * time.Millisecond}
	var slept []time.Duration
	sleep := func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return ctx.Err() }
	failing := func(n int, err error) (func(context.Context) error, *int) {
		calls := 0
		return func(context.Context) error {
			calls++
			if calls <= n {
				return err
			}
			return nil
		}, &calls
	}
	throttle := &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	server := &smithy.GenericAPIError{Code: "InternalError", Fault: smithy.FaultServer}

	fn, calls := failing(10, throttle)
	if err := RetryThrottled(context.Background(), b, throttled, sleep, fn); err != nil || *calls != 11 {
		t.Fatalf("throttled 10 times: %v after %d calls; want success on the 11th", err, *calls)
	}
	for i, d := range slept {
		if d > throttled.Max {
			t.Fatalf("wait %d was %s, above the throttle backoff's %s", i, d, throttled.Max)
		}
	}
	fn, calls = failing(10, server)
	if err := RetryThrottled(context.Background(), b, throttled, sleep, fn); !IsRetryable(err) || *calls != b.Attempts {
		t.Fatalf("server errors: %v after %d calls; want the error after %d", err, *calls, b.Attempts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fn, calls = failing(1000, throttle)
	if err := RetryThrottled(ctx, b, throttled, sleep, fn); !IsThrottle(err) || *calls != 1 {
		t.Fatalf("ended ctx: %v after %d calls; want the throttle after 1", err, *calls)
	}
}
