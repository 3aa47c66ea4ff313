package stacks_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/infra/assembly"
	"github.com/volsd/volsd/infra/stacks"
	"github.com/volsd/volsd/infra/volsd"
)

// The whole app (pool stack for an existing group and the example fleet) is
// synthesized once, as `cdk synth -c asgName=web-asg -c example=true` would.
var synthesized *assembly.Assembly

const (
	poolStack    = "volsd-web"
	exampleStack = "volsd-example-web"
)

func TestMain(m *testing.M) {
	os.Setenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
	code := func() int {
		dir, err := os.MkdirTemp("", "volsd-app-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := synthesize(dir); err != nil {
			fmt.Fprintln(os.Stderr, "synth:", err)
			return 1
		}
		return m.Run()
	}()
	jsii.Close()
	os.Exit(code)
}

func assets(dir string) (lambdaDir, agent string, err error) {
	lambdaDir = filepath.Join(dir, "lambda")
	for _, name := range volsd.FunctionNames {
		if err := os.MkdirAll(filepath.Join(lambdaDir, name), 0o755); err != nil {
			return "", "", err
		}
		if err := os.WriteFile(filepath.Join(lambdaDir, name, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			return "", "", err
		}
	}
	agent = filepath.Join(dir, "volsd-agent-0.0.0-1.aarch64.rpm")
	return lambdaDir, agent, os.WriteFile(agent, []byte("stand-in package\n"), 0o644)
}

func newApp(outdir string, ctx map[string]any) awscdk.App {
	return awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(outdir), Context: &ctx})
}

func synthesize(dir string) error {
	lambdaDir, _, err := assets(dir)
	if err != nil {
		return err
	}
	out := filepath.Join(dir, "cdk.out")
	app := newApp(out, map[string]any{
		"pool": "web", "asgName": "web-asg", "example": "true",
		"lambdaDir": lambdaDir, "agentPackage": filepath.Join(dir, "volsd-agent-*.aarch64.rpm"), "exampleAllowCidr": "203.0.113.0/24",
	})
	cfg, err := stacks.ConfigFromContext(app)
	if err != nil {
		return err
	}
	if err := stacks.Build(app, cfg); err != nil {
		return err
	}
	app.Synth(nil)
	synthesized, err = assembly.Read(out)
	return err
}

func template(t *testing.T, name string) *assembly.Template {
	t.Helper()
	tmpl, ok := synthesized.Stacks[name]
	if !ok {
		t.Fatalf("no stack %s; have %v", name, synthesized.TemplateFiles())
	}
	return tmpl
}

func TestAppStacks(t *testing.T) {
	if len(synthesized.Stacks) != 2 {
		t.Errorf("stacks %v, want %s and %s", synthesized.TemplateFiles(), poolStack, exampleStack)
	}
	for _, name := range []string{poolStack, exampleStack} {
		tmpl := template(t, name)
		for _, out := range volsd.OutputNames {
			if _, ok := tmpl.Outputs[out]; !ok {
				t.Errorf("%s: no output %s", name, out)
			}
		}
		if n := len(tmpl.OfType("AWS::Lambda::Function")); n != len(volsd.FunctionNames) {
			t.Errorf("%s: %d functions", name, n)
		}
	}
	// The pool stack deploys hooks on the existing group; the example's
	// group carries them in its own definition.
	if n := len(template(t, poolStack).OfType("AWS::AutoScaling::LifecycleHook")); n != 2 {
		t.Errorf("pool stack: %d lifecycle hooks, want 2", n)
	}
	if n := len(template(t, exampleStack).OfType("AWS::AutoScaling::LifecycleHook")); n != 0 {
		t.Errorf("example stack: %d separate lifecycle hooks, want them in the group", n)
	}
}

func TestNoUnsuppressedNagFindings(t *testing.T) {
	for _, f := range synthesized.Findings {
		t.Errorf("cdk-nag: %s", f)
	}
	// The checks ran: each stack has a report, and every rule is compliant,
	// not applicable, or suppressed with a reason.
	for _, stack := range []string{poolStack, exampleStack} {
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

func TestSynthesizedAppPassesCfnLint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := synthesized.Lint(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNoWildcardActions(t *testing.T) {
	for name, tmpl := range synthesized.Stacks {
		sts, err := tmpl.AllStatements()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sts {
			for _, a := range s.Actions {
				if strings.ContainsAny(a, "*?") {
					t.Errorf("%s %s %s: wildcard action %q", name, s.Policy, s.Sid, a)
				}
			}
		}
	}
}

func TestExampleGroup(t *testing.T) {
	tmpl := template(t, exampleStack)
	groups := tmpl.OfType("AWS::AutoScaling::AutoScalingGroup")
	if len(groups) != 1 {
		t.Fatalf("%d groups", len(groups))
	}
	g := groups[0]
	if g.Properties["AutoScalingGroupName"] != stacks.ExampleGroupName("web") {
		t.Errorf("group name %v", g.Properties["AutoScalingGroupName"])
	}
	hooks := fmt.Sprint(g.Properties["LifecycleHookSpecificationList"])
	for _, want := range []string{"DefaultResult:ABANDON", "LifecycleTransition:autoscaling:EC2_INSTANCE_LAUNCHING",
		"DefaultResult:CONTINUE", "LifecycleTransition:autoscaling:EC2_INSTANCE_TERMINATING", "HeartbeatTimeout:900"} {
		if !strings.Contains(hooks, want) {
			t.Errorf("group hooks %s lack %s", hooks, want)
		}
	}
	if !strings.Contains(fmt.Sprint(g.Properties["Tags"]), "Key:volsd:pool PropagateAtLaunch:true Value:web") {
		t.Errorf("group does not tag its instances volsd:pool=web: %v", g.Properties["Tags"])
	}
	// The group waits for the pool's Lambdas and rules.
	for _, part := range []string{"PoolLifecycle", "PoolLifecycleRule"} {
		found := false
		for _, d := range g.DependsOn {
			if strings.HasPrefix(d, part) {
				found = true
			}
		}
		if !found {
			t.Errorf("group does not depend on %s*: %v", part, g.DependsOn)
		}
	}
	// The rule filters on the group's fixed name.
	rule, err := tmpl.One("AWS::Events::Rule", "LifecycleRule")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(rule.Properties["EventPattern"]), "AutoScalingGroupName:["+stacks.ExampleGroupName("web")+"]") {
		t.Errorf("lifecycle rule pattern %v", rule.Properties["EventPattern"])
	}
}

func TestExampleUserData(t *testing.T) {
	tmpl := template(t, exampleStack)
	lts := tmpl.OfType("AWS::EC2::LaunchTemplate")
	if len(lts) != 1 {
		t.Fatalf("%d launch templates", len(lts))
	}
	data := lts[0].Properties["LaunchTemplateData"].(map[string]any)
	if fmt.Sprint(data["MetadataOptions"]) != "map[HttpTokens:required]" {
		t.Errorf("IMDSv2 not required: %v", data["MetadataOptions"])
	}
	ud, err := assembly.Resolve(data["UserData"].(map[string]any)["Fn::Base64"])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"/tmp/volsd-agent.rpm",
		"dnf install -y /tmp/volsd-agent.rpm && rm -f /tmp/volsd-agent.rpm\n",
		"cat > /etc/volsd/agent.json <<'VOLSD_EOF'\n{\"asg\":\"volsd-example-web\",\"bucket\":\"<PoolOrigin",
		"\"fsType\":\"ext4\",\"lifecycleHook\":\"volsd-launch\",\"mountPath\":\"/srv/volsd\",\"pool\":\"web\",\"region\":\"eu-west-1\",\"table\":\"<PoolTable",
		"root /srv/volsd;",
		"systemctl enable --now volsd-agent.service volsd-apply.timer nginx.service",
	} {
		if !strings.Contains(ud, want) {
			t.Errorf("user data lacks %q:\n%s", want, ud)
		}
	}
	if strings.Contains(ud, "0.0.0.0/0") {
		t.Error("user data mentions 0.0.0.0/0")
	}
	var ingress []string
	for _, sg := range tmpl.OfType("AWS::EC2::SecurityGroup") {
		ingress = append(ingress, fmt.Sprint(sg.Properties["SecurityGroupIngress"]))
	}
	for _, sg := range tmpl.OfType("AWS::EC2::SecurityGroupIngress") {
		ingress = append(ingress, fmt.Sprint(sg.Properties))
	}
	if sgs := strings.Join(ingress, " "); !strings.Contains(sgs, "CidrIp:203.0.113.0/24") || strings.Contains(sgs, "0.0.0.0/0") {
		t.Errorf("security group ingress is not exampleAllowCidr only: %s", sgs)
	}
}

func TestExampleInstanceRole(t *testing.T) {
	tmpl := template(t, exampleStack)
	role, err := tmpl.One("AWS::IAM::Role", "InstanceRole")
	if err != nil {
		t.Fatal(err)
	}
	var sts []assembly.Statement
	for _, p := range tmpl.OfType("AWS::IAM::Policy") {
		if strings.Contains(fmt.Sprint(p.Properties["Roles"]), role.ID) {
			s, err := tmpl.RoleStatementsOfPolicy(p.ID)
			if err != nil {
				t.Fatal(err)
			}
			sts = append(sts, s...)
		}
	}
	var sids []string
	for _, s := range sts {
		sids = append(sids, s.Sid)
	}
	slices.Sort(sids)
	want := []string{"ReadAgentPackage", "VolsdDescribeVolumes", "VolsdLifecycleActions", "VolsdListOrigin", "VolsdReadJournal", "VolsdReadOrigin"}
	if !slices.Equal(sids, want) {
		t.Errorf("instance role statements %v, want %v", sids, want)
	}
	for _, a := range []string{"ec2:AttachVolume", "ec2:DeleteVolume", "dynamodb:PutItem", "ssm:SendCommand", "s3:PutObject"} {
		ok, err := assembly.Allows(sts, assembly.Request{Action: a, Resource: "*"})
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			t.Errorf("example instance role may %s", a)
		}
	}
}

func TestConfigFromContext(t *testing.T) {
	for _, c := range []struct {
		name string
		ctx  map[string]any
		want string // error substring; "" = valid
	}{
		{"nothing to deploy", map[string]any{}, "nothing to deploy"},
		{"existing group", map[string]any{"asgName": "web-asg"}, ""},
		{"example", map[string]any{"example": "true"}, ""},
		{"bad example flag", map[string]any{"example": "yes"}, "example"},
		{"bad number", map[string]any{"asgName": "a", "idlePerAz": "two"}, "idlePerAz"},
		{"negative number", map[string]any{"asgName": "a", "volumeSizeGiB": "-5"}, "volumeSizeGiB"},
		{"zero snapshot interval", map[string]any{"asgName": "a", "snapshotIntervalHours": "0"}, "snapshotIntervalHours"},
	} {
		cfg, err := stacks.ConfigFromContext(newApp(t.TempDir(), c.ctx))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.want)
		case c.want == "" && (cfg.Pool != "web" || cfg.LambdaAssetDir != "build/lambda" || cfg.IdlePerAZ != 1):
			t.Errorf("%s: defaults %+v", c.name, cfg)
		}
	}
}

func TestBuildRefusesMissingAssets(t *testing.T) {
	app := newApp(t.TempDir(), map[string]any{"asgName": "web-asg", "lambdaDir": filepath.Join(t.TempDir(), "none")})
	cfg, err := stacks.ConfigFromContext(app)
	if err != nil {
		t.Fatal(err)
	}
	if err := stacks.Build(app, cfg); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("Build with no Lambda code: %v, want an error telling to run make build", err)
	}
}
