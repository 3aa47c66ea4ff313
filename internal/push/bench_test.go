package push_test

import (
	"context"
	"fmt"
	"testing"

	lambdaevents "github.com/aws/aws-lambda-go/events"

	"github.com/volsd/volsd/events"
)

// BenchmarkBatchOf10 compares, on DynamoDB Local, the store's AppendBatch
// of 10 requests (the baseline: the journal write alone) with the push
// Lambda's handling of a batch of 10 deletes (request reads, the same
// append, one SendCommand to the SSM fake) and of 10 puts (plus one
// HeadObject each on moto).
func BenchmarkBatchOf10(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline-AppendBatch", func(b *testing.B) {
		r := newRig(b, nil)
		for i := 0; b.Loop(); i++ {
			var es []events.JournalEntry
			for k := 0; k < 10; k++ {
				es = append(es, events.JournalEntry{Op: events.OpDelete, Path: "x", RequestID: fmt.Sprintf("b%d-%d", i, k)})
			}
			if _, err := r.st.AppendBatch(ctx, "web", es); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, kind := range []string{"deletes", "puts"} {
		b.Run("HandleSQS-"+kind, func(b *testing.B) {
			r := newRig(b, nil)
			blob := r.blob("bench")
			for i := 0; b.Loop(); i++ {
				var msgs []lambdaevents.SQSMessage
				for k := 0; k < 10; k++ {
					req := deleteReq(fmt.Sprintf("b%d-%d", i, k), "x")
					if kind == "puts" {
						req = events.PushRequest{RequestID: req.RequestID, Op: events.OpPut, Path: "x", Blob: blob}
					}
					msgs = append(msgs, sqsMessage(req.RequestID, body(b, req), 1))
				}
				if resp := r.handle(batch(msgs...)); len(resp.BatchItemFailures) != 0 {
					b.Fatal(resp)
				}
			}
		})
	}
}
