package awserr

import (
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// ClientAttempts is how many HTTP attempts one SDK call makes at most
// (the first and its retries) with NewRetryer: DefaultBackoff's, so one
// call retries as long as a Retry loop did, but once.
var ClientAttempts = DefaultBackoff.Attempts

// NewRetryer is the SDK retryer of every volsd client (config.WithRetryer
// in the CLI, the Lambdas' lambdamain.Setup and the agent): the standard
// retryer, retrying what Classify calls retryable as well as what the SDK
// does, at most ClientAttempts attempts per call, waiting DefaultBackoff
// between them. Retry, RetryThrottled and Budget do not retry again an
// error the SDK's retryer gave up on (SDKRetried), so retries never stack.
func NewRetryer() aws.Retryer { return newRetryer(DefaultBackoff, ClientAttempts, false) }

// NewAdaptiveRetryer is NewRetryer in adaptive mode (client-side rate
// limiting when the service throttles, as the control plane's EC2 client
// wants during a mass scale-out), at most attempts attempts per call.
func NewAdaptiveRetryer(attempts int) aws.Retryer { return newRetryer(DefaultBackoff, attempts, true) }

func newRetryer(b Backoff, attempts int, adaptive bool) aws.Retryer {
	standard := func(o *retry.StandardOptions) {
		o.MaxAttempts = attempts
		o.MaxBackoff = b.Max
		o.Backoff = retry.BackoffDelayerFunc(func(attempt int, _ error) (time.Duration, error) {
			return b.Delay(max(attempt-1, 0)), nil
		})
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			if IsRetryable(err) {
				return aws.TrueTernary
			}
			return aws.UnknownTernary
		})}, o.Retryables...)
	}
	if adaptive {
		return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
			o.StandardOptions = append(o.StandardOptions, standard)
		})
	}
	return retry.NewStandard(standard)
}

// SDKRetried reports whether err is one the SDK's retryer already retried
// and gave up on: its attempts ran out (retry.MaxAttemptsError) or its
// retry quota did (ratelimit.QuotaExceededError). Retrying it again in a
// loop around the call would multiply the attempts.
func SDKRetried(err error) bool {
	var me *retry.MaxAttemptsError
	var qe ratelimit.QuotaExceededError
	return errors.As(err, &me) || errors.As(err, &qe)
}

// retryAgain says a Retry loop should try fn again after err.
func retryAgain(err error) bool { return IsRetryable(err) && !SDKRetried(err) }
