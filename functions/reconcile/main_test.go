package main

import (
	"bytes"
	"context"
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
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "volsd-reconcile-bootstrap")
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
		w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:volsd-reconcile")
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

// TestBootstrapFillsThePool runs the built bootstrap against a local
// Runtime API, DynamoDB Local and moto (a group over two zones): the
// scheduled event fills each zone's idle pool.
func TestBootstrapFillsThePool(t *testing.T) {
	ddbEP, motoEP := testenv.Endpoint(t, testenv.EnvDynamoDB), testenv.Endpoint(t, testenv.EnvMoto)
	ctx := context.Background()
	table := testenv.UniqueName(t, "volsd")
	db := testenv.DynamoDBClient(t)
	if err := store.CreateTable(ctx, db, table); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &table}) })
	pool, group := testenv.UniqueName(t, "web"), testenv.UniqueName(t, "asg")
	moto := testenv.Moto(t)
	lt := testenv.UniqueName(t, "lt")
	if _, err := ec2.NewFromConfig(moto).CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: &lt,
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-03cf127a")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := autoscaling.NewFromConfig(moto).CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &group, MinSize: aws.Int32(0), MaxSize: aws.Int32(4), DesiredCapacity: aws.Int32(0),
		AvailabilityZones: []string{"us-east-1a", "us-east-1c"}, LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: &lt},
	}); err != nil {
		t.Fatal(err)
	}
	event, err := os.ReadFile("../../events/testdata/scheduled.json")
	if err != nil {
		t.Fatal(err)
	}
	api := &runtimeAPI{events: [][]byte{event}, result: make(chan string, 1)}
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
		"VOLSD_POOL=" + pool, "VOLSD_TABLE=" + table, "VOLSD_ASG=" + group, "VOLSD_IDLE_PER_AZ=2",
		"VOLSD_VOLUME_SIZE_GIB=4", "VOLSD_VOLUME_TYPE=gp3", "VOLSD_RELEASE_POLICY=delete",
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	select {
	case got := <-api.result:
		if got != "response: null" {
			t.Fatalf("answer %s\nstderr:\n%s", got, stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("no answer from bootstrap; stderr:\n%s", stderr.String())
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	vols, err := store.New(db, table).ListVolumes(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	idle := map[string]int{}
	for _, v := range vols {
		if v.State == store.VolumeIdle {
			idle[v.AZ]++
		}
	}
	if len(vols) != 4 || idle["us-east-1a"] != 2 || idle["us-east-1c"] != 2 {
		t.Fatalf("volumes %+v\nstderr:\n%s", vols, stderr.String())
	}
	for _, az := range []string{"us-east-1a", "us-east-1c"} {
		if !strings.Contains(stdout.String(), fmt.Sprintf(`"AZ":%q,"IdleVolumes":2`, az)) {
			t.Errorf("no IdleVolumes metric for %s on stdout:\n%s", az, stdout.String())
		}
	}
}
