package push_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"testing"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

// rig is one test's push pipeline: a fresh table on DynamoDB Local, a
// bucket on moto (or the S3 fake), and the SSM fake.
type rig struct {
	t      testing.TB
	pool   string
	bucket string
	st     *store.Store
	s3     objectStore
	ssm    *awsfake.SSM
	cfg    push.Config
	logs   *testenv.Buffer
	p      *push.Pusher
}

// objectStore is what tests write the origin with.
type objectStore interface {
	push.S3Origin
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	CreateBucket(ctx context.Context, in *s3.CreateBucketInput, optFns ...func(*s3.Options)) (*s3.CreateBucketOutput, error)
}

func motoS3(t testing.TB) *s3.Client {
	return s3.NewFromConfig(testenv.Moto(t), func(o *s3.Options) { o.UsePathStyle = true })
}

// newRig builds a rig; origin nil means a fresh moto bucket.
func newRig(t testing.TB, origin objectStore) *rig {
	t.Helper()
	if origin == nil {
		origin = motoS3(t)
	}
	r := &rig{t: t, pool: "web", bucket: testenv.UniqueName(t, "origin"), st: storetest.New(t), s3: origin, ssm: awsfake.NewSSM(), logs: &testenv.Buffer{}}
	if _, err := origin.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &r.bucket}); err != nil {
		t.Fatal(err)
	}
	r.ssm.AddDocument("volsd-Apply", map[string]string{"upTo": `^[0-9]{1,20}$`})
	r.cfg = push.Config{Pool: r.pool, Bucket: r.bucket, DocApply: "volsd-Apply", MaxConcurrency: "50%", MaxErrors: "25%", MissingReceives: 5}
	r.reset()
	return r
}

// reset rebuilds the Pusher after a change of r.cfg.
func (r *rig) reset() {
	log := slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.p = push.NewPusher(r.cfg, r.st, r.s3, r.ssm, log, nil)
}

// blob puts content into the origin and returns its reference.
func (r *rig) blob(content string) *events.Blob {
	r.t.Helper()
	sum := sha256.Sum256([]byte(content))
	sha := hex.EncodeToString(sum[:])
	r.put(events.BlobKey(sha), []byte(content))
	return &events.Blob{SHA256: sha, Size: int64(len(content)), Mode: 0o644}
}

func (r *rig) put(key string, data []byte) {
	r.t.Helper()
	if _, err := r.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &r.bucket, Key: aws.String(key), Body: bytes.NewReader(data), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256}); err != nil {
		r.t.Fatal(err)
	}
}

// manifest uploads the files (path → content) and their manifest and
// returns the manifest's sha256.
func (r *rig) manifest(files map[string]string) string {
	r.t.Helper()
	m := events.Manifest{Version: events.ManifestVersion}
	for p, c := range files {
		b := r.blob(c)
		m.Entries = append(m.Entries, events.ManifestEntry{Path: p, Type: events.TypeFile, SHA256: b.SHA256, Size: b.Size, Mode: b.Mode})
	}
	raw, err := m.Canonical()
	if err != nil {
		r.t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	sha := hex.EncodeToString(sum[:])
	r.put(events.ManifestKey(sha), raw)
	return sha
}

func body(t testing.TB, req events.PushRequest) string {
	t.Helper()
	if req.Version == 0 {
		req.Version = events.PushVersion
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sqsMessage(id, body string, receives int) lambdaevents.SQSMessage {
	return lambdaevents.SQSMessage{
		MessageId: id, ReceiptHandle: "rh-" + id, Body: body, EventSource: "aws:sqs",
		Attributes: map[string]string{"ApproximateReceiveCount": strconv.Itoa(receives)},
	}
}

func batch(msgs ...lambdaevents.SQSMessage) lambdaevents.SQSEvent {
	return lambdaevents.SQSEvent{Records: msgs}
}

func failedIDs(resp lambdaevents.SQSEventResponse) map[string]bool {
	out := map[string]bool{}
	for _, f := range resp.BatchItemFailures {
		out[f.ItemIdentifier] = true
	}
	return out
}

func (r *rig) handle(ev lambdaevents.SQSEvent) lambdaevents.SQSEventResponse {
	r.t.Helper()
	resp, err := r.p.HandleSQS(context.Background(), ev)
	if err != nil {
		r.t.Fatalf("HandleSQS returned an error: %v", err)
	}
	return resp
}

// journal returns the pool's whole journal (store.Entries checks for gaps).
func (r *rig) journal() []events.JournalEntry {
	r.t.Helper()
	es, err := r.st.Entries(context.Background(), r.pool, 0, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return es
}

func deleteReq(id, path string) events.PushRequest {
	return events.PushRequest{RequestID: id, Op: events.OpDelete, Path: path}
}

func idOf(i int) string { return fmt.Sprintf("req-%05d", i) }

func sha(content []byte) string {
	sum := sha256.Sum256(content)
	return hex.EncodeToString(sum[:])
}
