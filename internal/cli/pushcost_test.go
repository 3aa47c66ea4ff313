package cli_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/cli"
)

// readCounter counts the origin reads the CLI makes, beside the writes
// countingS3 counts.
type readCounter struct {
	*countingS3
	mu    sync.Mutex
	heads int
	gets  int
}

func (c *readCounter) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	c.mu.Lock()
	c.heads++
	c.mu.Unlock()
	return c.countingS3.HeadObject(ctx, in, o...)
}

func (c *readCounter) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.mu.Lock()
	c.gets++
	c.mu.Unlock()
	return c.countingS3.GetObject(ctx, in, o...)
}

func (c *readCounter) reads() (heads, gets int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heads, c.gets
}

// TestPushCostsWhatChanged: with the previous sync of the target in the
// journal and the hash index of the tree, a re-push of a 300-file tree
// with one changed file reads one file, reads the previous manifest once,
// checks one blob and the manifest, and writes two objects; an unchanged
// re-push reads no file and checks nothing. A torn index, a file changed
// with its old size and mtime restored, and a target never synced before
// are handled by hashing and checking again.
func TestPushCostsWhatChanged(t *testing.T) {
	defer cli.SetRacyWindow(cli.SetRacyWindow(20 * time.Millisecond))
	ctx := context.Background()
	w := newWorld(t)
	rc := &readCounter{countingS3: w.s3}
	a := &cli.App{Cfg: w.cfg, S3: rc, SQS: w.sqs, State: w.st, IndexDir: t.TempDir()}
	files := map[string]string{}
	for i := range 300 {
		files[fmt.Sprintf("d%d/f%03d.html", i%7, i)] = fmt.Sprintf("<p>page %d</p>", i)
	}
	dir := writeTree(t, files)
	seq := int64(0)
	push := func(what string) (cli.Sent, int, int, int) {
		t.Helper()
		time.Sleep(50 * time.Millisecond) // out of the racy window of the last writes
		h0, g0 := rc.reads()
		w0 := w.s3.Writes()
		s, err := a.Push(ctx, dir, "site")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		h1, g1 := rc.reads()
		writes := w.s3.Writes() - w0
		w.deliver(ctx, t)
		seq++
		if head, err := w.st.Head(ctx, "web"); err != nil || head != seq {
			t.Fatalf("%s: journal head %d %v, want %d (the push Lambda refused it)", what, head, err, seq)
		}
		return s, h1 - h0, g1 - g0, writes
	}

	s, heads, gets, writes := push("first push")
	// Small blobs go up without a HeadObject first: one request per blob.
	if s.HashedFiles != 300 || s.CheckedBlobs != 0 || s.UploadedBlobs != 300 || heads != 0 || gets != 0 || writes != 301 {
		t.Fatalf("first push: %+v, %d HeadObject, %d GetObject, %d writes; want 301 writes and nothing else", s, heads, gets, writes)
	}

	s, heads, gets, writes = push("unchanged re-push")
	if s.HashedFiles != 0 || s.CheckedBlobs != 0 || s.UploadedBlobs != 0 || s.PresentBlobs != 300 || heads != 0 || gets != 0 || writes != 0 {
		t.Fatalf("unchanged re-push: %+v, %d HeadObject, %d GetObject, %d writes; want no file read and no S3 call", s, heads, gets, writes)
	}

	if err := os.WriteFile(filepath.Join(dir, "d3", "f003.html"), []byte("<p>changed</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, heads, gets, writes = push("one-file re-push")
	if s.HashedFiles != 1 || s.CheckedBlobs != 0 || s.UploadedBlobs != 1 || s.VerifiedBlobs != 299 || heads != 0 || gets != 1 || writes != 2 {
		t.Fatalf("one-file re-push: %+v, %d HeadObject, %d GetObject, %d writes; want 1 file read, 1 GetObject (the previous manifest), 2 writes (blob, manifest)", s, heads, gets, writes)
	}

	// Same size, old mtime restored: ctime still tells.
	p := filepath.Join(dir, "d4", "f004.html")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("<p>page X</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	s, _, _, _ = push("same size and mtime")
	if s.HashedFiles != 1 || s.UploadedBlobs != 1 {
		t.Fatalf("a file rewritten with its size and mtime restored: %+v, want it hashed and uploaded", s)
	}

	// A torn index is ignored: every file is hashed, nothing is lost.
	idx, err := filepath.Glob(filepath.Join(a.IndexDir, "*.idx"))
	if err != nil || len(idx) != 1 {
		t.Fatalf("index files %v %v", idx, err)
	}
	raw, err := os.ReadFile(idx[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(idx[0], raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	s, heads, _, writes = push("torn index")
	if s.HashedFiles != 300 || s.CheckedBlobs != 0 || heads != 0 || writes != 0 {
		t.Fatalf("after a torn index: %+v, %d HeadObject, %d writes; want every file hashed, nothing checked", s, heads, writes)
	}
	s, _, _, _ = push("after the torn index")
	if s.HashedFiles != 0 {
		t.Fatalf("the index was not rebuilt: %+v", s)
	}

	// Another target has no previous sync: its small blobs go up again
	// (a PUT costs what their check would), larger ones are checked first.
	h0, _ := rc.reads()
	w0 := w.s3.Writes()
	s2, err := a.Push(ctx, dir, "mirror")
	if err != nil {
		t.Fatal(err)
	}
	h1, _ := rc.reads()
	if s2.CheckedBlobs != 0 || s2.UploadedBlobs != 300 || h1-h0 != 0 || w.s3.Writes()-w0 != 301 {
		t.Fatalf("first push to another target: %+v, %d HeadObject, %d writes", s2, h1-h0, w.s3.Writes()-w0)
	}
	a.DirectPutBelow = -1
	h0 = h1
	s3, err := a.Push(ctx, dir, "mirror2")
	if err != nil {
		t.Fatal(err)
	}
	if h1, _ = rc.reads(); s3.CheckedBlobs != 300 || s3.UploadedBlobs != 0 || s3.PresentBlobs != 300 || h1-h0 != 301 {
		t.Fatalf("first push to a third target, every blob checked: %+v, %d HeadObject", s3, h1-h0)
	}
	m, err := events.ParseManifestBytes(w.object(t, events.ManifestKey(s2.Manifest)))
	nfiles := 0
	for _, e := range m.Entries {
		if e.Kind() == events.TypeFile {
			nfiles++
		}
	}
	if err != nil || nfiles != 300 {
		t.Fatalf("manifest: %d files, %v", nfiles, err)
	}
}

// deliver hands the next batch on the push queue to the push Lambda.
func (w *world) deliver(ctx context.Context, t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, err := w.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &w.cfg.QueueURL, MaxNumberOfMessages: 10, VisibilityTimeout: 30,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll}})
		if err != nil || len(out.Messages) == 0 {
			continue
		}
		var ev lambdaevents.SQSEvent
		for _, m := range out.Messages {
			ev.Records = append(ev.Records, lambdaevents.SQSMessage{MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle), Body: aws.ToString(m.Body), Attributes: m.Attributes})
			_, _ = w.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &w.cfg.QueueURL, ReceiptHandle: m.ReceiptHandle})
		}
		if resp, _ := w.pusher.HandleSQS(ctx, ev); len(resp.BatchItemFailures) != 0 {
			t.Fatalf("the push Lambda failed %+v", resp.BatchItemFailures)
		}
		return
	}
	t.Fatal("nothing arrived on the push queue")
}

func (w *world) object(t *testing.T, key string) []byte {
	t.Helper()
	out, err := w.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &w.cfg.Bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
