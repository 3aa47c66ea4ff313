package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/store"
)

// CommandSender is the part of the SSM API the push Lambda uses.
type CommandSender interface {
	SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error)
}

// Journal is the part of the store the push Lambda uses.
type Journal interface {
	GetRequest(ctx context.Context, pool, requestID string) (store.Request, error)
	AppendBatch(ctx context.Context, pool string, entries []events.JournalEntry) ([]store.Appended, error)
	RejectRequest(ctx context.Context, pool string, rej store.Rejection) (store.Request, bool, error)
	PreviousSyncs
}

// Pusher handles SQS batches of push requests.
type Pusher struct {
	cfg     Config
	journal Journal
	origin  origin
	ssm     CommandSender
	log     *slog.Logger
	metrics *metrics.Emitter
	now     func() time.Time
}

// NewPusher returns a Pusher; log and m may be nil (discard).
func NewPusher(cfg Config, journal Journal, s3 S3Origin, ssm CommandSender, log *slog.Logger, m *metrics.Emitter) *Pusher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MissingReceives <= 0 {
		cfg.MissingReceives = events.PushMaxReceiveCount
	}
	return &Pusher{
		cfg: cfg, journal: journal, origin: origin{s3: s3, bucket: cfg.Bucket, pool: cfg.Pool, previous: journal, log: log.With("pool", cfg.Pool), manifests: semaphore.NewWeighted(MaxCheckedManifestBytes)}, ssm: ssm,
		log: log.With("pool", cfg.Pool), metrics: m, now: time.Now,
	}
}

// verdict is what becomes of one message.
type verdict int

const (
	verdictRetry  verdict = iota // fail the item; SQS redelivers it; nothing recorded
	verdictAccept                // valid and in the journal (now or before)
	verdictReject                // invalid: recorded as rejected; fail the item so it reaches the DLQ
)

// item is one message on its way through the batch.
type item struct {
	msg      lambdaevents.SQSMessage
	dec      Message
	receives int
	verdict  verdict
	reason   string // why rejected or retried
	seq      int64  // accepted: its journal seq
	dup      bool   // accepted: appended by an earlier delivery
}

// sendBackoff retries a throttled SendCommand inside one invocation.
var sendBackoff = awserr.Backoff{Initial: 200 * time.Millisecond, Factor: 2, Max: 2 * time.Second, Attempts: 4}

// checkConcurrency bounds the messages validated at once.
const checkConcurrency = 10

// HandleSQS processes one batch (the SQS event source with
// ReportBatchItemFailures):
//
//  1. Each message is decoded and validated (ParsePushRequest); a message
//     whose request was appended before is accepted as a duplicate; one
//     rejected before stays rejected; a new one has its blob, or its
//     manifest and the manifest's blobs, checked in the origin.
//  2. Invalid requests are recorded (REQ#<id> state rejected, with the
//     reason) and logged. A blob or manifest that is missing is retried
//     until the message's receive count reaches MissingReceives, then
//     rejected.
//  3. The valid ones are appended with one AppendBatch (idempotent by
//     requestId).
//  4. If the batch holds any request in the journal (new or duplicate),
//     exactly one SendCommand of volsd-Apply goes to the pool's instances
//     by tag, with upTo = the highest seq of the batch.
//
// Batch item failures are the retryable messages (throttling, S3 or
// DynamoDB trouble, a missing blob below the bound, a failed SendCommand)
// and the rejected ones: a rejected message is recorded first and then
// fails on every delivery, so after the queue's maxReceiveCount it lands
// in the dead-letter queue, where an operator can inspect it. Nothing is
// dropped silently. The handler never returns an error.
func (p *Pusher) HandleSQS(ctx context.Context, ev lambdaevents.SQSEvent) (lambdaevents.SQSEventResponse, error) {
	ctx, cancel := lambdamain.WithDeadlineMargin(ctx, p.cfg.Margin)
	defer cancel()
	items := make([]*item, len(ev.Records))
	var checks errgroup.Group
	checks.SetLimit(checkConcurrency)
	for i, m := range ev.Records {
		it := &item{msg: m, receives: receiveCount(m)}
		items[i] = it
		checks.Go(func() error {
			p.check(ctx, it) // the verdict is on it
			return nil
		})
	}
	_ = checks.Wait()

	p.recordRejections(ctx, items)
	p.append(ctx, items)
	p.fanOut(ctx, items)

	var resp lambdaevents.SQSEventResponse
	counts := map[string]int{}
	for _, it := range items {
		switch {
		case it.verdict == verdictAccept && it.dup:
			counts["PushDuplicates"]++
		case it.verdict == verdictAccept:
			counts["PushAppended"]++
		case it.verdict == verdictReject:
			counts["PushRejected"]++
		default:
			counts["PushRetried"]++
		}
		if it.verdict != verdictAccept {
			resp.BatchItemFailures = append(resp.BatchItemFailures, lambdaevents.SQSBatchItemFailure{ItemIdentifier: it.msg.MessageId})
		}
	}
	for _, name := range []string{"PushAppended", "PushDuplicates", "PushRejected", "PushRetried"} {
		p.metrics.Put(name, float64(counts[name]), metrics.Count, map[string]string{"Pool": p.cfg.Pool})
	}
	if lag, ok := appendLag(items, p.now()); ok {
		p.metrics.Put(metrics.PushLagSeconds, lag.Seconds(), metrics.Seconds, map[string]string{"Pool": p.cfg.Pool})
	}
	p.log.Info("push batch", "messages", len(items), "appended", counts["PushAppended"], "duplicates", counts["PushDuplicates"],
		"rejected", counts["PushRejected"], "retried", counts["PushRetried"])
	return resp, nil
}

// appendLag is the longest wait of the batch's newly appended requests:
// from SQS's SentTimestamp (the operator's send) to now (appended). ok is
// false when the batch appended nothing new.
func appendLag(items []*item, now time.Time) (time.Duration, bool) {
	var lag time.Duration
	ok := false
	for _, it := range items {
		if it.verdict != verdictAccept || it.dup {
			continue
		}
		ms, err := strconv.ParseInt(it.msg.Attributes["SentTimestamp"], 10, 64)
		if err != nil {
			continue
		}
		lag, ok = max(lag, now.Sub(time.UnixMilli(ms))), true
	}
	return max(lag, 0), ok
}

// receiveCount reads the SQS ApproximateReceiveCount attribute (1 when absent).
func receiveCount(m lambdaevents.SQSMessage) int {
	n, err := strconv.Atoi(m.Attributes["ApproximateReceiveCount"])
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// check decides an item's verdict before anything is written.
func (p *Pusher) check(ctx context.Context, it *item) {
	it.dec = DecodeMessage(it.msg.MessageId, it.msg.Body)
	if it.dec.Err != nil {
		it.verdict, it.reason = verdictReject, it.dec.Err.Error()
		return
	}
	prev, err := p.journal.GetRequest(ctx, p.cfg.Pool, it.dec.RecordID)
	switch {
	case err == nil && prev.State == store.RequestAppended:
		it.verdict, it.seq, it.dup = verdictAccept, prev.Seq, true
		return
	case err == nil:
		it.verdict, it.reason = verdictReject, prev.Reason
		return
	case !errors.Is(err, store.ErrNotFound):
		it.verdict, it.reason = verdictRetry, "read request record: "+err.Error()
		return
	}
	prob := p.origin.check(ctx, it.dec.Request)
	switch {
	case prob == nil:
		it.verdict = verdictAccept
	case prob.kind == problemInvalid:
		it.verdict, it.reason = verdictReject, prob.Error()
	case prob.kind == problemMissing && it.receives >= p.cfg.MissingReceives:
		it.verdict, it.reason = verdictReject, fmt.Sprintf("%s (still missing after %d deliveries)", prob.Error(), it.receives)
	default:
		it.verdict, it.reason = verdictRetry, prob.Error()
		p.log.Warn("push request not ready; will retry", "requestId", it.dec.RecordID, "messageId", it.msg.MessageId,
			"receiveCount", it.receives, "reason", it.reason)
	}
}

// recordRejections writes the REQ# record of every rejected item. A
// record that already exists wins: a request appended meanwhile by a
// concurrent delivery is accepted, not rejected.
func (p *Pusher) recordRejections(ctx context.Context, items []*item) {
	for _, it := range items {
		if it.verdict != verdictReject {
			continue
		}
		rec, created, err := p.journal.RejectRequest(ctx, p.cfg.Pool, store.Rejection{
			RequestID: it.dec.RecordID, Op: it.dec.Op, Path: it.dec.Path, Reason: it.reason,
		})
		switch {
		case err != nil:
			it.verdict = verdictRetry
			p.log.Error("record rejection failed; will retry", "requestId", it.dec.RecordID, "messageId", it.msg.MessageId, "reason", it.reason, "error", err)
		case rec.State == store.RequestAppended && it.dec.Err == nil:
			// appended meanwhile by a concurrent delivery of this request
			it.verdict, it.seq, it.dup = verdictAccept, rec.Seq, true
		case rec.State == store.RequestAppended:
			// a malformed body that reuses the ID of an appended request:
			// the record stays as it is, the message goes to the DLQ
			p.log.Warn("malformed push message reuses the ID of an appended request", "requestId", it.dec.RecordID,
				"messageId", it.msg.MessageId, "reason", it.reason, "receiveCount", it.receives)
		default:
			p.log.Warn("push request rejected", "requestId", it.dec.RecordID, "messageId", it.msg.MessageId, "op", string(it.dec.Op),
				"path", it.dec.Path, "reason", rec.Reason, "receiveCount", it.receives, "recorded", created)
		}
	}
}

// append puts the new accepted requests in the journal with one AppendBatch.
func (p *Pusher) append(ctx context.Context, items []*item) {
	var todo []*item
	var entries []events.JournalEntry
	for _, it := range items {
		if it.verdict == verdictAccept && !it.dup {
			r := it.dec.Request
			todo = append(todo, it)
			entries = append(entries, events.JournalEntry{Op: r.Op, Path: r.Path, Blob: r.Blob, Manifest: r.Manifest, RequestID: r.RequestID})
		}
	}
	if len(entries) == 0 {
		return
	}
	res, err := p.journal.AppendBatch(ctx, p.cfg.Pool, entries)
	if err != nil {
		p.log.Error("append failed; will retry", "requests", len(entries), "error", err)
		for _, it := range todo {
			it.verdict, it.reason = verdictRetry, "append: "+err.Error()
		}
		return
	}
	for k, it := range todo {
		r := res[k]
		switch {
		case errors.Is(r.Err, store.ErrRejected):
			it.verdict, it.reason = verdictReject, r.Err.Error()
			p.log.Warn("push request rejected earlier", "requestId", it.dec.RecordID, "messageId", it.msg.MessageId, "reason", it.reason)
		case r.Err != nil:
			it.verdict, it.reason = verdictRetry, r.Err.Error()
		default:
			it.seq, it.dup = r.Seq, r.Dup
			p.log.Info("push request appended", "requestId", it.dec.RecordID, "seq", r.Seq, "op", string(it.dec.Request.Op),
				"path", it.dec.Request.Path, "duplicate", r.Dup)
		}
	}
}

// fanOut sends one volsd-Apply to the pool's instances, by tag, with upTo
// the highest seq of the batch. If it fails, every accepted item fails
// too, so SQS redelivers them: they are duplicates then, and the command
// is sent again.
func (p *Pusher) fanOut(ctx context.Context, items []*item) {
	var upTo int64
	for _, it := range items {
		if it.verdict == verdictAccept {
			upTo = max(upTo, it.seq)
		}
	}
	if upTo == 0 {
		return
	}
	comment := fmt.Sprintf("volsd %s: apply up to %d", p.cfg.Pool, upTo)
	if len(comment) > 100 {
		comment = comment[:100]
	}
	in := &ssm.SendCommandInput{
		DocumentName:   aws.String(p.cfg.DocApply),
		Targets:        []ssmtypes.Target{{Key: aws.String("tag:" + events.TagPool), Values: []string{p.cfg.Pool}}},
		Parameters:     map[string][]string{"upTo": {strconv.FormatInt(upTo, 10)}},
		MaxConcurrency: aws.String(p.cfg.MaxConcurrency),
		MaxErrors:      aws.String(p.cfg.MaxErrors),
		Comment:        aws.String(comment),
	}
	var out *ssm.SendCommandOutput
	err := awserr.Retry(ctx, sendBackoff, func(ctx context.Context) error {
		var err error
		out, err = p.ssm.SendCommand(ctx, in)
		return err
	})
	if err != nil {
		p.log.Error("send volsd-Apply failed; the batch will be retried", "upTo", upTo, "document", p.cfg.DocApply, "error", err)
		for _, it := range items {
			if it.verdict == verdictAccept {
				it.verdict, it.reason = verdictRetry, "send command: "+err.Error()
			}
		}
		return
	}
	p.metrics.Put("ApplyCommandsSent", 1, metrics.Count, map[string]string{"Pool": p.cfg.Pool})
	p.log.Info("sent volsd-Apply", "upTo", upTo, "commandId", aws.ToString(out.Command.CommandId), "targets", out.Command.TargetCount)
}
