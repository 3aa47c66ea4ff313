package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

// countingS3 counts the calls that write to the origin.
type countingS3 struct {
	*s3.Client
	mu     sync.Mutex
	writes map[string]int
}

func (c *countingS3) count(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes[op]++
}

func (c *countingS3) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.writes {
		n += v
	}
	return n
}

func (c *countingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c.count("PutObject")
	return c.Client.PutObject(ctx, in, o...)
}

func (c *countingS3) UploadPart(ctx context.Context, in *s3.UploadPartInput, o ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	c.count("UploadPart")
	return c.Client.UploadPart(ctx, in, o...)
}

func (c *countingS3) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, o ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	c.count("CreateMultipartUpload")
	return c.Client.CreateMultipartUpload(ctx, in, o...)
}

// world is one test's pool: DynamoDB Local, a bucket and a queue on moto,
// the push and report Lambdas in process, and fake agents behind the SSM
// fake.
type world struct {
	t      testing.TB
	cfg    cli.Config
	s3     *countingS3
	sqs    *sqs.Client
	st     *store.Store
	ssm    *awsfake.SSM
	pusher *push.Pusher
	rep    *report.Reporter
	// agent decides what an instance's agent reports for upTo.
	agentMu sync.Mutex
	agent   func(instance string, upTo int64) (ssmtypes.CommandInvocationStatus, events.AgentReport)
	// deliveries are the report Lambda's runs still in flight; the test's
	// cleanup waits for them (they outlive a --wait that returned early).
	deliveries sync.WaitGroup
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ctx := context.Background()
	moto := testenv.Moto(t)
	w := &world{t: t, ssm: awsfake.NewSSM(), st: storetest.New(t)}
	w.cfg = cli.Config{Pool: "web", Table: w.st.Table(), Bucket: testenv.UniqueName(t, "origin"), Region: testenv.Region}
	w.s3 = &countingS3{Client: s3.NewFromConfig(moto, func(o *s3.Options) { o.UsePathStyle = true }), writes: map[string]int{}}
	if _, err := w.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &w.cfg.Bucket}); err != nil {
		t.Fatal(err)
	}
	w.sqs = sqs.NewFromConfig(moto)
	q, err := w.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(testenv.UniqueName(t, "push"))})
	if err != nil {
		t.Fatal(err)
	}
	w.cfg.QueueURL = aws.ToString(q.QueueUrl)
	w.ssm.AddDocument("volsd-Apply", map[string]string{"upTo": `^[0-9]{1,20}$`})
	// MaxErrors 100%: these tests follow every instance's own outcome. The
	// SSM model enforces MaxErrors as Run Command does (25% of 3 instances
	// allows 0 errors: the first failure cancels the invocations not yet
	// sent), which would turn one failing agent into three failed ones.
	w.pusher = push.NewPusher(push.Config{Pool: "web", Bucket: w.cfg.Bucket, DocApply: "volsd-Apply", MaxConcurrency: "50%", MaxErrors: "100%", MissingReceives: 1}, w.st, w.s3, w.ssm, nil, nil)
	w.rep = report.NewReporter(report.Config{Pool: "web", Documents: []string{"volsd-Apply"}, InvocationWait: 10 * time.Second}, w.st, w.ssm, nil, nil)
	w.agent = func(instance string, upTo int64) (ssmtypes.CommandInvocationStatus, events.AgentReport) {
		return ssmtypes.CommandInvocationStatusSuccess, events.AgentReport{Command: "apply", Instance: instance, Seq: upTo, Head: upTo}
	}
	w.ssm.Runner = func(ctx context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		var upTo int64
		fmt.Sscan(inv.Parameters["upTo"][0], &upTo)
		w.agentMu.Lock()
		status, rep := w.agent(inv.InstanceID, upTo)
		w.agentMu.Unlock()
		line, _ := json.Marshal(rep)
		return awsfake.SSMResult{Status: status, Stdout: "applied\n" + string(line) + "\n"}
	}
	w.ssm.OnEvent = func(raw []byte) {
		w.deliveries.Go(func() { // EventBridge delivers asynchronously
			if err := w.rep.HandleEvent(context.Background(), raw); err != nil {
				t.Errorf("report Lambda: %v", err)
			}
		})
	}
	t.Cleanup(func() { // before the table and the buckets go
		w.ssm.Wait()
		w.deliveries.Wait()
	})
	return w
}

// instance registers a running instance with the table and SSM.
func (w *world) instance(id string, state store.InstanceState, managed bool) {
	w.t.Helper()
	if _, err := w.st.PutInstance(context.Background(), store.Instance{Pool: "web", InstanceID: id, AZ: "eu-west-1a", State: state}); err != nil {
		w.t.Fatal(err)
	}
	if managed {
		w.ssm.AddInstance(id, map[string]string{"volsd:pool": "web"})
	}
}

// pump plays the SQS event source: it feeds the queue to the push Lambda
// until ctx ends.
func (w *world) pump(ctx context.Context) {
	for ctx.Err() == nil {
		out, err := w.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &w.cfg.QueueURL, MaxNumberOfMessages: 10, VisibilityTimeout: 1,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll}})
		if err != nil || len(out.Messages) == 0 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		var ev lambdaevents.SQSEvent
		for _, m := range out.Messages {
			ev.Records = append(ev.Records, lambdaevents.SQSMessage{MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle), Body: aws.ToString(m.Body), Attributes: m.Attributes})
		}
		resp, _ := w.pusher.HandleSQS(ctx, ev)
		failed := map[string]bool{}
		for _, f := range resp.BatchItemFailures {
			failed[f.ItemIdentifier] = true
		}
		for _, m := range out.Messages {
			if !failed[aws.ToString(m.MessageId)] {
				_, _ = w.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &w.cfg.QueueURL, ReceiptHandle: m.ReceiptHandle})
			}
		}
	}
}

func (w *world) connect(ctx context.Context, cfg cli.Config) (cli.Clients, error) {
	return cli.Clients{S3: w.s3, SQS: w.sqs, State: w.st}, nil
}

// run runs the CLI and returns its exit code, stdout and stderr.
func (w *world) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := map[string]string{
		cli.EnvPool: w.cfg.Pool, cli.EnvTable: w.cfg.Table, cli.EnvBucket: w.cfg.Bucket, cli.EnvQueueURL: w.cfg.QueueURL,
	}
	code := cli.Main(context.Background(), args, cli.IO{Out: &out, Err: &errb}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, w.connect)
	return code, out.String(), errb.String()
}

func writeTree(t testing.TB, files map[string]string) string {
	t.Helper()
	d := t.TempDir()
	for p, c := range files {
		full := filepath.Join(d, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestPushUploadsOnlyMissingBlobs: the first push of a tree uploads each
// distinct blob once and the manifest; the second push of the same tree
// writes nothing to the origin and still sends a new request; changing one
// file uploads that blob and the new manifest only. A file above the part
// size goes up in parts, intact.
func TestPushUploadsOnlyMissingBlobs(t *testing.T) {
	w := newWorld(t)
	big := bytes.Repeat([]byte("volsd multipart "), (6<<20)/16+7) // > 5 MiB part size
	dir := writeTree(t, map[string]string{
		"index.html": "<h1>hi</h1>", "about/index.html": "<h1>hi</h1>", // same content: one blob
		"css/site.css": "body{}", "img/empty.png": "", "video/big.bin": string(big),
	})
	code, out, errs := w.run("push", "--json", "--part-size", "5", dir, "/site/")
	if code != 0 {
		t.Fatalf("first push: exit %d\n%s\n%s", code, out, errs)
	}
	var first cli.Sent
	if err := json.Unmarshal([]byte(out), &first); err != nil {
		t.Fatal(err)
	}
	if first.Op != events.OpSync || first.Path != "site" || first.Files != 5 || first.UploadedBlobs != 4 || first.PresentBlobs != 0 || !first.ManifestUploaded {
		t.Fatalf("first push: %+v", first)
	}
	if w.s3.writes["CreateMultipartUpload"] != 1 || w.s3.writes["UploadPart"] < 2 {
		t.Fatalf("the big file was not uploaded in parts: %v", w.s3.writes)
	}
	got, err := w.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &w.cfg.Bucket, Key: aws.String(events.BlobKey(shaHex(big)))})
	if err != nil {
		t.Fatal(err)
	}
	back, _ := io.ReadAll(got.Body)
	if !bytes.Equal(back, big) {
		t.Fatalf("multipart blob came back with %d bytes", len(back))
	}
	mo, err := w.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &w.cfg.Bucket, Key: aws.String(events.ManifestKey(first.Manifest))})
	if err != nil {
		t.Fatal(err)
	}
	m, err := events.ParseManifest(mo.Body)
	files := 0
	for _, e := range m.Entries {
		if e.Kind() == events.TypeFile {
			files++
		}
	}
	if err != nil || files != 5 || len(m.Entries) != 10 { // and the root and 4 directories
		t.Fatalf("manifest in the origin: %+v %v", m, err)
	}

	w.deliver(context.Background(), t) // the first sync in the journal: its blobs are vouched for
	before := w.s3.Writes()
	code, out, errs = w.run("push", "--json", "--part-size", "5", dir, "/site/")
	if code != 0 {
		t.Fatalf("second push: exit %d\n%s", code, errs)
	}
	var second cli.Sent
	_ = json.Unmarshal([]byte(out), &second)
	if n := w.s3.Writes() - before; n != 0 || second.UploadedBlobs != 0 || second.PresentBlobs != 4 || second.ManifestUploaded {
		t.Fatalf("second push of the same tree wrote %d objects: %+v", n, second)
	}
	if second.RequestID == first.RequestID || second.Manifest != first.Manifest {
		t.Fatalf("second request %s/%s vs %s/%s", second.RequestID, second.Manifest, first.RequestID, first.Manifest)
	}

	if err := os.WriteFile(filepath.Join(dir, "css", "site.css"), []byte("body{color:red}"), 0o644); err != nil {
		t.Fatal(err)
	}
	before = w.s3.Writes()
	code, out, _ = w.run("push", "--json", dir, "site")
	var third cli.Sent
	_ = json.Unmarshal([]byte(out), &third)
	if code != 0 || w.s3.Writes()-before != 2 || third.UploadedBlobs != 1 || !third.ManifestUploaded {
		t.Fatalf("after one change: exit %d, %d writes, %+v", code, w.s3.Writes()-before, third)
	}

	// Every message on the queue is a valid v1 request.
	msgs, err := w.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &w.cfg.QueueURL, MaxNumberOfMessages: 10})
	if err != nil || len(msgs.Messages) != 2 {
		t.Fatalf("queue holds %d messages, %v", len(msgs.Messages), err)
	}
	for _, m := range msgs.Messages {
		if r, err := events.ParsePushRequest([]byte(aws.ToString(m.Body))); err != nil || r.Op != events.OpSync || r.Path != "site" {
			t.Fatalf("message %s: %+v %v", aws.ToString(m.Body), r, err)
		}
	}
}

// TestPushWaitFollowsTheFleet runs the whole pipeline: the CLI pushes, the
// push Lambda appends and fans out, the fake agents apply and report, the
// report Lambda records, and --wait ends when every running instance has
// caught up — or fails naming the instance whose agent reported an error,
// or the one that never answered.
func TestPushWaitFollowsTheFleet(t *testing.T) {
	w := newWorld(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go w.pump(ctx)
	for _, id := range []string{"i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3"} {
		w.instance(id, store.InstanceReady, true)
	}
	w.instance("i-0aaaaaaaaaaaaaaa9", store.InstanceTerminating, false) // not waited for
	dir := writeTree(t, map[string]string{"index.html": "v1"})

	code, out, errs := w.run("push", "--wait", "--timeout", "30s", dir, "site")
	if code != cli.ExitOK || !strings.Contains(out, "all 3 running instances caught up") {
		t.Fatalf("wait: exit %d\n%s\n%s", code, out, errs)
	}
	for _, id := range []string{"i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3"} {
		if in, _ := w.st.GetInstance(ctx, "web", id); in.Seq != 1 {
			t.Fatalf("%s at seq %d", id, in.Seq)
		}
	}

	// One agent fails: --wait fails at once, naming it and its error.
	w.agentMu.Lock()
	w.agent = func(instance string, upTo int64) (ssmtypes.CommandInvocationStatus, events.AgentReport) {
		if instance == "i-0aaaaaaaaaaaaaaa2" {
			return ssmtypes.CommandInvocationStatusFailed, events.AgentReport{Command: "apply", Instance: instance, Seq: upTo - 1, Error: "rsync: No space left on device (28)", ErrorKind: "retryable"}
		}
		return ssmtypes.CommandInvocationStatusSuccess, events.AgentReport{Command: "apply", Instance: instance, Seq: upTo}
	}
	w.agentMu.Unlock()
	start := time.Now()
	code, out, errs = w.run("delete", "--wait", "--timeout", "60s", "site/index.html")
	// The others may still be behind when the failure surfaces (then the
	// message lists them as behind); neither may be named as failed.
	failedPart, _, _ := strings.Cut(errs, "; still behind")
	if code != cli.ExitFailed || !strings.Contains(failedPart, "failed on i-0aaaaaaaaaaaaaaa2") || !strings.Contains(failedPart, "No space left") ||
		strings.Contains(failedPart, "i-0aaaaaaaaaaaaaaa1") || strings.Contains(failedPart, "i-0aaaaaaaaaaaaaaa3") {
		t.Fatalf("failing agent: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("the failure took %s to surface", time.Since(start))
	}

	// An instance that never answers: --wait times out naming it.
	w.agentMu.Lock()
	w.agent = func(instance string, upTo int64) (ssmtypes.CommandInvocationStatus, events.AgentReport) {
		return ssmtypes.CommandInvocationStatusSuccess, events.AgentReport{Command: "apply", Instance: instance, Seq: upTo}
	}
	w.agentMu.Unlock()
	w.instance("i-0aaaaaaaaaaaaaaa4", store.InstanceReady, false) // running, but SSM never reaches it
	code, out, errs = w.run("push", "--json", "--wait", "--timeout", "4s", dir, "site")
	if code != cli.ExitTimeout || !strings.Contains(errs, "i-0aaaaaaaaaaaaaaa4") || strings.Contains(errs, "i-0aaaaaaaaaaaaaaa1 (") {
		t.Fatalf("silent instance: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	var res struct {
		Wait cli.Waited `json:"wait"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Wait.Outcome != cli.WaitTimeout || len(res.Wait.Instances) != 4 {
		t.Fatalf("JSON result %s: %v", out, err)
	}
}

// TestWaitReportsARejectedRequest: a blob deleted from the origin before
// the push Lambda sees the request: the request is rejected and --wait
// says why, with exit code 3.
func TestWaitReportsARejectedRequest(t *testing.T) {
	w := newWorld(t)
	dir := writeTree(t, map[string]string{"a.txt": "soon gone"})
	code, out, errs := w.run("push", "--json", dir+"/a.txt", "a.txt")
	if code != 0 {
		t.Fatalf("push: %d %s", code, errs)
	}
	var s cli.Sent
	_ = json.Unmarshal([]byte(out), &s)
	if _, err := w.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &w.cfg.Bucket, Key: aws.String(events.BlobKey(s.Blob.SHA256))}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go w.pump(ctx)
	a := &cli.App{Cfg: w.cfg, State: w.st, Poll: 100 * time.Millisecond}
	wt, err := a.Wait(ctx, s.RequestID, s.SentAt, 20*time.Second)
	var we *cli.WaitError
	if !errors.As(err, &we) || wt.Outcome != cli.WaitRejected || !strings.Contains(wt.Reason, "not in the origin") {
		t.Fatalf("wait: %+v %v", wt, err)
	}
	code, out, _ = w.run("status", "--json")
	var st cli.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || len(st.Rejected) != 1 || st.Rejected[0].RequestID != s.RequestID {
		t.Fatalf("status after the rejection: %d %s %v", code, out, err)
	}
}

// TestProgressOnATerminal: with a terminal, uploads draw a progress bar on
// stderr; without one, stderr stays quiet.
func TestProgressOnATerminal(t *testing.T) {
	w := newWorld(t)
	for _, terminal := range []bool{true, false} {
		var errb bytes.Buffer
		a := &cli.App{Cfg: w.cfg, S3: w.s3, SQS: w.sqs, State: w.st, Err: &errb, Progress: terminal}
		dir := writeTree(t, map[string]string{"f.bin": strings.Repeat(fmt.Sprint(terminal), 300000)})
		if _, err := a.Push(context.Background(), dir, "p"); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(errb.String(), "uploading 1 blobs"); got != terminal {
			t.Errorf("terminal=%v: progress shown=%v (%q)", terminal, got, errb.String())
		}
	}
}
