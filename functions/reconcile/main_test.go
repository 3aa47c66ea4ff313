package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/lambdatest"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

func TestBadConfigurationExits2(t *testing.T) {
	lambdatest.BadConfig(t, lambdatest.Build(t), []string{"VOLSD_VOLUME_TYPE=st1", "VOLSD_IDLE_PER_AZ=x"},
		"VOLSD_POOL: is required", "VOLSD_TABLE: is required", "VOLSD_ASG: is required", "VOLSD_IDLE_PER_AZ: must be an integer", "VOLSD_VOLUME_TYPE: must be one of", "VOLSD_RELEASE_POLICY: must be one of")
}

// TestBootstrapFillsThePool runs the built bootstrap against a local
// Runtime API, DynamoDB Local and moto (a group over two zones): the
// scheduled event fills each zone's idle pool.
func TestBootstrapFillsThePool(t *testing.T) {
	ddbEP, motoEP := testenv.Endpoint(t, testenv.EnvDynamoDB), testenv.Endpoint(t, testenv.EnvMoto)
	ctx := context.Background()
	st := storetest.New(t)
	table := st.Table()
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
	res := lambdatest.Invoke(t, lambdatest.Build(t), []string{
		"AWS_REGION=" + testenv.Region, "AWS_ACCESS_KEY_ID=" + testenv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + testenv.SecretKey,
		"AWS_ENDPOINT_URL=" + motoEP, "AWS_ENDPOINT_URL_DYNAMODB=" + ddbEP,
		"VOLSD_POOL=" + pool, "VOLSD_TABLE=" + table, "VOLSD_ASG=" + group, "VOLSD_IDLE_PER_AZ=2",
		"VOLSD_VOLUME_SIZE_GIB=4", "VOLSD_VOLUME_TYPE=gp3", "VOLSD_RELEASE_POLICY=delete",
	}, 90*time.Second, event)
	if got := res.Answers[0]; got != "response: null" {
		t.Fatalf("answer %s\nstderr:\n%s", got, res.Stderr)
	}
	stdout, stderr := res.Stdout, res.Stderr
	vols, err := st.ListVolumes(ctx, pool)
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
		t.Fatalf("volumes %+v\nstderr:\n%s", vols, stderr)
	}
	for _, az := range []string{"us-east-1a", "us-east-1c"} {
		if !strings.Contains(stdout, fmt.Sprintf(`"AZ":%q,"IdleVolumes":2`, az)) {
			t.Errorf("no IdleVolumes metric for %s on stdout:\n%s", az, stdout)
		}
	}
}
