// Package doctor checks a deployed volsd pool from an operator's
// credentials and names each problem with its fix: the group's volsd:pool
// tag, volsd's two lifecycle hooks, the EventBridge rules, the instances'
// SSM registration and the agent's permissions, the SSM documents, the
// dead-letter queues and the age of the newest snapshot. `volsd doctor`
// wires it; every check reads, none changes anything.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/snapshot"
)

// Groups is the part of the Auto Scaling API doctor reads.
type Groups interface {
	DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	DescribeLifecycleHooks(ctx context.Context, in *autoscaling.DescribeLifecycleHooksInput, optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error)
}

// Rules is the part of the EventBridge API doctor reads.
type Rules interface {
	DescribeRule(ctx context.Context, in *eventbridge.DescribeRuleInput, optFns ...func(*eventbridge.Options)) (*eventbridge.DescribeRuleOutput, error)
}

// Managed is the part of the SSM API doctor reads: the instances' SSM
// registration and the pool's documents.
type Managed interface {
	DescribeInstanceInformation(ctx context.Context, in *ssm.DescribeInstanceInformationInput, optFns ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error)
	DescribeDocument(ctx context.Context, in *ssm.DescribeDocumentInput, optFns ...func(*ssm.Options)) (*ssm.DescribeDocumentOutput, error)
}

// Queues is the part of the SQS API doctor reads.
type Queues interface {
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// Instances is the part of the EC2 API doctor reads (tags and instance
// profiles of the group's instances).
type Instances interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// Roles is the part of the IAM API doctor reads: the instance profile's
// role and what it may do (the IAM policy simulator).
type Roles interface {
	GetInstanceProfile(ctx context.Context, in *iam.GetInstanceProfileInput, optFns ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error)
	SimulatePrincipalPolicy(ctx context.Context, in *iam.SimulatePrincipalPolicyInput, optFns ...func(*iam.Options)) (*iam.SimulatePrincipalPolicyOutput, error)
}

// SnapshotAge tells how long the pool's newest completed snapshot has been
// out of date (snapshot.Age over the pool's table).
type SnapshotAge func(ctx context.Context) (time.Duration, error)

// Clients are what doctor talks to.
type Clients struct {
	Groups      Groups
	Rules       Rules
	Managed     Managed
	Queues      Queues
	Instances   Instances
	Roles       Roles
	SnapshotAge SnapshotAge
}

// Config names the deployed pool's parts (the stack outputs).
type Config struct {
	Pool, Group, Table, Bucket string
	// DocumentPrefix is the SSM document name prefix (documentPrefix).
	DocumentPrefix string
	// DeadLetterQueueURL and EventDeadLetterQueueURL are the push and the
	// event dead-letter queues.
	DeadLetterQueueURL, EventDeadLetterQueueURL string
	// Rules are the pool's EventBridge rules by construct ID
	// (RuleIDs), as the stack's Rules output lists them.
	Rules map[string]string
}

// RuleIDs are the construct IDs of the pool's EventBridge rules, in the
// order the stack's Rules output lists them ("ID=name,…").
var RuleIDs = []string{"LifecycleRule", "LaunchSuccessfulRule", "ReconcileSchedule", "SnapshotSchedule", "CommandStatusRule", "InvocationFailureRule"}

// ParseRules reads the Rules output ("LifecycleRule=name,…").
func ParseRules(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		id, name, ok := strings.Cut(part, "=")
		if !ok || !slices.Contains(RuleIDs, id) || name == "" {
			return nil, fmt.Errorf("rules %q: %q is not ID=name with an ID of %s", s, part, strings.Join(RuleIDs, ", "))
		}
		out[id] = name
	}
	return out, nil
}

// Finding is one problem doctor found and what fixes it.
type Finding struct {
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
}

// Check is the outcome of one check.
type Check struct {
	Name string `json:"name"`
	// OK is true when the check found no problem.
	OK bool `json:"ok"`
	// Skipped is true when the check could not run (Detail says why).
	Skipped bool `json:"skipped,omitempty"`
	// Detail says what was seen when it is fine.
	Detail   string    `json:"detail,omitempty"`
	Findings []Finding `json:"findings,omitempty"`
}

// Report is every check of one run.
type Report struct {
	Pool   string  `json:"pool"`
	Group  string  `json:"group"`
	Checks []Check `json:"checks"`
}

// Problems counts the findings of all checks.
func (r Report) Problems() int {
	n := 0
	for _, c := range r.Checks {
		n += len(c.Findings)
	}
	return n
}

// Check names, in the order Run runs them.
const (
	CheckGroupTag    = "group tag"
	CheckHooks       = "lifecycle hooks"
	CheckRules       = "event rules"
	CheckSSM         = "instances in SSM"
	CheckPermissions = "agent permissions"
	CheckDocuments   = "SSM documents"
	CheckQueues      = "dead-letter queues"
	CheckSnapshot    = "snapshot age"
)

// Doctor runs the checks of one pool.
type Doctor struct {
	cfg Config
	c   Clients
}

// New returns a Doctor for cfg over c.
func New(cfg Config, c Clients) *Doctor {
	if cfg.DocumentPrefix == "" {
		cfg.DocumentPrefix = events.DefaultDocumentPrefix
	}
	return &Doctor{cfg: cfg, c: c}
}

type checker struct {
	Check
}

func (c *checker) problem(fix, format string, args ...any) {
	c.Findings = append(c.Findings, Finding{Problem: fmt.Sprintf(format, args...), Fix: fix})
}

// failed records a call that failed: doctor could not check, which is a
// problem of its own (missing permissions of the operator, a wrong region).
func (c *checker) failed(what string, err error) {
	fix := "check the region (--region, AWS_REGION) and that your credentials may call it"
	if awserr.IsAccessDenied(err) {
		fix = "give your operator role this read permission (doctor only reads)"
	}
	c.problem(fix, "%s: %v", what, err)
}

func (c *checker) done(detail string) Check {
	c.OK = len(c.Findings) == 0
	if c.OK {
		c.Detail = detail
	}
	return c.Check
}

// Run runs every check and returns the report; an error only when ctx ends.
func (d *Doctor) Run(ctx context.Context) (Report, error) {
	rep := Report{Pool: d.cfg.Pool, Group: d.cfg.Group}
	group, groupCheck := d.group(ctx)
	rep.Checks = append(rep.Checks, groupCheck, d.hooks(ctx), d.rules(ctx))
	var ids []string
	if group != nil {
		for _, in := range group.Instances {
			if in.LifecycleState == astypes.LifecycleStateInService {
				ids = append(ids, aws.ToString(in.InstanceId))
			}
		}
	}
	if group == nil {
		for _, name := range []string{CheckSSM, CheckPermissions} {
			rep.Checks = append(rep.Checks, Check{Name: name, Skipped: true, Detail: "not checked: the group's instances could not be read (" + CheckGroupTag + ")"})
		}
	} else {
		rep.Checks = append(rep.Checks, d.managed(ctx, ids), d.permissions(ctx, group, ids))
	}
	rep.Checks = append(rep.Checks, d.documents(ctx), d.queues(ctx), d.snapshot(ctx))
	return rep, ctx.Err()
}

func (d *Doctor) tagFix() string {
	return fmt.Sprintf("aws autoscaling create-or-update-tags --tags ResourceId=%s,ResourceType=auto-scaling-group,Key=%s,Value=%s,PropagateAtLaunch=true"+
		" (then replace the instances launched without it: aws autoscaling start-instance-refresh --auto-scaling-group-name %s)",
		d.cfg.Group, events.TagPool, d.cfg.Pool, d.cfg.Group)
}

// group checks the group's volsd:pool tag and that its in-service
// instances carry it.
func (d *Doctor) group(ctx context.Context) (*astypes.AutoScalingGroup, Check) {
	c := checker{Check: Check{Name: CheckGroupTag}}
	out, err := d.c.Groups.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{d.cfg.Group}})
	if err != nil {
		c.failed("describe group "+d.cfg.Group, err)
		return nil, c.done("")
	}
	if len(out.AutoScalingGroups) == 0 {
		c.problem("pass the group the pool was deployed for (--asg, or the AutoScalingGroupName output of cdk deploy --outputs-file)",
			"no Auto Scaling group %s in this account and region", d.cfg.Group)
		return nil, c.done("")
	}
	g := &out.AutoScalingGroups[0]
	var tag *astypes.TagDescription
	for i := range g.Tags {
		if aws.ToString(g.Tags[i].Key) == events.TagPool {
			tag = &g.Tags[i]
		}
	}
	switch {
	case tag == nil:
		c.problem(d.tagFix(), "group %s has no tag %s: its instances are neither attach nor command targets of pool %s", d.cfg.Group, events.TagPool, d.cfg.Pool)
	case aws.ToString(tag.Value) != d.cfg.Pool:
		c.problem(d.tagFix(), "group %s has %s=%s, not %s: the pool's Lambdas may not attach to or command its instances", d.cfg.Group, events.TagPool, aws.ToString(tag.Value), d.cfg.Pool)
	case !aws.ToBool(tag.PropagateAtLaunch):
		c.problem(d.tagFix(), "group %s's tag %s is not PropagateAtLaunch: new instances do not carry it, so no volume is attached to them", d.cfg.Group, events.TagPool)
	}
	var ids []string
	for _, in := range g.Instances {
		if in.LifecycleState == astypes.LifecycleStateInService {
			ids = append(ids, aws.ToString(in.InstanceId))
		}
	}
	if len(ids) > 0 {
		insts, err := d.describeInstances(ctx, ids)
		if err != nil {
			c.failed("describe the group's instances", err)
		}
		for _, in := range insts {
			if tagValue(in.Tags, events.TagPool) != d.cfg.Pool {
				c.problem(fmt.Sprintf("replace it (aws autoscaling start-instance-refresh --auto-scaling-group-name %s) once the group's tag propagates", d.cfg.Group),
					"instance %s has no %s=%s tag (launched before the group's tag was set or propagated)", aws.ToString(in.InstanceId), events.TagPool, d.cfg.Pool)
			}
		}
	}
	return g, c.done(fmt.Sprintf("%s=%s, PropagateAtLaunch; %d instances in service carry it", events.TagPool, d.cfg.Pool, len(ids)))
}

func tagValue(tags []ec2types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

func (d *Doctor) describeInstances(ctx context.Context, ids []string) ([]ec2types.Instance, error) {
	var out []ec2types.Instance
	p := ec2.NewDescribeInstancesPaginator(d.c.Instances, &ec2.DescribeInstancesInput{InstanceIds: ids})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return out, err
		}
		for _, r := range page.Reservations {
			out = append(out, r.Instances...)
		}
	}
	return out, nil
}

// hookSpec is what volsd's construct puts on the group.
type hookSpec struct {
	name, transition, defaultResult string
	minHeartbeat                    time.Duration
}

func hookSpecs() []hookSpec {
	return []hookSpec{
		{events.LaunchHookName, events.TransitionLaunching, pool.LaunchHookDefaultResult, 0},
		{events.TerminateHookName, events.TransitionTerminating, pool.TerminateHookDefaultResult, pool.TerminateHeartbeatMin()},
	}
}

// hooks checks that both of volsd's hooks are on the group as the
// construct puts them.
func (d *Doctor) hooks(ctx context.Context) Check {
	c := checker{Check: Check{Name: CheckHooks}}
	out, err := d.c.Groups.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String(d.cfg.Group)})
	if err != nil {
		c.failed("describe the lifecycle hooks of "+d.cfg.Group, err)
		return c.done("")
	}
	have := map[string]astypes.LifecycleHook{}
	var foreign []string
	for _, h := range out.LifecycleHooks {
		have[aws.ToString(h.LifecycleHookName)] = h
	}
	redeploy := "cdk deploy the pool's stack again (it puts the hook back as volsd needs it); never complete volsd's hooks by hand"
	for _, want := range hookSpecs() {
		h, ok := have[want.name]
		delete(have, want.name)
		if !ok {
			c.problem(redeploy, "group %s has no lifecycle hook %s (%s): %s", d.cfg.Group, want.name, want.transition,
				map[bool]string{true: "new instances start without a volume", false: "terminated instances' volumes are never released"}[want.transition == events.TransitionLaunching])
			continue
		}
		if got := aws.ToString(h.LifecycleTransition); got != want.transition {
			c.problem(redeploy, "hook %s has transition %s, want %s", want.name, got, want.transition)
		}
		if got := aws.ToString(h.DefaultResult); got != want.defaultResult {
			c.problem(redeploy, "hook %s has default result %s, want %s", want.name, got, want.defaultResult)
		}
		if hb := time.Duration(aws.ToInt32(h.HeartbeatTimeout)) * time.Second; want.minHeartbeat > 0 && hb < want.minHeartbeat {
			c.problem(redeploy, "hook %s has a heartbeat timeout of %s, shorter than %s: %s", want.name, hb, want.minHeartbeat,
				"the hook expires before the lifecycle Lambda's tries are over")
		}
	}
	for name := range have {
		foreign = append(foreign, name)
	}
	slices.Sort(foreign)
	detail := fmt.Sprintf("%s and %s as volsd puts them", events.LaunchHookName, events.TerminateHookName)
	if len(foreign) > 0 {
		detail += "; other hooks left to their owners: " + strings.Join(foreign, ", ")
	}
	return c.done(detail)
}

// rules checks that every rule of the pool exists and is enabled; the
// snapshot schedule is kept for the snapshot age check.
func (d *Doctor) rules(ctx context.Context) Check {
	c := checker{Check: Check{Name: CheckRules}}
	redeploy := "cdk deploy the pool's stack with --outputs-file and pass that file (--outputs): it lists the rules in its Rules output"
	for _, id := range RuleIDs {
		name, ok := d.cfg.Rules[id]
		if !ok {
			c.problem(redeploy, "the stack outputs name no %s rule", id)
			continue
		}
		out, err := d.c.Rules.DescribeRule(ctx, &eventbridge.DescribeRuleInput{Name: aws.String(name)})
		switch {
		case awserr.IsNotFound(err):
			c.problem("cdk deploy the pool's stack again (it creates the rule)", "rule %s (%s) does not exist", name, id)
		case err != nil:
			c.failed("describe rule "+name, err)
		case out.State != ebtypes.RuleStateEnabled:
			c.problem("aws events enable-rule --name "+name, "rule %s (%s) is %s: %s", name, id, out.State, ruleEffect(id))
		}
	}
	return c.done(fmt.Sprintf("%d rules enabled", len(RuleIDs)))
}

func ruleEffect(id string) string {
	switch id {
	case "LifecycleRule":
		return "no launch gets a volume and no terminate releases one (hooks time out)"
	case "LaunchSuccessfulRule":
		return "new instances stay launching in volsd status until a later command"
	case "ReconcileSchedule":
		return "the idle pool is not refilled and stuck state is not healed"
	case "SnapshotSchedule":
		return "no new snapshots: new volumes replay ever more of the journal"
	case "CommandStatusRule":
		return "finished commands' reports are not recorded: volsd push --wait and volsd status never see progress"
	case "InvocationFailureRule":
		return "an instance's failed apply is seen only when the whole command ends: push --wait fails late and the stall alarm waits for the slowest instance"
	}
	return ""
}

// managed checks that every in-service instance is online in SSM.
func (d *Doctor) managed(ctx context.Context, ids []string) Check {
	c := checker{Check: Check{Name: CheckSSM}}
	seen := map[string]ssmtypes.InstanceInformation{}
	for chunk := range slices.Chunk(ids, 50) {
		in := &ssm.DescribeInstanceInformationInput{
			Filters:    []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: chunk}},
			MaxResults: aws.Int32(50),
		}
		p := ssm.NewDescribeInstanceInformationPaginator(d.c.Managed, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				c.failed("describe the instances' SSM information", err)
				return c.done("")
			}
			for _, info := range page.InstanceInformationList {
				seen[aws.ToString(info.InstanceId)] = info
			}
		}
	}
	for _, id := range ids {
		info, ok := seen[id]
		switch {
		case !ok:
			c.problem("run the SSM agent on the instance (Amazon Linux has it) and give its instance role AmazonSSMManagedInstanceCore; it needs a route to the SSM endpoints",
				"instance %s is not registered with SSM: volsd cannot send it commands", id)
		case info.PingStatus != ssmtypes.PingStatusOnline:
			c.problem("check the SSM agent on the instance (systemctl status amazon-ssm-agent) and its route to the SSM endpoints",
				"instance %s is %s in SSM (last ping %s): commands to it time out", id, info.PingStatus, aws.ToTime(info.LastPingDateTime).UTC().Format(time.RFC3339))
		}
	}
	return c.done(fmt.Sprintf("%d instances in service, all online", len(ids)))
}

// Permission is one call an instance's role must allow.
type Permission struct {
	Action   string
	Resource string
	Context  map[string][]string
}

// AgentPermissions are the calls volsd-agent makes with its instance's
// role (docs/design.md §4, GrantAgent): read the pool's journal and instance
// records, read the origin, find its device, complete and heartbeat the
// launch hook. The infra tests check that GrantAgent allows each.
func AgentPermissions(partition, region, account, poolName, table, bucket, groupARN string) []Permission {
	tableARN := fmt.Sprintf("arn:%s:dynamodb:%s:%s:table/%s", partition, region, account, table)
	bucketARN := fmt.Sprintf("arn:%s:s3:::%s", partition, bucket)
	return []Permission{
		{"dynamodb:Query", tableARN, map[string][]string{"dynamodb:LeadingKeys": {"JOURNAL#" + poolName}}},
		{"dynamodb:GetItem", tableARN, map[string][]string{"dynamodb:LeadingKeys": {"POOL#" + poolName}}},
		{"s3:GetObject", bucketARN + "/blobs/0000000000000000000000000000000000000000000000000000000000000000", nil},
		{"s3:GetObject", bucketARN + "/manifests/0000000000000000000000000000000000000000000000000000000000000000.json", nil},
		{"s3:ListBucket", bucketARN, nil},
		{"ec2:DescribeVolumes", "*", nil},
		{"autoscaling:CompleteLifecycleAction", groupARN, nil},
		{"autoscaling:RecordLifecycleActionHeartbeat", groupARN, nil},
	}
}

// ssmAgentPermissions are the calls of the SSM agent that Run Command
// needs (a subset of AmazonSSMManagedInstanceCore).
var ssmAgentPermissions = []string{"ssm:UpdateInstanceInformation", "ec2messages:GetMessages", "ec2messages:SendReply", "ssmmessages:CreateControlChannel"}

var roleARN = regexp.MustCompile(`^arn:([^:]+):iam::([0-9]{12}):role/`)

// permissions simulates the agent's calls with the roles of the
// in-service instances' instance profiles.
func (d *Doctor) permissions(ctx context.Context, group *astypes.AutoScalingGroup, ids []string) Check {
	c := checker{Check: Check{Name: CheckPermissions}}
	if len(ids) == 0 {
		return c.done("no instance in service to check")
	}
	insts, err := d.describeInstances(ctx, ids)
	if err != nil {
		c.failed("describe the group's instances", err)
		return c.done("")
	}
	profiles := map[string][]string{} // profile ARN -> instances
	for _, in := range insts {
		id := aws.ToString(in.InstanceId)
		if in.IamInstanceProfile == nil {
			c.problem("give the group's launch template an instance profile whose role has pool.GrantAgent's statements and AmazonSSMManagedInstanceCore",
				"instance %s has no instance profile: neither the SSM agent nor volsd-agent can call AWS", id)
			continue
		}
		arn := aws.ToString(in.IamInstanceProfile.Arn)
		profiles[arn] = append(profiles[arn], id)
	}
	roles := 0
	for _, profileARN := range slices.Sorted(maps.Keys(profiles)) {
		name := profileARN[strings.LastIndexByte(profileARN, '/')+1:]
		prof, err := d.c.Roles.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
		if err != nil {
			c.failed("get instance profile "+name, err)
			continue
		}
		if len(prof.InstanceProfile.Roles) == 0 {
			c.problem("add the instance role to the profile (aws iam add-role-to-instance-profile)", "instance profile %s (instances %s) has no role", name, strings.Join(profiles[profileARN], ", "))
			continue
		}
		role := prof.InstanceProfile.Roles[0]
		m := roleARN.FindStringSubmatch(aws.ToString(role.Arn))
		if m == nil {
			c.problem("", "instance profile %s: role ARN %q is not an IAM role ARN", name, aws.ToString(role.Arn))
			continue
		}
		roles++
		partition, account := m[1], m[2]
		region := regionOf(aws.ToString(group.AutoScalingGroupARN))
		perms := AgentPermissions(partition, region, account, d.cfg.Pool, d.cfg.Table, d.cfg.Bucket, aws.ToString(group.AutoScalingGroupARN))
		for _, a := range ssmAgentPermissions {
			perms = append(perms, Permission{Action: a, Resource: "*"})
		}
		for _, p := range perms {
			decision, err := d.simulate(ctx, aws.ToString(role.Arn), p)
			if err != nil {
				c.failed("simulate "+p.Action+" for role "+aws.ToString(role.RoleName), err)
				break
			}
			if decision != iamtypes.PolicyEvaluationDecisionTypeAllowed {
				fix := "in a CDK app call pool.GrantAgent(role); otherwise add the statements of GrantAgent (README, \"Instance role\")"
				if strings.HasPrefix(p.Action, "ssm") || strings.HasPrefix(p.Action, "ec2messages") {
					fix = "attach the AWS managed policy AmazonSSMManagedInstanceCore to the role"
				}
				c.problem(fix, "role %s may not %s on %s (%s): instances %s", aws.ToString(role.RoleName), p.Action, p.Resource, decision, strings.Join(profiles[profileARN], ", "))
			}
		}
	}
	return c.done(fmt.Sprintf("instance roles (%d) allow every call of volsd-agent and the SSM agent", roles))
}

func regionOf(arn string) string {
	parts := strings.SplitN(arn, ":", 5)
	if len(parts) < 4 {
		return "*"
	}
	return parts[3]
}

func (d *Doctor) simulate(ctx context.Context, role string, p Permission) (iamtypes.PolicyEvaluationDecisionType, error) {
	in := &iam.SimulatePrincipalPolicyInput{PolicySourceArn: aws.String(role), ActionNames: []string{p.Action}, ResourceArns: []string{p.Resource}}
	for _, k := range slices.Sorted(maps.Keys(p.Context)) {
		in.ContextEntries = append(in.ContextEntries, iamtypes.ContextEntry{
			ContextKeyName: aws.String(k), ContextKeyValues: p.Context[k], ContextKeyType: iamtypes.ContextKeyTypeEnumStringList,
		})
	}
	out, err := d.c.Roles.SimulatePrincipalPolicy(ctx, in)
	if err != nil {
		return "", err
	}
	for _, r := range out.EvaluationResults {
		if strings.EqualFold(aws.ToString(r.EvalActionName), p.Action) {
			return r.EvalDecision, nil
		}
	}
	return "", errors.New("the simulator returned no result for the action")
}

// documents checks that every document the Lambdas send exists.
func (d *Doctor) documents(ctx context.Context) Check {
	c := checker{Check: Check{Name: CheckDocuments}}
	for _, kind := range events.DocumentKinds {
		name := d.cfg.DocumentPrefix + kind
		out, err := d.c.Managed.DescribeDocument(ctx, &ssm.DescribeDocumentInput{Name: aws.String(name)})
		switch {
		case awserr.IsNotFound(err):
			c.problem("cdk deploy the pool's stack again (it creates the documents); with several pools, pass the pool's documentPrefix (--document-prefix)",
				"SSM document %s does not exist: volsd cannot send %s", name, kind)
		case err != nil:
			c.failed("describe document "+name, err)
		case out.Document.DocumentType != ssmtypes.DocumentTypeCommand:
			c.problem("delete the document and cdk deploy the pool's stack again", "SSM document %s is a %s document, not a Command document", name, out.Document.DocumentType)
		case out.Document.Status != "" && out.Document.Status != ssmtypes.DocumentStatusActive:
			c.problem("wait for it, or cdk deploy the pool's stack again", "SSM document %s is %s, not Active", name, out.Document.Status)
		}
	}
	return c.done(fmt.Sprintf("%d documents %s%s", len(events.DocumentKinds), d.cfg.DocumentPrefix, strings.Join(events.DocumentKinds, "/")))
}

// queues checks that both dead-letter queues are empty.
func (d *Doctor) queues(ctx context.Context) Check {
	c := checker{Check: Check{Name: CheckQueues}}
	for _, q := range []struct{ what, url, fix string }{
		{"push dead-letter queue", d.cfg.DeadLetterQueueURL, "read them (aws sqs receive-message --queue-url %[1]s --attribute-names All), fix what made the push Lambda fail (its logs), then move them back: aws sqs start-message-move-task --source-arn <the queue's ARN>"},
		{"event dead-letter queue", d.cfg.EventDeadLetterQueueURL, "read them (aws sqs receive-message --queue-url %[1]s): they are lifecycle, schedule or command-status events no Lambda could handle; fix the cause (the Lambdas' logs), run volsd status, and purge the queue when handled"},
	} {
		if q.url == "" {
			c.problem("pass the stack outputs of cdk deploy --outputs-file (--outputs)", "the %s's URL is not known", q.what)
			continue
		}
		out, err := d.c.Queues.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q.url),
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
		if err != nil {
			c.failed("read the "+q.what, err)
			continue
		}
		n := 0
		for _, a := range []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible} {
			v, _ := strconv.Atoi(out.Attributes[string(a)])
			n += v
		}
		if n > 0 {
			c.problem(fmt.Sprintf(q.fix, q.url), "the %s holds %d messages", q.what, n)
		}
	}
	return c.done("both empty")
}

// snapshot checks the age of the newest completed snapshot against what
// the SnapshotAge alarm allows (two intervals of the snapshot schedule and
// an hour).
func (d *Doctor) snapshot(ctx context.Context) Check {
	c := checker{Check: Check{Name: CheckSnapshot}}
	age, err := d.c.SnapshotAge(ctx)
	if err != nil {
		c.failed("read the pool's snapshots", err)
		return c.done("")
	}
	limit, err := d.snapshotLimit(ctx)
	if err != nil {
		c.failed("read the snapshot schedule", err)
		return c.done("")
	}
	if age > limit {
		c.problem("see why the snapshot Lambda did not take one (its logs, volsd status); an instance must be in service to snapshot from",
			"the newest completed snapshot is %s out of date, more than %s", age.Round(time.Second), limit)
	}
	return c.done(fmt.Sprintf("%s out of date (at most %s)", age.Round(time.Second), limit))
}

func (d *Doctor) snapshotLimit(ctx context.Context) (time.Duration, error) {
	interval := snapshot.DefaultInterval
	if name, ok := d.cfg.Rules["SnapshotSchedule"]; ok {
		out, err := d.c.Rules.DescribeRule(ctx, &eventbridge.DescribeRuleInput{Name: aws.String(name)})
		if err == nil {
			if iv, perr := ParseRate(aws.ToString(out.ScheduleExpression)); perr == nil {
				interval = iv
			}
		} else if !awserr.IsNotFound(err) {
			return 0, err
		}
	}
	return snapshot.MaxAge(interval), nil
}

var rate = regexp.MustCompile(`^rate\(([0-9]+) (minutes?|hours?|days?)\)$`)

// ParseRate reads an EventBridge rate expression ("rate(6 hours)").
func ParseRate(expr string) (time.Duration, error) {
	m := rate.FindStringSubmatch(expr)
	if m == nil {
		return 0, fmt.Errorf("schedule %q is not rate(N minutes|hours|days)", expr)
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[byte]time.Duration{'m': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[m[2][0]]
	return time.Duration(n) * unit, nil
}
