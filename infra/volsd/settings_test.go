package volsd_test

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/infra/assembly"
	"github.com/volsd/volsd/infra/volsd"
	"github.com/volsd/volsd/internal/envconfig"
)

// settingCase is one value of one documented PoolProps setting.
type settingCase struct {
	setting string
	change  func(*volsd.PoolProps)
	// rule is "" for a value every Lambda takes, else a part of the rule
	// both the construct and the Lambdas give for it.
	rule string
	// env is what the value puts into the Lambdas' environment (only for
	// refused values, which the construct never synthesizes).
	env map[string]string
}

func settingCases() []settingCase {
	n := func(v int) *int { return &v }
	return []settingCase{
		{"PoolName", func(p *volsd.PoolProps) { p.PoolName = "web_2" }, "", nil},
		{"PoolName", func(p *volsd.PoolProps) { p.PoolName = "web pool" }, "letters, digits", map[string]string{"VOLSD_POOL": "web pool"}},
		{"IdlePerAZ", func(p *volsd.PoolProps) { p.IdlePerAZ = n(0) }, "", nil},
		{"IdlePerAZ", func(p *volsd.PoolProps) { p.IdlePerAZ = n(-1) }, "between 0 and 1000", map[string]string{"VOLSD_IDLE_PER_AZ": "-1"}},
		{"AvailabilityZones", func(p *volsd.PoolProps) { p.AvailabilityZones = []string{"eu-west-1a", "eu-west-1c"} }, "", nil},
		{"AvailabilityZones", func(p *volsd.PoolProps) { p.AvailabilityZones = []string{"moon"} }, "not an availability zone", map[string]string{"VOLSD_AZS": "moon"}},
		{"VolumeSizeGiB", func(p *volsd.PoolProps) { p.VolumeSizeGiB = 65536 }, "", nil},
		{"VolumeSizeGiB", func(p *volsd.PoolProps) { p.VolumeSizeGiB = 65537 }, "between 1 and 65536", map[string]string{"VOLSD_VOLUME_SIZE_GIB": "65537"}},
		{"VolumeSizeGiB", func(p *volsd.PoolProps) { p.VolumeType, p.VolumeSizeGiB = "gp2", 16385 }, "1..16384 GiB for gp2",
			map[string]string{"VOLSD_VOLUME_TYPE": "gp2", "VOLSD_VOLUME_SIZE_GIB": "16385"}},
		{"VolumeSizeGiB", func(p *volsd.PoolProps) { p.VolumeType, p.VolumeSizeGiB, p.VolumeIops = "io1", 20000, 3000 }, "4..16384 GiB for io1",
			map[string]string{"VOLSD_VOLUME_TYPE": "io1", "VOLSD_VOLUME_SIZE_GIB": "20000", "VOLSD_VOLUME_IOPS": "3000"}},
		{"VolumeSizeGiB", func(p *volsd.PoolProps) { p.VolumeType, p.VolumeSizeGiB, p.VolumeIops = "io2", 20000, 3000 }, "", nil},
		{"VolumeType", func(p *volsd.PoolProps) { p.VolumeType = "gp2" }, "", nil},
		{"VolumeType", func(p *volsd.PoolProps) { p.VolumeType = "st1" }, "one of gp3, gp2, io1, io2", map[string]string{"VOLSD_VOLUME_TYPE": "st1"}},
		{"VolumeIops", func(p *volsd.PoolProps) { p.VolumeType = "io1" }, "is required for io1", map[string]string{"VOLSD_VOLUME_TYPE": "io1"}},
		{"VolumeIops", func(p *volsd.PoolProps) { p.VolumeType, p.VolumeIops = "io1", 64000 }, "", nil},
		{"VolumeIops", func(p *volsd.PoolProps) { p.VolumeIops = 1000 }, "3000..80000 for gp3", map[string]string{"VOLSD_VOLUME_IOPS": "1000"}},
		{"VolumeIops", func(p *volsd.PoolProps) { p.VolumeType, p.VolumeIops = "gp2", 3000 }, "must be 0 for gp2",
			map[string]string{"VOLSD_VOLUME_TYPE": "gp2", "VOLSD_VOLUME_IOPS": "3000"}},
		{"VolumeThroughput", func(p *volsd.PoolProps) { p.VolumeThroughput = 1000 }, "", nil},
		{"VolumeThroughput", func(p *volsd.PoolProps) { p.VolumeType, p.VolumeIops, p.VolumeThroughput = "io2", 3000, 500 }, "only gp3",
			map[string]string{"VOLSD_VOLUME_TYPE": "io2", "VOLSD_VOLUME_IOPS": "3000", "VOLSD_VOLUME_THROUGHPUT": "500"}},
		{"VolumeThroughput", func(p *volsd.PoolProps) { p.VolumeThroughput = 100 }, "125..2000", map[string]string{"VOLSD_VOLUME_THROUGHPUT": "100"}},
		{"VolumeInitRate", func(p *volsd.PoolProps) { p.VolumeInitRate = 100 }, "", nil},
		{"VolumeInitRate", func(p *volsd.PoolProps) { p.VolumeInitRate = 99 }, "0 (off) or 100..300", map[string]string{"VOLSD_VOLUME_INIT_RATE": "99"}},
		{"VolumeInitRate", func(p *volsd.PoolProps) { p.VolumeInitRate = 301 }, "between 0 and 300", map[string]string{"VOLSD_VOLUME_INIT_RATE": "301"}},
		{"SourceSnapshotID", func(p *volsd.PoolProps) { p.SourceSnapshotID = "snap-0123456789abcdef0" }, "", nil},
		{"SourceSnapshotID", func(p *volsd.PoolProps) { p.SourceSnapshotID = "vol-1" }, "snapshot ID", map[string]string{"VOLSD_SOURCE_SNAPSHOT": "vol-1"}},
		{"ReleasePolicy", func(p *volsd.PoolProps) { p.ReleasePolicy = volsd.ReleaseDelete }, "", nil},
		{"ReleasePolicy", func(p *volsd.PoolProps) { p.ReleasePolicy = "keep" }, "one of recycle, delete", map[string]string{"VOLSD_RELEASE_POLICY": "keep"}},
		{"SnapshotKeep", func(p *volsd.PoolProps) { p.SnapshotKeep = 1000 }, "", nil},
		{"SnapshotKeep", func(p *volsd.PoolProps) { p.SnapshotKeep = 1001 }, "between 1 and 1000", map[string]string{"VOLSD_SNAPSHOT_KEEP": "1001"}},
		{"FreezeSeconds", func(p *volsd.PoolProps) { p.FreezeSeconds = 5 }, "", nil},
		{"FreezeSeconds", func(p *volsd.PoolProps) { p.FreezeSeconds = 900 }, "", nil},
		{"FreezeSeconds", func(p *volsd.PoolProps) { p.FreezeSeconds = 4 }, "between 5 and 900", map[string]string{"VOLSD_FREEZE_SECONDS": "4"}},
		{"FreezeSeconds", func(p *volsd.PoolProps) { p.FreezeSeconds = 901 }, "between 5 and 900", map[string]string{"VOLSD_FREEZE_SECONDS": "901"}},
		{"ReclaimGrace", func(p *volsd.PoolProps) { p.ReclaimGrace = volsd.NoReclaim }, "", nil},
		{"AutoGrowMaxGiB", func(p *volsd.PoolProps) { p.AutoGrowFreePercent, p.AutoGrowMaxGiB = 10, 40 }, "", nil},
		{"AutoGrowMaxGiB", func(p *volsd.PoolProps) { p.AutoGrowMaxGiB = 5 }, "at least the volume size", map[string]string{"VOLSD_AUTOGROW_MAX_GIB": "5"}},
		{"AutoGrowStepGiB", func(p *volsd.PoolProps) { p.AutoGrowStepGiB = 70000 }, "between 1 and 65536", map[string]string{"VOLSD_AUTOGROW_STEP_GIB": "70000"}},
		{"FillAlarmPercent", func(p *volsd.PoolProps) { p.FillAlarmPercent = 101 }, "between 1 and 100", map[string]string{"VOLSD_FILL_ALARM_PERCENT": "101"}},
		{"AutoGrowFreePercent", func(p *volsd.PoolProps) { p.AutoGrowFreePercent = 95 }, "between 0 and 90", map[string]string{"VOLSD_AUTOGROW_FREE_PERCENT": "95"}},
		{"ReclaimGrace", func(p *volsd.PoolProps) { p.ReclaimGrace = 120 * time.Hour }, "", nil},
		{"ReclaimGrace", func(p *volsd.PoolProps) { p.ReclaimGrace = 48 * time.Hour }, "at least 120h0m0s", map[string]string{"VOLSD_RECLAIM_GRACE": "48h0m0s"}},
		{"LogLevel", func(p *volsd.PoolProps) { p.LogLevel = "debug" }, "", nil},
		{"LogLevel", func(p *volsd.PoolProps) { p.LogLevel = "trace" }, "one of debug, info", map[string]string{"VOLSD_LOG_LEVEL": "trace"}},
		{"SSMMaxConcurrency", func(p *volsd.PoolProps) { p.SSMMaxConcurrency = "10" }, "", nil},
		{"SSMMaxConcurrency", func(p *volsd.PoolProps) { p.SSMMaxConcurrency = "lots" }, "SSM MaxConcurrency", map[string]string{"VOLSD_SSM_MAX_CONCURRENCY": "lots"}},
		{"SSMMaxErrors", func(p *volsd.PoolProps) { p.SSMMaxErrors = "0" }, "", nil},
		{"SSMMaxErrors", func(p *volsd.PoolProps) { p.SSMMaxErrors = "-1" }, "SSM MaxErrors", map[string]string{"VOLSD_SSM_MAX_ERRORS": "-1"}},
		{"KmsKey", nil, "", nil}, // set with a key construct below
	}
}

// constructOnlySettings are the PoolProps that no Lambda reads (the
// construct checks them itself or passes them to CloudFormation).
var constructOnlySettings = []string{
	"AutoScalingGroupName", "AutoScalingGroup", "Filesystem", "MountPath", "ReconcileInterval", "SnapshotInterval",
	"LaunchHeartbeatTimeout", "TerminateHeartbeatTimeout", "SkipLifecycleHooks", "DocumentPrefix", "LambdaAssetDir",
	"RemovalPolicy", "AccessLogsBucket", "AlarmActions",
}

// TestEverySettingStartsTheLambdas runs every setting the Lambdas read
// through the construct and through the Lambdas' configuration loaders: a
// value the construct takes is synthesized and each Lambda's environment,
// as the template has it, loads; a value either refuses is refused by
// both, with an error naming the setting and the rule.
func TestEverySettingStartsTheLambdas(t *testing.T) {
	cases := settingCases()
	named := map[string]bool{}
	for _, c := range cases {
		named[c.setting] = true
	}
	for _, s := range constructOnlySettings {
		named[s] = true
	}
	props := reflect.TypeOf(volsd.PoolProps{})
	for i := range props.NumField() {
		if f := props.Field(i).Name; !named[f] {
			t.Errorf("PoolProps.%s is neither tried against the Lambdas nor listed as construct-only", f)
		}
	}

	dir := t.TempDir()
	assets := filepath.Join(dir, "lambda")
	if err := dummyAssets(assets); err != nil {
		t.Fatal(err)
	}
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(filepath.Join(dir, "cdk.out"))})
	accepted := map[int]bool{}
	for i, c := range cases {
		// A stack per case: a stack holds at most 500 resources.
		// Refused values never get a stack in the synthesized app.
		scope := app
		if c.rule != "" {
			scope = awscdk.NewApp(nil)
		}
		stack := awscdk.NewStack(scope, jsii.String(fmt.Sprintf("Settings%d", i)), &awscdk.StackProps{
			Env: &awscdk.Environment{Account: jsii.String(testAccount), Region: jsii.String(testRegion)},
		})
		p := volsd.PoolProps{
			PoolName: fmt.Sprintf("p%d", i), AutoScalingGroupName: testGroup, LambdaAssetDir: assets,
			DocumentPrefix: fmt.Sprintf("volsd-p%d-", i), SkipLifecycleHooks: true,
		}
		if c.change != nil {
			c.change(&p)
		}
		if c.setting == "KmsKey" {
			p.KmsKey = awskms.NewKey(stack, jsii.String("Key"), &awskms.KeyProps{EnableKeyRotation: jsii.Bool(true)})
		}
		err := newPool(stack, fmt.Sprintf("P%d", i), &p)
		switch {
		case c.rule == "" && err != nil:
			t.Errorf("%s case %d: construct refuses a value the Lambdas take: %v", c.setting, i, err)
		case c.rule != "" && err == nil:
			t.Errorf("%s case %d: construct accepts a value the Lambdas refuse (rule %q)", c.setting, i, c.rule)
		case c.rule != "" && (!strings.Contains(err.Error(), c.setting) || !strings.Contains(err.Error(), c.rule)):
			t.Errorf("%s case %d: construct error does not name the setting and the rule %q: %v", c.setting, i, c.rule, err)
		case c.rule == "":
			accepted[i] = true
		}
	}
	app.Synth(nil)
	asm, err := assembly.Read(filepath.Join(dir, "cdk.out"))
	if err != nil {
		t.Fatal(err)
	}
	base := map[string]map[string]string{} // function → environment of a refused case's baseline
	for i, c := range cases {
		if !accepted[i] && c.rule == "" {
			continue
		}
		for _, name := range volsd.FunctionNames {
			env := map[string]string{}
			if c.rule == "" {
				env = templateEnvironment(t, asm.Stacks[fmt.Sprintf("Settings%d", i)], fmt.Sprintf("P%d%s", i, strings.ToUpper(name[:1])+name[1:]))
				if base[name] == nil {
					base[name] = env
				}
			} else {
				for k, v := range base[name] {
					env[k] = v
				}
				reads := false
				for k, v := range c.env {
					if _, ok := env[k]; ok {
						env[k], reads = v, true
					}
				}
				if !reads {
					continue // this Lambda does not read the setting
				}
			}
			err := volsd.LoadFunctionConfig(name, envconfig.FromMap(env))
			switch {
			case c.rule == "" && err != nil:
				t.Errorf("%s case %d: the %s Lambda would not start with the synthesized environment: %v", c.setting, i, name, err)
			case c.rule != "" && (err == nil || !strings.Contains(err.Error(), c.rule)):
				t.Errorf("%s case %d: the %s Lambda takes %v (want the rule %q): %v", c.setting, i, name, c.env, c.rule, err)
			}
		}
	}
}

// newPoolErr builds a minimal pool changed by change in a stack of its own
// and returns the construct's error.
func newPoolErr(change func(*volsd.PoolProps)) (awscdk.Stack, error) {
	stack := awscdk.NewStack(awscdk.NewApp(nil), jsii.String("Check"), nil)
	p := volsd.PoolProps{PoolName: testPool, AutoScalingGroupName: testGroup, LambdaAssetDir: "."}
	change(&p)
	return stack, newPool(stack, "Pool", &p)
}

// newPool runs volsd.NewPool and returns its synth-time panic as an error.
func newPool(stack awscdk.Stack, id string, p *volsd.PoolProps) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	volsd.NewPool(stack, id, p)
	return nil
}

// templateEnvironment is the environment of the one Lambda whose logical
// ID starts with prefix, with references to other resources (the table,
// the bucket, a key) replaced by names of the right form.
func templateEnvironment(t *testing.T, tmpl *assembly.Template, prefix string) map[string]string {
	t.Helper()
	var fn *assembly.Resource
	for _, r := range tmpl.OfType("AWS::Lambda::Function") {
		if strings.HasPrefix(r.ID, prefix) {
			if fn != nil {
				t.Fatalf("two functions with prefix %s", prefix)
			}
			fn = &r
		}
	}
	if fn == nil {
		t.Fatalf("no function %s in the template", prefix)
	}
	vars, _ := fn.Properties["Environment"].(map[string]any)["Variables"].(map[string]any)
	stand := map[string]string{"VOLSD_TABLE": "volsd-table", "VOLSD_BUCKET": "volsd-origin",
		"VOLSD_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"}
	env := map[string]string{}
	for k, v := range vars {
		s, ok := v.(string)
		if !ok {
			if s, ok = stand[k]; !ok {
				t.Fatalf("%s: %s is a reference %v with no stand-in", fn.ID, k, v)
			}
		}
		env[k] = s
	}
	return env
}
