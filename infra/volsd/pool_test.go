package volsd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/jsii-runtime-go"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/assembly"
	"github.com/volsd/volsd/infra/documents"
	"github.com/volsd/volsd/infra/volsd"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/doctor"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/store"
)

func TestNoUnsuppressedNagFindings(t *testing.T) {
	for _, f := range synthesized.Findings {
		t.Errorf("cdk-nag: %s", f)
	}
	// The checks ran: each stack has a report, and every rule is compliant,
	// not applicable, or suppressed with a reason.
	for _, stack := range []string{stackName, defaultName} {
		rows, err := synthesized.NagReport(stack)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) < 10 {
			t.Errorf("%s: cdk-nag evaluated only %d rules", stack, len(rows))
		}
		for _, r := range rows {
			switch r.Compliance {
			case "Compliant", "N/A":
			case "Suppressed":
				if len(r.Reason) < 20 {
					t.Errorf("%s: %s on %s suppressed without a reason: %q", stack, r.Rule, r.Resource, r.Reason)
				}
			default:
				t.Errorf("%s: %s on %s is %s", stack, r.Rule, r.Resource, r.Compliance)
			}
		}
	}
}

func TestNagSuppressionsCarryReasons(t *testing.T) {
	n := 0
	for name, tmpl := range synthesized.Stacks {
		for _, r := range tmpl.Resources {
			meta, _ := r.Raw["Metadata"].(map[string]any)
			nag, _ := meta["cdk_nag"].(map[string]any)
			rules, _ := nag["rules_to_suppress"].([]any)
			for _, rule := range rules {
				m, _ := rule.(map[string]any)
				n++
				if reason, _ := m["reason"].(string); len(reason) < 20 {
					t.Errorf("%s %s: suppression of %v has no real reason: %q", name, r.ID, m["id"], reason)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no cdk-nag suppressions found in the templates: is the metadata missing?")
	}
}

func TestTemplatesPassCfnLint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := synthesized.Lint(ctx); err != nil {
		t.Fatal(err)
	}
}

// tableInput rebuilds the CreateTable input that the synthesized table amounts to.
func tableInput(t *testing.T, props map[string]any) *dynamodb.CreateTableInput {
	t.Helper()
	var p struct {
		BillingMode            string
		AttributeDefinitions   []struct{ AttributeName, AttributeType string }
		KeySchema              []struct{ AttributeName, KeyType string }
		GlobalSecondaryIndexes []struct {
			IndexName  string
			KeySchema  []struct{ AttributeName, KeyType string }
			Projection struct {
				ProjectionType   string
				NonKeyAttributes []string
			}
		}
	}
	b, _ := json.Marshal(props)
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	keys := func(ks []struct{ AttributeName, KeyType string }) []ddbtypes.KeySchemaElement {
		var out []ddbtypes.KeySchemaElement
		for _, k := range ks {
			out = append(out, ddbtypes.KeySchemaElement{AttributeName: aws.String(k.AttributeName), KeyType: ddbtypes.KeyType(k.KeyType)})
		}
		return out
	}
	in := &dynamodb.CreateTableInput{BillingMode: ddbtypes.BillingMode(p.BillingMode), KeySchema: keys(p.KeySchema)}
	for _, a := range p.AttributeDefinitions {
		in.AttributeDefinitions = append(in.AttributeDefinitions, ddbtypes.AttributeDefinition{
			AttributeName: aws.String(a.AttributeName), AttributeType: ddbtypes.ScalarAttributeType(a.AttributeType)})
	}
	for _, g := range p.GlobalSecondaryIndexes {
		in.GlobalSecondaryIndexes = append(in.GlobalSecondaryIndexes, ddbtypes.GlobalSecondaryIndex{
			IndexName: aws.String(g.IndexName), KeySchema: keys(g.KeySchema),
			Projection: &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionType(g.Projection.ProjectionType), NonKeyAttributes: g.Projection.NonKeyAttributes},
		})
	}
	return in
}

func TestTableMatchesStoreDefinition(t *testing.T) {
	for _, stack := range []string{stackName, defaultName} {
		table := one(t, template(t, stack), "AWS::DynamoDB::Table", "Table")
		got := tableInput(t, table.Properties)
		want := store.TableDefinition("")
		want.TableName = nil
		opts := cmp.Options{
			cmpopts.IgnoreUnexported(dynamodb.CreateTableInput{}, ddbtypes.AttributeDefinition{}, ddbtypes.KeySchemaElement{},
				ddbtypes.GlobalSecondaryIndex{}, ddbtypes.Projection{}),
			cmpopts.SortSlices(func(a, b ddbtypes.AttributeDefinition) bool { return *a.AttributeName < *b.AttributeName }),
		}
		if d := cmp.Diff(want, got, opts); d != "" {
			t.Errorf("%s: synthesized table differs from store.TableDefinition (-store +template):\n%s", stack, d)
		}
		check(t, stack+" table TTL, PITR, SSE", func() {
			cdkTemplate(t, stack).HasResourceProperties(jsii.String("AWS::DynamoDB::Table"), &map[string]any{
				"TimeToLiveSpecification":          map[string]any{"AttributeName": store.AttrTTL, "Enabled": true},
				"PointInTimeRecoverySpecification": map[string]any{"PointInTimeRecoveryEnabled": true},
				"SSESpecification":                 map[string]any{"SSEEnabled": true},
				"DeletionProtectionEnabled":        true,
			})
		})
		if table.Raw["DeletionPolicy"] != "Retain" || table.Raw["UpdateReplacePolicy"] != "Retain" {
			t.Errorf("%s: table deletion policy %v / %v, want Retain", stack, table.Raw["DeletionPolicy"], table.Raw["UpdateReplacePolicy"])
		}
	}
}

func TestOriginBucket(t *testing.T) {
	tmpl := template(t, stackName)
	bucket := one(t, tmpl, "AWS::S3::Bucket", "Origin")
	if bucket.Raw["DeletionPolicy"] != "Retain" {
		t.Errorf("bucket DeletionPolicy %v, want Retain", bucket.Raw["DeletionPolicy"])
	}
	c := cdkTemplate(t, stackName)
	check(t, "bucket blocks public access, encrypts, versions", func() {
		c.HasResourceProperties(jsii.String("AWS::S3::Bucket"), &map[string]any{
			"PublicAccessBlockConfiguration": map[string]any{
				"BlockPublicAcls": true, "BlockPublicPolicy": true, "IgnorePublicAcls": true, "RestrictPublicBuckets": true},
			"BucketEncryption": map[string]any{"ServerSideEncryptionConfiguration": []any{
				map[string]any{"ServerSideEncryptionByDefault": map[string]any{"SSEAlgorithm": "AES256"}}}},
			"VersioningConfiguration": map[string]any{"Status": "Enabled"},
			"OwnershipControls":       map[string]any{"Rules": []any{map[string]any{"ObjectOwnership": "BucketOwnerEnforced"}}},
		})
	})
	check(t, "bucket policy denies non-TLS", func() {
		c.HasResourceProperties(jsii.String("AWS::S3::BucketPolicy"), &map[string]any{
			"PolicyDocument": assertions.Match_ObjectLike(&map[string]any{
				"Statement": assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{
					"Effect":    "Deny",
					"Condition": map[string]any{"Bool": map[string]any{"aws:SecureTransport": "false"}},
				})}),
			}),
		})
	})
}

func functionTimeout(t *testing.T, tmpl *assembly.Template, name string) float64 {
	t.Helper()
	fn := one(t, tmpl, "AWS::Lambda::Function", titled(name))
	v, ok := fn.Properties["Timeout"].(float64)
	if !ok {
		t.Fatalf("function %s has no Timeout", name)
	}
	return v
}

func titled(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

func ref(id string) map[string]any { return map[string]any{"Ref": id} }

func getAtt(id, attr string) map[string]any { return map[string]any{"Fn::GetAtt": []any{id, attr}} }

func TestQueues(t *testing.T) {
	tmpl := template(t, stackName)
	push := one(t, tmpl, "AWS::SQS::Queue", "PushQueue")
	dlq := one(t, tmpl, "AWS::SQS::Queue", "PoolDeadLetterQueue")
	edlq := one(t, tmpl, "AWS::SQS::Queue", "EventDeadLetterQueue")
	vis, _ := push.Properties["VisibilityTimeout"].(float64)
	if pt := functionTimeout(t, tmpl, "push"); vis < 6*pt {
		t.Errorf("push queue visibility timeout %v s < 6 × push timeout %v s", vis, pt)
	}
	wantRedrive := map[string]any{"deadLetterTargetArn": getAtt(dlq.ID, "Arn"), "maxReceiveCount": float64(events.PushMaxReceiveCount)}
	if d := cmp.Diff(wantRedrive, push.Properties["RedrivePolicy"]); d != "" {
		t.Errorf("push queue redrive policy (-want +got):\n%s", d)
	}
	for _, q := range []assembly.Resource{push, dlq, edlq} {
		if q.Properties["SqsManagedSseEnabled"] != true {
			t.Errorf("queue %s is not encrypted: %v", q.ID, q.Properties)
		}
	}
	// Every queue has a policy denying non-TLS access.
	for _, q := range []assembly.Resource{push, dlq, edlq} {
		found := false
		for _, p := range tmpl.OfType("AWS::SQS::QueuePolicy") {
			b, _ := json.Marshal(p.Properties)
			if strings.Contains(string(b), `{"Ref":"`+q.ID+`"}`) && strings.Contains(string(b), `"aws:SecureTransport":"false"`) {
				found = true
			}
		}
		if !found {
			t.Errorf("queue %s has no policy denying non-TLS access", q.ID)
		}
	}
	check(t, "push Lambda reads the queue reporting batch item failures", func() {
		cdkTemplate(t, stackName).HasResourceProperties(jsii.String("AWS::Lambda::EventSourceMapping"), &map[string]any{
			"EventSourceArn":        getAtt(push.ID, "Arn"),
			"FunctionName":          ref(one(t, tmpl, "AWS::Lambda::Function", "Push").ID),
			"FunctionResponseTypes": []any{"ReportBatchItemFailures"},
		})
	})
	// No batching window: a lone push is handed to the push Lambda as
	// soon as a poller receives it (a window held each for its whole
	// length; docs/benchmarks.md, "Converge").
	for _, esm := range tmpl.OfType("AWS::Lambda::EventSourceMapping") {
		if w, ok := esm.Properties["MaximumBatchingWindowInSeconds"]; ok && fmt.Sprint(w) != "0" {
			t.Errorf("event source mapping %s has MaximumBatchingWindowInSeconds %v, want none (0)", esm.ID, w)
		}
	}
}

// wantEnv is the environment of each function (docs/contracts.md) in the full test stack.
func wantEnv(tmpl *assembly.Template, t *testing.T) map[string]map[string]any {
	table := ref(one(t, tmpl, "AWS::DynamoDB::Table", "Table").ID)
	bucket := ref(one(t, tmpl, "AWS::S3::Bucket", "Origin").ID)
	key := getAtt(one(t, tmpl, "AWS::KMS::Key", "EbsKey").ID, "Arn")
	common := map[string]any{"VOLSD_POOL": testPool, "VOLSD_TABLE": table, "VOLSD_LOG_LEVEL": "info"}
	volume := map[string]any{
		"VOLSD_IDLE_PER_AZ": "2", "VOLSD_VOLUME_SIZE_GIB": "20", "VOLSD_VOLUME_TYPE": "gp3", "VOLSD_VOLUME_IOPS": "4000",
		"VOLSD_VOLUME_THROUGHPUT": "250", "VOLSD_VOLUME_INIT_RATE": "300", "VOLSD_KMS_KEY_ID": key,
		"VOLSD_SOURCE_SNAPSHOT": testSnap, "VOLSD_RELEASE_POLICY": "delete",
	}
	// Each function is told the names of the documents it sends; report
	// those of all documents (it takes their status).
	docs := map[string]any{"VOLSD_DOC_APPLY": "volsd-Apply", "VOLSD_DOC_FREEZE": "volsd-Freeze", "VOLSD_DOC_THAW": "volsd-Thaw",
		"VOLSD_DOC_RELEASE": "volsd-Release", "VOLSD_DOC_STATUS": "volsd-Status"}
	lifecycleDocs := map[string]any{"VOLSD_DOC_RELEASE": "volsd-Release", "VOLSD_DOC_STATUS": "volsd-Status"}
	snapshotDocs := map[string]any{"VOLSD_DOC_FREEZE": "volsd-Freeze", "VOLSD_DOC_THAW": "volsd-Thaw"}
	pushDocs := map[string]any{"VOLSD_DOC_APPLY": "volsd-Apply"}
	merge := func(ms ...map[string]any) map[string]any {
		out := map[string]any{}
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	return map[string]map[string]any{
		"lifecycle": merge(common, volume, lifecycleDocs, map[string]any{"VOLSD_ASG": testGroup}),
		"reconcile": merge(common, volume, map[string]any{"VOLSD_ASG": testGroup, "VOLSD_AZS": "eu-west-1a,eu-west-1b",
			"VOLSD_AUTOGROW_FREE_PERCENT": "0", "VOLSD_AUTOGROW_STEP_GIB": "10", "VOLSD_AUTOGROW_MAX_GIB": "0", "VOLSD_FILL_ALARM_PERCENT": "90"}),
		"snapshot": merge(common, snapshotDocs, map[string]any{"VOLSD_ASG": testGroup, "VOLSD_KMS_KEY_ID": key,
			"VOLSD_SNAPSHOT_KEEP": "3", "VOLSD_FREEZE_SECONDS": "30", "VOLSD_BUCKET": bucket, "VOLSD_RECLAIM_GRACE": "168h0m0s"}),
		"push":   merge(common, pushDocs, map[string]any{"VOLSD_BUCKET": bucket, "VOLSD_SSM_MAX_CONCURRENCY": "50%", "VOLSD_SSM_MAX_ERRORS": "100%"}),
		"report": merge(common, docs),
	}
}

func TestFunctions(t *testing.T) {
	tmpl := template(t, stackName)
	if n := len(tmpl.OfType("AWS::Lambda::Function")); n != len(volsd.FunctionNames) {
		t.Errorf("%d functions, want %d", n, len(volsd.FunctionNames))
	}
	edlq := one(t, tmpl, "AWS::SQS::Queue", "EventDeadLetterQueue")
	env := wantEnv(tmpl, t)
	for _, name := range volsd.FunctionNames {
		fn := one(t, tmpl, "AWS::Lambda::Function", titled(name))
		p := fn.Properties
		if p["Runtime"] != "provided.al2023" || p["Handler"] != "bootstrap" || !slices.Equal(toStrings(p["Architectures"]), []string{"arm64"}) {
			t.Errorf("%s: runtime %v handler %v architectures %v, want provided.al2023, bootstrap, arm64", name, p["Runtime"], p["Handler"], p["Architectures"])
		}
		vars, _ := p["Environment"].(map[string]any)["Variables"].(map[string]any)
		if d := cmp.Diff(env[name], vars); d != "" {
			t.Errorf("%s environment (-want +got):\n%s", name, d)
		}
		role, _ := p["Role"].(map[string]any)
		if !strings.Contains(fmt.Sprint(role), titled(name)+"Role") {
			t.Errorf("%s runs as %v, want its own role", name, role)
		}
		if p["Timeout"] == nil || p["MemorySize"] == nil {
			t.Errorf("%s: no timeout or memory size", name)
		}
		var invokeConfig *assembly.Resource
		for _, c := range tmpl.OfType("AWS::Lambda::EventInvokeConfig") {
			if fmt.Sprint(c.Properties["FunctionName"]) == fmt.Sprint(ref(fn.ID)) {
				invokeConfig = &c
			}
		}
		if name == "push" {
			if invokeConfig != nil {
				t.Errorf("push has an asynchronous invoke config; it is fed by SQS only")
			}
			continue
		}
		if invokeConfig == nil {
			t.Errorf("%s: no on-failure destination for asynchronous invocations", name)
			continue
		}
		want := map[string]any{"OnFailure": map[string]any{"Destination": getAtt(edlq.ID, "Arn")}}
		if d := cmp.Diff(want, invokeConfig.Properties["DestinationConfig"]); d != "" {
			t.Errorf("%s on-failure destination (-want +got):\n%s", name, d)
		}
		if invokeConfig.Properties["MaximumRetryAttempts"] != float64(2) {
			t.Errorf("%s: async retries %v, want 2", name, invokeConfig.Properties["MaximumRetryAttempts"])
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func TestRules(t *testing.T) {
	tmpl := template(t, stackName)
	edlq := one(t, tmpl, "AWS::SQS::Queue", "EventDeadLetterQueue")
	for _, c := range []struct {
		rule, function string
		pattern        map[string]any
		schedule       string
	}{
		{"LifecycleRule", "Lifecycle", map[string]any{
			"source":      []any{"aws.autoscaling"},
			"detail-type": []any{"EC2 Instance-launch Lifecycle Action", "EC2 Instance-terminate Lifecycle Action"},
			"detail": map[string]any{
				"AutoScalingGroupName": []any{testGroup},
				"LifecycleHookName":    []any{volsd.LaunchHookName, volsd.TerminateHookName},
			},
		}, ""},
		{"LaunchSuccessfulRule", "Lifecycle", map[string]any{
			"source":      []any{"aws.autoscaling"},
			"detail-type": []any{"EC2 Instance Launch Successful"},
			"detail":      map[string]any{"AutoScalingGroupName": []any{testGroup}},
		}, ""},
		{"ReconcileSchedule", "Reconcile", nil, "rate(5 minutes)"},
		{"SnapshotSchedule", "Snapshot", nil, "rate(6 hours)"},
		// A finished command's results in pages; failed invocations at once.
		{"CommandStatusRule", "Report", map[string]any{
			"source":      []any{"aws.ssm"},
			"detail-type": []any{"EC2 Command Status-change Notification"},
			"detail": map[string]any{"document-name": []any{"volsd-Apply", "volsd-Freeze", "volsd-Thaw", "volsd-Release", "volsd-Status"},
				"status": []any{"Success", "Failed", "Cancelled", "TimedOut"}},
		}, ""},
		{"InvocationFailureRule", "Report", map[string]any{
			"source":      []any{"aws.ssm"},
			"detail-type": []any{"EC2 Command Invocation Status-change Notification"},
			"detail": map[string]any{"document-name": []any{"volsd-Apply", "volsd-Freeze", "volsd-Thaw", "volsd-Release", "volsd-Status"},
				"status": []any{"Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated", "DeliveryTimedOut", "ExecutionTimedOut"}},
		}, ""},
	} {
		rule := one(t, tmpl, "AWS::Events::Rule", c.rule)
		if c.pattern != nil {
			if d := cmp.Diff(c.pattern, rule.Properties["EventPattern"]); d != "" {
				t.Errorf("%s pattern (-want +got):\n%s", c.rule, d)
			}
		}
		if c.schedule != "" && rule.Properties["ScheduleExpression"] != c.schedule {
			t.Errorf("%s schedule %v, want %s", c.rule, rule.Properties["ScheduleExpression"], c.schedule)
		}
		targets, _ := rule.Properties["Targets"].([]any)
		if len(targets) != 1 {
			t.Fatalf("%s: %d targets", c.rule, len(targets))
		}
		target := targets[0].(map[string]any)
		fn := one(t, tmpl, "AWS::Lambda::Function", c.function)
		if d := cmp.Diff(getAtt(fn.ID, "Arn"), target["Arn"]); d != "" {
			t.Errorf("%s target (-want +got):\n%s", c.rule, d)
		}
		if d := cmp.Diff(map[string]any{"Arn": getAtt(edlq.ID, "Arn")}, target["DeadLetterConfig"]); d != "" {
			t.Errorf("%s dead-letter config (-want +got):\n%s", c.rule, d)
		}
		retry, _ := target["RetryPolicy"].(map[string]any)
		if retry["MaximumRetryAttempts"] == nil || retry["MaximumEventAgeInSeconds"] == nil {
			t.Errorf("%s: target retry policy %v", c.rule, target["RetryPolicy"])
		}
	}
	// The lifecycle rule of the defaults stack names its own group only.
	rule := one(t, template(t, defaultName), "AWS::Events::Rule", "LifecycleRule")
	detail := rule.Properties["EventPattern"].(map[string]any)["detail"]
	if d := cmp.Diff(map[string]any{
		"AutoScalingGroupName": []any{"media-asg"},
		"LifecycleHookName":    []any{volsd.LaunchHookName, volsd.TerminateHookName},
	}, detail); d != "" {
		t.Errorf("defaults lifecycle rule detail (-want +got):\n%s", d)
	}
}

// TestLifecycleRuleTakesOnlyVolsdHooks routes AWS's documented sample
// lifecycle events through the synthesized rule: volsd's own hooks on the
// group match; another hook on the same group (the sample's
// "my-lifecycle-hook") and volsd's hook names on another group do not.
func TestLifecycleRuleTakesOnlyVolsdHooks(t *testing.T) {
	rule := one(t, template(t, stackName), "AWS::Events::Rule", "LifecycleRule")
	pattern := rule.Properties["EventPattern"].(map[string]any)
	for _, c := range []struct {
		file, group, hook string
		match             bool
	}{
		{"launch.json", testGroup, "", true},
		{"terminate.json", testGroup, "", true},
		{"launch-from-warmpool.json", testGroup, "", true},
		{"foreign-hook-launch.json", testGroup, "", false},
		{"foreign-hook-terminate.json", testGroup, "", false},
		{"foreign-hook-launch.json", testGroup, volsd.LaunchHookName, true},
		{"terminate.json", "other-asg", "", false},
		{"launch-successful.json", testGroup, "", false}, // LaunchSuccessfulRule's
	} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "events", "testdata", c.file))
		if err != nil {
			t.Fatal(err)
		}
		var ev map[string]any
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		d := ev["detail"].(map[string]any)
		d["AutoScalingGroupName"] = c.group
		if c.hook != "" {
			d["LifecycleHookName"] = c.hook
		}
		raw, _ = json.Marshal(ev)
		got, err := assembly.MatchPattern(pattern, raw)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.match {
			t.Errorf("%s (group %s, hook %v): rule matches %v, want %v", c.file, c.group, d["LifecycleHookName"], got, c.match)
		}
	}
}

// TestLaunchSuccessfulReachesLifecycle routes AWS's "EC2 Instance Launch
// Successful" event of the group to the lifecycle Lambda (which asks the
// agent for its status), and that of another group nowhere.
func TestLaunchSuccessfulReachesLifecycle(t *testing.T) {
	tmpl := template(t, stackName)
	raw, err := os.ReadFile(filepath.Join("..", "..", "events", "testdata", "launch-successful.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, group := range []string{testGroup, "other-asg"} {
		var ev map[string]any
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		ev["detail"].(map[string]any)["AutoScalingGroupName"] = group
		b, _ := json.Marshal(ev)
		var matched []string
		for _, r := range tmpl.OfType("AWS::Events::Rule") {
			pattern, ok := r.Properties["EventPattern"].(map[string]any)
			if !ok {
				continue
			}
			if ok, err := assembly.MatchPattern(pattern, b); err != nil {
				t.Fatal(err)
			} else if ok {
				matched = append(matched, r.ID)
			}
		}
		want := 0
		if group == testGroup {
			want = 1
		}
		if len(matched) != want || want == 1 && !strings.Contains(matched[0], "LaunchSuccessfulRule") {
			t.Errorf("launch successful of %s matched %v", group, matched)
		}
	}
}

func TestLifecycleHooks(t *testing.T) {
	tmpl := template(t, stackName)
	fn := one(t, tmpl, "AWS::Lambda::Function", "Lifecycle")
	rule := one(t, tmpl, "AWS::Events::Rule", "LifecycleRule")
	for _, c := range []struct {
		id, name, transition, result string
		heartbeat                    float64
	}{
		{"LaunchHook", volsd.LaunchHookName, "autoscaling:EC2_INSTANCE_LAUNCHING", "ABANDON", 900},
		{"TerminateHook", volsd.TerminateHookName, "autoscaling:EC2_INSTANCE_TERMINATING", "CONTINUE", 1200},
	} {
		hook := one(t, tmpl, "AWS::AutoScaling::LifecycleHook", c.id)
		want := map[string]any{
			"AutoScalingGroupName": testGroup, "LifecycleHookName": c.name, "LifecycleTransition": c.transition,
			"DefaultResult": c.result, "HeartbeatTimeout": c.heartbeat, "NotificationMetadata": `{"pool":"web"}`,
		}
		if d := cmp.Diff(want, hook.Properties); d != "" {
			t.Errorf("%s (-want +got):\n%s", c.id, d)
		}
		for _, dep := range []string{fn.ID, rule.ID} {
			if !slices.Contains(hook.DependsOn, dep) {
				t.Errorf("%s does not depend on %s (DependsOn %v): launches could wait for a hook nobody handles", c.id, dep, hook.DependsOn)
			}
		}
	}
}

// TestTerminateHookOutlastsLifecycleRetries reads the template: the
// terminate hook must still be pending when Lambda's last retry of the
// lifecycle function ends (timeout per try, 1 + MaximumRetryAttempts tries,
// Lambda's 1 and 2 minute retry delays), or that retry completes nothing
// and the volume is detached after the instance is gone.
func TestTerminateHookOutlastsLifecycleRetries(t *testing.T) {
	for _, stack := range []string{stackName, defaultName} {
		tmpl := template(t, stack)
		fn := one(t, tmpl, "AWS::Lambda::Function", "Lifecycle")
		var retries float64 = -1
		for _, c := range tmpl.OfType("AWS::Lambda::EventInvokeConfig") {
			if name, _ := c.Properties["FunctionName"].(map[string]any); name["Ref"] == fn.ID {
				retries, _ = c.Properties["MaximumRetryAttempts"].(float64)
			}
		}
		if retries < 0 {
			t.Fatalf("%s: no EventInvokeConfig for %s", stack, fn.ID)
		}
		hook := one(t, tmpl, "AWS::AutoScaling::LifecycleHook", "TerminateHook")
		need := fn.Properties["Timeout"].(float64)*(1+retries) + 60 + 120
		if got := hook.Properties["HeartbeatTimeout"].(float64); got <= need {
			t.Errorf("%s: terminate hook heartbeat %gs, the lifecycle Lambda may still be retrying until %gs", stack, got, need)
		}
	}
	_, err := newPoolErr(func(p *volsd.PoolProps) { p.TerminateHeartbeatTimeout = awscdk.Duration_Minutes(jsii.Number(5)) })
	if err == nil || !strings.Contains(err.Error(), "TerminateHeartbeatTimeout") {
		t.Errorf("a 5 minute terminate heartbeat is accepted: %v", err)
	}
}

func TestDocuments(t *testing.T) {
	tmpl := template(t, stackName)
	docs := tmpl.OfType("AWS::SSM::Document")
	if len(docs) != len(events.DocumentKinds) {
		t.Fatalf("%d documents, want %d", len(docs), len(events.DocumentKinds))
	}
	for _, kind := range events.DocumentKinds {
		d := one(t, tmpl, "AWS::SSM::Document", "Document"+kind)
		want, err := documents.Content(kind)
		if err != nil {
			t.Fatal(err)
		}
		if d.Properties["Name"] != "volsd-"+kind || d.Properties["DocumentType"] != "Command" || d.Properties["UpdateMethod"] != "NewVersion" {
			t.Errorf("document %s: name %v type %v update %v", kind, d.Properties["Name"], d.Properties["DocumentType"], d.Properties["UpdateMethod"])
		}
		if diff := cmp.Diff(want, d.Properties["Content"]); diff != "" {
			t.Errorf("document %s content differs from %s.yaml (-file +template):\n%s", kind, kind, diff)
		}
	}
}

// rulesJoin is the Rules output doctor reads: "ID=" and a Ref to the rule
// of that construct ID, for every doctor.RuleIDs.
func rulesJoin(t *testing.T, tmpl *assembly.Template) any {
	var parts []any
	for i, id := range doctor.RuleIDs {
		sep := ","
		if i == 0 {
			sep = ""
		}
		parts = append(parts, sep+id+"=", ref(one(t, tmpl, "AWS::Events::Rule", id).ID))
	}
	return map[string]any{"Fn::Join": []any{"", parts}}
}

func TestOutputs(t *testing.T) {
	tmpl := template(t, stackName)
	want := map[string]any{
		"PoolName":           testPool,
		"TableName":          ref(one(t, tmpl, "AWS::DynamoDB::Table", "Table").ID),
		"BucketName":         ref(one(t, tmpl, "AWS::S3::Bucket", "Origin").ID),
		"QueueUrl":           ref(one(t, tmpl, "AWS::SQS::Queue", "PushQueue").ID),
		"DeadLetterQueueUrl": ref(one(t, tmpl, "AWS::SQS::Queue", "PoolDeadLetterQueue").ID),
		"Region":             testRegion,

		"AutoScalingGroupName":    testGroup,
		"EventDeadLetterQueueUrl": ref(one(t, tmpl, "AWS::SQS::Queue", "EventDeadLetterQueue").ID),
		"DocumentPrefix":          "volsd-",
		"Rules":                   rulesJoin(t, tmpl),
	}
	got := map[string]any{}
	for id, o := range tmpl.Outputs {
		got[id] = o["Value"]
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("outputs (-want +got):\n%s", d)
	}
	if n := len(template(t, defaultName).Outputs); n != 0 {
		t.Errorf("a pool without AddOutputs has %d outputs", n)
	}
}

func TestAlarmsAndDashboard(t *testing.T) {
	tmpl := template(t, stackName)
	alarms := map[string]map[string]any{}
	for _, a := range tmpl.OfType("AWS::CloudWatch::Alarm") {
		alarms[a.ID] = a.Properties
	}
	find := func(part string) map[string]any {
		t.Helper()
		return one(t, tmpl, "AWS::CloudWatch::Alarm", part).Properties
	}
	for _, c := range []struct{ alarm, queue string }{
		{"PoolDeadLetterQueueNotEmptyAlarm", "PoolDeadLetterQueue"},
		{"EventDeadLetterQueueNotEmptyAlarm", "EventDeadLetterQueue"},
	} {
		a := find(c.alarm)
		q := one(t, tmpl, "AWS::SQS::Queue", c.queue)
		if a["MetricName"] != "ApproximateNumberOfMessagesVisible" || a["Threshold"] != float64(0) || a["ComparisonOperator"] != "GreaterThanThreshold" ||
			!strings.Contains(fmt.Sprint(a["Dimensions"]), q.ID) {
			t.Errorf("%s: %v", c.alarm, a)
		}
	}
	idle := find("IdlePoolEmptyAlarm")
	if !strings.Contains(fmt.Sprint(idle["Metrics"]), "SELECT MIN(IdleVolumes) FROM SCHEMA(volsd, AZ, Pool) WHERE Pool = 'web'") ||
		idle["ComparisonOperator"] != "LessThanOrEqualToThreshold" || idle["Threshold"] != float64(0) {
		t.Errorf("IdlePoolEmptyAlarm: %v", idle)
	}
	lag := find("PushLagAlarm")
	if lag["MetricName"] != "ApproximateAgeOfOldestMessage" || lag["Threshold"] != float64(volsd.PushLagThresholdSeconds) ||
		!strings.Contains(fmt.Sprint(lag["Dimensions"]), one(t, tmpl, "AWS::SQS::Queue", "PushQueue").ID) {
		t.Errorf("PushLagAlarm: %v", lag)
	}
	for _, name := range volsd.FunctionNames {
		a := find(titled(name) + "ErrorsAlarm")
		fn := one(t, tmpl, "AWS::Lambda::Function", titled(name))
		if a["MetricName"] != "Errors" || a["Namespace"] != "AWS/Lambda" || !strings.Contains(fmt.Sprint(a["Dimensions"]), fn.ID) {
			t.Errorf("%s errors alarm: %v", name, a)
		}
	}
	stall := find("PoolStalledAlarm")
	if stall["MetricName"] != metrics.StalledReports || stall["Namespace"] != "volsd" || stall["Statistic"] != "Sum" || stall["Threshold"] != float64(0) ||
		fmt.Sprint(stall["Dimensions"]) != "[map[Name:Pool Value:web]]" {
		t.Errorf("PoolStalledAlarm: %v", stall)
	}
	full := find("VolumeFullAlarm")
	if full["MetricName"] != metrics.VolumesFullCannotGrow || full["Namespace"] != "volsd" || full["Statistic"] != "Maximum" || full["Threshold"] != float64(0) ||
		fmt.Sprint(full["Dimensions"]) != "[map[Name:Pool Value:web]]" || !strings.Contains(fmt.Sprint(full["AlarmDescription"]), "90% full") {
		t.Errorf("VolumeFullAlarm: %v", full)
	}
	age := find("SnapshotAgeAlarm")
	if age["MetricName"] != "SnapshotAgeSeconds" || age["Namespace"] != "volsd" || age["Threshold"] != float64(2*6*3600+3600) ||
		fmt.Sprint(age["Dimensions"]) != "[map[Name:Pool Value:web]]" {
		t.Errorf("SnapshotAgeAlarm: %v", age)
	}
	if len(alarms) != 2+1+1+len(volsd.FunctionNames)+1+1+1 {
		names := make([]string, 0, len(alarms))
		for n := range alarms {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Errorf("alarms %v", names)
	}
	dash := one(t, tmpl, "AWS::CloudWatch::Dashboard", "Dashboard")
	body := fmt.Sprint(dash.Properties["DashboardBody"])
	for _, want := range []string{"IdleVolumes", "SnapshotAgeSeconds", "ApproximateAgeOfOldestMessage", "PushLagSeconds", "ReportedLagSeconds", "Errors", "alarm"} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard does not show %s", want)
		}
	}
}

func TestPoolTagOnResources(t *testing.T) {
	tmpl := template(t, stackName)
	for _, typ := range []string{"AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue", "AWS::Lambda::Function", "AWS::IAM::Role"} {
		for _, r := range tmpl.OfType(typ) {
			if r.ID == one(t, tmpl, "AWS::IAM::Role", "InstanceRole").ID {
				continue // the user's role is not the pool's
			}
			if !strings.Contains(fmt.Sprint(r.Properties["Tags"]), "Key:volsd:pool Value:web") {
				t.Errorf("%s %s has no volsd:pool tag: %v", typ, r.ID, r.Properties["Tags"])
			}
		}
	}
}

func TestSecondPoolWithOwnDocumentPrefix(t *testing.T) {
	tmpl := template(t, defaultName)
	var names []any
	for _, kind := range events.DocumentKinds {
		d := one(t, tmpl, "AWS::SSM::Document", "Document"+kind)
		if d.Properties["Name"] != "volsd-media-"+kind {
			t.Errorf("document %s named %v", kind, d.Properties["Name"])
		}
		names = append(names, "volsd-media-"+kind)
	}
	for _, id := range []string{"CommandStatusRule", "InvocationFailureRule"} {
		rule := one(t, tmpl, "AWS::Events::Rule", id)
		if d := cmp.Diff(names, rule.Properties["EventPattern"].(map[string]any)["detail"].(map[string]any)["document-name"]); d != "" {
			t.Errorf("%s documents (-want +got):\n%s", id, d)
		}
	}
	push := one(t, tmpl, "AWS::Lambda::Function", "Push")
	vars := push.Properties["Environment"].(map[string]any)["Variables"].(map[string]any)
	if vars["VOLSD_DOC_APPLY"] != "volsd-media-Apply" || vars["VOLSD_POOL"] != "media" {
		t.Errorf("push environment %v", vars)
	}
	lifecycle := one(t, tmpl, "AWS::Lambda::Function", "Lifecycle")
	if v := lifecycle.Properties["Environment"].(map[string]any)["Variables"].(map[string]any)["VOLSD_ASG"]; v != "media-asg" {
		t.Errorf("lifecycle VOLSD_ASG %v, want the construct's group name", v)
	}
	media := "arn:aws:ssm:" + assembly.PlaceholderRegion + ":" + assembly.PlaceholderAccount + ":document/"
	checkPermissions(t, "media push", roleStatements(t, tmpl, "PoolPushRole"), []permission{
		{"ssm:SendCommand", media + "volsd-media-Apply", nil, true},
		{"ssm:SendCommand", media + "volsd-Apply", nil, false},
		{"ssm:SendCommand", "arn:aws:ec2:eu-west-1:123456789012:instance/i-1", map[string][]string{"ssm:resourceTag/volsd:pool": {"media"},
			"ssm:resourceTag/aws:autoscaling:groupName": {"media-asg"}}, true},
		{"ssm:SendCommand", "arn:aws:ec2:eu-west-1:123456789012:instance/i-1", map[string][]string{"ssm:resourceTag/volsd:pool": {"media"}}, false},
		{"ssm:SendCommand", "arn:aws:ec2:eu-west-1:123456789012:instance/i-1", ssmPool, false},
	})
	// Defaults: recycle, gp3, 10 GiB, one idle volume per AZ, no KMS key, no source snapshot.
	lvars := lifecycle.Properties["Environment"].(map[string]any)["Variables"].(map[string]any)
	for k, want := range map[string]string{"VOLSD_RELEASE_POLICY": "recycle", "VOLSD_VOLUME_TYPE": "gp3", "VOLSD_VOLUME_SIZE_GIB": "10",
		"VOLSD_IDLE_PER_AZ": "1", "VOLSD_KMS_KEY_ID": "", "VOLSD_SOURCE_SNAPSHOT": ""} {
		if lvars[k] != want {
			t.Errorf("default %s = %v, want %q", k, lvars[k], want)
		}
	}
}

// TestSSMStatusEventsReachReport routes the events Run Command emits (the
// awsfake model of them) through the stack's rules: a command's final
// status reaches the report Lambda once (its results are read in pages),
// an instance's failed invocation reaches it at once, and the other
// invocation events — every successful instance, every status that is
// not final — reach no rule, so a healthy push to N instances costs the
// report side ceil(N/50) SSM reads, not N.
func TestSSMStatusEventsReachReport(t *testing.T) {
	tmpl := template(t, stackName)
	fake := awsfake.NewSSM()
	fake.InvisibleReads = 0
	fake.AddDocument("volsd-Apply", map[string]string{"upTo": `^[0-9]{1,20}$`})
	for i := range 5 {
		fake.AddInstance(fmt.Sprintf("i-%017d", i), map[string]string{"volsd:pool": "web"})
	}
	fake.Runner = func(_ context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		if inv.InstanceID == fmt.Sprintf("i-%017d", 3) {
			return awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusFailed, ResponseCode: 1}
		}
		return awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusSuccess}
	}
	var mu sync.Mutex
	matched := map[string]int{} // rule → events, "" for none
	route := func(raw []byte) {
		var hits []string
		for _, r := range tmpl.OfType("AWS::Events::Rule") {
			pattern, ok := r.Properties["EventPattern"].(map[string]any)
			if !ok {
				continue
			}
			ok, err := assembly.MatchPattern(pattern, raw)
			if err != nil {
				t.Error(err)
			}
			if ok {
				hits = append(hits, r.ID)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(hits) == 0 {
			matched[""]++
		}
		for _, h := range hits {
			matched[h]++
		}
	}
	fake.OnEvent, fake.OnCommandEvent = route, route
	_, err := fake.SendCommand(context.Background(), &ssm.SendCommandInput{
		DocumentName: aws.String("volsd-Apply"), Parameters: map[string][]string{"upTo": {"7"}},
		Targets: []ssmtypes.Target{{Key: aws.String("tag:volsd:pool"), Values: []string{"web"}}},
		// The push's default: with SSM's own default (0) the failure
		// cancels whichever invocations have not started yet, a race that
		// adds Cancelled events on InvocationFailureRule.
		MaxErrors: aws.String(push.DefaultMaxErrors),
	})
	if err != nil {
		t.Fatal(err)
	}
	fake.Wait()
	report := func(id string) int {
		n := 0
		for rule, c := range matched {
			if strings.Contains(rule, id) {
				n += c
			}
		}
		return n
	}
	mu.Lock()
	defer mu.Unlock()
	if report("CommandStatusRule") != 1 || report("InvocationFailureRule") != 1 || len(matched) != 3 || matched[""] == 0 {
		t.Fatalf("events by rule %v: want the command's final event on CommandStatusRule, the failed invocation on InvocationFailureRule, every other event on none", matched)
	}
	rule := one(t, tmpl, "AWS::Events::Rule", "InvocationFailureRule")
	if targets, _ := rule.Properties["Targets"].([]any); len(targets) != 1 || !strings.Contains(fmt.Sprint(targets), "Report") {
		t.Errorf("InvocationFailureRule targets %v, want the report Lambda", targets)
	}
}
