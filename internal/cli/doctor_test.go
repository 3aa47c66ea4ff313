package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/doctor"
)

// denied answers every doctor call with AccessDenied: an operator without
// read permissions.
type denied struct{}

var errDenied = &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized"}

func (denied) DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	return nil, errDenied
}
func (denied) DescribeLifecycleHooks(context.Context, *autoscaling.DescribeLifecycleHooksInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error) {
	return nil, errDenied
}
func (denied) DescribeRule(context.Context, *eventbridge.DescribeRuleInput, ...func(*eventbridge.Options)) (*eventbridge.DescribeRuleOutput, error) {
	return nil, errDenied
}
func (denied) DescribeInstanceInformation(context.Context, *ssm.DescribeInstanceInformationInput, ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error) {
	return nil, errDenied
}
func (denied) DescribeDocument(context.Context, *ssm.DescribeDocumentInput, ...func(*ssm.Options)) (*ssm.DescribeDocumentOutput, error) {
	return nil, errDenied
}
func (denied) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	return nil, errDenied
}
func (denied) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return nil, errDenied
}
func (denied) GetInstanceProfile(context.Context, *iam.GetInstanceProfileInput, ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error) {
	return nil, errDenied
}
func (denied) SimulatePrincipalPolicy(context.Context, *iam.SimulatePrincipalPolicyInput, ...func(*iam.Options)) (*iam.SimulatePrincipalPolicyOutput, error) {
	return nil, errDenied
}

// TestDoctorCommand: volsd doctor reads the group, queues, rules and
// document prefix from the stack outputs, prints every check, and exits 3
// with problems (here: an operator who may read nothing, told which
// permission to add); without a group it exits 2 naming --asg.
func TestDoctorCommand(t *testing.T) {
	dir := t.TempDir()
	outputs := filepath.Join(dir, "cdk-outputs.json")
	rules := "LifecycleRule=r1,LaunchSuccessfulRule=r2,ReconcileSchedule=r3,SnapshotSchedule=r4,CommandStatusRule=r5,InvocationFailureRule=r6"
	if err := os.WriteFile(outputs, []byte(`{"volsd-web": {"PoolName": "web", "TableName": "volsd-web", "BucketName": "origin", "QueueUrl": "q",
		"DeadLetterQueueUrl": "dlq", "Region": "eu-west-1", "AutoScalingGroupName": "web-asg", "EventDeadLetterQueueUrl": "edlq",
		"DocumentPrefix": "volsd-", "Rules": "`+rules+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var got cli.Config
	connect := func(_ context.Context, cfg cli.Config) (cli.Clients, error) {
		got = cfg
		d := denied{}
		return cli.Clients{Doctor: doctor.Clients{Groups: d, Rules: d, Managed: d, Queues: d, Instances: d, Roles: d,
			SnapshotAge: func(context.Context) (time.Duration, error) { return 0, errDenied }}}, nil
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli.Main(context.Background(), args, cli.IO{Out: &out, Err: &errb}, func(string) (string, bool) { return "", false }, connect)
		return code, out.String(), errb.String()
	}
	code, out, errs := run("doctor", "--outputs", outputs, "--json")
	if code != cli.ExitFailed {
		t.Fatalf("exit %d, want %d; stderr %s", code, cli.ExitFailed, errs)
	}
	if got.Group != "web-asg" || got.EventDeadLetterQueueURL != "edlq" || got.DeadLetterQueueURL != "dlq" || got.Rules != rules || got.DocumentPrefix != "volsd-" {
		t.Errorf("configuration from the outputs: %+v", got)
	}
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(rep.Checks) != 8 || rep.Problems() == 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, c := range rep.Checks {
		if c.Name == doctor.CheckSSM || c.Name == doctor.CheckPermissions {
			// They need the group's instances.
			if c.OK || !c.Skipped || !strings.Contains(c.Detail, "not checked") {
				t.Errorf("check %s without the group: %+v", c.Name, c)
			}
			continue
		}
		if c.OK || !strings.Contains(c.Findings[0].Fix, "give your operator role this read permission") {
			t.Errorf("check %s: %+v", c.Name, c)
		}
	}
	if code, out, _ := run("doctor", "--outputs", outputs, "--asg", "other-asg"); code != cli.ExitFailed || !strings.Contains(out, "PROBLEM  group tag") || !strings.Contains(out, "fix: ") || got.Group != "other-asg" {
		t.Errorf("text report (exit %d, group %s):\n%s", code, got.Group, out)
	}
	if code, _, errs := run("doctor", "--pool", "web", "--table", "t", "--bucket", "b"); code != cli.ExitUsage || !strings.Contains(errs, "--asg") {
		t.Errorf("without a group: exit %d, %s", code, errs)
	}
	if code, _, errs := run("doctor", "--outputs", outputs, "--rules", "Bogus=x"); code != cli.ExitUsage || !strings.Contains(errs, "Bogus=x") {
		t.Errorf("bad --rules: exit %d, %s", code, errs)
	}
}
