package volsd

import (
	"strconv"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// The IAM policies of docs/design.md §4. Every statement names its actions (no
// wildcard actions) and scopes its resources as far as AWS allows: EC2
// actions on volumes, snapshots and instances carry a volsd:pool tag
// condition, SendCommand names the volsd documents, the table and the bucket
// are named by ARN. Only read-only calls without resource-level permissions
// (Describe*, GetCommandInvocation) use "*".

// tableActions is what the Lambdas call on the table (internal/store's
// client interface): single-item reads and conditional writes,
// transactions (authorized per item by these actions), queries on the
// table and its index. No batch calls, no DescribeTable.
var tableActions = []string{
	"dynamodb:GetItem", "dynamodb:Query",
	"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
	"dynamodb:ConditionCheckItem",
}

// reportTableActions is what the report Lambda calls: it reads an
// instance record and writes it back conditionally (store.RecordReport),
// then queries the pool's instances and one journal entry and raises the
// reported watermark (ReportedLagSeconds).
var reportTableActions = []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}

// ebsKeyActions are the KMS actions EBS needs from the caller that creates
// and attaches volumes encrypted with a customer managed key.
var ebsKeyActions = []string{
	"kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey",
	"kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo",
}

func statement(sid string, actions []string, resources []*string, conditions map[string]interface{}) awsiam.PolicyStatement {
	props := &awsiam.PolicyStatementProps{
		Sid:       jsii.String(sid),
		Effect:    awsiam.Effect_ALLOW,
		Actions:   jsii.Strings(actions...),
		Resources: &resources,
	}
	if conditions != nil {
		props.Conditions = &conditions
	}
	return awsiam.NewPolicyStatement(props)
}

func (p *Pool) arn(service, resource, name string, account *string) *string {
	c := &awscdk.ArnComponents{
		Service:      jsii.String(service),
		Resource:     jsii.String(resource),
		ResourceName: jsii.String(name),
	}
	if account != nil {
		c.Account = account
	}
	return p.stack().FormatArn(c)
}

func (p *Pool) volumeArns() *string   { return p.arn("ec2", "volume", "*", nil) }
func (p *Pool) instanceArns() *string { return p.arn("ec2", "instance", "*", nil) }

// snapshotArns are the region's snapshots; snapshot ARNs have no account.
func (p *Pool) snapshotArns() *string { return p.arn("ec2", "snapshot", "*", jsii.String("")) }

// groupArn is the ARN pattern of the pool's group.
func (p *Pool) groupArn() *string {
	return p.stack().FormatArn(&awscdk.ArnComponents{
		Service:      jsii.String("autoscaling"),
		Resource:     jsii.String("autoScalingGroup"),
		ResourceName: awscdk.Fn_Join(jsii.String(""), jsii.Strings("*:autoScalingGroupName/", *p.groupName)),
		ArnFormat:    awscdk.ArnFormat_COLON_RESOURCE_NAME,
	})
}

func (p *Pool) documentArns(kinds ...string) []*string {
	var arns []*string
	for _, k := range kinds {
		arns = append(arns, p.arn("ssm", "document", p.DocumentName(k), nil))
	}
	return arns
}

func (p *Pool) tagged(key string) map[string]interface{} {
	return map[string]interface{}{"StringEquals": map[string]interface{}{key + "/" + events.TagPool: p.props.PoolName}}
}

// poolInstance is the condition on instance resources: tagged with the
// pool and a member of the pool's group.
func (p *Pool) poolInstance(key string) map[string]interface{} {
	return map[string]interface{}{"StringEquals": map[string]interface{}{
		key + "/" + events.TagPool:  p.props.PoolName,
		key + "/" + events.TagGroup: p.groupName,
	}}
}

// grantFunction gives the Lambda role of function name what it needs.
func (p *Pool) grantFunction(name string, role awsiam.Role) {
	add := func(s awsiam.PolicyStatement) { role.AddToPrincipalPolicy(s) }
	allowed := []wildcard{logGroupWildcard}

	tableArns := []*string{p.Table.TableArn()}
	for _, g := range store.TableDefinition("volsd").GlobalSecondaryIndexes {
		tableArns = append(tableArns, awscdk.Fn_Join(jsii.String(""), jsii.Strings(*p.Table.TableArn(), "/index/"+*g.IndexName)))
	}
	if name == "report" {
		add(statement("PoolTable", reportTableActions, []*string{p.Table.TableArn()}, nil))
	} else {
		add(statement("PoolTable", tableActions, tableArns, nil))
	}

	describe := func(actions ...string) {
		add(statement("ReadOnlyDescribe", actions, []*string{jsii.String("*")}, nil))
		allowed = append(allowed, describeWildcard)
	}
	createVolumes := func() {
		// Only encrypted volumes of the pool's type and at most its size.
		add(statement("CreatePoolVolumes", []string{"ec2:CreateVolume"}, []*string{p.volumeArns()}, map[string]interface{}{
			"StringEquals": map[string]interface{}{
				"aws:RequestTag/" + events.TagPool: p.props.PoolName,
				"ec2:VolumeType":                   p.props.VolumeType,
			},
			"Bool":                  map[string]interface{}{"ec2:Encrypted": "true"},
			"NumericLessThanEquals": map[string]interface{}{"ec2:VolumeSize": strconv.Itoa(p.props.VolumeSizeGiB)},
		}))
		srcs := []*string{p.snapshotArns()}
		add(statement("CreateVolumesFromPoolSnapshots", []string{"ec2:CreateVolume"}, srcs, p.tagged("aws:ResourceTag")))
		if p.props.SourceSnapshotID != "" {
			add(statement("CreateVolumesFromSourceSnapshot", []string{"ec2:CreateVolume"},
				[]*string{p.arn("ec2", "snapshot", p.props.SourceSnapshotID, jsii.String(""))}, nil))
		}
		add(statement("TagVolumesOnCreate", []string{"ec2:CreateTags"}, []*string{p.volumeArns()}, map[string]interface{}{
			"StringEquals": map[string]interface{}{"ec2:CreateAction": "CreateVolume", "aws:RequestTag/" + events.TagPool: p.props.PoolName},
		}))
		if p.props.KmsKey != nil {
			add(statement("UseEbsKey", ebsKeyActions[1:], []*string{p.props.KmsKey.KeyArn()}, nil))
			add(statement("GrantEbsKeyToEbs", ebsKeyActions[:1], []*string{p.props.KmsKey.KeyArn()},
				map[string]interface{}{"Bool": map[string]interface{}{"kms:GrantIsForAWSResource": "true"}}))
		}
		allowed = append(allowed, taggedEC2Wildcard)
	}
	onPoolVolumes := func(sid string, actions ...string) {
		add(statement(sid, actions, []*string{p.volumeArns()}, p.tagged("aws:ResourceTag")))
		allowed = append(allowed, taggedEC2Wildcard)
	}
	onPoolInstances := func(sid string, actions ...string) {
		add(statement(sid, actions, []*string{p.instanceArns()}, p.poolInstance("aws:ResourceTag")))
	}
	sendCommands := func(kinds ...string) {
		add(statement("SendVolsdDocuments", []string{"ssm:SendCommand"}, p.documentArns(kinds...), nil))
		add(statement("SendToPoolInstances", []string{"ssm:SendCommand"}, []*string{p.instanceArns()}, p.poolInstance("ssm:resourceTag")))
		allowed = append(allowed, taggedEC2Wildcard)
	}

	switch name {
	case "lifecycle":
		describe("ec2:DescribeVolumes", "ec2:DescribeInstances", "ssm:GetCommandInvocation")
		createVolumes()
		onPoolVolumes("AttachDetachDeletePoolVolumes", "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume")
		onPoolInstances("AttachDetachOnPoolInstances", "ec2:AttachVolume", "ec2:DetachVolume")
		sendCommands(documentsSent[name]...)
		add(statement("CompletePoolLifecycleActions", []string{"autoscaling:CompleteLifecycleAction"}, []*string{p.groupArn()}, nil))
		allowed = append(allowed, groupWildcard)
	case "reconcile":
		describe("ec2:DescribeVolumes", "ec2:DescribeInstances", "ec2:DescribeVolumesModifications", "autoscaling:DescribeAutoScalingGroups")
		createVolumes()
		onPoolVolumes("DetachDeletePoolVolumes", "ec2:DetachVolume", "ec2:DeleteVolume")
		onPoolVolumes("GrowPoolVolumes", "ec2:ModifyVolume")
		onPoolInstances("DetachFromPoolInstances", "ec2:DetachVolume")
	case "snapshot":
		describe("ec2:DescribeSnapshots", "autoscaling:DescribeAutoScalingGroups", "ssm:GetCommandInvocation")
		onPoolVolumes("SnapshotPoolVolumes", "ec2:CreateSnapshot")
		add(statement("CreatePoolSnapshots", []string{"ec2:CreateSnapshot"}, []*string{p.snapshotArns()}, p.tagged("aws:RequestTag")))
		add(statement("TagSnapshotsOnCreate", []string{"ec2:CreateTags"}, []*string{p.snapshotArns()}, map[string]interface{}{
			"StringEquals": map[string]interface{}{"ec2:CreateAction": "CreateSnapshot", "aws:RequestTag/" + events.TagPool: p.props.PoolName},
		}))
		add(statement("DeletePoolSnapshots", []string{"ec2:DeleteSnapshot"}, []*string{p.snapshotArns()}, p.tagged("aws:ResourceTag")))
		sendCommands(documentsSent[name]...)
		if p.props.ReclaimGrace > 0 {
			// Origin reclaim: list and read to mark, delete what nothing
			// references — blobs and manifests only, and only this role.
			add(statement("ReadOrigin", []string{"s3:GetObject"}, p.originObjectArns(), nil))
			add(statement("ListOrigin", []string{"s3:ListBucket"}, []*string{p.Bucket.BucketArn()}, nil))
			add(statement("ReclaimOrigin", []string{"s3:DeleteObject"}, p.originObjectArns(), nil))
			allowed = append(allowed, originObjectsWildcard)
		}
	case "push":
		add(statement("ReadOrigin", []string{"s3:GetObject"}, p.originObjectArns(), nil))
		add(statement("ListOrigin", []string{"s3:ListBucket"}, []*string{p.Bucket.BucketArn()}, nil))
		allowed = append(allowed, originObjectsWildcard)
		sendCommands(documentsSent[name]...)
		// The SQS event source grants receive/delete on the push queue.
	case "report":
		// ListCommandInvocations: the report fan-in reads a command's
		// invocations page by page.
		describe("ssm:GetCommandInvocation", "ssm:ListCommandInvocations")
	}
	suppressWildcards(role, dedupe(allowed)...)
}

func dedupe(ws []wildcard) []wildcard {
	var out []wildcard
	seen := map[string]bool{}
	for _, w := range ws {
		if !seen[w.regex] {
			seen[w.regex] = true
			out = append(out, w)
		}
	}
	return out
}

func (p *Pool) originObjectArns() []*string {
	return []*string{p.Bucket.ArnForObjects(jsii.String("blobs/*")), p.Bucket.ArnForObjects(jsii.String("manifests/*"))}
}

// GrantAgent gives the instance role of the pool's instances what
// volsd-agent needs, and nothing more: read the pool's partitions of the
// table (journal and pool records, via dynamodb:LeadingKeys), read the
// origin, describe volumes, and complete or heartbeat lifecycle actions of
// the pool's group. The agent cannot write the table, attach, detach or
// delete volumes, or send commands.
func (p *Pool) GrantAgent(role awsiam.IRole) {
	pool := p.props.PoolName
	add := func(s awsiam.PolicyStatement) { role.AddToPrincipalPolicy(s) }
	add(statement("VolsdReadJournal", []string{"dynamodb:GetItem", "dynamodb:Query"}, []*string{p.Table.TableArn()},
		map[string]interface{}{"ForAllValues:StringEquals": map[string]interface{}{
			"dynamodb:LeadingKeys": []string{"JOURNAL#" + pool, "POOL#" + pool},
		}}))
	add(statement("VolsdReadOrigin", []string{"s3:GetObject"}, p.originObjectArns(), nil))
	add(statement("VolsdListOrigin", []string{"s3:ListBucket"}, []*string{p.Bucket.BucketArn()}, nil))
	add(statement("VolsdDescribeVolumes", []string{"ec2:DescribeVolumes"}, []*string{jsii.String("*")}, nil))
	add(statement("VolsdLifecycleActions", []string{"autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"},
		[]*string{p.groupArn()}, nil))
	suppressWildcards(role, describeWildcard, originObjectsWildcard, groupWildcard)
}
