package awsfake

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// SQS is a standard-queue SQS fake with a settable clock: visibility
// timeouts, ApproximateReceiveCount, redrive to a dead-letter queue after
// maxReceiveCount receives (RedrivePolicy), AWS's limits on message size,
// characters and batch size, and the error codes of SQS's JSON protocol
// (QueueDoesNotExist, ReceiptHandleIsInvalid, InvalidMessageContents,
// InvalidParameterValue). Deliver plays the Lambda event source mapping,
// ReportBatchItemFailures included. Safe for concurrent use.
type SQS struct {
	pipelineFaults
	// Region and Account make queue URLs and ARNs. Defaults: us-east-1, 123456789012.
	Region, Account string

	mu     sync.Mutex
	queues map[string]*sqsQueue // by URL
	offset time.Duration
	now    func() time.Time
}

type sqsQueue struct {
	name, url, arn string
	visibility     time.Duration
	maxSize        int
	dlqArn         string
	maxReceive     int
	msgs           []*sqsMessage
	issued         map[string]bool // every receipt handle ever issued
}

type sqsMessage struct {
	id, body, md5 string
	sent          time.Time
	visibleAt     time.Time
	receives      int
	firstReceive  time.Time
	handles       map[string]bool
	sourceArn     string
}

// NewSQS returns an SQS fake without queues.
func NewSQS() *SQS {
	return &SQS{
		pipelineFaults: pipelineFaults{service: "SQS"},
		queues:         map[string]*sqsQueue{},
		now:            func() time.Time { return time.Now().UTC() },
	}
}

// Advance moves the fake's clock forward (visibility timeouts expire).
func (f *SQS) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offset += d
}

func (f *SQS) clock() time.Time { return f.now().Add(f.offset) }

func (f *SQS) region() string {
	if f.Region != "" {
		return f.Region
	}
	return "us-east-1"
}

func (f *SQS) account() string {
	if f.Account != "" {
		return f.Account
	}
	return "123456789012"
}

func sqsNoQueue() error {
	return &types.QueueDoesNotExist{Message: aws.String("The specified queue does not exist.")}
}

func sqsInvalidParameter(msg string) error {
	return pipelineAPIError("InvalidParameterValue", msg, smithy.FaultClient)
}

// queue returns the queue at url; call with f.mu held.
func (f *SQS) queue(url *string) (*sqsQueue, error) {
	q, ok := f.queues[aws.ToString(url)]
	if !ok {
		return nil, sqsNoQueue()
	}
	return q, nil
}

// CreateQueue creates a standard queue. Attributes: VisibilityTimeout
// (seconds, default 30), MaximumMessageSize (default 1 MiB, as for new queues since 2025), RedrivePolicy
// ({"deadLetterTargetArn": …, "maxReceiveCount": n}). Creating an existing
// queue with the same attributes returns its URL; with other attributes,
// QueueNameExists.
func (f *SQS) CreateQueue(ctx context.Context, in *sqs.CreateQueueInput, _ ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error) {
	if err := f.enter("CreateQueue"); err != nil {
		return nil, err
	}
	name := aws.ToString(in.QueueName)
	if name == "" || len(name) > 80 || strings.HasSuffix(name, ".fifo") {
		return nil, f.wrap("CreateQueue", sqsInvalidParameter("Queue name must be 1 to 80 characters of [A-Za-z0-9_-] (this fake has no FIFO queues): "+name))
	}
	q := &sqsQueue{name: name, visibility: 30 * time.Second, maxSize: 1 << 20, issued: map[string]bool{}}
	for k, v := range in.Attributes {
		switch k {
		case "VisibilityTimeout":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 43200 {
				return nil, f.wrap("CreateQueue", pipelineAPIError("InvalidAttributeValue", "Invalid value for the parameter VisibilityTimeout.", smithy.FaultClient))
			}
			q.visibility = time.Duration(n) * time.Second
		case "MaximumMessageSize":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1024 || n > 1048576 {
				return nil, f.wrap("CreateQueue", pipelineAPIError("InvalidAttributeValue", "Invalid value for the parameter MaximumMessageSize.", smithy.FaultClient))
			}
			q.maxSize = n
		case "RedrivePolicy":
			var rp struct {
				DeadLetterTargetArn string `json:"deadLetterTargetArn"`
				MaxReceiveCount     any    `json:"maxReceiveCount"`
			}
			if err := json.Unmarshal([]byte(v), &rp); err != nil || rp.DeadLetterTargetArn == "" {
				return nil, f.wrap("CreateQueue", pipelineAPIError("InvalidAttributeValue", "Value "+v+" for parameter RedrivePolicy is invalid.", smithy.FaultClient))
			}
			n, err := strconv.Atoi(fmt.Sprint(rp.MaxReceiveCount))
			if err != nil || n < 1 || n > 1000 {
				return nil, f.wrap("CreateQueue", pipelineAPIError("InvalidAttributeValue", "Value "+v+" for parameter RedrivePolicy is invalid. Reason: Invalid value for maxReceiveCount.", smithy.FaultClient))
			}
			q.dlqArn, q.maxReceive = rp.DeadLetterTargetArn, n
		default:
			// other attributes (encryption, retention…) change nothing here
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	q.url = fmt.Sprintf("https://sqs.%s.amazonaws.com/%s/%s", f.region(), f.account(), name)
	q.arn = fmt.Sprintf("arn:aws:sqs:%s:%s:%s", f.region(), f.account(), name)
	if old, ok := f.queues[q.url]; ok {
		if old.visibility != q.visibility || old.maxSize != q.maxSize || old.dlqArn != q.dlqArn || old.maxReceive != q.maxReceive {
			return nil, f.wrap("CreateQueue", &types.QueueNameExists{Message: aws.String("A queue already exists with the same name and a different value for attribute(s)")})
		}
		return &sqs.CreateQueueOutput{QueueUrl: aws.String(old.url)}, nil
	}
	if q.dlqArn != "" && f.byArn(q.dlqArn) == nil {
		return nil, f.wrap("CreateQueue", pipelineAPIError("InvalidParameterValue", "Value "+q.dlqArn+" for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.", smithy.FaultClient))
	}
	f.queues[q.url] = q
	return &sqs.CreateQueueOutput{QueueUrl: aws.String(q.url)}, nil
}

// byArn finds a queue by ARN; call with f.mu held.
func (f *SQS) byArn(arn string) *sqsQueue {
	for _, q := range f.queues {
		if q.arn == arn {
			return q
		}
	}
	return nil
}

// GetQueueAttributes returns QueueArn, VisibilityTimeout,
// MaximumMessageSize, RedrivePolicy and the approximate message counts.
func (f *SQS) GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	if err := f.enter("GetQueueAttributes"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	q, err := f.queue(in.QueueUrl)
	if err != nil {
		return nil, f.wrap("GetQueueAttributes", err)
	}
	now := f.clock()
	visible, inflight := 0, 0
	for _, m := range q.msgs {
		if now.Before(m.visibleAt) {
			inflight++
		} else {
			visible++
		}
	}
	attrs := map[string]string{
		"QueueArn":                              q.arn,
		"VisibilityTimeout":                     strconv.Itoa(int(q.visibility / time.Second)),
		"MaximumMessageSize":                    strconv.Itoa(q.maxSize),
		"ApproximateNumberOfMessages":           strconv.Itoa(visible),
		"ApproximateNumberOfMessagesNotVisible": strconv.Itoa(inflight),
	}
	if q.dlqArn != "" {
		attrs["RedrivePolicy"] = fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":%d}`, q.dlqArn, q.maxReceive)
	}
	return &sqs.GetQueueAttributesOutput{Attributes: attrs}, nil
}

// sqsValidBody reports whether every character is one SQS accepts:
// #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.
func sqsValidBody(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r == 0x9 || r == 0xA || r == 0xD:
		case r >= 0x20 && r <= 0xD7FF:
		case r >= 0xE000 && r <= 0xFFFD:
		case r >= 0x10000 && r <= 0x10FFFF:
		default:
			return false
		}
	}
	return true
}

func sqsMD5(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func sqsID() string {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	h := hex.EncodeToString(raw[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// SendMessage enqueues one message (DelaySeconds is honoured).
func (f *SQS) SendMessage(ctx context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	if err := f.enter("SendMessage"); err != nil {
		return nil, err
	}
	body := aws.ToString(in.MessageBody)
	f.mu.Lock()
	defer f.mu.Unlock()
	q, err := f.queue(in.QueueUrl)
	if err != nil {
		return nil, f.wrap("SendMessage", err)
	}
	switch {
	case body == "":
		return nil, f.wrap("SendMessage", pipelineAPIError("MissingParameter", "The request must contain the parameter MessageBody.", smithy.FaultClient))
	case len(body) > q.maxSize:
		return nil, f.wrap("SendMessage", sqsInvalidParameter(fmt.Sprintf("One or more parameters are invalid. Reason: Message must be shorter than %d bytes.", q.maxSize)))
	case !sqsValidBody(body):
		return nil, f.wrap("SendMessage", &types.InvalidMessageContents{Message: aws.String("Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF")})
	case in.DelaySeconds < 0 || in.DelaySeconds > 900:
		return nil, f.wrap("SendMessage", sqsInvalidParameter("Value for parameter DelaySeconds is invalid. Reason: must be between 0 and 900."))
	}
	now := f.clock()
	m := &sqsMessage{id: sqsID(), body: body, md5: sqsMD5(body), sent: now, visibleAt: now.Add(time.Duration(in.DelaySeconds) * time.Second), handles: map[string]bool{}}
	q.msgs = append(q.msgs, m)
	return &sqs.SendMessageOutput{MessageId: aws.String(m.id), MD5OfMessageBody: aws.String(m.md5)}, nil
}

// ReceiveMessage returns up to MaxNumberOfMessages (1..10) visible
// messages, oldest first, hides them for the visibility timeout and counts
// the receive. A message already received maxReceiveCount times moves to
// the dead-letter queue instead. Every message carries the system
// attributes SenderId, SentTimestamp, ApproximateReceiveCount and
// ApproximateFirstReceiveTimestamp. There is no long polling: it returns
// at once.
func (f *SQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	if err := f.enter("ReceiveMessage"); err != nil {
		return nil, err
	}
	n := int(in.MaxNumberOfMessages)
	if n == 0 {
		n = 1
	}
	if n < 1 || n > 10 {
		return nil, f.wrap("ReceiveMessage", sqsInvalidParameter(fmt.Sprintf("Value %d for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.", n)))
	}
	if in.VisibilityTimeout < 0 || in.VisibilityTimeout > 43200 {
		return nil, f.wrap("ReceiveMessage", sqsInvalidParameter("Value for parameter VisibilityTimeout is invalid. Reason: must be between 0 and 43200."))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	q, err := f.queue(in.QueueUrl)
	if err != nil {
		return nil, f.wrap("ReceiveMessage", err)
	}
	vis := q.visibility
	if in.VisibilityTimeout > 0 {
		vis = time.Duration(in.VisibilityTimeout) * time.Second
	}
	now := f.clock()
	out := &sqs.ReceiveMessageOutput{}
	var keep []*sqsMessage
	for _, m := range q.msgs {
		if len(out.Messages) == n || now.Before(m.visibleAt) {
			keep = append(keep, m)
			continue
		}
		if q.maxReceive > 0 && m.receives >= q.maxReceive {
			if dlq := f.byArn(q.dlqArn); dlq != nil {
				m.visibleAt, m.handles, m.sourceArn = now, map[string]bool{}, q.arn
				dlq.msgs = append(dlq.msgs, m)
				continue
			}
		}
		m.receives++
		if m.firstReceive.IsZero() {
			m.firstReceive = now
		}
		m.visibleAt = now.Add(vis)
		h := sqsID()
		m.handles[h] = true
		q.issued[h] = true
		out.Messages = append(out.Messages, types.Message{
			MessageId: aws.String(m.id), ReceiptHandle: aws.String(h), Body: aws.String(m.body), MD5OfBody: aws.String(m.md5),
			Attributes: map[string]string{
				"SenderId":                         "AIDAFAKESENDER",
				"SentTimestamp":                    strconv.FormatInt(m.sent.UnixMilli(), 10),
				"ApproximateReceiveCount":          strconv.Itoa(m.receives),
				"ApproximateFirstReceiveTimestamp": strconv.FormatInt(m.firstReceive.UnixMilli(), 10),
			},
		})
		if m.sourceArn != "" {
			out.Messages[len(out.Messages)-1].Attributes["DeadLetterQueueSourceArn"] = m.sourceArn
		}
		keep = append(keep, m)
	}
	q.msgs = keep
	return out, nil
}

// find returns the message a receipt handle was issued for; call with f.mu held.
func (q *sqsQueue) find(handle string) (int, *sqsMessage) {
	for i, m := range q.msgs {
		if m.handles[handle] {
			return i, m
		}
	}
	return -1, nil
}

// DeleteMessage deletes the message a receipt handle belongs to. Deleting
// a message that is gone already succeeds; a handle never issued is
// ReceiptHandleIsInvalid.
func (f *SQS) DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	if err := f.enter("DeleteMessage"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	q, err := f.queue(in.QueueUrl)
	if err != nil {
		return nil, f.wrap("DeleteMessage", err)
	}
	h := aws.ToString(in.ReceiptHandle)
	if i, _ := q.find(h); i >= 0 {
		q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
		return &sqs.DeleteMessageOutput{}, nil
	}
	if !q.issued[h] {
		return nil, f.wrap("DeleteMessage", &types.ReceiptHandleIsInvalid{Message: aws.String("The input receipt handle \"" + h + "\" is not a valid receipt handle.")})
	}
	return &sqs.DeleteMessageOutput{}, nil
}

// ChangeMessageVisibility sets when an in-flight message becomes visible
// again; MessageNotInflight if it is not in flight.
func (f *SQS) ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	if err := f.enter("ChangeMessageVisibility"); err != nil {
		return nil, err
	}
	if in.VisibilityTimeout < 0 || in.VisibilityTimeout > 43200 {
		return nil, f.wrap("ChangeMessageVisibility", sqsInvalidParameter("Value for parameter VisibilityTimeout is invalid. Reason: must be between 0 and 43200."))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	q, err := f.queue(in.QueueUrl)
	if err != nil {
		return nil, f.wrap("ChangeMessageVisibility", err)
	}
	_, m := q.find(aws.ToString(in.ReceiptHandle))
	if m == nil {
		return nil, f.wrap("ChangeMessageVisibility", &types.ReceiptHandleIsInvalid{Message: aws.String("The input receipt handle is invalid.")})
	}
	now := f.clock()
	if !now.Before(m.visibleAt) {
		return nil, f.wrap("ChangeMessageVisibility", &types.MessageNotInflight{})
	}
	m.visibleAt = now.Add(time.Duration(in.VisibilityTimeout) * time.Second)
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

// Bodies returns the bodies of every message in a queue, in flight or
// not, oldest first.
func (f *SQS) Bodies(url string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	q, ok := f.queues[url]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(q.msgs))
	for _, m := range q.msgs {
		out = append(out, m.body)
	}
	return out
}

// Delivery is what one Deliver call did.
type Delivery struct {
	Received, Deleted, Failed int
}

// Deliver plays the Lambda SQS event source mapping with
// ReportBatchItemFailures once: it receives up to batchSize messages,
// hands them to handler as an SQS event, and deletes those that did not
// fail. A handler error, or a failure naming a message that is not in the
// batch, fails the whole batch (as Lambda does). Failed messages become
// visible again when their visibility timeout ends.
func (f *SQS) Deliver(ctx context.Context, url string, batchSize int, handler func(context.Context, lambdaevents.SQSEvent) (lambdaevents.SQSEventResponse, error)) (Delivery, error) {
	var d Delivery
	var msgs []types.Message
	for len(msgs) < batchSize {
		out, err := f.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: int32(min(10, batchSize-len(msgs)))})
		if err != nil {
			return d, err
		}
		if len(out.Messages) == 0 {
			break
		}
		msgs = append(msgs, out.Messages...)
	}
	d.Received = len(msgs)
	if len(msgs) == 0 {
		return d, nil
	}
	f.mu.Lock()
	arn := f.queues[url].arn
	f.mu.Unlock()
	ev := lambdaevents.SQSEvent{}
	for _, m := range msgs {
		ev.Records = append(ev.Records, lambdaevents.SQSMessage{
			MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle), Body: aws.ToString(m.Body),
			Md5OfBody: aws.ToString(m.MD5OfBody), Attributes: m.Attributes, EventSourceARN: arn,
			EventSource: "aws:sqs", AWSRegion: f.region(),
		})
	}
	resp, err := handler(ctx, ev)
	if err != nil {
		d.Failed = len(msgs)
		return d, nil
	}
	failed := map[string]bool{}
	for _, bf := range resp.BatchItemFailures {
		failed[bf.ItemIdentifier] = true
	}
	for id := range failed {
		found := false
		for _, m := range msgs {
			found = found || aws.ToString(m.MessageId) == id
		}
		if !found {
			d.Failed = len(msgs)
			return d, nil
		}
	}
	for _, m := range msgs {
		if failed[aws.ToString(m.MessageId)] {
			d.Failed++
			continue
		}
		if _, err := f.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
			return d, err
		}
		d.Deleted++
	}
	return d, nil
}
