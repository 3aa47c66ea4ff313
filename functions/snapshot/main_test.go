package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "volsd-snapshot-bootstrap")
	if err != nil {
		panic(err)
	}
	buildDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var buildOnce = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(buildDir, "bootstrap")
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// build compiles this main once, the way it is deployed (bootstrap,
// lambda.norpc).
func build(t *testing.T) string {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestBadConfigurationExits2(t *testing.T) {
	bin := build(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "VOLSD_SNAPSHOT_KEEP=0"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want code 2; stderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"VOLSD_POOL: is required", "VOLSD_TABLE: is required", "VOLSD_ASG: is required", "VOLSD_SNAPSHOT_KEEP: must be between"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(stderr.Bytes()), &line); err != nil || line["level"] != "ERROR" {
		t.Errorf("stderr is not one JSON log line: %q (%v)", stderr.String(), err)
	}
}

// runtimeAPI serves one event through the Lambda Runtime API and records
// what the function answers.
type runtimeAPI struct {
	event  []byte
	served atomic.Bool
	result chan string // "response: …" or "error: …"
}

func (a *runtimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const prefix = "/2018-06-01/runtime/invocation/"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == prefix+"next":
		if a.served.Swap(true) {
			<-r.Context().Done() // one event only
			return
		}
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", "req-1")
		w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(2*time.Minute).UnixMilli(), 10))
		w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:volsd-snapshot")
		_, _ = w.Write(a.event)
	case r.Method == http.MethodPost && r.URL.Path == prefix+"req-1/response":
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		a.result <- "response: " + string(body)
	case r.Method == http.MethodPost && r.URL.Path == prefix+"req-1/error":
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		a.result <- "error: " + string(body)
	default:
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

// TestBootstrapRunsScheduledEvent starts the built bootstrap against a
// local Runtime API, DynamoDB Local and moto (a group with no instance in
// service): it answers the scheduled event with a result that says why no
// snapshot was taken, and writes the age metric on stdout.
func TestBootstrapRunsScheduledEvent(t *testing.T) {
	ddbEP, motoEP := testenv.Endpoint(t, testenv.EnvDynamoDB), testenv.Endpoint(t, testenv.EnvMoto)
	ctx := context.Background()
	table := testenv.UniqueName(t, "volsd")
	db := testenv.DynamoDBClient(t)
	if err := store.CreateTable(ctx, db, table); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &table}) })
	group := testenv.UniqueName(t, "asg")
	asg := autoscaling.NewFromConfig(testenv.Moto(t))
	if _, err := asg.CreateLaunchConfiguration(ctx, &autoscaling.CreateLaunchConfigurationInput{
		LaunchConfigurationName: aws.String(group), ImageId: aws.String("ami-12c6146b"), InstanceType: aws.String("t3.micro"),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(group), LaunchConfigurationName: aws.String(group),
		MinSize: aws.Int32(0), MaxSize: aws.Int32(0), DesiredCapacity: aws.Int32(0), AvailabilityZones: []string{"us-east-1a"},
	}); err != nil {
		t.Fatal(err)
	}

	event, err := os.ReadFile("../../events/testdata/scheduled.json")
	if err != nil {
		t.Fatal(err)
	}
	api := &runtimeAPI{event: event, result: make(chan string, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	bin := build(t)
	cmd := exec.Command(bin)
	pool := testenv.UniqueName(t, "web")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(),
		"AWS_REGION=" + testenv.Region, "AWS_ACCESS_KEY_ID=" + testenv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + testenv.SecretKey,
		"AWS_ENDPOINT_URL=" + motoEP, "AWS_ENDPOINT_URL_DYNAMODB=" + ddbEP,
		"VOLSD_POOL=" + pool, "VOLSD_TABLE=" + table, "VOLSD_ASG=" + group,
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var got string
	select {
	case got = <-api.result:
	case <-time.After(90 * time.Second):
		t.Fatalf("no answer from bootstrap; stderr:\n%s", stderr.String())
	}
	if !strings.HasPrefix(got, "response: ") || !strings.Contains(got, "no in-service volume") {
		t.Fatalf("answer %s\nstderr:\n%s", got, stderr.String())
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !strings.Contains(stdout.String(), `"SnapshotAgeSeconds":0`) || !strings.Contains(stdout.String(), fmt.Sprintf(`"Pool":%q`, pool)) {
		t.Errorf("no age metric on stdout:\n%s", stdout.String())
	}
}
