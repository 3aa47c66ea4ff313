package cli_test

import (
	"bytes"
	"context"
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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/checksum"
	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

// queued returns how many messages the push queue holds.
func (w *world) queued() int {
	w.t.Helper()
	out, err := w.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &w.cfg.QueueURL, MaxNumberOfMessages: 10, VisibilityTimeout: 0})
	if err != nil {
		w.t.Fatal(err)
	}
	return len(out.Messages)
}

// TestRootOnlyWhenWrittenAsSlash: a DEST that names the root without
// saying so ("", "./", "//", …) is refused by push and delete with exit 2,
// naming the rule, before anything is uploaded or sent.
func TestRootOnlyWhenWrittenAsSlash(t *testing.T) {
	w := newWorld(t)
	dir := writeTree(t, map[string]string{"index.html": "<h1>hi</h1>", "css/site.css": "body{}"})
	for _, dest := range []string{"", ".", "./", "//", "/./", "www/.."} {
		for _, argv := range [][]string{{"push", dir, dest}, {"push", dir + "/index.html", dest}, {"delete", dest}} {
			code, out, errs := w.run(argv...)
			if code != cli.ExitUsage || !strings.Contains(errs, `the root is a target only when written as "/"`) {
				t.Errorf("%q: exit %d\n%s\n%s", argv, code, out, errs)
			}
		}
	}
	if n := w.s3.Writes(); n != 0 {
		t.Fatalf("refused pushes wrote %d objects to the origin", n)
	}
	if n := w.queued(); n != 0 {
		t.Fatalf("refused requests put %d messages on the queue", n)
	}
	// "/" is the root, spelled out.
	if code, _, errs := w.run("push", dir, "/"); code != 0 {
		t.Fatalf("push to /: %d %s", code, errs)
	}
	if n := w.queued(); n != 1 {
		t.Fatalf("push to / sent %d messages", n)
	}
}

// fakeApp is an App on the S3 and SQS fakes (which check checksums as AWS
// does), with stderr captured.
func fakeApp(t *testing.T) (*cli.App, *awsfake.S3, *awsfake.SQS, *bytes.Buffer) {
	t.Helper()
	origin := awsfake.NewS3("origin")
	q := awsfake.NewSQS()
	out, err := q.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String("push")})
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	return &cli.App{Cfg: cli.Config{Bucket: "origin", QueueURL: aws.ToString(out.QueueUrl)}, S3: origin, SQS: q, Err: &errb}, origin, q, &errb
}

// TestPushWarnsWhatItChanges: setuid, setgid and sticky bits are dropped
// with a warning naming the file; a sparse file is pushed dense with a
// warning; a plain tree pushes without one.
func TestPushWarnsWhatItChanges(t *testing.T) {
	a, _, _, errb := fakeApp(t)
	dir := writeTree(t, map[string]string{"bin/tool": "#!/bin/sh\n", "share/dir/file": "x", "plain.txt": "plain"})
	if err := os.Chmod(filepath.Join(dir, "bin/tool"), 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "share/dir/file"), 0o644|os.ModeSetgid|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(dir, "disk.img")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("end"), 8<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err := a.Push(context.Background(), dir, "site")
	if err != nil {
		t.Fatal(err)
	}
	got := errb.String()
	for _, want := range []string{
		filepath.Join(dir, "bin/tool") + ": setuid dropped", filepath.Join(dir, "share/dir/file") + ": setgid+sticky dropped",
		sparse + " is sparse: uploaded and written dense",
	} {
		if !strings.Contains(got, "volsd: warning: "+want) {
			t.Errorf("stderr lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "plain.txt") || len(s.Warnings) != 3 {
		t.Errorf("warnings %q, stderr:\n%s", s.Warnings, got)
	}

	a, _, _, errb = fakeApp(t)
	if _, err := a.Push(context.Background(), writeTree(t, map[string]string{"a": "a", "b/c": "c"}), "site"); err != nil || errb.Len() != 0 {
		t.Fatalf("a plain tree: %v, stderr %q", err, errb.String())
	}
}

// rewritingS3 rewrites a file in place (same size, mtime restored) the
// first time an upload call of op reaches the origin.
type rewritingS3 struct {
	*awsfake.S3
	op, path string
	with     []byte
	once     sync.Once
}

func (r *rewritingS3) rewrite() {
	r.once.Do(func() {
		fi, err := os.Stat(r.path)
		if err != nil {
			panic(err)
		}
		if err := os.WriteFile(r.path, r.with, 0o644); err != nil {
			panic(err)
		}
		if err := os.Chtimes(r.path, fi.ModTime(), fi.ModTime()); err != nil {
			panic(err)
		}
	})
}

func (r *rewritingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if r.op == "PutObject" && strings.HasPrefix(aws.ToString(in.Key), "blobs/") {
		r.rewrite()
	}
	return r.S3.PutObject(ctx, in, o...)
}

func (r *rewritingS3) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, o ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	if r.op == "CreateMultipartUpload" {
		r.rewrite()
	}
	return r.S3.CreateMultipartUpload(ctx, in, o...)
}

// TestRewrittenWhileUploadedNeverLandsMismatched: a file rewritten in
// place while it uploads (same size, mtime restored), in one PutObject or
// in parts, fails the push as "changed while it was pushed" (exit 2 class)
// and leaves no object whose bytes differ from its name.
func TestRewrittenWhileUploadedNeverLandsMismatched(t *testing.T) {
	for _, tc := range []struct {
		op   string
		size int
	}{{"PutObject", 100 << 10}, {"CreateMultipartUpload", 12 << 20}} {
		t.Run(tc.op, func(t *testing.T) {
			a, origin, q, _ := fakeApp(t)
			a.PartSize = 5 << 20
			dir := t.TempDir()
			p := filepath.Join(dir, "data.bin")
			if err := os.WriteFile(p, bytes.Repeat([]byte("a"), tc.size), 0o644); err != nil {
				t.Fatal(err)
			}
			a.S3 = &rewritingS3{S3: origin, op: tc.op, path: p, with: bytes.Repeat([]byte("b"), tc.size)}
			_, err := a.Push(context.Background(), dir, "site")
			if !errors.Is(err, cli.ErrInput) || !strings.Contains(err.Error(), p+" changed while it was pushed") {
				t.Fatalf("push of a file rewritten during its upload: %v", err)
			}
			if tc.op == "CreateMultipartUpload" && origin.PendingUploads() != 0 {
				t.Fatalf("%d multipart uploads left open", origin.PendingUploads())
			}
			for _, key := range origin.Keys("origin", "blobs/") {
				if got, _ := origin.Object("origin", key); events.BlobKey(shaHex(got)) != key {
					t.Fatalf("%s holds other bytes after the refused push", key)
				}
			}
			if n := len(q.Bodies(a.Cfg.QueueURL)); n != 0 {
				t.Fatalf("%d requests sent", n)
			}
		})
	}
}

// TestPresenceIsJudgedByChecksum: a blob the origin holds with wrong bytes
// of the right size, or with the right bytes but no checksum, is uploaded
// again and then verified; a blob uploaded by volsd (in one piece or in
// parts) is found present by its checksum and not sent again.
func TestPresenceIsJudgedByChecksum(t *testing.T) {
	a, origin, _, errb := fakeApp(t)
	a.PartSize = 5 << 20
	a.DirectPutBelow = -1 // every blob checked before its upload
	big := bytes.Repeat([]byte("volsd parts "), (11<<20)/12)
	dir := writeTree(t, map[string]string{"good.txt": "good bytes", "nosum.txt": "no checksum", "big.bin": string(big)})
	ctx := context.Background()
	seed := func(key string, body []byte) {
		if _, err := origin.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("origin"), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	seed(events.BlobKey(shaHex([]byte("good bytes"))), []byte("evil bytes")) // right size, wrong bytes
	seed(events.BlobKey(shaHex([]byte("no checksum"))), []byte("no checksum"))
	s, err := a.Push(ctx, dir, "site")
	if err != nil {
		t.Fatal(err)
	}
	if s.UploadedBlobs != 3 || s.PresentBlobs != 0 || !strings.Contains(errb.String(), "not verified") {
		t.Fatalf("first push: %+v\n%s", s, errb.String())
	}
	for _, content := range [][]byte{[]byte("good bytes"), []byte("no checksum"), big} {
		key := events.BlobKey(shaHex(content))
		if got, _ := origin.Object("origin", key); !bytes.Equal(got, content) {
			t.Fatalf("%s holds %d other bytes", key, len(got))
		}
		h, err := origin.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("origin"), Key: aws.String(key), ChecksumMode: s3types.ChecksumModeEnabled})
		if err != nil || checksum.Verify(h, shaHex(content), int64(len(content))) != nil {
			t.Fatalf("%s not verified after the push: %+v %v", key, h, err)
		}
	}
	if h, _ := origin.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("origin"), Key: aws.String(events.BlobKey(shaHex(big))), ChecksumMode: s3types.ChecksumModeEnabled}); !strings.HasSuffix(aws.ToString(h.ChecksumSHA256), "-3") || h.Metadata[checksum.MetadataKey] != shaHex(big) {
		t.Fatalf("multipart blob: checksum %q metadata %v", aws.ToString(h.ChecksumSHA256), h.Metadata)
	}
	again, err := a.Push(ctx, dir, "site")
	if err != nil || again.UploadedBlobs != 0 || again.PresentBlobs != 3 || again.ManifestUploaded {
		t.Fatalf("second push: %+v %v", again, err)
	}
}

// head returns the pool's journal head.
func (w *world) head() int64 {
	w.t.Helper()
	h, err := w.st.Head(context.Background(), "web")
	if err != nil {
		w.t.Fatal(err)
	}
	return h
}

// TestDryRunAndDeletionGuard: --dry-run prints what a sync would add,
// change and delete at DEST (checked against the real trees) and sends
// nothing; a sync that would delete many files is refused without
// --allow-delete, before anything is uploaded or sent; the thresholds are
// flags.
func TestDryRunAndDeletionGuard(t *testing.T) {
	w := newWorld(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go w.pump(ctx)
	files := map[string]string{"index.html": "v1", "keep.css": "same", "old/a.html": "a", "old/b.html": "b", "change.js": "v1"}
	for i := range 25 {
		files[fmt.Sprintf("bulk/%02d.txt", i)] = fmt.Sprint(i)
	}
	dir := writeTree(t, files)
	if code, _, errs := w.run("push", "--wait", "--timeout", "30s", dir, "site"); code != 0 {
		t.Fatalf("first push: %d %s", code, errs)
	}
	// Outside the target: never counted.
	if code, _, errs := w.run("push", "--wait", "--timeout", "30s", writeTree(t, map[string]string{"x": "x"}), "other"); code != 0 {
		t.Fatalf("push to other: %d %s", code, errs)
	}
	if err := os.RemoveAll(filepath.Join(dir, "old")); err != nil {
		t.Fatal(err)
	}
	for p, c := range map[string]string{"change.js": "v2", "new/one.html": "1", "new/two.html": "2"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	head, writes := w.head(), w.s3.Writes()
	code, out, errs := w.run("push", "--dry-run", "--json", dir, "/site")
	var s cli.Sent
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || !s.DryRun || s.Plan == nil {
		t.Fatalf("dry run: %d %s %s", code, out, errs)
	}
	p := *s.Plan
	if p.Target != 30 || p.Add != 2 || p.Change != 1 || p.Delete != 2 ||
		strings.Join(p.Adds, ",") != "site/new/one.html,site/new/two.html" || strings.Join(p.Changes, ",") != "site/change.js" ||
		strings.Join(p.Deletes, ",") != "site/old/a.html,site/old/b.html" {
		t.Fatalf("plan %+v", p)
	}
	code, out, _ = w.run("push", "--dry-run", dir, "site")
	if code != 0 || !strings.Contains(out, "dry run: sync site: 2 to add, 1 to change, 2 to delete (30 there now); nothing uploaded or sent") ||
		!strings.Contains(out, "  delete  site/old/a.html") {
		t.Fatalf("dry run text: %d\n%s", code, out)
	}
	if w.head() != head || w.s3.Writes() != writes {
		t.Fatalf("--dry-run sent something: head %d→%d, %d writes", head, w.head(), w.s3.Writes()-writes)
	}

	// Removing the 25 bulk files: refused without --allow-delete.
	if err := os.RemoveAll(filepath.Join(dir, "bulk")); err != nil {
		t.Fatal(err)
	}
	code, _, errs = w.run("push", dir, "site")
	if code != cli.ExitUsage || !strings.Contains(errs, "this sync would delete 27 files at site (more than --max-delete-percent 10% of the 30 there)") || !strings.Contains(errs, "--allow-delete") {
		t.Fatalf("large deletion: exit %d\n%s", code, errs)
	}
	if w.head() != head || w.s3.Writes() != writes {
		t.Fatalf("the refused sync sent something: head %d→%d, %d writes", head, w.head(), w.s3.Writes()-writes)
	}
	// A lower --max-delete refuses a small deletion too.
	code, _, errs = w.run("push", "--max-delete", "0", writeTree(t, map[string]string{"x2": "x"}), "other")
	if code != cli.ExitUsage || !strings.Contains(errs, "more than --max-delete 0") {
		t.Fatalf("--max-delete 0: exit %d\n%s", code, errs)
	}
	code, _, errs = w.run("push", "--max-delete-percent", "101", dir, "site")
	if code != cli.ExitUsage || !strings.Contains(errs, "0 to 100") {
		t.Fatalf("bad percent: exit %d\n%s", code, errs)
	}
	code, _, errs = w.run("push", "--wait", "--timeout", "30s", "--allow-delete", dir, "site")
	if code != 0 || w.head() != head+1 {
		t.Fatalf("--allow-delete: exit %d, head %d\n%s", code, w.head(), errs)
	}
	code, out, _ = w.run("push", "--dry-run", dir, "site")
	if code != 0 || !strings.Contains(out, "0 to add, 0 to change, 0 to delete (5 there now)") {
		t.Fatalf("after the sync: %d\n%s", code, out)
	}
}

// TestStalledPoolStatusAndRepair: the fake agents apply an entry only when
// its blob in the origin (moto) holds the bytes of its name, and report
// bad-content otherwise, as volsd-agent does. A blob damaged after the
// push stalls every instance at that seq: volsd status shows the stall
// with its reason and the fix, the report Lambda emits the alarm's
// metric; volsd repair from a local copy puts the right bytes back, and
// the next push converges every instance.
func TestStalledPoolStatusAndRepair(t *testing.T) {
	w := newWorld(t)
	var emf testenv.Buffer
	w.rep = report.NewReporter(report.Config{Pool: "web", Documents: []string{"volsd-Apply"}, InvocationWait: 10 * time.Second}, w.st, w.ssm, nil, metrics.New(&emf))
	ids := []string{"i-0bbbbbbbbbbbbbbb1", "i-0bbbbbbbbbbbbbbb2"}
	for _, id := range ids {
		w.instance(id, store.InstanceReady, true)
	}
	w.agentMu.Lock()
	w.agent = func(instance string, upTo int64) (ssmtypes.CommandInvocationStatus, events.AgentReport) {
		es, err := w.st.Entries(context.Background(), "web", 0, upTo)
		if err != nil {
			return ssmtypes.CommandInvocationStatusFailed, events.AgentReport{Command: "apply", Instance: instance, Error: err.Error(), ErrorKind: "retryable"}
		}
		for _, e := range es {
			if e.Blob == nil {
				continue
			}
			out, err := w.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &w.cfg.Bucket, Key: aws.String(events.BlobKey(e.Blob.SHA256))})
			var got []byte
			if err == nil {
				got, _ = io.ReadAll(out.Body)
			}
			if shaHex(got) != e.Blob.SHA256 {
				return ssmtypes.CommandInvocationStatusFailed, events.AgentReport{Command: "apply", Instance: instance, Seq: e.Seq - 1, Head: upTo,
					Error: fmt.Sprintf("entry %d (put %s): blob %s: sha256 mismatch", e.Seq, e.Path, e.Blob.SHA256[:12]), ErrorKind: events.ErrorKindBadContent}
			}
		}
		return ssmtypes.CommandInvocationStatusSuccess, events.AgentReport{Command: "apply", Instance: instance, Seq: upTo, Head: upTo}
	}
	w.agentMu.Unlock()

	right := []byte("<p>the right bytes</p>")
	page := filepath.Join(writeTree(t, map[string]string{"page.html": string(right)}), "page.html")
	if code, _, errs := w.run("push", page, "site/"); code != 0 {
		t.Fatalf("push: %d %s", code, errs)
	}
	// Before the push Lambda sees the request, the blob is damaged in a way
	// its checksum does not show (moto keeps the claimed checksum): the
	// Lambda appends it, every agent refuses it.
	b64, _ := checksum.FromHex(shaHex(right))
	if _, err := w.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &w.cfg.Bucket, Key: aws.String(events.BlobKey(shaHex(right))),
		Body: strings.NewReader("<p>the wrong bytes</p>"), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(b64)}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go w.pump(ctx)
	var st cli.Status
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, errs := w.run("status", "--json")
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("status: %d %s %s", code, out, errs)
		}
		if st.Stalled != nil && len(st.Stalled.Instances) == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stall shown: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s := st.Stalled; s.Seq != 1 || !strings.Contains(s.Reason, "sha256 mismatch") || !strings.Contains(s.Fix, "volsd repair FILE") {
		t.Fatalf("stall %+v", s)
	}
	_, text, _ := w.run("status")
	if !strings.Contains(text, "STALLED at seq 1: 2 instance(s) refuse it") || !strings.Contains(text, "fix: re-upload the right bytes") {
		t.Fatalf("status text:\n%s", text)
	}
	if !strings.Contains(emf.String(), `"`+metrics.StalledReports+`"`) {
		t.Fatalf("no %s metric emitted:\n%s", metrics.StalledReports, emf.String())
	}

	code, out, errs := w.run("repair", page)
	if code != 0 || !strings.Contains(out, "repaired s3://…/"+events.BlobKey(shaHex(right))) {
		t.Fatalf("repair: %d\n%s\n%s", code, out, errs)
	}
	if got, _ := w.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &w.cfg.Bucket, Key: aws.String(events.BlobKey(shaHex(right)))}); got != nil {
		if b, _ := io.ReadAll(got.Body); !bytes.Equal(b, right) {
			t.Fatalf("after the repair the origin holds %q", b)
		}
	}
	next := filepath.Join(writeTree(t, map[string]string{"next.html": "next"}), "next.html")
	if code, out, errs := w.run("push", "--wait", "--timeout", "30s", next, "site/"); code != 0 || !strings.Contains(out, "all 2 running instances caught up") {
		t.Fatalf("push after the repair: %d\n%s\n%s", code, out, errs)
	}
	var after cli.Status
	if code, out, _ := w.run("status", "--json"); code != 0 || json.Unmarshal([]byte(out), &after) != nil || after.Stalled != nil {
		t.Fatalf("still stalled after the repair: %s", out)
	}
}

// TestSmallBlobsGoUpWithoutACheck: with no previous sync to vouch for
// them, blobs below DefaultDirectPutBelow are put at once, one request
// each — and a wrong object under such a blob's name is overwritten with
// the right bytes; a blob at or above it is checked first and uploaded
// only when the origin does not hold it verified.
func TestSmallBlobsGoUpWithoutACheck(t *testing.T) {
	a, origin, _, _ := fakeApp(t)
	a.PartSize = 5 << 20
	small := bytes.Repeat([]byte("s"), cli.DefaultDirectPutBelow-1)
	large := bytes.Repeat([]byte("L"), cli.DefaultDirectPutBelow)
	kept := bytes.Repeat([]byte("k"), cli.DefaultDirectPutBelow+1)
	dir := writeTree(t, map[string]string{"small.txt": string(small), "large.bin": string(large), "kept.bin": string(kept)})
	ctx := context.Background()
	if _, err := origin.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("origin"), Key: aws.String(events.BlobKey(shaHex(small))), Body: bytes.NewReader([]byte("evil"))}); err != nil {
		t.Fatal(err)
	}
	b64, _ := checksum.FromHex(shaHex(kept))
	if _, err := origin.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("origin"), Key: aws.String(events.BlobKey(shaHex(kept))), Body: bytes.NewReader(kept),
		ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(b64)}); err != nil {
		t.Fatal(err)
	}
	heads0, puts0 := origin.Calls("HeadObject"), origin.Calls("PutObject")
	s, err := a.Push(ctx, dir, "site")
	if err != nil {
		t.Fatal(err)
	}
	// HeadObject: large.bin and kept.bin (the manifest is small: put at once).
	// PutObject: small.txt, large.bin, the manifest.
	if heads, puts := origin.Calls("HeadObject")-heads0, origin.Calls("PutObject")-puts0; heads != 2 || puts != 3 {
		t.Fatalf("%d HeadObject and %d PutObject, want 2 and 3", heads, puts)
	}
	if s.CheckedBlobs != 2 || s.UploadedBlobs != 2 || s.PresentBlobs != 1 || s.UploadedBytes != int64(len(small)+len(large)) || !s.ManifestUploaded {
		t.Fatalf("push: %+v", s)
	}
	for _, content := range [][]byte{small, large, kept} {
		key := events.BlobKey(shaHex(content))
		if got, _ := origin.Object("origin", key); !bytes.Equal(got, content) {
			t.Fatalf("%s holds %d other bytes", key, len(got))
		}
		h, err := origin.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("origin"), Key: aws.String(key), ChecksumMode: s3types.ChecksumModeEnabled})
		if err != nil || checksum.Verify(h, shaHex(content), int64(len(content))) != nil {
			t.Fatalf("%s not verified after the push: %v", key, err)
		}
	}
}
