package lambdamain

import (
	"context"
	"time"
)

// WithDeadlineMargin returns ctx cut margin before its deadline (the
// Lambda's), so a handler stops its work while there is still time to log,
// record what it did and answer. When less than twice margin is left, the
// cut is at half the time left instead: the handler always gets half of
// what remains, never a context that has ended before it starts. Without a
// deadline, or with margin <= 0, nothing is cut. The one rule for every
// volsd Lambda handler.
func WithDeadlineMargin(ctx context.Context, margin time.Duration) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || margin <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, marginDeadline(dl, time.Now(), margin))
}

// marginDeadline is WithDeadlineMargin's deadline for a ctx ending at dl,
// at now.
func marginDeadline(dl, now time.Time, margin time.Duration) time.Time {
	if left := dl.Sub(now); left < 2*margin {
		margin = max(left/2, 0)
	}
	return dl.Add(-margin)
}
