package volsd_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/volsd/volsd/infra/assembly"
	"github.com/volsd/volsd/internal/doctor"
)

// The policies are checked by evaluating the synthesized statements against
// concrete requests (infra/assembly's evaluator): what each role may do and,
// as much, what it may not.

const (
	arnPrefix = "arn:aws:ec2:" + testRegion + ":" + testAccount + ":"
	volumeArn = arnPrefix + "volume/vol-0123456789abcdef0"
	instArn   = arnPrefix + "instance/i-0123456789abcdef0"
	snapArn   = "arn:aws:ec2:" + testRegion + "::snapshot/snap-0fedcba9876543210"
	groupArn  = "arn:aws:autoscaling:" + testRegion + ":" + testAccount + ":autoScalingGroup:2b7f1c8e-3d4a-4f5b-8c6d-9e0f1a2b3c4d:autoScalingGroupName/"
)

func docArn(name string) string {
	return "arn:aws:ssm:" + testRegion + ":" + testAccount + ":document/" + name
}

// Condition contexts.
var (
	noTags      = map[string][]string{}
	resPool     = map[string][]string{"aws:ResourceTag/volsd:pool": {testPool}}
	resInstance = map[string][]string{"aws:ResourceTag/volsd:pool": {testPool}, "aws:ResourceTag/aws:autoscaling:groupName": {testGroup}}
	resOtherASG = map[string][]string{"aws:ResourceTag/volsd:pool": {testPool}, "aws:ResourceTag/aws:autoscaling:groupName": {"other-asg"}}
	ssmInstance = map[string][]string{"ssm:resourceTag/volsd:pool": {testPool}, "ssm:resourceTag/aws:autoscaling:groupName": {testGroup}}
	ssmOtherASG = map[string][]string{"ssm:resourceTag/volsd:pool": {testPool}, "ssm:resourceTag/aws:autoscaling:groupName": {"other-asg"}}
	// CreateVolume as the lifecycle and reconcile Lambdas send it: the
	// pool's tag, encrypted, the pool's type (gp3) and size (20 GiB).
	newVolume    = map[string][]string{"aws:RequestTag/volsd:pool": {testPool}, "ec2:Encrypted": {"true"}, "ec2:VolumeType": {"gp3"}, "ec2:VolumeSize": {"20"}}
	unencrypted  = map[string][]string{"aws:RequestTag/volsd:pool": {testPool}, "ec2:Encrypted": {"false"}, "ec2:VolumeType": {"gp3"}, "ec2:VolumeSize": {"20"}}
	otherType    = map[string][]string{"aws:RequestTag/volsd:pool": {testPool}, "ec2:Encrypted": {"true"}, "ec2:VolumeType": {"io2"}, "ec2:VolumeSize": {"20"}}
	tooLarge     = map[string][]string{"aws:RequestTag/volsd:pool": {testPool}, "ec2:Encrypted": {"true"}, "ec2:VolumeType": {"gp3"}, "ec2:VolumeSize": {"16384"}}
	resOther     = map[string][]string{"aws:ResourceTag/volsd:pool": {"media"}}
	reqPool      = map[string][]string{"aws:RequestTag/volsd:pool": {testPool}}
	reqOther     = map[string][]string{"aws:RequestTag/volsd:pool": {"media"}}
	ssmPool      = map[string][]string{"ssm:resourceTag/volsd:pool": {testPool}}
	ssmOther     = map[string][]string{"ssm:resourceTag/volsd:pool": {"media"}}
	tagOnVolume  = map[string][]string{"ec2:CreateAction": {"CreateVolume"}, "aws:RequestTag/volsd:pool": {testPool}}
	tagOnSnap    = map[string][]string{"ec2:CreateAction": {"CreateSnapshot"}, "aws:RequestTag/volsd:pool": {testPool}}
	tagAfter     = map[string][]string{"aws:RequestTag/volsd:pool": {testPool}}
	forEBS       = map[string][]string{"kms:GrantIsForAWSResource": {"true"}}
	journalKey   = map[string][]string{"dynamodb:LeadingKeys": {"JOURNAL#" + testPool}}
	poolKey      = map[string][]string{"dynamodb:LeadingKeys": {"POOL#" + testPool}}
	otherPoolKey = map[string][]string{"dynamodb:LeadingKeys": {"JOURNAL#media"}}
)

type permission struct {
	action, resource string
	context          map[string][]string
	want             bool
}

func roleStatements(t *testing.T, tmpl *assembly.Template, rolePart string) []assembly.Statement {
	t.Helper()
	role := one(t, tmpl, "AWS::IAM::Role", rolePart)
	st, err := tmpl.RoleStatements(role.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) == 0 {
		t.Fatalf("role %s has no statements", role.ID)
	}
	return st
}

func checkPermissions(t *testing.T, role string, st []assembly.Statement, perms []permission) {
	t.Helper()
	for _, p := range perms {
		got, err := assembly.Allows(st, assembly.Request{Action: p.action, Resource: p.resource, Context: p.context})
		if err != nil {
			t.Fatalf("%s %s: %v", role, p.action, err)
		}
		if got != p.want {
			t.Errorf("%s: %s on %s with %v: allowed = %v, want %v", role, p.action, p.resource, p.context, got, p.want)
		}
	}
}

func TestFunctionPermissions(t *testing.T) {
	tmpl := template(t, stackName)
	table := "<" + one(t, tmpl, "AWS::DynamoDB::Table", "Table").ID + ".Arn>"
	origin := "<" + one(t, tmpl, "AWS::S3::Bucket", "Origin").ID + ".Arn>"
	key := "<" + one(t, tmpl, "AWS::KMS::Key", "EbsKey").ID + ".Arn>"
	sourceSnap := "arn:aws:ec2:" + testRegion + "::snapshot/" + testSnap
	tableRW := []permission{
		{"dynamodb:GetItem", table, nil, true},
		{"dynamodb:DeleteItem", table, nil, true},
		{"dynamodb:BatchGetItem", table, nil, false},
		{"dynamodb:BatchWriteItem", table, nil, false},
		{"dynamodb:DescribeTable", table, nil, false},
		{"dynamodb:UpdateItem", table, nil, true},
		{"dynamodb:PutItem", table, nil, true},
		{"dynamodb:ConditionCheckItem", table, nil, true},
		{"dynamodb:Query", table + "/index/gsi1", nil, true},
		{"dynamodb:Scan", table, nil, false},
		{"dynamodb:DeleteTable", table, nil, false},
		{"dynamodb:PutItem", "arn:aws:dynamodb:" + testRegion + ":" + testAccount + ":table/other", nil, false},
	}
	// Nothing but the pool's own calls, in any role.
	never := []permission{
		{"ec2:AttachVolume", volumeArn, noTags, false},
		{"ec2:AttachVolume", volumeArn, resOther, false},
		{"ec2:DetachVolume", volumeArn, noTags, false},
		{"ec2:DeleteVolume", volumeArn, noTags, false},
		{"ec2:DeleteVolume", volumeArn, resOther, false},
		{"ec2:CreateSnapshot", volumeArn, noTags, false},
		{"ec2:ModifyVolume", volumeArn, noTags, false},
		{"ec2:ModifyVolume", volumeArn, resOther, false},
		{"ec2:CreateTags", volumeArn, tagAfter, false},
		{"ec2:DeleteTags", volumeArn, resPool, false},
		{"ec2:DeleteSnapshot", snapArn, noTags, false},
		{"ec2:TerminateInstances", instArn, resPool, false},
		{"ssm:SendCommand", docArn("AWS-RunShellScript"), nil, false},
		{"ssm:SendCommand", instArn, ssmOther, false},
		{"ssm:SendCommand", instArn, noTags, false},
		// The pool tag alone does not make an instance a target: anyone who
		// may tag instances could set it. Only Auto Scaling sets the group tag.
		{"ssm:SendCommand", instArn, ssmPool, false},
		{"ssm:SendCommand", instArn, ssmOtherASG, false},
		{"ec2:AttachVolume", instArn, resPool, false},
		{"ec2:AttachVolume", instArn, resOtherASG, false},
		{"ec2:DetachVolume", instArn, resPool, false},
		{"ec2:CreateVolume", arnPrefix + "volume/*", unencrypted, false},
		{"ec2:CreateVolume", arnPrefix + "volume/*", otherType, false},
		{"ec2:CreateVolume", arnPrefix + "volume/*", tooLarge, false},
		{"dynamodb:BatchWriteItem", "*", nil, false},
		{"s3:PutObject", origin + "/blobs/abc", nil, false},
		{"s3:PutObject", origin + "/manifests/abc.json", nil, false},
		{"s3:DeleteObjectVersion", origin + "/blobs/abc", nil, false},
		{"s3:DeleteObject", origin + "/other/abc", nil, false},
		{"s3:DeleteObject", "arn:aws:s3:::other-bucket/blobs/abc", nil, false},
		{"s3:PutLifecycleConfiguration", origin, nil, false},
		{"iam:PassRole", "arn:aws:iam::" + testAccount + ":role/x", nil, false},
		{"autoscaling:CompleteLifecycleAction", groupArn + "other-asg", nil, false},
	}
	cases := map[string][]permission{
		"Lifecycle": append(append([]permission{
			{"s3:DeleteObject", origin + "/blobs/abc", nil, false},
			{"s3:DeleteObject", origin + "/manifests/abc.json", nil, false},
			{"ec2:DescribeVolumes", "*", nil, true},
			{"ec2:DescribeInstances", "*", nil, true},
			{"ec2:CreateVolume", arnPrefix + "volume/*", newVolume, true},
			{"ec2:CreateVolume", arnPrefix + "volume/*", reqPool, false},
			{"ec2:CreateVolume", arnPrefix + "volume/*", noTags, false},
			{"ec2:CreateVolume", arnPrefix + "volume/*", reqOther, false},
			{"ec2:CreateVolume", snapArn, resPool, true},
			{"ec2:CreateVolume", snapArn, noTags, false},
			{"ec2:CreateVolume", sourceSnap, noTags, true},
			{"ec2:CreateTags", volumeArn, tagOnVolume, true},
			{"ec2:CreateTags", snapArn, tagOnSnap, false},
			{"ec2:AttachVolume", volumeArn, resPool, true},
			{"ec2:AttachVolume", instArn, resInstance, true},
			{"ec2:DetachVolume", instArn, resInstance, true},
			{"ec2:AttachVolume", instArn, noTags, false},
			{"ec2:DescribeSnapshots", "*", nil, false},
			{"autoscaling:DescribeAutoScalingGroups", "*", nil, false},
			{"ssm:ListCommandInvocations", "*", nil, false},
			{"ec2:DetachVolume", volumeArn, resPool, true},
			{"ec2:DeleteVolume", volumeArn, resPool, true},
			{"ec2:ModifyVolume", volumeArn, resPool, false},
			{"ec2:CreateSnapshot", volumeArn, resPool, false},
			{"kms:CreateGrant", key, forEBS, true},
			{"kms:CreateGrant", key, nil, false},
			{"kms:GenerateDataKeyWithoutPlaintext", key, nil, true},
			{"kms:Decrypt", "arn:aws:kms:" + testRegion + ":" + testAccount + ":key/other", nil, false},
			{"ssm:SendCommand", docArn("volsd-Release"), nil, true},
			{"ssm:SendCommand", docArn("volsd-Status"), nil, true},
			{"ssm:SendCommand", docArn("volsd-Apply"), nil, false},
			{"ssm:SendCommand", instArn, ssmInstance, true},
			{"ssm:GetCommandInvocation", "*", nil, true},
			{"autoscaling:CompleteLifecycleAction", groupArn + testGroup, nil, true},
			{"autoscaling:RecordLifecycleActionHeartbeat", groupArn + testGroup, nil, false},
			{"s3:GetObject", origin + "/blobs/abc", nil, false},
		}, tableRW...), never...),
		"Reconcile": append(append([]permission{
			{"s3:DeleteObject", origin + "/blobs/abc", nil, false},
			{"s3:DeleteObject", origin + "/manifests/abc.json", nil, false},
			{"ec2:CreateVolume", arnPrefix + "volume/*", newVolume, true},
			{"ec2:DetachVolume", instArn, resInstance, true},
			{"ec2:DescribeSnapshots", "*", nil, false},
			{"ec2:CreateVolume", arnPrefix + "volume/*", noTags, false},
			{"ec2:CreateTags", volumeArn, tagOnVolume, true},
			{"ec2:DetachVolume", volumeArn, resPool, true},
			{"ec2:DeleteVolume", volumeArn, resPool, true},
			{"ec2:ModifyVolume", volumeArn, resPool, true},
			{"ec2:DescribeVolumesModifications", "*", nil, true},
			{"ec2:AttachVolume", volumeArn, resPool, false},
			{"autoscaling:DescribeAutoScalingGroups", "*", nil, true},
			{"autoscaling:CompleteLifecycleAction", groupArn + testGroup, nil, false},
			{"ssm:SendCommand", docArn("volsd-Apply"), nil, false},
		}, tableRW...), never...),
		"Snapshot": append(append([]permission{
			{"ec2:CreateSnapshot", volumeArn, resPool, true},
			{"ec2:CreateSnapshot", snapArn, reqPool, true},
			{"ec2:CreateSnapshot", snapArn, noTags, false},
			{"ec2:CreateTags", snapArn, tagOnSnap, true},
			{"ec2:CreateTags", volumeArn, tagOnVolume, false},
			{"ec2:DeleteSnapshot", snapArn, resPool, true},
			{"ec2:ModifyVolume", volumeArn, resPool, false},
			{"ec2:DeleteSnapshot", snapArn, resOther, false},
			{"ec2:CreateVolume", arnPrefix + "volume/*", reqPool, false},
			{"ssm:SendCommand", docArn("volsd-Freeze"), nil, true},
			{"ssm:SendCommand", docArn("volsd-Thaw"), nil, true},
			{"ssm:SendCommand", docArn("volsd-Apply"), nil, false},
			{"ssm:SendCommand", instArn, ssmInstance, true},
			{"ec2:DescribeSnapshots", "*", nil, true},
			{"ec2:DescribeVolumes", "*", nil, false},
			{"ssm:ListCommandInvocations", "*", nil, false},
			// Origin reclaim: list, read, delete blobs and manifests only.
			{"s3:ListBucket", origin, nil, true},
			{"s3:GetObject", origin + "/manifests/abc.json", nil, true},
			{"s3:DeleteObject", origin + "/blobs/abc", nil, true},
			{"s3:DeleteObject", origin + "/manifests/abc.json", nil, true},
			{"s3:DeleteObject", origin, nil, false},
			{"s3:DeleteBucket", origin, nil, false},
		}, tableRW...), never...),
		"Push": append(append([]permission{
			{"s3:DeleteObject", origin + "/blobs/abc", nil, false},
			{"s3:DeleteObject", origin + "/manifests/abc.json", nil, false},
			{"s3:GetObject", origin + "/blobs/abc", nil, true},
			{"s3:GetObject", origin + "/manifests/abc.json", nil, true},
			{"s3:GetObject", origin + "/other/abc", nil, false},
			{"s3:ListBucket", origin, nil, true},
			{"ssm:SendCommand", docArn("volsd-Apply"), nil, true},
			{"ssm:SendCommand", docArn("volsd-Freeze"), nil, false},
			{"ssm:SendCommand", instArn, ssmInstance, true},
			{"ec2:CreateVolume", arnPrefix + "volume/*", reqPool, false},
			{"ec2:DescribeVolumes", "*", nil, false},
		}, tableRW...), never...),
		"Report": append([]permission{
			{"s3:DeleteObject", origin + "/blobs/abc", nil, false},
			{"s3:DeleteObject", origin + "/manifests/abc.json", nil, false},
			{"ssm:GetCommandInvocation", "*", nil, true},
			{"ssm:ListCommandInvocations", "*", nil, true},
			{"ssm:SendCommand", docArn("volsd-Apply"), nil, false},
			{"ec2:DescribeVolumes", "*", nil, false},
			{"s3:GetObject", origin + "/blobs/abc", nil, false},
			// It reads an instance record and writes it back, lists the
			// pool's instances and reads an entry (ReportedLagSeconds):
			// nothing else.
			{"dynamodb:GetItem", table, nil, true},
			{"dynamodb:PutItem", table, nil, true},
			{"dynamodb:UpdateItem", table, nil, false},
			{"dynamodb:DeleteItem", table, nil, false},
			{"dynamodb:Query", table, nil, true},
			{"dynamodb:Query", table + "/index/gsi1", nil, false},
			{"dynamodb:ConditionCheckItem", table, nil, false},
			{"dynamodb:Scan", table, nil, false},
		}, never...),
	}
	for role, perms := range cases {
		t.Run(role, func(t *testing.T) {
			checkPermissions(t, role, roleStatements(t, tmpl, "Pool"+role+"Role"), perms)
		})
	}
}

// TestDoctorChecksWhatGrantAgentGives: every call volsd doctor simulates
// for the agent (doctor.AgentPermissions) is allowed by GrantAgent's
// statements, so a role set up as the README says passes doctor.
func TestDoctorChecksWhatGrantAgentGives(t *testing.T) {
	tmpl := template(t, stackName)
	table := "<" + one(t, tmpl, "AWS::DynamoDB::Table", "Table").ID + ".Arn>"
	origin := "<" + one(t, tmpl, "AWS::S3::Bucket", "Origin").ID + ".Arn>"
	tokens := strings.NewReplacer("arn:aws:dynamodb:"+testRegion+":"+testAccount+":table/TABLE", table, "arn:aws:s3:::BUCKET", origin)
	var perms []permission
	for _, p := range doctor.AgentPermissions("aws", testRegion, testAccount, testPool, "TABLE", "BUCKET", groupArn+testGroup) {
		perms = append(perms, permission{p.Action, tokens.Replace(p.Resource), p.Context, true})
	}
	checkPermissions(t, "agent", roleStatements(t, tmpl, "InstanceRole"), perms)
}

func TestAgentPermissions(t *testing.T) {
	tmpl := template(t, stackName)
	table := "<" + one(t, tmpl, "AWS::DynamoDB::Table", "Table").ID + ".Arn>"
	origin := "<" + one(t, tmpl, "AWS::S3::Bucket", "Origin").ID + ".Arn>"
	checkPermissions(t, "agent", roleStatements(t, tmpl, "InstanceRole"), []permission{
		{"dynamodb:Query", table, journalKey, true},
		{"dynamodb:GetItem", table, poolKey, true},
		{"dynamodb:Query", table, otherPoolKey, false},
		{"dynamodb:Query", table + "/index/gsi1", journalKey, false},
		{"dynamodb:PutItem", table, journalKey, false},
		{"dynamodb:UpdateItem", table, poolKey, false},
		{"dynamodb:Scan", table, nil, false},
		{"s3:GetObject", origin + "/blobs/abc", nil, true},
		{"s3:GetObject", origin + "/manifests/abc.json", nil, true},
		{"s3:PutObject", origin + "/blobs/abc", nil, false},
		{"s3:DeleteObject", origin + "/blobs/abc", nil, false},
		{"s3:DeleteObject", origin + "/manifests/abc.json", nil, false},
		{"ec2:DescribeVolumes", "*", nil, true},
		{"ec2:AttachVolume", volumeArn, resPool, false},
		{"ec2:AttachVolume", instArn, resPool, false},
		{"ec2:DetachVolume", volumeArn, resPool, false},
		{"ec2:DeleteVolume", volumeArn, resPool, false},
		{"ec2:CreateVolume", arnPrefix + "volume/*", reqPool, false},
		{"ec2:CreateSnapshot", volumeArn, resPool, false},
		{"ssm:SendCommand", docArn("volsd-Apply"), nil, false},
		{"autoscaling:CompleteLifecycleAction", groupArn + testGroup, nil, true},
		{"autoscaling:RecordLifecycleActionHeartbeat", groupArn + testGroup, nil, true},
		{"autoscaling:CompleteLifecycleAction", groupArn + "other-asg", nil, false},
		{"autoscaling:SetDesiredCapacity", groupArn + testGroup, nil, false},
	})
}

// resourceFreeActions may use Resource "*": AWS offers no resource-level
// permissions for them and they only read.
var resourceFreeActions = map[string]bool{
	"ec2:DescribeVolumes": true, "ec2:DescribeInstances": true, "ec2:DescribeSnapshots": true, "ec2:DescribeVolumesModifications": true,
	"autoscaling:DescribeAutoScalingGroups": true,
	"ssm:GetCommandInvocation":              true, "ssm:ListCommandInvocations": true,
}

func TestNoWildcardActionsAndScopedResources(t *testing.T) {
	for name, tmpl := range synthesized.Stacks {
		sts, err := tmpl.AllStatements()
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) == 0 {
			t.Fatalf("%s: no policy statements", name)
		}
		for _, s := range sts {
			for _, a := range s.Actions {
				if strings.ContainsAny(a, "*?") {
					t.Errorf("%s %s %s: wildcard action %q", name, s.Policy, s.Sid, a)
				}
			}
			for _, r := range s.Resources {
				if r != "*" {
					continue
				}
				for _, a := range s.Actions {
					if !resourceFreeActions[a] {
						t.Errorf("%s %s %s: %s on Resource \"*\"", name, s.Policy, s.Sid, a)
					}
				}
			}
			// A statement on every volume, instance or snapshot must be
			// held by a volsd:pool tag condition.
			for _, r := range s.Resources {
				if strings.HasSuffix(r, ":volume/*") || strings.HasSuffix(r, ":instance/*") || strings.HasSuffix(r, ":snapshot/*") {
					if !strings.Contains(fmt.Sprint(s.Conditions), "volsd:pool") {
						t.Errorf("%s %s %s: %v on %s without a volsd:pool condition", name, s.Policy, s.Sid, s.Actions, r)
					}
				}
			}
		}
	}
}

// TestLambdasCannotTouchUntaggedVolumes asks every Lambda role for every
// mutating EBS call on a volume without the pool tag.
func TestLambdasCannotTouchUntaggedVolumes(t *testing.T) {
	tmpl := template(t, defaultName)
	actions := []string{"ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume", "ec2:CreateSnapshot",
		"ec2:ModifyVolume", "ec2:CreateTags", "ec2:DeleteTags", "ec2:EnableFastSnapshotRestores"}
	vol := "arn:aws:ec2:eu-west-1:123456789012:volume/vol-0123456789abcdef0"
	for _, role := range tmpl.OfType("AWS::IAM::Role") {
		st, err := tmpl.RoleStatements(role.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range actions {
			for _, ctx := range []map[string][]string{noTags, {"aws:ResourceTag/volsd:pool": {"web"}}} {
				ok, err := assembly.Allows(st, assembly.Request{Action: a, Resource: vol, Context: ctx})
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					t.Errorf("role %s may %s on a volume not tagged volsd:pool=media (context %v)", role.ID, a, ctx)
				}
			}
		}
		// And the pool's own tag works where the role needs it: the test is
		// not passing because nothing is ever allowed.
		if strings.Contains(role.ID, "Lifecycle") {
			ok, _ := assembly.Allows(st, assembly.Request{Action: "ec2:AttachVolume", Resource: vol,
				Context: map[string][]string{"aws:ResourceTag/volsd:pool": {"media"}}})
			if !ok {
				t.Errorf("lifecycle role %s cannot attach its own pool's volume", role.ID)
			}
		}
	}
}

// TestNoReclaimNoOriginDelete: with reclaim off the snapshot Lambda may
// not delete (nor list or read) origin objects, and its environment says 0.
func TestNoReclaimNoOriginDelete(t *testing.T) {
	tmpl := template(t, noReclaim)
	origin := "<" + one(t, tmpl, "AWS::S3::Bucket", "Origin").ID + ".Arn>"
	checkPermissions(t, "Snapshot", roleStatements(t, tmpl, "PoolSnapshotRole"), []permission{
		{"s3:DeleteObject", origin + "/blobs/abc", nil, false},
		{"s3:DeleteObject", origin + "/manifests/abc.json", nil, false},
		{"s3:ListBucket", origin, nil, false},
		{"ec2:CreateSnapshot", volumeArn, map[string][]string{"aws:ResourceTag/volsd:pool": {"archive"}}, true},
	})
	fn := one(t, tmpl, "AWS::Lambda::Function", "Snapshot")
	if got := fmt.Sprint(fn.Properties["Environment"]); !strings.Contains(got, "VOLSD_RECLAIM_GRACE:0s") {
		t.Fatalf("snapshot environment %s", got)
	}
}
