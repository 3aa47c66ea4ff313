package push_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/store"
)

// memJournal is an in-memory push.Journal for the fuzz target: request
// records and a gapless journal, with the store's rules (first record
// wins, rejected requests never append).
type memJournal struct {
	mu      sync.Mutex
	reqs    map[string]store.Request
	entries []events.JournalEntry
}

func (j *memJournal) GetRequest(_ context.Context, pool, id string) (store.Request, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.reqs[id]
	if !ok {
		return r, store.ErrNotFound
	}
	return r, nil
}

func (j *memJournal) AppendBatch(_ context.Context, pool string, es []events.JournalEntry) ([]store.Appended, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]store.Appended, len(es))
	for i, e := range es {
		out[i].RequestID = e.RequestID
		if r, ok := j.reqs[e.RequestID]; ok {
			out[i].Seq, out[i].Dup = r.Seq, true
			if r.State == store.RequestRejected {
				out[i].Seq, out[i].Err = 0, store.ErrRejected
			}
			continue
		}
		e.Seq = int64(len(j.entries) + 1)
		j.entries = append(j.entries, e)
		j.reqs[e.RequestID] = store.Request{RequestID: e.RequestID, State: store.RequestAppended, Seq: e.Seq}
		out[i].Seq = e.Seq
	}
	return out, nil
}

// PreviousSync returns the newest sync entry of path (the store's rule
// without expiry: the fuzz journal never compacts).
func (j *memJournal) PreviousSync(_ context.Context, pool, path string) (events.JournalEntry, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for k := len(j.entries) - 1; k >= 0; k-- {
		if e := j.entries[k]; e.Op == events.OpSync && e.Path == path && e.Manifest != nil {
			return e, true, nil
		}
	}
	return events.JournalEntry{}, false, nil
}

func (j *memJournal) RejectRequest(_ context.Context, pool string, rej store.Rejection) (store.Request, bool, error) {
	if err := events.ValidateRequestID("requestId", rej.RequestID); err != nil {
		return store.Request{}, false, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if r, ok := j.reqs[rej.RequestID]; ok {
		return r, false, nil
	}
	r := store.Request{RequestID: rej.RequestID, State: store.RequestRejected, Reason: rej.Reason}
	j.reqs[rej.RequestID] = r
	return r, true, nil
}

// FuzzPushMessage runs the push Lambda's decoder and validator on
// arbitrary bodies, against an origin that holds one blob and one valid
// manifest. Properties:
//   - DecodeMessage never panics; its RecordID is always a valid request ID
//     (it becomes a DynamoDB key); an error is always a ValidationError; an
//     accepted request passes Validate and keeps its own ID;
//   - the handler accepts a message only if DecodeMessage accepted it, and
//     then the journal holds exactly that request; every other message is a
//     batch item failure with a rejection or nothing recorded — never an
//     entry;
//   - every path that reaches the journal passes ValidatePath (or is the
//     root of a sync).
func FuzzPushMessage(f *testing.F) {
	content := []byte("hello")
	blobSHA := sha(content)
	man := []byte(`{"version":1,"entries":[{"path":"a/b.txt","sha256":"` + blobSHA + `","size":5,"mode":420}]}` + "\n")
	manSHA := sha(man)
	seeds := []string{
		`{"version":1,"requestId":"r1","op":"put","path":"a.txt","blob":{"sha256":"` + blobSHA + `","size":5,"mode":420}}`,
		`{"version":1,"requestId":"r2","op":"put","path":"a.txt","blob":{"sha256":"` + blobSHA + `","size":6,"mode":420}}`,
		`{"version":1,"requestId":"r3","op":"sync","path":".","manifest":{"sha256":"` + manSHA + `"}}`,
		`{"version":1,"requestId":"r4","op":"sync","path":"site","manifest":{"sha256":"` + okSHA + `"}}`,
		`{"version":1,"requestId":"r5","op":"delete","path":"x/y"}`,
		`{"version":1,"requestId":"r6","op":"delete","path":"../x"}`,
		`{"version":1,"requestId":"r/7","op":"delete","path":"x"}`,
		`{"version":1,"requestId":"r8","op":"delete","path":".volsd"}`,
		`{"version":1,"requestId":"r9","op":"delete","path":"x"}{}`,
		`{"version":1,"requestId":"r10","op":"put","path":"a\u0000b","blob":{"sha256":"` + blobSHA + `","size":5,"mode":420}}`,
		`{"version":1,"requestId":"r11","op":"put","path":"a","blob":{"sha256":"` + blobSHA + `","size":5,"mode":2541}}`,
		"{\"version\":1,\"requestId\":\"r12\",\"op\":\"delete\",\"path\":\"a\xffb\"}",
		`{}`, `[]`, `null`, ``, `"x"`, `{"version":1e400}`, `{"requestId":{"x":1}}`,
	}
	for _, s := range seeds {
		f.Add("11111111-2222-3333-4444-555555555555", s)
	}
	f.Add("not a uuid/../", `{"version":1,"requestId":"","op":"delete","path":"a"}`)
	f.Fuzz(func(t *testing.T, messageID, body string) {
		m := push.DecodeMessage(messageID, body)
		if err := events.ValidateRequestID("id", m.RecordID); err != nil {
			t.Fatalf("RecordID %q is not a valid request ID: %v", m.RecordID, err)
		}
		if m.Err != nil {
			var ve *events.ValidationError
			if !errors.As(m.Err, &ve) {
				t.Fatalf("error %T is not a ValidationError: %v", m.Err, m.Err)
			}
		} else {
			if err := m.Request.Validate(); err != nil || m.RecordID != m.Request.RequestID {
				t.Fatalf("accepted %+v: %v, record %q", m.Request, err, m.RecordID)
			}
		}

		origin := awsfake.NewS3("origin")
		ctx := context.Background()
		for key, data := range map[string][]byte{events.BlobKey(blobSHA): content, events.ManifestKey(manSHA): man} {
			if _, err := origin.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("origin"), Key: aws.String(key), Body: strings.NewReader(string(data)), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256}); err != nil {
				t.Fatal(err)
			}
		}
		j := &memJournal{reqs: map[string]store.Request{}}
		ssmFake := awsfake.NewSSM()
		ssmFake.AddDocument("volsd-Apply", map[string]string{"upTo": `^[0-9]{1,20}$`})
		p := push.NewPusher(push.Config{Pool: "web", Bucket: "origin", DocApply: "volsd-Apply", MaxConcurrency: "50%", MaxErrors: "0", MissingReceives: 1}, j, origin, ssmFake, nil, nil)
		resp, err := p.HandleSQS(ctx, lambdaevents.SQSEvent{Records: []lambdaevents.SQSMessage{{MessageId: messageID, Body: body, Attributes: map[string]string{"ApproximateReceiveCount": "1"}}}})
		if err != nil {
			t.Fatal(err)
		}
		failed := len(resp.BatchItemFailures) == 1
		switch {
		case m.Err != nil && (!failed || len(j.entries) != 0):
			t.Fatalf("invalid body (%v) accepted: failures %v, journal %+v", m.Err, resp.BatchItemFailures, j.entries)
		case !failed && (len(j.entries) != 1 || j.entries[0].RequestID != m.Request.RequestID):
			t.Fatalf("accepted without exactly its entry: %+v", j.entries)
		case failed && len(j.entries) != 0:
			t.Fatalf("failed item left entries: %+v", j.entries)
		case failed:
			if r, ok := j.reqs[m.RecordID]; !ok || r.State != store.RequestRejected || r.Reason == "" {
				t.Fatalf("failed without a rejection under %q: %+v", m.RecordID, j.reqs)
			}
		}
		for _, e := range j.entries {
			if !(e.Op == events.OpSync && e.Path == events.RootPath) {
				if err := events.ValidatePath("path", e.Path); err != nil {
					t.Fatalf("journal holds a bad path: %v", err)
				}
			}
			if ssmFake.Calls("SendCommand") != 1 {
				t.Fatalf("SendCommand calls %d", ssmFake.Calls("SendCommand"))
			}
		}
	})
}
