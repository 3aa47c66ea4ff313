package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/internal/lambdatest"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

func TestBadConfigurationExits2(t *testing.T) {
	stderr := lambdatest.BadConfig(t, lambdatest.Build(t), []string{"VOLSD_SNAPSHOT_KEEP=0"},
		"VOLSD_POOL: is required", "VOLSD_TABLE: is required", "VOLSD_ASG: is required", "VOLSD_SNAPSHOT_KEEP: must be between")
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(stderr)), &line); err != nil || line["level"] != "ERROR" {
		t.Errorf("stderr is not one JSON log line: %q (%v)", stderr, err)
	}
}

// TestBootstrapRunsScheduledEvent starts the built bootstrap against a
// local Runtime API, DynamoDB Local and moto (a group with no instance in
// service): it answers the scheduled event with a result that says why no
// snapshot was taken, and writes the age metric on stdout.
func TestBootstrapRunsScheduledEvent(t *testing.T) {
	ddbEP, motoEP := testenv.Endpoint(t, testenv.EnvDynamoDB), testenv.Endpoint(t, testenv.EnvMoto)
	ctx := context.Background()
	st := storetest.New(t)
	table := st.Table()
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

	bucket := testenv.UniqueName(t, "origin")
	if _, err := s3.NewFromConfig(testenv.Moto(t), func(o *s3.Options) { o.UsePathStyle = true }).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	event, err := os.ReadFile("../../events/testdata/scheduled.json")
	if err != nil {
		t.Fatal(err)
	}
	pool := testenv.UniqueName(t, "web")
	res := lambdatest.Invoke(t, lambdatest.Build(t), []string{
		"AWS_REGION=" + testenv.Region, "AWS_ACCESS_KEY_ID=" + testenv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + testenv.SecretKey,
		"AWS_ENDPOINT_URL=" + motoEP, "AWS_ENDPOINT_URL_DYNAMODB=" + ddbEP,
		"VOLSD_POOL=" + pool, "VOLSD_TABLE=" + table, "VOLSD_ASG=" + group, "VOLSD_BUCKET=" + bucket,
	}, 90*time.Second, event)
	got, stdout, stderr := res.Answers[0], res.Stdout, res.Stderr
	if !strings.HasPrefix(got, "response: ") || !strings.Contains(got, "no in-service volume") {
		t.Fatalf("answer %s\nstderr:\n%s", got, stderr)
	}
	if !strings.Contains(stdout, `"SnapshotAgeSeconds":0`) || !strings.Contains(stdout, fmt.Sprintf(`"Pool":%q`, pool)) {
		t.Errorf("no age metric on stdout:\n%s", stdout)
	}
	// The origin's reclaim ran over the (empty) bucket.
	if !strings.Contains(stdout, `"ReclaimedBytes":0`) || !strings.Contains(stdout, `"UnreferencedBytes":0`) {
		t.Errorf("no reclaim metrics on stdout:\n%s", stdout)
	}
}
