package awsfake_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/testenv"
)

type sqsAPI interface {
	CreateQueue(context.Context, *sqs.CreateQueueInput, ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error)
	GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(context.Context, *sqs.DeleteMessageInput, ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

// TestSQSFakeBehavesLikeMoto: receive counts, redrive to the DLQ after
// maxReceiveCount receives, error classes, limits.
func TestSQSFakeBehavesLikeMoto(t *testing.T) {
	moto := sqs.NewFromConfig(testenv.Moto(t))
	for _, tc := range []struct {
		name   string
		client sqsAPI
	}{{"moto", moto}, {"fake", awsfake.NewSQS()}} {
		t.Run(tc.name, func(t *testing.T) { sqsScenario(t, tc.client, tc.name == "moto") })
	}
}

// sqsScenario checks SQS behaviour; on moto it skips the limits moto does
// not enforce (invalid characters, MaximumMessageSize).
func sqsScenario(t *testing.T, c sqsAPI, moto bool) {
	ctx := context.Background()
	name := testenv.UniqueName(t, "q")
	dlq, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: dlq.QueueUrl, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{
		"VisibilityTimeout":  "0",
		"MaximumMessageSize": "262144",
		"RedrivePolicy":      fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"2"}`, attrs.Attributes["QueueArn"]),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String(`{"version":1}`)}); err != nil {
		t.Fatal(err)
	}
	receive := func(url *string) []types.Message {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 10, MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		if err != nil {
			t.Fatal(err)
		}
		return out.Messages
	}
	for want := 1; want <= 2; want++ {
		msgs := receive(q.QueueUrl)
		if len(msgs) != 1 || msgs[0].Attributes["ApproximateReceiveCount"] != strconv.Itoa(want) {
			t.Fatalf("receive %d: %+v", want, msgs)
		}
	}
	if msgs := receive(q.QueueUrl); len(msgs) != 0 {
		t.Fatalf("third receive after maxReceiveCount 2 got %d messages, want 0 (moved to the DLQ)", len(msgs))
	}
	dead := receive(dlq.QueueUrl)
	if len(dead) != 1 || aws.ToString(dead[0].Body) != `{"version":1}` {
		t.Fatalf("DLQ holds %+v", dead)
	}
	if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: dlq.QueueUrl, ReceiptHandle: dead[0].ReceiptHandle}); err != nil {
		t.Fatalf("delete: %v", err)
	}

	_, err = c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(strings.TrimSuffix(aws.ToString(q.QueueUrl), name) + name + "-nope"), MessageBody: aws.String("x")})
	if !awserr.IsNotFound(err) {
		t.Errorf("send to a missing queue: %v (class %v), want not-found", err, awserr.Classify(err))
	}
	if moto {
		return
	}
	_, err = c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("bad \x01 byte")})
	if awserr.Code(err) != "InvalidMessageContents" {
		t.Errorf("send with a control byte: code %q (%v)", awserr.Code(err), err)
	}
	_, err = c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String(strings.Repeat("x", 262145))})
	if awserr.Classify(err) != awserr.Invalid {
		t.Errorf("send of 256 KiB + 1: %v (class %v), want invalid", err, awserr.Classify(err))
	}
	_, err = c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 11})
	if awserr.Classify(err) != awserr.Invalid {
		t.Errorf("receive 11: %v, want invalid", err)
	}
}

// TestSQSDeliverPlaysTheEventSourceMapping: successes are deleted, reported
// failures come back after the visibility timeout with a higher receive
// count, a handler error or an unknown failure ID fails the whole batch.
func TestSQSDeliverPlaysTheEventSourceMapping(t *testing.T) {
	ctx := context.Background()
	f := awsfake.NewSQS()
	q, err := f.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("push"), Attributes: map[string]string{"VisibilityTimeout": "60"}})
	if err != nil {
		t.Fatal(err)
	}
	url := aws.ToString(q.QueueUrl)
	for i := 0; i < 5; i++ {
		if _, err := f.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	failOdd := func(_ context.Context, ev lambdaevents.SQSEvent) (lambdaevents.SQSEventResponse, error) {
		var r lambdaevents.SQSEventResponse
		for _, m := range ev.Records {
			if n, _ := strconv.Atoi(m.Body); n%2 == 1 {
				r.BatchItemFailures = append(r.BatchItemFailures, lambdaevents.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
			}
			if m.Attributes["ApproximateReceiveCount"] == "" || m.EventSource != "aws:sqs" {
				t.Errorf("record lacks attributes: %+v", m)
			}
		}
		return r, nil
	}
	d, err := f.Deliver(ctx, url, 10, failOdd)
	if err != nil || d != (awsfake.Delivery{Received: 5, Deleted: 3, Failed: 2}) {
		t.Fatalf("first delivery %+v %v", d, err)
	}
	if d, _ := f.Deliver(ctx, url, 10, failOdd); d.Received != 0 {
		t.Fatalf("failed messages visible before the timeout: %+v", d)
	}
	f.Advance(61 * time.Second)
	var counts []string
	d, _ = f.Deliver(ctx, url, 10, func(_ context.Context, ev lambdaevents.SQSEvent) (lambdaevents.SQSEventResponse, error) {
		for _, m := range ev.Records {
			counts = append(counts, m.Attributes["ApproximateReceiveCount"])
		}
		return lambdaevents.SQSEventResponse{}, errors.New("crash")
	})
	if d.Received != 2 || d.Failed != 2 || strings.Join(counts, ",") != "2,2" {
		t.Fatalf("after the timeout: %+v counts %v", d, counts)
	}
	f.Advance(61 * time.Second)
	d, _ = f.Deliver(ctx, url, 10, func(_ context.Context, ev lambdaevents.SQSEvent) (lambdaevents.SQSEventResponse, error) {
		return lambdaevents.SQSEventResponse{BatchItemFailures: []lambdaevents.SQSBatchItemFailure{{ItemIdentifier: "not-in-batch"}}}, nil
	})
	if d.Failed != 2 || len(f.Bodies(url)) != 2 {
		t.Fatalf("unknown failure ID: %+v, queue %v", d, f.Bodies(url))
	}
	if _, err := f.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: aws.String("forged")}); awserr.Code(err) != "ReceiptHandleIsInvalid" {
		t.Fatalf("forged handle: %v", err)
	}
}
