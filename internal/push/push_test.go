package push_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

// TestValidBatchIsAppendedAndFannedOutOnce: a put, a sync and a delete in
// one batch become journal entries 1..3 and one SendCommand by tag with
// upTo 3 and the configured MaxConcurrency/MaxErrors.
func TestValidBatchIsAppendedAndFannedOutOnce(t *testing.T) {
	r := newRig(t, nil)
	blob := r.blob("<h1>hello</h1>")
	man := r.manifest(map[string]string{"index.html": "<h1>site</h1>", "css/site.css": "body{}"})
	resp := r.handle(batch(
		sqsMessage("m1", body(t, events.PushRequest{RequestID: "put-1", Op: events.OpPut, Path: "index.html", Blob: blob}), 1),
		sqsMessage("m2", body(t, events.PushRequest{RequestID: "sync-1", Op: events.OpSync, Path: "site", Manifest: &events.ManifestRef{SHA256: man}}), 1),
		sqsMessage("m3", body(t, deleteReq("del-1", "old")), 1),
	))
	if len(resp.BatchItemFailures) != 0 {
		t.Fatalf("failures %+v\n%s", resp.BatchItemFailures, r.logs)
	}
	j := r.journal()
	if len(j) != 3 {
		t.Fatalf("journal has %d entries", len(j))
	}
	byID := map[string]events.JournalEntry{}
	for _, e := range j {
		byID[e.RequestID] = e
		if err := e.Validate(); err != nil {
			t.Errorf("entry %d: %v", e.Seq, err)
		}
	}
	if e := byID["put-1"]; e.Op != events.OpPut || e.Blob == nil || *e.Blob != *blob || e.Path != "index.html" {
		t.Errorf("put entry %+v", e)
	}
	if e := byID["sync-1"]; e.Op != events.OpSync || e.Manifest == nil || e.Manifest.SHA256 != man {
		t.Errorf("sync entry %+v", e)
	}
	cmds := r.ssm.Commands()
	if len(cmds) != 1 {
		t.Fatalf("%d SendCommand calls, want 1", len(cmds))
	}
	c := cmds[0]
	if aws.ToString(c.DocumentName) != "volsd-Apply" || len(c.InstanceIds) != 0 || len(c.Targets) != 1 ||
		aws.ToString(c.Targets[0].Key) != "tag:volsd:pool" || c.Targets[0].Values[0] != "web" ||
		c.Parameters["upTo"][0] != "3" || aws.ToString(c.MaxConcurrency) != "50%" || aws.ToString(c.MaxErrors) != "25%" {
		t.Fatalf("command %+v", c)
	}
	for _, id := range []string{"put-1", "sync-1", "del-1"} {
		if req, err := r.st.GetRequest(context.Background(), "web", id); err != nil || req.State != store.RequestAppended {
			t.Errorf("request %s: %+v %v", id, req, err)
		}
	}
}

// TestSameMessageTwiceAndRacingBatches: a message delivered twice appends
// once (and the second delivery sends the command again, harmlessly); two
// batches of the same 30 requests, in different orders, racing, append
// each request exactly once.
func TestSameMessageTwiceAndRacingBatches(t *testing.T) {
	r := newRig(t, nil)
	blob := r.blob("same")
	m := sqsMessage("m1", body(t, events.PushRequest{RequestID: "once", Op: events.OpPut, Path: "a.txt", Blob: blob}), 1)
	for i := 0; i < 2; i++ {
		if resp := r.handle(batch(m)); len(resp.BatchItemFailures) != 0 {
			t.Fatalf("delivery %d failed: %+v", i, resp)
		}
	}
	if j := r.journal(); len(j) != 1 || j[0].RequestID != "once" {
		t.Fatalf("journal after a double delivery: %+v", j)
	}
	if n := r.ssm.Calls("SendCommand"); n != 2 {
		t.Fatalf("SendCommand calls = %d, want 1 per delivery", n)
	}

	var a, b []lambdaevents.SQSMessage
	for i := 0; i < 30; i++ {
		msg := sqsMessage(fmt.Sprintf("r%d", i), body(t, events.PushRequest{RequestID: idOf(i), Op: events.OpPut, Path: fmt.Sprintf("f/%d", i), Blob: blob}), 1)
		a = append(a, msg)
		b = append(b, msg)
	}
	rand.Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
	var wg sync.WaitGroup
	for _, msgs := range [][]lambdaevents.SQSMessage{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := r.handle(batch(msgs...)); len(resp.BatchItemFailures) != 0 {
				t.Errorf("racing batch failed: %+v", resp.BatchItemFailures)
			}
		}()
	}
	wg.Wait()
	j := r.journal()
	if len(j) != 31 {
		t.Fatalf("journal has %d entries, want 31", len(j))
	}
	seen := map[string]int{}
	for _, e := range j {
		seen[e.RequestID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s appended %d times", id, n)
		}
	}
}

// TestThousandRequestsInTenConcurrentBatches: the journal ends exactly
// 1..1000, one entry per request, with one SendCommand per batch.
func TestThousandRequestsInTenConcurrentBatches(t *testing.T) {
	r := newRig(t, nil)
	blob := r.blob("shared content")
	batches := make([][]lambdaevents.SQSMessage, 10)
	for i := 0; i < 1000; i++ {
		var req events.PushRequest
		if i%2 == 0 {
			req = events.PushRequest{RequestID: idOf(i), Op: events.OpPut, Path: fmt.Sprintf("d/%d", i), Blob: blob}
		} else {
			req = deleteReq(idOf(i), fmt.Sprintf("d/%d", i-1))
		}
		batches[i%10] = append(batches[i%10], sqsMessage(fmt.Sprintf("m%d", i), body(t, req), 1))
	}
	var wg sync.WaitGroup
	for _, msgs := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := r.handle(batch(msgs...)); len(resp.BatchItemFailures) != 0 {
				t.Errorf("batch failed: %d items", len(resp.BatchItemFailures))
			}
		}()
	}
	wg.Wait()
	j := r.journal() // Entries refuses gaps
	if len(j) != 1000 || j[0].Seq != 1 || j[999].Seq != 1000 {
		t.Fatalf("journal has %d entries", len(j))
	}
	ids := map[string]bool{}
	for _, e := range j {
		ids[e.RequestID] = true
	}
	if len(ids) != 1000 {
		t.Fatalf("%d distinct requests in the journal", len(ids))
	}
	if head, _ := r.st.Head(context.Background(), "web"); head != 1000 {
		t.Fatalf("head %d", head)
	}
	cmds := r.ssm.Commands()
	if len(cmds) != 10 {
		t.Fatalf("%d SendCommand calls for 10 batches", len(cmds))
	}
	top := 0
	for _, c := range cmds {
		n, _ := strconv.Atoi(c.Parameters["upTo"][0])
		top = max(top, n)
	}
	if top != 1000 {
		t.Fatalf("highest upTo %d, want 1000", top)
	}
}

// TestOneSendCommandPerBatchWhateverTheFleet: pools of 1 and of 500
// instances (plus 50 of another pool); a batch of 10 requests costs one
// SendCommand, by tag, which reaches exactly the pool's instances.
func TestOneSendCommandPerBatchWhateverTheFleet(t *testing.T) {
	for _, fleet := range []int{1, 500} {
		t.Run(fmt.Sprint(fleet), func(t *testing.T) {
			r := newRig(t, nil)
			for i := 0; i < fleet; i++ {
				r.ssm.AddInstance(fmt.Sprintf("i-%017x", i), map[string]string{"volsd:pool": "web"})
			}
			for i := 0; i < 50; i++ {
				r.ssm.AddInstance(fmt.Sprintf("i-%017x", 10000+i), map[string]string{"volsd:pool": "other"})
			}
			var mu sync.Mutex
			reached := map[string]int{}
			r.ssm.Runner = func(ctx context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
				mu.Lock()
				reached[inv.InstanceID]++
				mu.Unlock()
				return awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusSuccess}
			}
			var msgs []lambdaevents.SQSMessage
			for i := 0; i < 10; i++ {
				msgs = append(msgs, sqsMessage(fmt.Sprintf("m%d", i), body(t, deleteReq(idOf(i), fmt.Sprintf("x%d", i))), 1))
			}
			if resp := r.handle(batch(msgs...)); len(resp.BatchItemFailures) != 0 {
				t.Fatalf("failures %+v", resp)
			}
			r.ssm.Wait()
			if n := r.ssm.Calls("SendCommand"); n != 1 {
				t.Fatalf("SendCommand calls = %d, want 1", n)
			}
			c := r.ssm.Commands()[0]
			if len(c.InstanceIds) != 0 || int(c.TargetCount) != fleet || c.Parameters["upTo"][0] != "10" {
				t.Fatalf("command: ids %d, targets %d, upTo %v", len(c.InstanceIds), c.TargetCount, c.Parameters["upTo"])
			}
			if len(reached) != fleet {
				t.Fatalf("%d instances reached, want %d", len(reached), fleet)
			}
			for id, n := range reached {
				if n != 1 || !strings.HasPrefix(id, "i-0000") {
					t.Errorf("instance %s reached %d times", id, n)
				}
			}
		})
	}
}

// TestOneSendCommandPerBatchOnMoto runs the push Lambda against moto's SSM
// and EC2: the tag target resolves to the 500 tagged instances.
func TestOneSendCommandPerBatchOnMoto(t *testing.T) {
	cfg := testenv.Moto(t)
	ctx := context.Background()
	for _, fleet := range []int32{1, 500} {
		t.Run(fmt.Sprint(fleet), func(t *testing.T) {
			r := newRig(t, nil)
			r.pool = testenv.UniqueName(t, "p")
			r.cfg.Pool, r.cfg.DocApply = r.pool, "AWS-RunShellScript" // moto has no volsd-Apply; it does not check parameters
			e := ec2.NewFromConfig(cfg)
			if _, err := e.RunInstances(ctx, &ec2.RunInstancesInput{
				ImageId: aws.String("ami-12c6146b"), MinCount: aws.Int32(fleet), MaxCount: aws.Int32(fleet), InstanceType: ec2types.InstanceTypeT3Micro,
				TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{{Key: aws.String("volsd:pool"), Value: aws.String(r.pool)}}}},
			}); err != nil {
				t.Fatal(err)
			}
			counting := &countingSSM{c: ssm.NewFromConfig(cfg)}
			p := push.NewPusher(r.cfg, r.st, r.s3, counting, nil, nil)
			var msgs []lambdaevents.SQSMessage
			for i := 0; i < 10; i++ {
				msgs = append(msgs, sqsMessage(fmt.Sprintf("m%d", i), body(t, deleteReq(idOf(i), fmt.Sprintf("x%d", i))), 1))
			}
			resp, _ := p.HandleSQS(ctx, batch(msgs...))
			if len(resp.BatchItemFailures) != 0 || counting.calls != 1 {
				t.Fatalf("failures %+v, SendCommand calls %d", resp.BatchItemFailures, counting.calls)
			}
			if n := len(counting.last.Command.InstanceIds); n != int(fleet) {
				t.Fatalf("moto resolved the tag target to %d instances, want %d", n, fleet)
			}
		})
	}
}

type countingSSM struct {
	mu    sync.Mutex
	c     *ssm.Client
	calls int
	last  *ssm.SendCommandOutput
}

func (c *countingSSM) SendCommand(ctx context.Context, in *ssm.SendCommandInput, opts ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	out, err := c.c.SendCommand(ctx, in, opts...)
	c.last = out
	return out, err
}

// TestMissingBlobIsRetriedThenRejected plays the SQS queue (fake, with
// maxReceiveCount 5 and a DLQ): a put whose blob never arrives is retried
// four times without a record, rejected with the reason on the fifth
// delivery, then moved to the DLQ. A put whose blob arrives after two
// deliveries is appended on the third.
func TestMissingBlobIsRetriedThenRejected(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	q := awsfake.NewSQS()
	dlq, _ := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("push-dlq")})
	dlqArn, _ := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: dlq.QueueUrl})
	main, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("push"), Attributes: map[string]string{
		"VisibilityTimeout": "360",
		"RedrivePolicy":     fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":5}`, dlqArn.Attributes["QueueArn"]),
	}})
	if err != nil {
		t.Fatal(err)
	}
	never := &events.Blob{SHA256: strings.Repeat("ab", 32), Size: 10, Mode: 0o644}
	late := []byte("late content")
	lateBlob := blobRef(late)
	for _, req := range []events.PushRequest{
		{Version: 1, RequestID: "never", Op: events.OpPut, Path: "a", Blob: never},
		{Version: 1, RequestID: "late", Op: events.OpPut, Path: "b", Blob: lateBlob},
	} {
		if _, err := q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: main.QueueUrl, MessageBody: aws.String(body(t, req))}); err != nil {
			t.Fatal(err)
		}
	}
	url := aws.ToString(main.QueueUrl)
	for delivery := 1; delivery <= 5; delivery++ {
		if delivery == 3 {
			r.put(events.BlobKey(lateBlob.SHA256), late)
		}
		d, err := q.Deliver(ctx, url, 10, r.p.HandleSQS)
		if err != nil {
			t.Fatal(err)
		}
		wantReceived, wantFailed := 2, 2
		if delivery >= 3 {
			wantReceived, wantFailed = 1, 1
		}
		if delivery == 3 {
			wantReceived = 2
		}
		if d.Received != wantReceived || d.Failed != wantFailed {
			t.Fatalf("delivery %d: %+v, want %d received, %d failed", delivery, d, wantReceived, wantFailed)
		}
		rec, err := r.st.GetRequest(ctx, "web", "never")
		switch {
		case delivery < 5 && err == nil:
			t.Fatalf("delivery %d: rejected too early: %+v", delivery, rec)
		case delivery == 5 && (err != nil || rec.State != store.RequestRejected ||
			!strings.Contains(rec.Reason, "not in the origin") || !strings.Contains(rec.Reason, "after 5 deliveries")):
			t.Fatalf("delivery 5: record %+v %v", rec, err)
		}
		q.Advance(361 * time.Second)
	}
	if j := r.journal(); len(j) != 1 || j[0].RequestID != "late" {
		t.Fatalf("journal %+v", j)
	}
	if d, _ := q.Deliver(ctx, url, 10, r.p.HandleSQS); d.Received != 0 {
		t.Fatalf("sixth delivery: %+v, want the message moved to the DLQ", d)
	}
	if dead := q.Bodies(aws.ToString(dlq.QueueUrl)); len(dead) != 1 || !strings.Contains(dead[0], `"never"`) {
		t.Fatalf("DLQ holds %v", dead)
	}
	rej, _ := r.st.ListRejected(ctx, "web", 10)
	if len(rej) != 1 || rej[0].RequestID != "never" {
		t.Fatalf("rejected list %+v", rej)
	}
}

// TestRetryableFailuresRecordNothing: S3 throttling on the origin check and
// a throttled SendCommand fail the items without a rejection; the next
// delivery appends nothing twice and sends the command.
func TestRetryableFailuresRecordNothing(t *testing.T) {
	fake := awsfake.NewS3()
	r := newRig(t, fake)
	ctx := context.Background()
	blob := r.blob("x")
	m := sqsMessage("m1", body(t, events.PushRequest{RequestID: "p1", Op: events.OpPut, Path: "x", Blob: blob}), 1)
	fake.FailNext("HeadObject", 1, &smithy.GenericAPIError{Code: "SlowDown", Message: "Please reduce your request rate.", Fault: smithy.FaultServer})
	if resp := r.handle(batch(m)); !failedIDs(resp)["m1"] {
		t.Fatalf("throttled origin check did not fail the item: %+v", resp)
	}
	if _, err := r.st.GetRequest(ctx, "web", "p1"); err == nil {
		t.Fatal("a throttled check recorded the request")
	}

	throttle := &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"}
	r.ssm.FailNext("SendCommand", 4, throttle)
	m.Attributes["ApproximateReceiveCount"] = "2"
	if resp := r.handle(batch(m)); !failedIDs(resp)["m1"] {
		t.Fatalf("failed SendCommand did not fail the item: %+v", resp)
	}
	if n := r.ssm.Calls("SendCommand"); n != 4 {
		t.Fatalf("SendCommand tried %d times, want 4 (in-call retries)", n)
	}
	if rec, err := r.st.GetRequest(ctx, "web", "p1"); err != nil || rec.State != store.RequestAppended || rec.Seq != 1 {
		t.Fatalf("request after a failed fan-out: %+v %v", rec, err)
	}
	m.Attributes["ApproximateReceiveCount"] = "3"
	if resp := r.handle(batch(m)); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("third delivery: %+v", resp)
	}
	if j := r.journal(); len(j) != 1 {
		t.Fatalf("journal %d entries", len(j))
	}
	if cmds := r.ssm.Commands(); len(cmds) != 1 || cmds[0].Parameters["upTo"][0] != "1" {
		t.Fatalf("commands %+v", cmds)
	}
}

// TestInvalidSendCommandConfigurationFailsLoudly: an unknown document is
// not retried in the call, the item fails (to be redelivered, then DLQ),
// the request stays appended.
func TestInvalidSendCommandConfigurationFailsLoudly(t *testing.T) {
	r := newRig(t, nil)
	r.cfg.DocApply = "volsd-Missing"
	r.reset()
	resp := r.handle(batch(sqsMessage("m1", body(t, deleteReq("d1", "x")), 1)))
	if !failedIDs(resp)["m1"] || r.ssm.Calls("SendCommand") != 1 {
		t.Fatalf("resp %+v, calls %d", resp, r.ssm.Calls("SendCommand"))
	}
	if !strings.Contains(r.logs.String(), "InvalidDocument") {
		t.Fatalf("the log does not name the error:\n%s", r.logs)
	}
}

func blobRef(content []byte) *events.Blob {
	return &events.Blob{SHA256: sha(content), Size: int64(len(content)), Mode: 0o644}
}

// TestStopsBeforeTheDeadline: with less time left than the margin, the
// handler starts nothing: every item fails (SQS redelivers it), nothing is
// appended or recorded.
func TestStopsBeforeTheDeadline(t *testing.T) {
	// lambdamain.WithDeadlineMargin's rule: with less than twice the
	// margin left the handler gets half of it; with none left, nothing is
	// done and every message is retried.
	r := newRig(t, nil)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now())
	defer cancel()
	r.cfg.Margin = 5 * time.Second
	r.reset()
	resp, err := r.p.HandleSQS(ctx, batch(
		sqsMessage("m1", body(t, deleteReq("d1", "x")), 1),
		sqsMessage("m2", `{"version":1,"requestId":"bad","op":"delete","path":"../x"}`, 1),
	))
	if err != nil || len(resp.BatchItemFailures) != 2 {
		t.Fatalf("resp %+v %v", resp, err)
	}
	if j := r.journal(); len(j) != 0 {
		t.Fatalf("appended past the margin: %+v", j)
	}
	if _, err := r.st.GetRequest(context.Background(), "web", "bad"); err == nil {
		t.Fatal("recorded a rejection past the margin")
	}
}
