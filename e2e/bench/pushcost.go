package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/store"
)

// PushCostOptions configure the push-cost benchmark (issue 23).
type PushCostOptions struct {
	WorkDir string
	// Tree is copied into WorkDir and pushed (default: the Go
	// distribution's src, over 10,000 files).
	Tree                 string
	Runs                 int
	LambdaEntries        int // entries of the push Lambda's big manifest (1M)
	DynamoDBURL, MotoURL string
	Log                  func(string, ...any)
}

// PushCostResult compares `volsd push` (the CLI in process, and the push
// Lambda in process for the journal) with `aws s3 sync` of the same tree to
// the same moto, and measures the push Lambda on a 1M-entry manifest.
type PushCostResult struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// First, Unchanged and OneFile are the CLI's wall time beside aws s3
	// sync's for the first push (each run into fresh buckets), an
	// unchanged re-push and a one-file change.
	FirstVolsd      Sample `json:"first_volsd_seconds"`
	FirstS3Sync     Sample `json:"first_s3sync_seconds"`
	UnchangedVolsd  Sample `json:"unchanged_volsd_seconds"`
	UnchangedS3Sync Sample `json:"unchanged_s3sync_seconds"`
	OneFileVolsd    Sample `json:"one_file_volsd_seconds"`
	OneFileS3Sync   Sample `json:"one_file_s3sync_seconds"`
	// OneFileCLIS3Calls and OneFileLambdaS3Calls are the S3 calls of a
	// one-file push.
	OneFileCLIS3Calls    Sample `json:"one_file_cli_s3_calls"`
	OneFileLambdaS3Calls Sample `json:"one_file_lambda_s3_calls"`
	// Lambda is the push Lambda checking a one-file change to a manifest
	// of LambdaEntries entries against an origin of as many blobs.
	Lambda LambdaManifestResult `json:"lambda_1m"`
}

// LambdaManifestResult is the push Lambda on a big manifest.
type LambdaManifestResult struct {
	Entries       int    `json:"entries"`
	ManifestBytes int64  `json:"manifest_bytes"`
	OriginBlobs   int    `json:"origin_blobs"`
	Seconds       Sample `json:"seconds"`
	// PeakHeapMiB is the highest Go heap in use during the call, above
	// what was in use before it.
	PeakHeapMiB Sample `json:"peak_heap_mib"`
	// FunctionMemoryMiB is the push Lambda's memory (push.FunctionMemoryMiB);
	// the call runs under the Go memory limit the function sets for it
	// (lambdamain.MemoryLimitBytes) above what the process held before.
	FunctionMemoryMiB int    `json:"function_memory_mib,omitempty"`
	S3Calls           Sample `json:"s3_calls"`
}

// countingS3 counts every S3 call made through it.
type countingS3 struct {
	*s3.Client
	n atomic.Int64
}

func (c *countingS3) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	c.n.Add(1)
	return c.Client.HeadObject(ctx, in, o...)
}

func (c *countingS3) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.n.Add(1)
	return c.Client.GetObject(ctx, in, o...)
}

func (c *countingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c.n.Add(1)
	return c.Client.PutObject(ctx, in, o...)
}

func (c *countingS3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, o ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	c.n.Add(1)
	return c.Client.DeleteObject(ctx, in, o...)
}

func (c *countingS3) UploadPart(ctx context.Context, in *s3.UploadPartInput, o ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	c.n.Add(1)
	return c.Client.UploadPart(ctx, in, o...)
}

func (c *countingS3) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, o ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	c.n.Add(1)
	return c.Client.CreateMultipartUpload(ctx, in, o...)
}

func (c *countingS3) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, o ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	c.n.Add(1)
	return c.Client.CompleteMultipartUpload(ctx, in, o...)
}

func (c *countingS3) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, o ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	c.n.Add(1)
	return c.Client.AbortMultipartUpload(ctx, in, o...)
}

// RunPushCost runs the push-cost benchmark.
func RunPushCost(ctx context.Context, o PushCostOptions) (*PushCostResult, error) {
	if o.Tree == "" {
		o.Tree = "src"
	}
	if !filepath.IsAbs(o.Tree) {
		out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
		if err != nil {
			return nil, fmt.Errorf("go env GOROOT: %w", err)
		}
		o.Tree = filepath.Join(strings.TrimSpace(string(out)), o.Tree)
	}
	if o.Runs <= 0 {
		o.Runs = 3
	}
	moto, err := awsConfig(ctx, o.MotoURL)
	if err != nil {
		return nil, err
	}
	db, err := ddbClient(ctx, o.DynamoDBURL)
	if err != nil {
		return nil, err
	}
	tree := filepath.Join(o.WorkDir, "push-tree")
	if out, err := exec.CommandContext(ctx, "cp", "-a", o.Tree, tree).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy %s: %v: %s", o.Tree, err, out)
	}
	defer os.RemoveAll(tree)
	if err := dropUnpushable(tree); err != nil {
		return nil, err
	}
	res := &PushCostResult{}
	_ = filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			res.Files++
			if fi, err := d.Info(); err == nil {
				res.Bytes += fi.Size()
			}
		}
		return nil
	})
	o.Log("tree %s: %d files, %d bytes", o.Tree, res.Files, res.Bytes)

	name := "volsd-push-" + randomName()
	table := name
	if err := store.CreateTable(ctx, db, table); err != nil {
		return nil, err
	}
	st := store.New(db, table)
	raw := s3.NewFromConfig(moto, func(o *s3.Options) { o.UsePathStyle = true })
	for _, b := range []string{name, name + "-sync"} {
		if _, err := raw.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			return nil, err
		}
	}
	sq := sqs.NewFromConfig(moto)
	q, err := sq.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		return nil, err
	}
	cliS3, lambdaS3 := &countingS3{Client: raw}, &countingS3{Client: raw}
	ssmFake := awsfake.NewSSM()
	ssmFake.AddDocument(events.DefaultDocumentName(events.DocApply), map[string]string{"upTo": `^[0-9]{1,20}$`})
	pusher := push.NewPusher(push.Config{Pool: "bench", Bucket: name, DocApply: events.DefaultDocumentName(events.DocApply), MaxConcurrency: "50%", MaxErrors: "25%", MissingReceives: 1}, st, lambdaS3, ssmFake, nil, nil)
	app := &cli.App{Cfg: cli.Config{Pool: "bench", Table: table, Bucket: name, QueueURL: aws.ToString(q.QueueUrl), Region: region},
		S3: cliS3, SQS: sq, State: st, IndexDir: filepath.Join(o.WorkDir, "hash-index")}
	deliver := func() error {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			out, err := sq.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 60,
				MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll}})
			if err != nil || len(out.Messages) == 0 {
				continue
			}
			var ev lambdaevents.SQSEvent
			for _, m := range out.Messages {
				ev.Records = append(ev.Records, lambdaevents.SQSMessage{MessageId: aws.ToString(m.MessageId), Body: aws.ToString(m.Body), Attributes: m.Attributes})
				_, _ = sq.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: m.ReceiptHandle})
			}
			resp, _ := pusher.HandleSQS(ctx, ev)
			if len(resp.BatchItemFailures) > 0 {
				return fmt.Errorf("the push Lambda failed the request")
			}
			return nil
		}
		return errors.New("no message on the push queue")
	}
	pushOnce := func() (time.Duration, cli.Sent, error) {
		t0 := time.Now()
		s, err := app.Push(ctx, tree, "site")
		return time.Since(t0), s, err
	}
	s3syncTo := func(bucket string) (time.Duration, error) {
		cmd := exec.CommandContext(ctx, "aws", "s3", "sync", "--only-show-errors", "--endpoint-url", o.MotoURL, tree, "s3://"+bucket+"/site")
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_DEFAULT_REGION="+region, "AWS_PAGER=")
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("aws s3 sync: %v: %s", err, out)
		}
		return time.Since(t0), nil
	}
	s3sync := func() (time.Duration, error) { return s3syncTo(name + "-sync") }

	// First push of the tree, o.Runs times each, sides alternating: the
	// first run pushes into the origin the re-pushes below use; each
	// further run pushes to fresh buckets with an empty hash index and no
	// journal (nothing to vouch for any blob), as a first push does.
	var fv, fs []time.Duration
	for run := range o.Runs {
		bucket, a := name, app
		if run > 0 {
			bucket = fmt.Sprintf("%s-first%d", name, run)
			for _, b := range []string{bucket, bucket + "-sync"} {
				if _, err := raw.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
					return nil, err
				}
			}
			first, err := sq.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(bucket)})
			if err != nil {
				return nil, err
			}
			a = &cli.App{Cfg: cli.Config{Bucket: bucket, QueueURL: aws.ToString(first.QueueUrl), Region: region},
				S3: raw, SQS: sq, IndexDir: filepath.Join(o.WorkDir, fmt.Sprintf("hash-index-first%d", run))}
		}
		volsdSide := func() error {
			t0 := time.Now()
			if _, err := a.Push(ctx, tree, "site"); err != nil {
				return err
			}
			fv = append(fv, time.Since(t0))
			if run == 0 {
				return deliver()
			}
			return nil
		}
		syncSide := func() error {
			d, err := s3syncTo(bucket + "-sync")
			fs = append(fs, d)
			return err
		}
		sides := []func() error{volsdSide, syncSide}
		if run%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return nil, err
			}
		}
		o.Log("first push %d: volsd %.1fs, aws s3 sync %.1fs", run, fv[len(fv)-1].Seconds(), fs[len(fs)-1].Seconds())
	}
	res.FirstVolsd, res.FirstS3Sync = Seconds(fv), Seconds(fs)
	time.Sleep(2500 * time.Millisecond) // out of the hash index's racy window

	var uv, us, ov, os3 []time.Duration
	var cliCalls, lambdaCalls []float64
	for run := range o.Runs {
		d, s, err := pushOnce()
		if err != nil {
			return nil, err
		}
		if err := deliver(); err != nil {
			return nil, err
		}
		uv = append(uv, d)
		if s.HashedFiles != 0 || s.CheckedBlobs != 0 {
			o.Log("unchanged re-push read %d files and checked %d blobs", s.HashedFiles, s.CheckedBlobs)
		}
		if d, err = s3sync(); err != nil {
			return nil, err
		}
		us = append(us, d)

		changed := filepath.Join(tree, "bench-change.txt")
		if err := os.WriteFile(changed, fmt.Appendf(nil, "run %d at %s\n", run, time.Now()), 0o644); err != nil {
			return nil, err
		}
		c0, l0 := cliS3.n.Load(), lambdaS3.n.Load()
		d, s, err = pushOnce()
		if err != nil {
			return nil, err
		}
		c1 := cliS3.n.Load()
		if err := deliver(); err != nil {
			return nil, err
		}
		ov = append(ov, d)
		cliCalls = append(cliCalls, float64(c1-c0))
		lambdaCalls = append(lambdaCalls, float64(lambdaS3.n.Load()-l0))
		o.Log("one-file push %d: %s, %d files read, %d blobs checked, %d S3 calls (CLI) + %d (Lambda)", run, d.Round(time.Millisecond), s.HashedFiles, s.CheckedBlobs, c1-c0, lambdaS3.n.Load()-l0)
		if d, err = s3sync(); err != nil {
			return nil, err
		}
		os3 = append(os3, d)
		time.Sleep(2500 * time.Millisecond)
	}
	res.UnchangedVolsd, res.UnchangedS3Sync = Seconds(uv), Seconds(us)
	res.OneFileVolsd, res.OneFileS3Sync = Seconds(ov), Seconds(os3)
	res.OneFileCLIS3Calls, res.OneFileLambdaS3Calls = NewSample("calls", cliCalls), NewSample("calls", lambdaCalls)

	if o.LambdaEntries > 0 {
		if res.Lambda, err = runLambdaManifest(ctx, o.LambdaEntries, o.Runs, o.Log); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// dropUnpushable removes what a push refuses or drops (symlinks, special
// files, empty directories) and what aws s3 sync would treat otherwise,
// so both push the same regular files.
func dropUnpushable(root string) error {
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return os.Remove(p)
		}
		return nil
	})
}

// ratios of medians.
func (r *PushCostResult) ratios() (oneFile, unchanged, first Num) {
	div := func(a, b Sample) Num {
		if float64(b.Median) <= 0 {
			return Num(math.NaN())
		}
		return Num(float64(a.Median) / float64(b.Median))
	}
	return div(r.OneFileVolsd, r.OneFileS3Sync), div(r.UnchangedVolsd, r.UnchangedS3Sync), div(r.FirstVolsd, r.FirstS3Sync)
}

// benchJournal is the push Lambda's journal in memory for the big-manifest
// run (DynamoDB Local is not what is measured there).
type benchJournal struct {
	mu      sync.Mutex
	entries []events.JournalEntry
}

func (j *benchJournal) GetRequest(context.Context, string, string) (store.Request, error) {
	return store.Request{}, store.ErrNotFound
}

func (j *benchJournal) AppendBatch(_ context.Context, _ string, es []events.JournalEntry) ([]store.Appended, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]store.Appended, len(es))
	for i, e := range es {
		e.Seq = int64(len(j.entries) + 1)
		j.entries = append(j.entries, e)
		out[i] = store.Appended{RequestID: e.RequestID, Seq: e.Seq}
	}
	return out, nil
}

func (j *benchJournal) RejectRequest(_ context.Context, _ string, rej store.Rejection) (store.Request, bool, error) {
	return store.Request{RequestID: rej.RequestID, State: store.RequestRejected, Reason: rej.Reason}, true, nil
}

func (j *benchJournal) PreviousSync(_ context.Context, _, path string) (events.JournalEntry, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for k := len(j.entries) - 1; k >= 0; k-- {
		if e := j.entries[k]; e.Op == events.OpSync && e.Path == path {
			return e, true, nil
		}
	}
	return events.JournalEntry{}, false, nil
}

// runLambdaManifest puts n blobs and a manifest naming them into the S3
// fake, appends its sync, then measures the push Lambda on a manifest with
// one entry changed (a new blob).
func runLambdaManifest(ctx context.Context, n, runs int, logf func(string, ...any)) (LambdaManifestResult, error) {
	res := LambdaManifestResult{Entries: n, OriginBlobs: n, FunctionMemoryMiB: push.FunctionMemoryMiB}
	fake := awsfake.NewS3("origin")
	blob := func(i int) events.ManifestEntry {
		content := fmt.Appendf(nil, "%d", i)
		sum := sha256.Sum256(content)
		return events.ManifestEntry{Path: fmt.Sprintf("d%03d/e%02d/f%07d.html", i%1000, i%37, i), Type: events.TypeFile,
			SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content)), Mode: 0o644}
	}
	put := func(key string, data []byte) error {
		sum := sha256.Sum256(data)
		_, err := fake.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("origin"), Key: aws.String(key), Body: bytes.NewReader(data),
			ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:]))})
		return err
	}
	m := events.Manifest{Version: events.ManifestVersion, Entries: make([]events.ManifestEntry, n)}
	for i := range n {
		m.Entries[i] = blob(i)
		if err := put(events.BlobKey(m.Entries[i].SHA256), fmt.Appendf(nil, "%d", i)); err != nil {
			return res, err
		}
	}
	manifest := func(m events.Manifest) (string, error) {
		raw, err := m.Canonical()
		if err != nil {
			return "", err
		}
		res.ManifestBytes = int64(len(raw))
		sum := sha256.Sum256(raw)
		sha := hex.EncodeToString(sum[:])
		return sha, put(events.ManifestKey(sha), raw)
	}
	first, err := manifest(m)
	if err != nil {
		return res, err
	}
	logf("push Lambda: origin of %d blobs, manifest of %d bytes", n, res.ManifestBytes)
	j := &benchJournal{}
	if _, err := j.AppendBatch(ctx, "bench", []events.JournalEntry{{Op: events.OpSync, Path: "site", Manifest: &events.ManifestRef{SHA256: first}, RequestID: "first"}}); err != nil {
		return res, err
	}
	ssmFake := awsfake.NewSSM()
	ssmFake.AddDocument(events.DefaultDocumentName(events.DocApply), map[string]string{"upTo": `^[0-9]{1,20}$`})
	p := push.NewPusher(push.Config{Pool: "bench", Bucket: "origin", DocApply: events.DefaultDocumentName(events.DocApply), MaxConcurrency: "50%", MaxErrors: "25%", MissingReceives: 1}, j, fake, ssmFake, nil, nil)
	var secs []time.Duration
	var heap, calls []float64
	for run := range runs {
		e := blob(n + run)
		if err := put(events.BlobKey(e.SHA256), fmt.Appendf(nil, "%d", n+run)); err != nil {
			return res, err
		}
		m.Entries[run] = events.ManifestEntry{Path: m.Entries[run].Path, Type: events.TypeFile, SHA256: e.SHA256, Size: e.Size, Mode: 0o644}
		sha, err := manifest(m)
		if err != nil {
			return res, err
		}
		body := fmt.Sprintf(`{"version":1,"requestId":"big-%d","op":"sync","path":"site","manifest":{"sha256":%q}}`, run, sha)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		// The function's Go memory limit, above what the fake S3 and the
		// manifests built here hold.
		oldLimit := debug.SetMemoryLimit(int64(ms.HeapInuse) + lambdamain.MemoryLimitBytes(push.FunctionMemoryMiB))
		var peak atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		before := fake.Calls("HeadObject") + fake.Calls("GetObject") + fake.Calls("ListObjectsV2")
		t0 := time.Now()
		resp, _ := p.HandleSQS(ctx, lambdaevents.SQSEvent{Records: []lambdaevents.SQSMessage{{MessageId: fmt.Sprint(run), Body: body}}})
		d := time.Since(t0)
		close(stop)
		<-done
		debug.SetMemoryLimit(oldLimit)
		if len(resp.BatchItemFailures) > 0 {
			return res, fmt.Errorf("the push Lambda failed the 1M-entry sync")
		}
		secs = append(secs, d)
		heap = append(heap, float64(peak.Load()-min(base, peak.Load()))/(1<<20))
		calls = append(calls, float64(fake.Calls("HeadObject")+fake.Calls("GetObject")+fake.Calls("ListObjectsV2")-before))
		logf("push Lambda on %d entries: %s, peak heap +%.0f MiB, %v S3 calls", n, d.Round(time.Millisecond), heap[len(heap)-1], calls[len(calls)-1])
	}
	res.Seconds, res.PeakHeapMiB, res.S3Calls = Seconds(secs), NewSample("MiB", heap), NewSample("calls", calls)
	return res, nil
}
