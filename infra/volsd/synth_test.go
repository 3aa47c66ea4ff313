package volsd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/volsd/volsd/infra/assembly"
	"github.com/volsd/volsd/infra/volsd"
)

// The construct is synthesized once per test binary (a CDK synth costs
// seconds) and every test reads the same cloud assembly.
const (
	testPool    = "web"
	testGroup   = "web-asg"
	testAccount = "123456789012"
	testRegion  = "eu-west-1"
	testSnap    = "snap-0123456789abcdef0"
	stackName   = "VolsdTest"
	defaultName = "VolsdDefaults"
	noReclaim   = "VolsdNoReclaim"
)

func TestMain(m *testing.M) {
	os.Setenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
	code := func() int {
		dir, err := os.MkdirTemp("", "volsd-infra-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if os.Getenv("VOLSD_KEEP_CDK_OUT") == "" {
			defer os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "cloud assembly kept in", dir)
		}
		if err := synthesize(dir); err != nil {
			fmt.Fprintln(os.Stderr, "synth:", err)
			return 1
		}
		return m.Run()
	}()
	jsii.Close()
	os.Exit(code)
}

// dummyAssets writes <dir>/<name>/bootstrap for every function.
func dummyAssets(dir string) error {
	for _, name := range volsd.FunctionNames {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name, "bootstrap"), []byte("#!/bin/sh\n# test stand-in for "+name+"\n"), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func synthesize(dir string) error {
	assets := filepath.Join(dir, "lambda")
	if err := dummyAssets(assets); err != nil {
		return err
	}
	out := filepath.Join(dir, "cdk.out")
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(out)})
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)

	// A pool with every option set.
	stack := awscdk.NewStack(app, jsii.String(stackName), &awscdk.StackProps{
		Env: &awscdk.Environment{Account: jsii.String(testAccount), Region: jsii.String(testRegion)},
	})
	key := awskms.NewKey(stack, jsii.String("EbsKey"), &awskms.KeyProps{EnableKeyRotation: jsii.Bool(true)})
	idle := 2
	pool := volsd.NewPool(stack, "Pool", &volsd.PoolProps{
		PoolName:             testPool,
		AutoScalingGroupName: testGroup,
		IdlePerAZ:            &idle,
		AvailabilityZones:    []string{"eu-west-1a", "eu-west-1b"},
		VolumeSizeGiB:        20,
		VolumeType:           "gp3",
		VolumeIops:           4000,
		VolumeThroughput:     250,
		VolumeInitRate:       300,
		SourceSnapshotID:     testSnap,
		KmsKey:               key,
		ReleasePolicy:        volsd.ReleaseDelete,
		LambdaAssetDir:       assets,
	})
	role := awsiam.NewRole(stack, jsii.String("InstanceRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("ec2.amazonaws.com"), nil),
	})
	pool.GrantAgent(role)
	pool.AddOutputs()

	// A second pool in an environment-agnostic stack: the group given as
	// a construct, its own document prefix, everything else default.
	defaults := awscdk.NewStack(app, jsii.String(defaultName), nil)
	volsd.NewPool(defaults, "Pool", &volsd.PoolProps{
		PoolName:         "media",
		AutoScalingGroup: awsautoscaling.AutoScalingGroup_FromAutoScalingGroupName(defaults, jsii.String("Group"), jsii.String("media-asg")),
		DocumentPrefix:   "volsd-media-",
		LambdaAssetDir:   assets,
	})

	// A pool with the origin's reclaim off.
	off := awscdk.NewStack(app, jsii.String(noReclaim), nil)
	volsd.NewPool(off, "Pool", &volsd.PoolProps{
		PoolName: "archive", AutoScalingGroupName: "archive-asg", DocumentPrefix: "volsd-archive-",
		ReclaimGrace: volsd.NoReclaim, LambdaAssetDir: assets,
	})

	app.Synth(nil)
	a, err := assembly.Read(out)
	if err != nil {
		return err
	}
	synthesized = a
	return nil
}

// synthesized is the assembly TestMain wrote.
var synthesized *assembly.Assembly

func template(t *testing.T, stack string) *assembly.Template {
	t.Helper()
	tmpl, ok := synthesized.Stacks[stack]
	if !ok {
		t.Fatalf("no stack %s in the assembly", stack)
	}
	return tmpl
}

func one(t *testing.T, tmpl *assembly.Template, typ, part string) assembly.Resource {
	t.Helper()
	r, err := tmpl.One(typ, part)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// cdkTemplate returns the stack's template as an assertions.Template.
func cdkTemplate(t *testing.T, stack string) assertions.Template {
	t.Helper()
	raw := template(t, stack).Raw
	return assertions.Template_FromJSON(&raw, nil)
}

// check runs one assertions call and turns its panic into a test error.
func check(t *testing.T, what string, assert func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s: %v", what, r)
		}
	}()
	assert()
}
