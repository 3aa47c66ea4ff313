package cli_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/checksum"
	"github.com/volsd/volsd/internal/cli"
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
