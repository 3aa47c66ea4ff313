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
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "volsd-lifecycle-bootstrap")
	if err != nil {
		panic(err)
	}
	buildDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles this main once, the way it is deployed (bootstrap,
// lambda.norpc).
var build = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(buildDir, "bootstrap")
	if out, err := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

func bootstrap(t *testing.T) string {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestBadConfigurationExits2(t *testing.T) {
	cmd := exec.Command(bootstrap(t))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "VOLSD_VOLUME_TYPE=st1", "VOLSD_IDLE_PER_AZ=x"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want code 2; stderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"VOLSD_POOL: is required", "VOLSD_TABLE: is required", "VOLSD_ASG: is required",
		"VOLSD_IDLE_PER_AZ: must be an integer", "VOLSD_VOLUME_TYPE: must be one of", "VOLSD_RELEASE_POLICY: must be one of"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
}

// runtimeAPI serves events one by one through the Lambda Runtime API and
// records the answers.
type runtimeAPI struct {
	mu     sync.Mutex
	events [][]byte
	next   int
	result chan string
}

func (a *runtimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const prefix = "/2018-06-01/runtime/invocation/"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == prefix+"next":
		a.mu.Lock()
		i := a.next
		a.next++
		a.mu.Unlock()
		if i >= len(a.events) {
			<-r.Context().Done()
			return
		}
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", fmt.Sprintf("req-%d", i))
		w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(2*time.Minute).UnixMilli(), 10))
		w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:volsd-lifecycle")
		_, _ = w.Write(a.events[i])
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/response"):
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		a.result <- "response: " + string(body)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/error"):
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		a.result <- "error: " + string(body)
	default:
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

// TestBootstrapAttachesAVolume runs the built bootstrap against a local
// Runtime API, DynamoDB Local and moto: a TEST_NOTIFICATION is ignored, and
// a launch of a moto instance gets a volume created on demand and attached.
func TestBootstrapAttachesAVolume(t *testing.T) {
	ddbEP, motoEP := testenv.Endpoint(t, testenv.EnvDynamoDB), testenv.Endpoint(t, testenv.EnvMoto)
	ctx := context.Background()
	table := testenv.UniqueName(t, "volsd")
	db := testenv.DynamoDBClient(t)
	if err := store.CreateTable(ctx, db, table); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &table}) })
	pool, group := testenv.UniqueName(t, "web"), testenv.UniqueName(t, "asg")
	mec2 := ec2.NewFromConfig(testenv.Moto(t))
	run, err := mec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-03cf127a"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceType: types.InstanceTypeT3Micro, Placement: &types.Placement{AvailabilityZone: aws.String("us-east-1b")}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	detail, _ := json.Marshal(events.LifecycleAction{LifecycleActionToken: "6f0c8a2e-1111-4222-8333-944455556666", AutoScalingGroupName: group,
		LifecycleHookName: "volsd-launch", EC2InstanceID: id, LifecycleTransition: events.TransitionLaunching})
	launch, _ := json.Marshal(events.Envelope{Version: "0", ID: "e-1", DetailType: events.DetailTypeLaunch, Source: events.SourceAutoScaling,
		Region: testenv.Region, Detail: detail})
	note, err := os.ReadFile("../../events/testdata/test-notification.json")
	if err != nil {
		t.Fatal(err)
	}
	api := &runtimeAPI{events: [][]byte{note, launch}, result: make(chan string, 2)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	cmd := exec.Command(bootstrap(t))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(),
		"AWS_REGION=" + testenv.Region, "AWS_ACCESS_KEY_ID=" + testenv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + testenv.SecretKey,
		"AWS_ENDPOINT_URL=" + motoEP, "AWS_ENDPOINT_URL_DYNAMODB=" + ddbEP,
		"VOLSD_POOL=" + pool, "VOLSD_TABLE=" + table, "VOLSD_ASG=" + group, "VOLSD_IDLE_PER_AZ=1",
		"VOLSD_VOLUME_SIZE_GIB=4", "VOLSD_VOLUME_TYPE=gp3", "VOLSD_RELEASE_POLICY=recycle",
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for i := 0; i < 2; i++ {
		select {
		case got := <-api.result:
			if got != "response: null" {
				t.Fatalf("answer %d: %s\nstderr:\n%s", i, got, stderr.String())
			}
		case <-time.After(90 * time.Second):
			t.Fatalf("no answer from bootstrap; stderr:\n%s", stderr.String())
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !strings.Contains(stderr.String(), "TEST_NOTIFICATION") {
		t.Errorf("no log line about the test notification:\n%s", stderr.String())
	}
	st := store.New(db, table)
	inst, err := st.GetInstance(ctx, pool, id)
	if err != nil || inst.VolumeID == "" {
		t.Fatalf("instance record %+v %v\nstderr:\n%s", inst, err, stderr.String())
	}
	v, err := st.GetVolume(ctx, pool, inst.VolumeID)
	if err != nil || v.State != store.VolumeInUse || v.AZ != "us-east-1b" || v.Device != "/dev/sdf" {
		t.Fatalf("volume record %+v %v", v, err)
	}
	out, err := mec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{v.VolumeID}})
	if err != nil || len(out.Volumes[0].Attachments) != 1 || aws.ToString(out.Volumes[0].Attachments[0].InstanceId) != id {
		t.Fatalf("moto volume %+v %v", out, err)
	}
	if !strings.Contains(stdout.String(), `"PoolMiss":1`) || !strings.Contains(stdout.String(), `"AttachLatency"`) {
		t.Errorf("no pool-miss/attach metrics on stdout:\n%s", stdout.String())
	}
}
