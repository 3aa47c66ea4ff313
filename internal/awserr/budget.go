package awserr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// Budget is one retry budget shared by many calls, e.g. every GET of one
// agent apply (the SDK's standard retryer, whose token bucket it follows,
// is per client and knows nothing of a burst of parallel calls). Each
// retry takes tokens, each success gives one back, so a failing endpoint
// gets a bounded number of retries however many calls run at once; and a
// throttle (SlowDown, 503) pauses every call of the budget, not only the
// one that met it, with a backoff that grows while throttling lasts.
type Budget struct {
	backoff Backoff

	mu         sync.Mutex
	tokens     int
	throttled  int       // throttles since the last success
	pauseUntil time.Time // after a throttle no call starts a try before
	retries    int
}

// Token costs, as the SDK's standard retryer (RetryCost, RetryTimeoutCost);
// a throttle costs least: it is the service asking to wait, and the shared
// pause already slows every call down.
const (
	BudgetTokens      = 500
	RetryCost         = 5
	RetryTimeoutCost  = 10
	RetryThrottleCost = 1
)

// NewBudget returns a full budget whose tries wait b between them;
// b.Attempts bounds the tries of one call for errors other than throttles
// (0: only the budget and the context bound them).
func NewBudget(b Backoff) *Budget { return &Budget{backoff: b, tokens: BudgetTokens} }

// IsSlowDown says the service asks the caller to slow down: a throttling
// code, or a 503 without one (S3's SlowDown).
func IsSlowDown(err error) bool {
	if IsThrottle(err) {
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == 503
}

// Retry calls fn until it succeeds, fails with an error that is not
// Retryable, the budget or the call's attempts run out, or ctx ends. It
// returns fn's last error, saying when the budget ran out.
func (b *Budget) Retry(ctx context.Context, fn func(context.Context) error) error {
	tries := 0 // not counting throttles
	for n := 0; ; n++ {
		if err := b.wait(ctx); err != nil {
			return err
		}
		err := fn(ctx)
		if err == nil {
			b.success()
			return nil
		}
		if !retryAgain(err) {
			return err
		}
		slow := IsSlowDown(err)
		if !slow {
			tries++
			if b.backoff.Attempts > 0 && tries >= b.backoff.Attempts {
				return fmt.Errorf("gave up after %d tries: %w", tries, err)
			}
		}
		if !b.take(err, slow) {
			return fmt.Errorf("retry budget used up (%d retries of this apply): %w", b.Retries(), err)
		}
		if serr := Sleep(ctx, b.backoff.Delay(n)); serr != nil {
			return errors.Join(err, serr)
		}
	}
}

// Retries says how many retries the budget has paid for.
func (b *Budget) Retries() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.retries
}

func (b *Budget) wait(ctx context.Context) error {
	b.mu.Lock()
	d := time.Until(b.pauseUntil)
	b.mu.Unlock()
	if d <= 0 {
		return nil
	}
	return Sleep(ctx, d)
}

func (b *Budget) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.tokens+1, BudgetTokens)
	b.throttled = 0
}

// take pays for one retry after err; false: the budget is used up.
func (b *Budget) take(err error, slow bool) bool {
	cost := RetryCost
	switch {
	case slow:
		cost = RetryThrottleCost
	case isTimeout(err):
		cost = RetryTimeoutCost
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < cost {
		return false
	}
	b.tokens -= cost
	b.retries++
	if slow {
		if until := time.Now().Add(b.backoff.Delay(b.throttled)); until.After(b.pauseUntil) {
			b.pauseUntil = until
		}
		b.throttled++
	}
	return true
}
