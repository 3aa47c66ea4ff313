package awserr

import (
	"context"
	"errors"
	"time"
)

// RetryThrottled is Retry with throttling apart: a throttled call
// (IsThrottle: the account's request limit, e.g. EC2's Describe bucket
// during a mass scale-out) waits on throttled, without a bound on the tries
// unless throttled.Attempts sets one — until the call gets through or ctx
// ends (the one outer loop kept around an SDK client: its retryer gives up
// after ClientAttempts); other retryable failures wait on b, within its
// bound, unless the SDK's retryer gave up on them already. sleep waits
// (Sleep when nil; tests pass a clock's).
func RetryThrottled(ctx context.Context, b, throttled Backoff, sleep func(context.Context, time.Duration) error, fn func(context.Context) error) error {
	if sleep == nil {
		sleep = Sleep
	}
	tries, throttles := 0, 0
	for {
		err := fn(ctx)
		if err == nil || !IsRetryable(err) || SDKRetried(err) && !IsThrottle(err) {
			return err
		}
		back, n := b, &tries
		if IsThrottle(err) {
			back, n = throttled, &throttles
		}
		if back.Attempts > 0 && *n+1 >= back.Attempts {
			return err
		}
		d := back.Delay(*n)
		*n++
		if serr := sleep(ctx, d); serr != nil {
			return errors.Join(err, serr)
		}
	}
}
