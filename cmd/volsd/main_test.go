package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

// The test binary doubles as the volsd binary when asked to.
func TestMain(m *testing.M) {
	if os.Getenv("VOLSD_CLI_UNDER_TEST") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestBinaryWiring runs the real main as a process, configured only the way
// an operator would: a cdk-outputs.json file and the SDK's standard
// endpoint variables. It pushes a file (blob in the bucket, request on the
// queue), reads the status, and times out waiting when no push Lambda
// consumes the queue.
func TestBinaryWiring(t *testing.T) {
	ddbEP, motoEP := testenv.Endpoint(t, testenv.EnvDynamoDB), testenv.Endpoint(t, testenv.EnvMoto)
	ctx := context.Background()
	table, bucket := storetest.New(t).Table(), testenv.UniqueName(t, "origin")
	moto := testenv.Moto(t)
	s3c := s3.NewFromConfig(moto, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	sqsc := sqs.NewFromConfig(moto)
	q, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(testenv.UniqueName(t, "push"))})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	outputs := filepath.Join(dir, "cdk-outputs.json")
	raw, _ := json.Marshal(map[string]map[string]string{"VolsdWeb": {
		"PoolName": "web", "TableName": table, "BucketName": bucket, "QueueUrl": aws.ToString(q.QueueUrl),
		"DeadLetterQueueUrl": "unused", "Region": testenv.Region,
	}})
	if err := os.WriteFile(outputs, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(file, []byte("hello, fleet\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (int, string, string) {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = []string{
			"VOLSD_CLI_UNDER_TEST=1", "HOME=" + dir, "PATH=" + os.Getenv("PATH"),
			"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing",
			"AWS_CONFIG_FILE=" + filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none"),
			"AWS_ENDPOINT_URL_S3=" + motoEP, "AWS_ENDPOINT_URL_SQS=" + motoEP, "AWS_ENDPOINT_URL_DYNAMODB=" + ddbEP,
			"VOLSD_OUTPUTS=" + outputs,
		}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, out.String(), errb.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), out.String(), errb.String()
		default:
			t.Fatal(err)
			return -1, "", ""
		}
	}

	code, out, errs := run("push", "--json", file, "www/")
	if code != 0 {
		t.Fatalf("push: exit %d\n%s\n%s", code, out, errs)
	}
	var sent cli.Sent
	if err := json.Unmarshal([]byte(out), &sent); err != nil || sent.Path != "www/hello.txt" || sent.Blob == nil {
		t.Fatalf("push output %s: %v", out, err)
	}
	if _, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String(events.BlobKey(sent.Blob.SHA256))}); err != nil {
		t.Fatalf("blob not in the origin: %v", err)
	}
	msgs, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 0})
	if err != nil || len(msgs.Messages) != 1 || !strings.Contains(aws.ToString(msgs.Messages[0].Body), sent.RequestID) {
		t.Fatalf("queue: %+v %v", msgs, err)
	}

	code, out, errs = run("status", "--json")
	var st cli.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Pool != "web" || st.Head != 0 {
		t.Fatalf("status: exit %d\n%s\n%s", code, out, errs)
	}

	code, _, errs = run("delete", "--wait", "--timeout", "1s", "www/hello.txt")
	if code != cli.ExitTimeout || !strings.Contains(errs, "not processed by the push Lambda") {
		t.Fatalf("wait without a push Lambda: exit %d, %s", code, errs)
	}
	if code, _, errs = run("status", "--table", ""); code != 0 {
		t.Fatalf("an empty flag must not hide the outputs file: exit %d %s", code, errs)
	}
}

// TestUnreadableFileIsBadInput: a file the operator may not read is bad
// input (exit 2) naming the path, whether it is LOCAL or inside a tree;
// nothing is sent. The binary runs as nobody (root reads everything).
func TestUnreadableFileIsBadInput(t *testing.T) {
	testenv.RequireRoot(t, "running the CLI as another user")
	dir, err := os.MkdirTemp("", "volsd-unreadable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "volsd")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "site")
	secret := filepath.Join(tree, "private", "secret.txt")
	if err := os.MkdirAll(filepath.Dir(secret), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{bin: 0o755, secret: 0o600, filepath.Join(tree, "index.html"): 0o644} {
		if err := os.WriteFile(p, self, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, local := range []string{secret, tree} {
		cmd := exec.Command(bin, "push", local, "www/")
		cmd.Env = []string{"VOLSD_CLI_UNDER_TEST=1", "HOME=" + dir, "AWS_REGION=" + testenv.Region,
			"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing",
			"VOLSD_BUCKET=origin", "VOLSD_QUEUE_URL=http://127.0.0.1:1/queue/never-reached", "VOLSD_POOL=web", "VOLSD_TABLE=never-read"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var errb strings.Builder
		cmd.Stderr = &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitUsage || !strings.Contains(errb.String(), secret+" is not readable") {
			t.Errorf("push %s as nobody: %v\n%s", local, err, errb.String())
		}
	}
}
