package snapshot

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/volsd/volsd/events"
)

// Handle is the snapshot Lambda's handler: it accepts the EventBridge
// "Scheduled Event" and runs Run. Any other event is refused with an error
// that names it (the rule is misconfigured; nothing is done).
func (r *Runner) Handle(ctx context.Context, raw json.RawMessage) (Result, error) {
	var ev events.Envelope
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Result{AgeSeconds: -1}, fmt.Errorf("snapshot: event is not an EventBridge event: %w", err)
	}
	if ev.DetailType != events.DetailTypeSchedule || ev.Source != events.SourceSchedule {
		return Result{AgeSeconds: -1}, fmt.Errorf("snapshot: unexpected event %q from %q (id %s); want %q from %q",
			ev.DetailType, ev.Source, ev.ID, events.DetailTypeSchedule, events.SourceSchedule)
	}
	r.log.Info("scheduled snapshot run", "event", ev.ID, "time", ev.Time)
	res, err := r.Run(ctx)
	r.log.Info("snapshot run done", "snapshot", res.Take.SnapshotID, "seq", res.Take.Seq, "skipped", res.Take.Skipped,
		"reused", res.Take.Reused, "kept", res.Retain.Kept, "deleted", res.Retain.Deleted, "floor", res.Compact.Floor,
		"ageSeconds", res.AgeSeconds, "error", err)
	return res, err
}
