package volsd

import (
	"strings"

	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// suppress records a cdk-nag suppression with its reason on c and its children.
func suppress(c constructs.IConstruct, rule, reason string) {
	cdknag.NagSuppressions_AddResourceSuppressions(c, &[]*cdknag.NagPackSuppression{{
		Id:     jsii.String(rule),
		Reason: jsii.String(reason),
	}}, jsii.Bool(true))
}

// wildcard is an IAM5 finding that is allowed, matched by a regular
// expression on cdk-nag's rendering of the resource, with its reason.
type wildcard struct {
	regex  string
	reason string
}

// How cdk-nag renders the partition, region and account of an ARN.
const (
	arnPrefix  = `(<AWS::Partition>|aws[a-z-]*)`
	arnRegion  = `(<AWS::Region>|[a-z0-9-]+)`
	arnAccount = `(<AWS::AccountId>|[0-9]{12})`
)

var (
	describeWildcard = wildcard{
		regex:  `/^Resource::\*$/g`,
		reason: "ec2:Describe*, autoscaling:DescribeAutoScalingGroups and ssm:GetCommandInvocation/ListCommandInvocations support no resource-level permissions; they are read-only.",
	}
	logGroupWildcard = wildcard{
		regex:  `/^Resource::<.*Logs[0-9A-F]{8}\.Arn>$/g`,
		reason: "Log streams of the function's own log group only (the log group ARN ends in :*).",
	}
	taggedEC2Wildcard = wildcard{
		regex:  `/^Resource::arn:` + arnPrefix + `:ec2:` + arnRegion + `:` + arnAccount + `?:(volume|instance|snapshot)\/\*$/g`,
		reason: "Volume, instance and snapshot IDs are not known in advance; every statement on them is limited by a volsd:pool tag condition (aws:ResourceTag, aws:RequestTag, ssm:resourceTag) or by ec2:CreateAction.",
	}
	originObjectsWildcard = wildcard{
		regex:  `/^Resource::<.*Origin[0-9A-F]{8}\.Arn>\/(blobs|manifests)\/\*$/g`,
		reason: "Read-only access to the origin's content-addressed objects (blobs/<sha256>, manifests/<sha256>.json), whose names are not known in advance.",
	}
	groupWildcard = wildcard{
		regex:  `/^Resource::arn:` + arnPrefix + `:autoscaling:` + arnRegion + `:` + arnAccount + `:autoScalingGroup:\*:autoScalingGroupName\/[^*]+$/g`,
		reason: "The pool's Auto Scaling group by name; the group's UUID part of the ARN is not known in advance.",
	}
)

// suppressWildcards records one IAM5 suppression on c that allows exactly
// the given wildcards, with their reasons.
func suppressWildcards(c constructs.IConstruct, ws ...wildcard) {
	applies := make([]interface{}, 0, len(ws))
	reasons := make([]string, 0, len(ws))
	for _, w := range ws {
		applies = append(applies, &cdknag.RegexAppliesTo{Regex: jsii.String(w.regex)})
		reasons = append(reasons, w.reason)
	}
	cdknag.NagSuppressions_AddResourceSuppressions(c, &[]*cdknag.NagPackSuppression{{
		Id:        jsii.String("AwsSolutions-IAM5"),
		Reason:    jsii.String(strings.Join(reasons, " ")),
		AppliesTo: &applies,
	}}, jsii.Bool(true))
}
