package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/lambdatest"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

func TestBadConfigurationExits2(t *testing.T) {
	lambdatest.BadConfig(t, lambdatest.Build(t), []string{"VOLSD_VOLUME_TYPE=st1", "VOLSD_IDLE_PER_AZ=x"},
		"VOLSD_POOL: is required", "VOLSD_TABLE: is required", "VOLSD_ASG: is required", "VOLSD_IDLE_PER_AZ: must be an integer", "VOLSD_VOLUME_TYPE: must be one of", "VOLSD_RELEASE_POLICY: must be one of")
}

// TestBootstrapAttachesAVolume runs the built bootstrap against a local
// Runtime API, DynamoDB Local and moto: a TEST_NOTIFICATION is ignored, and
// a launch of a moto instance gets a volume created on demand and attached.
func TestBootstrapAttachesAVolume(t *testing.T) {
	ddbEP, motoEP := testenv.Endpoint(t, testenv.EnvDynamoDB), testenv.Endpoint(t, testenv.EnvMoto)
	ctx := context.Background()
	st := storetest.New(t)
	table := st.Table()
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
	res := lambdatest.Invoke(t, lambdatest.Build(t), []string{
		"AWS_REGION=" + testenv.Region, "AWS_ACCESS_KEY_ID=" + testenv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + testenv.SecretKey,
		"AWS_ENDPOINT_URL=" + motoEP, "AWS_ENDPOINT_URL_DYNAMODB=" + ddbEP,
		"VOLSD_POOL=" + pool, "VOLSD_TABLE=" + table, "VOLSD_ASG=" + group, "VOLSD_IDLE_PER_AZ=1",
		"VOLSD_VOLUME_SIZE_GIB=4", "VOLSD_VOLUME_TYPE=gp3", "VOLSD_RELEASE_POLICY=recycle",
	}, 90*time.Second, note, launch)
	for i, got := range res.Answers {
		if got != "response: null" {
			t.Fatalf("answer %d: %s\nstderr:\n%s", i, got, res.Stderr)
		}
	}
	stdout, stderr := res.Stdout, res.Stderr
	if !strings.Contains(stderr, "TEST_NOTIFICATION") {
		t.Errorf("no log line about the test notification:\n%s", stderr)
	}
	inst, err := st.GetInstance(ctx, pool, id)
	if err != nil || inst.VolumeID == "" {
		t.Fatalf("instance record %+v %v\nstderr:\n%s", inst, err, stderr)
	}
	v, err := st.GetVolume(ctx, pool, inst.VolumeID)
	if err != nil || v.State != store.VolumeInUse || v.AZ != "us-east-1b" || v.Device != "/dev/sdf" {
		t.Fatalf("volume record %+v %v", v, err)
	}
	out, err := mec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{v.VolumeID}})
	if err != nil || len(out.Volumes[0].Attachments) != 1 || aws.ToString(out.Volumes[0].Attachments[0].InstanceId) != id {
		t.Fatalf("moto volume %+v %v", out, err)
	}
	if !strings.Contains(stdout, `"PoolMiss":1`) || !strings.Contains(stdout, `"AttachLatency"`) {
		t.Errorf("no pool-miss/attach metrics on stdout:\n%s", stdout)
	}
}
