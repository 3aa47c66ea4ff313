package push_test

import (
	"slices"
	"strconv"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"

	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/testenv"
)

// TestPushLagSecondsIsEmitted: a batch that appends requests emits
// PushLagSeconds (namespace volsd, dimension Pool, the metric the
// dashboard reads) as the longest wait from SQS's SentTimestamp to the
// append; a batch of duplicates appends nothing new and emits none.
func TestPushLagSecondsIsEmitted(t *testing.T) {
	r := newRig(t, nil)
	out := &testenv.Buffer{}
	r.p = push.NewPusher(r.cfg, r.st, r.s3, r.ssm, nil, metrics.New(out))
	sent := func(id, reqID string, ago time.Duration) lambdaevents.SQSMessage {
		m := sqsMessage(id, body(t, deleteReq(reqID, "p/"+reqID)), 1)
		m.Attributes["SentTimestamp"] = strconv.FormatInt(time.Now().Add(-ago).UnixMilli(), 10)
		return m
	}
	msgs := []lambdaevents.SQSMessage{sent("m1", "lag-1", 90*time.Second), sent("m2", "lag-2", 30*time.Second)}
	if f := failedIDs(r.handle(batch(msgs...))); len(f) != 0 {
		t.Fatalf("failed %v", f)
	}
	lags := lagValues(t, out.String())
	if len(lags) != 1 || lags[0] < 90 || lags[0] > 150 {
		t.Fatalf("PushLagSeconds %v, want one value of about 90 s", lags)
	}
	for _, l := range metrics.ParseLines([]byte(out.String())) {
		if l.Name == metrics.PushLagSeconds && (l.Namespace != metrics.Namespace || !slices.Equal(l.Dimensions, metrics.Read[metrics.PushLagSeconds]) || l.Values["Pool"] != r.pool) {
			t.Fatalf("PushLagSeconds line %+v, want namespace %s, dimensions %v", l, metrics.Namespace, metrics.Read[metrics.PushLagSeconds])
		}
	}
	before := len(lags)
	r.handle(batch(msgs...)) // redelivered: duplicates
	if got := lagValues(t, out.String()); len(got) != before {
		t.Fatalf("duplicates emitted PushLagSeconds %v", got[before:])
	}
}

func lagValues(t *testing.T, out string) []float64 {
	return metrics.Values([]byte(out), metrics.PushLagSeconds)
}
