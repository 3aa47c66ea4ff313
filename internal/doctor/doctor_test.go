package doctor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/documents"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/doctor"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

var bg = context.Background()

// managed is SSM as doctor reads it: the documents from moto, the
// instances' registration from awsfake (moto has no
// DescribeInstanceInformation).
type managed struct {
	*ssm.Client
	fake *awsfake.SSM
}

func (m managed) DescribeInstanceInformation(ctx context.Context, in *ssm.DescribeInstanceInformationInput, o ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error) {
	return m.fake.DescribeInstanceInformation(ctx, in, o...)
}

// deployed is a pool deployed on the emulators as the stack deploys it:
// the group tagged and hooked, rules, documents, queues, the instance role
// with the agent's and the SSM agent's permissions, the table.
type deployed struct {
	cfg       doctor.Config
	asg       *autoscaling.Client
	ec2       *ec2.Client
	eb        *eventbridge.Client
	ssm       *ssm.Client
	ssmFake   *awsfake.SSM
	sqs       *sqs.Client
	iam       *iam.Client
	st        *store.Store
	role      string
	instances []string
	// later is how far in the future doctor looks at snapshot age.
	later time.Duration
}

// must returns v; a setup call that failed ends the test (panic).
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("setup: %v", err))
	}
	return v
}

// agentPolicy is what GrantAgent gives the instance role (infra/volsd),
// with statement lifecycle left out when without names it.
func agentPolicy(d *deployed, groupARN string, without string) string {
	table := fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s", testenv.Region, testenv.MotoAccount, d.cfg.Table)
	bucket := "arn:aws:s3:::" + d.cfg.Bucket
	sts := map[string]map[string]any{
		"journal": {"Effect": "Allow", "Action": []string{"dynamodb:GetItem", "dynamodb:Query"}, "Resource": table,
			"Condition": map[string]any{"ForAllValues:StringEquals": map[string]any{"dynamodb:LeadingKeys": []string{"JOURNAL#" + d.cfg.Pool, "POOL#" + d.cfg.Pool}}}},
		"origin":    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": []string{bucket + "/blobs/*", bucket + "/manifests/*"}},
		"list":      {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket},
		"describe":  {"Effect": "Allow", "Action": "ec2:DescribeVolumes", "Resource": "*"},
		"lifecycle": {"Effect": "Allow", "Action": []string{"autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"}, "Resource": groupARN},
	}
	var list []any
	for _, k := range []string{"journal", "origin", "list", "describe", "lifecycle"} {
		if k != without {
			list = append(list, sts[k])
		}
	}
	b, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": list})
	return string(b)
}

const ssmCorePolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ssm:UpdateInstanceInformation","ssm:DescribeAssociation","ssmmessages:CreateControlChannel","ssmmessages:CreateDataChannel","ssmmessages:OpenControlChannel","ssmmessages:OpenDataChannel","ec2messages:GetMessages","ec2messages:SendReply","ec2messages:AcknowledgeMessage"],"Resource":"*"}]}`

func deploy(t *testing.T) *deployed {
	t.Helper()
	cfg := testenv.Moto(t)
	d := &deployed{
		asg: autoscaling.NewFromConfig(cfg), ec2: ec2.NewFromConfig(cfg), eb: eventbridge.NewFromConfig(cfg),
		ssm: ssm.NewFromConfig(cfg), ssmFake: awsfake.NewSSM(), sqs: sqs.NewFromConfig(cfg), iam: iam.NewFromConfig(cfg),
	}
	d.cfg = doctor.Config{
		Pool: testenv.UniqueName(t, "pool"), Group: testenv.UniqueName(t, "asg"), Bucket: testenv.UniqueName(t, "origin"),
		DocumentPrefix: testenv.UniqueName(t, "volsd") + "-", Rules: map[string]string{},
	}
	// The table and the journal.
	d.st = storetest.New(t)
	d.cfg.Table = d.st.Table()

	// The instance role: the agent's statements and the SSM agent's.
	d.role = testenv.UniqueName(t, "instance-role")
	must(d.iam.CreateRole(bg, &iam.CreateRoleInput{RoleName: &d.role,
		AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)}))
	core := must(d.iam.CreatePolicy(bg, &iam.CreatePolicyInput{PolicyName: aws.String(testenv.UniqueName(t, "ssm-core")), PolicyDocument: aws.String(ssmCorePolicy)}))
	must(d.iam.AttachRolePolicy(bg, &iam.AttachRolePolicyInput{RoleName: &d.role, PolicyArn: core.Policy.Arn}))
	profile := testenv.UniqueName(t, "profile")
	prof := must(d.iam.CreateInstanceProfile(bg, &iam.CreateInstanceProfileInput{InstanceProfileName: &profile}))
	if _, err := d.iam.AddRoleToInstanceProfile(bg, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: &profile, RoleName: &d.role}); err != nil {
		// Not idempotent: when the SDK retries an attempt whose answer was
		// lost on a closed connection (it retries those), the retry finds
		// the role already in the profile (LimitExceeded). Setup only needs
		// the role to be there.
		got := must(d.iam.GetInstanceProfile(bg, &iam.GetInstanceProfileInput{InstanceProfileName: &profile}))
		if len(got.InstanceProfile.Roles) != 1 || aws.ToString(got.InstanceProfile.Roles[0].RoleName) != d.role {
			panic(fmt.Sprintf("setup: %v", err))
		}
	}

	// The group: tagged volsd:pool with PropagateAtLaunch, two instances.
	lt := testenv.UniqueName(t, "lt")
	must(d.ec2.CreateLaunchTemplate(bg, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: &lt,
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-03cf127a"), InstanceType: ec2types.InstanceTypeT3Micro}}))
	must(d.asg.CreateAutoScalingGroup(bg, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &d.cfg.Group, MinSize: aws.Int32(2), MaxSize: aws.Int32(4), DesiredCapacity: aws.Int32(2),
		AvailabilityZones: []string{testenv.Region + "a"}, LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: &lt},
		Tags: []astypes.Tag{{Key: aws.String(events.TagPool), Value: &d.cfg.Pool, PropagateAtLaunch: aws.Bool(true)}},
	}))
	g := must(d.asg.DescribeAutoScalingGroups(bg, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{d.cfg.Group}}))
	groupARN := aws.ToString(g.AutoScalingGroups[0].AutoScalingGroupARN)
	for _, in := range g.AutoScalingGroups[0].Instances {
		id := aws.ToString(in.InstanceId)
		d.instances = append(d.instances, id)
		must(d.ec2.AssociateIamInstanceProfile(bg, &ec2.AssociateIamInstanceProfileInput{InstanceId: &id,
			IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: prof.InstanceProfile.Arn}}))
		d.ssmFake.AddInstance(id, map[string]string{events.TagPool: d.cfg.Pool})
	}
	if len(d.instances) != 2 {
		t.Fatalf("group instances %v", g.AutoScalingGroups[0].Instances)
	}
	must(d.iam.PutRolePolicy(bg, &iam.PutRolePolicyInput{RoleName: &d.role, PolicyName: aws.String("volsd-agent"), PolicyDocument: aws.String(agentPolicy(d, groupARN, ""))}))
	// volsd's hooks, and another team's.
	for _, h := range []struct {
		name, transition, result string
		heartbeat                time.Duration
	}{
		{events.LaunchHookName, events.TransitionLaunching, pool.LaunchHookDefaultResult, 15 * time.Minute},
		{events.TerminateHookName, events.TransitionTerminating, pool.TerminateHookDefaultResult, 20 * time.Minute},
		{"my-lifecycle-hook", events.TransitionTerminating, "CONTINUE", 5 * time.Minute},
	} {
		d.putHook(t, h.name, h.transition, h.result, h.heartbeat)
	}
	// The rules.
	for _, id := range doctor.RuleIDs {
		name := testenv.UniqueName(t, id)
		in := &eventbridge.PutRuleInput{Name: &name}
		switch id {
		case "ReconcileSchedule":
			in.ScheduleExpression = aws.String("rate(5 minutes)")
		case "SnapshotSchedule":
			in.ScheduleExpression = aws.String("rate(6 hours)")
		default:
			in.EventPattern = aws.String(`{"source":["aws.autoscaling"]}`)
		}
		must(d.eb.PutRule(bg, in))
		d.cfg.Rules[id] = name
		t.Cleanup(func() { _, _ = d.eb.DeleteRule(bg, &eventbridge.DeleteRuleInput{Name: &name}) })
	}
	// The documents.
	for _, kind := range events.DocumentKinds {
		src := must(documents.Source(kind))
		must(d.ssm.CreateDocument(bg, &ssm.CreateDocumentInput{Name: aws.String(d.cfg.DocumentPrefix + kind), Content: aws.String(string(src)),
			DocumentType: ssmtypes.DocumentTypeCommand, DocumentFormat: ssmtypes.DocumentFormatYaml}))
	}
	// The dead-letter queues.
	for _, q := range []*string{&d.cfg.DeadLetterQueueURL, &d.cfg.EventDeadLetterQueueURL} {
		out := must(d.sqs.CreateQueue(bg, &sqs.CreateQueueInput{QueueName: aws.String(testenv.UniqueName(t, "dlq"))}))
		*q = aws.ToString(out.QueueUrl)
	}
	return d
}

func (d *deployed) putHook(t *testing.T, name, transition, result string, heartbeat time.Duration) {
	t.Helper()
	must(d.asg.PutLifecycleHook(bg, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: &d.cfg.Group, LifecycleHookName: &name,
		LifecycleTransition: &transition, DefaultResult: &result, HeartbeatTimeout: aws.Int32(int32(heartbeat.Seconds()))}))
}

func (d *deployed) run(t *testing.T) doctor.Report {
	t.Helper()
	doc := doctor.New(d.cfg, doctor.Clients{
		Groups: d.asg, Rules: d.eb, Managed: managed{d.ssm, d.ssmFake}, Queues: d.sqs, Instances: d.ec2,
		Roles: awsfake.IAMSimulator{IAMRoles: d.iam},
		SnapshotAge: func(ctx context.Context) (time.Duration, error) {
			return snapshot.Age(ctx, d.st, d.cfg.Pool, time.Now().Add(d.later))
		},
	})
	rep, err := doc.Run(bg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func show(rep doctor.Report) string {
	b, _ := json.MarshalIndent(rep, "", "  ")
	return string(b)
}

// TestHealthyPoolHasNoProblems: a pool deployed as the stack deploys it
// (another team's hook on the group too) passes every check.
func TestHealthyPoolHasNoProblems(t *testing.T) {
	d := deploy(t)
	if _, _, err := d.st.Append(bg, d.cfg.Pool, events.JournalEntry{Op: events.OpDelete, Path: "a", RequestID: "r1"}); err != nil {
		t.Fatal(err)
	}
	rep := d.run(t)
	if rep.Problems() != 0 || len(rep.Checks) != 8 {
		t.Fatalf("a healthy pool has problems:\n%s", show(rep))
	}
	for _, c := range rep.Checks {
		if !c.OK || c.Detail == "" {
			t.Errorf("check %s: ok %v detail %q", c.Name, c.OK, c.Detail)
		}
	}
	if hooks := rep.Checks[1]; !strings.Contains(hooks.Detail, "my-lifecycle-hook") {
		t.Errorf("the foreign hook is not named as left alone: %q", hooks.Detail)
	}
}

// TestEachBrokenSettingIsNamedWithItsFix breaks one setting of a healthy
// pool at a time: doctor reports exactly that check with a finding that
// names the problem and its fix, and every other check stays fine.
func TestEachBrokenSettingIsNamedWithItsFix(t *testing.T) {
	for _, c := range []struct {
		name    string
		check   string
		break_  func(t *testing.T, d *deployed)
		problem []string // substrings of the (first) finding's problem
		fix     []string // substrings of its fix
		count   int      // findings, when not 1
	}{
		{"tag not propagated", doctor.CheckGroupTag, func(t *testing.T, d *deployed) {
			must(d.asg.CreateOrUpdateTags(bg, &autoscaling.CreateOrUpdateTagsInput{Tags: []astypes.Tag{{ResourceId: &d.cfg.Group,
				ResourceType: aws.String("auto-scaling-group"), Key: aws.String(events.TagPool), Value: &d.cfg.Pool, PropagateAtLaunch: aws.Bool(false)}}}))
		}, []string{"not PropagateAtLaunch"}, []string{"create-or-update-tags", "PropagateAtLaunch=true"}, 0},
		{"tag of another pool", doctor.CheckGroupTag, func(t *testing.T, d *deployed) {
			must(d.asg.CreateOrUpdateTags(bg, &autoscaling.CreateOrUpdateTagsInput{Tags: []astypes.Tag{{ResourceId: &d.cfg.Group,
				ResourceType: aws.String("auto-scaling-group"), Key: aws.String(events.TagPool), Value: aws.String("other"), PropagateAtLaunch: aws.Bool(true)}}}))
		}, []string{events.TagPool + "=other"}, []string{"Value=" + "%POOL%"}, 0},
		{"terminate hook missing", doctor.CheckHooks, func(t *testing.T, d *deployed) {
			must(d.asg.DeleteLifecycleHook(bg, &autoscaling.DeleteLifecycleHookInput{AutoScalingGroupName: &d.cfg.Group, LifecycleHookName: aws.String(events.TerminateHookName)}))
		}, []string{"no lifecycle hook " + events.TerminateHookName}, []string{"cdk deploy"}, 0},
		{"launch hook continues", doctor.CheckHooks, func(t *testing.T, d *deployed) {
			d.putHook(t, events.LaunchHookName, events.TransitionLaunching, "CONTINUE", 15*time.Minute)
		}, []string{events.LaunchHookName, "default result CONTINUE, want ABANDON"}, []string{"cdk deploy"}, 0},
		{"terminate heartbeat as short as the Lambda", doctor.CheckHooks, func(t *testing.T, d *deployed) {
			d.putHook(t, events.TerminateHookName, events.TransitionTerminating, "CONTINUE", 5*time.Minute)
		}, []string{events.TerminateHookName, "heartbeat timeout of 5m0s", pool.TerminateHeartbeatMin().String()}, []string{"cdk deploy"}, 0},
		{"rule disabled", doctor.CheckRules, func(t *testing.T, d *deployed) {
			must(d.eb.DisableRule(bg, &eventbridge.DisableRuleInput{Name: aws.String(d.cfg.Rules["CommandStatusRule"])}))
		}, []string{"%RULE%", "DISABLED", "reports are not recorded"}, []string{"aws events enable-rule --name %RULE%"}, 0},
		{"rule deleted", doctor.CheckRules, func(t *testing.T, d *deployed) {
			must(d.eb.DeleteRule(bg, &eventbridge.DeleteRuleInput{Name: aws.String(d.cfg.Rules["CommandStatusRule"])}))
		}, []string{"%RULE%", "does not exist"}, []string{"cdk deploy"}, 0},
		{"instance offline in SSM", doctor.CheckSSM, func(t *testing.T, d *deployed) {
			d.ssmFake.SetPingStatus(d.instances[0], ssmtypes.PingStatusConnectionLost, time.Now().Add(-time.Hour))
		}, []string{"%INSTANCE%", "ConnectionLost"}, []string{"amazon-ssm-agent"}, 0},
		{"instance not in SSM", doctor.CheckSSM, func(t *testing.T, d *deployed) {
			d.ssmFake.RemoveInstance(d.instances[0])
		}, []string{"%INSTANCE%", "not registered with SSM"}, []string{"AmazonSSMManagedInstanceCore"}, 0},
		{"role cannot complete the launch hook", doctor.CheckPermissions, func(t *testing.T, d *deployed) {
			g := must(d.asg.DescribeAutoScalingGroups(bg, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{d.cfg.Group}}))
			must(d.iam.PutRolePolicy(bg, &iam.PutRolePolicyInput{RoleName: &d.role, PolicyName: aws.String("volsd-agent"),
				PolicyDocument: aws.String(agentPolicy(d, aws.ToString(g.AutoScalingGroups[0].AutoScalingGroupARN), "lifecycle"))}))
		}, []string{"%ROLE%", "may not autoscaling:CompleteLifecycleAction", "implicitDeny"}, []string{"GrantAgent"}, 2}, // and the heartbeat
		{"role denies the journal", doctor.CheckPermissions, func(t *testing.T, d *deployed) {
			must(d.iam.PutRolePolicy(bg, &iam.PutRolePolicyInput{RoleName: &d.role, PolicyName: aws.String("deny"),
				PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"dynamodb:Query","Resource":"*"}}`)}))
		}, []string{"%ROLE%", "may not dynamodb:Query", "explicitDeny"}, []string{"GrantAgent"}, 0},
		{"document missing", doctor.CheckDocuments, func(t *testing.T, d *deployed) {
			must(d.ssm.DeleteDocument(bg, &ssm.DeleteDocumentInput{Name: aws.String(d.cfg.DocumentPrefix + "Apply")}))
		}, []string{"%PREFIX%Apply", "does not exist"}, []string{"cdk deploy", "documentPrefix"}, 0},
		{"push requests in the dead-letter queue", doctor.CheckQueues, func(t *testing.T, d *deployed) {
			for range 2 {
				must(d.sqs.SendMessage(bg, &sqs.SendMessageInput{QueueUrl: &d.cfg.DeadLetterQueueURL, MessageBody: aws.String(`{"op":"delete"}`)}))
			}
		}, []string{"push dead-letter queue holds 2 messages"}, []string{"receive-message", "start-message-move-task"}, 0},
		{"events in the event dead-letter queue", doctor.CheckQueues, func(t *testing.T, d *deployed) {
			must(d.sqs.SendMessage(bg, &sqs.SendMessageInput{QueueUrl: &d.cfg.EventDeadLetterQueueURL, MessageBody: aws.String(`{}`)}))
		}, []string{"event dead-letter queue holds 1 messages"}, []string{"receive-message"}, 0},
		{"no snapshot for 20 hours", doctor.CheckSnapshot, func(t *testing.T, d *deployed) {
			if _, _, err := d.st.Append(bg, d.cfg.Pool, events.JournalEntry{Op: events.OpDelete, Path: "a", RequestID: "r1"}); err != nil {
				t.Fatal(err)
			}
			d.later = 20 * time.Hour
		}, []string{"out of date, more than " + snapshot.MaxAge(6*time.Hour).String()}, []string{"snapshot Lambda"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := deploy(t)
			c.break_(t, d)
			rep := d.run(t)
			expand := func(s string) string {
				return strings.NewReplacer("%RULE%", d.cfg.Rules["CommandStatusRule"], "%INSTANCE%", d.instances[0], "%ROLE%", d.role,
					"%PREFIX%", d.cfg.DocumentPrefix, "%POOL%", d.cfg.Pool).Replace(s)
			}
			want := max(c.count, 1)
			if rep.Problems() != want {
				t.Fatalf("%d problems, want %d, of the one broken setting:\n%s", rep.Problems(), want, show(rep))
			}
			for _, ch := range rep.Checks {
				if ch.Name != c.check {
					if !ch.OK {
						t.Errorf("check %s failed too: %+v", ch.Name, ch.Findings)
					}
					continue
				}
				if ch.OK || len(ch.Findings) != want {
					t.Fatalf("check %s: %+v", ch.Name, ch)
				}
				f := ch.Findings[0]
				for _, want := range c.problem {
					if !strings.Contains(f.Problem, expand(want)) {
						t.Errorf("problem %q does not say %q", f.Problem, expand(want))
					}
				}
				for _, want := range c.fix {
					if !strings.Contains(f.Fix, expand(want)) {
						t.Errorf("fix %q does not say %q", f.Fix, expand(want))
					}
				}
			}
		})
	}
}
