package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/volsd/volsd/internal/awsfake"
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
