package harness

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/volsd/volsd/internal/lambdaruntime"
)

// SQSSource is Lambda's SQS event source mapping: pollers receive batches
// (BatchSize, MaxBatchingWindow), invoke the function with an SQSEvent and,
// with ReportBatchItemFailures, delete the messages that did not fail. A
// failed message becomes visible again after the queue's visibility timeout;
// after maxReceiveCount receives SQS (moto) moves it to the DLQ.
type SQSSource struct {
	SQS       *sqs.Client // moto, directly
	QueueURL  string
	QueueARN  string
	Region    string
	Fn        *lambdaruntime.Function
	BatchSize int
	Window    time.Duration
	Pollers   int
	// ReportBatchItemFailures is the mapping's FunctionResponseTypes: with
	// it the function's batchItemFailures return only those messages;
	// without it Lambda ignores the response and deletes the whole batch.
	ReportBatchItemFailures bool
	Log                     *slog.Logger

	mu       sync.Mutex
	inflight int
	stats    SQSStats
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// SQSStats counts what the event source did.
type SQSStats struct {
	Batches, Messages, Deleted, ItemFailures, FailedInvocations int
}

// Stats returns the counters.
func (s *SQSSource) Stats() SQSStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Start runs the pollers until Stop.
func (s *SQSSource) Start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	n := max(s.Pollers, 1)
	for i := 0; i < n; i++ {
		s.wg.Add(1)
		go s.poll(ctx)
	}
}

// Stop ends polling and waits for the batches in flight.
func (s *SQSSource) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

// Idle reports whether no batch is being processed and the queue has no
// visible or in-flight messages.
func (s *SQSSource) Idle(ctx context.Context) (bool, error) {
	s.mu.Lock()
	busy := s.inflight > 0
	s.mu.Unlock()
	if busy {
		return false, nil
	}
	out, err := s.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &s.QueueURL,
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return false, err
	}
	return out.Attributes["ApproximateNumberOfMessages"] == "0" && out.Attributes["ApproximateNumberOfMessagesNotVisible"] == "0", nil
}

func (s *SQSSource) poll(ctx context.Context) {
	defer s.wg.Done()
	for ctx.Err() == nil {
		msgs := s.receive(ctx)
		if len(msgs) == 0 {
			continue
		}
		s.mu.Lock()
		s.inflight++
		s.mu.Unlock()
		s.deliver(ctx, msgs)
		s.mu.Lock()
		s.inflight--
		s.mu.Unlock()
	}
}

// receive collects one batch: up to BatchSize messages within Window of
// the first.
func (s *SQSSource) receive(ctx context.Context) []types.Message {
	size := s.BatchSize
	if size <= 0 {
		size = 10
	}
	var msgs []types.Message
	var deadline time.Time
	for len(msgs) < size && ctx.Err() == nil {
		wait := int32(1)
		if len(msgs) > 0 {
			if time.Now().After(deadline) {
				break
			}
			wait = 0
		}
		out, err := s.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    &s.QueueURL,
			MaxNumberOfMessages:         int32(min(size-len(msgs), 10)),
			WaitTimeSeconds:             wait,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
			MessageAttributeNames:       []string{"All"},
		})
		if err != nil {
			if ctx.Err() == nil {
				s.Log.Warn("sqs receive", "err", err)
				time.Sleep(200 * time.Millisecond)
			}
			return msgs
		}
		if len(out.Messages) == 0 {
			if len(msgs) == 0 {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if len(msgs) == 0 {
			deadline = time.Now().Add(s.Window)
		}
		msgs = append(msgs, out.Messages...)
	}
	return msgs
}

func (s *SQSSource) deliver(ctx context.Context, msgs []types.Message) {
	ev := events.SQSEvent{}
	for _, m := range msgs {
		rec := events.SQSMessage{
			MessageId:         aws.ToString(m.MessageId),
			ReceiptHandle:     aws.ToString(m.ReceiptHandle),
			Body:              aws.ToString(m.Body),
			Md5OfBody:         aws.ToString(m.MD5OfBody),
			Attributes:        m.Attributes,
			MessageAttributes: map[string]events.SQSMessageAttribute{},
			EventSourceARN:    s.QueueARN,
			EventSource:       "aws:sqs",
			AWSRegion:         s.Region,
		}
		if rec.Md5OfBody == "" {
			sum := md5.Sum([]byte(rec.Body))
			rec.Md5OfBody = hex.EncodeToString(sum[:])
		}
		for k, v := range m.MessageAttributes {
			rec.MessageAttributes[k] = events.SQSMessageAttribute{
				StringValue: v.StringValue, BinaryValue: v.BinaryValue, DataType: aws.ToString(v.DataType),
			}
		}
		ev.Records = append(ev.Records, rec)
	}
	payload, _ := json.Marshal(ev)
	s.mu.Lock()
	s.stats.Batches++
	s.stats.Messages += len(msgs)
	s.mu.Unlock()
	resp, err := s.Fn.Invoke(ctx, payload)
	if err != nil {
		// The whole batch returns to the queue after the visibility timeout.
		s.mu.Lock()
		s.stats.FailedInvocations++
		s.mu.Unlock()
		s.Log.Warn("sqs batch: invocation failed; messages return after the visibility timeout", "function", s.Fn.Name, "messages", len(msgs), "err", err)
		return
	}
	failed := map[string]bool{}
	var out events.SQSEventResponse
	if s.ReportBatchItemFailures && len(resp) > 0 && string(resp) != "null" {
		if err := json.Unmarshal(resp, &out); err != nil {
			s.Log.Warn("sqs batch: response is not an SQSEventResponse; the whole batch failed", "response", string(resp))
			return
		}
	}
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[aws.ToString(m.MessageId)] = true
	}
	for _, f := range out.BatchItemFailures {
		if !ids[f.ItemIdentifier] {
			// Lambda treats an unknown or empty identifier as a failure of
			// the whole batch.
			s.Log.Warn("sqs batch: batchItemFailures names an unknown message; the whole batch failed", "id", f.ItemIdentifier)
			s.mu.Lock()
			s.stats.ItemFailures += len(msgs)
			s.mu.Unlock()
			return
		}
		failed[f.ItemIdentifier] = true
	}
	var del []types.DeleteMessageBatchRequestEntry
	for i, m := range msgs {
		if failed[aws.ToString(m.MessageId)] {
			continue
		}
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
	}
	s.mu.Lock()
	s.stats.ItemFailures += len(failed)
	s.mu.Unlock()
	for len(del) > 0 {
		n := min(len(del), 10)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_, err := s.SQS.DeleteMessageBatch(dctx, &sqs.DeleteMessageBatchInput{QueueUrl: &s.QueueURL, Entries: del[:n]})
		cancel()
		if err != nil {
			s.Log.Warn("sqs delete batch", "err", err)
		} else {
			s.mu.Lock()
			s.stats.Deleted += n
			s.mu.Unlock()
		}
		del = del[n:]
	}
}
