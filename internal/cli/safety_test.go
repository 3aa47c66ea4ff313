package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

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
