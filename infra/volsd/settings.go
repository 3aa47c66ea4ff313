package volsd

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/snapshot"
)

// LoadFunctionConfig loads function name's configuration from r exactly
// as its main does at cold start (the one validation of every setting a
// Lambda reads). The construct runs it over the environment it
// synthesizes, so a setting it accepts starts every Lambda.
func LoadFunctionConfig(name string, r *envconfig.Reader) error {
	var err error
	switch name {
	case "lifecycle", "reconcile":
		_, err = pool.LoadConfig(r)
	case "snapshot":
		_, err = snapshot.LoadEnv(r)
	case "push":
		_, err = push.LoadEnv(r)
	case "report":
		_, err = report.LoadEnv(r)
	default:
		err = fmt.Errorf("volsd: no function %q", name)
	}
	return err
}

// settingOfVariable names the PoolProps field behind each Lambda variable.
var settingOfVariable = map[string]string{
	"VOLSD_POOL":                  "PoolName",
	"VOLSD_ASG":                   "AutoScalingGroupName",
	"VOLSD_IDLE_PER_AZ":           "IdlePerAZ",
	"VOLSD_AZS":                   "AvailabilityZones",
	"VOLSD_VOLUME_SIZE_GIB":       "VolumeSizeGiB",
	"VOLSD_VOLUME_TYPE":           "VolumeType",
	"VOLSD_VOLUME_IOPS":           "VolumeIops",
	"VOLSD_VOLUME_THROUGHPUT":     "VolumeThroughput",
	"VOLSD_VOLUME_INIT_RATE":      "VolumeInitRate",
	"VOLSD_KMS_KEY_ID":            "KmsKey",
	"VOLSD_SOURCE_SNAPSHOT":       "SourceSnapshotID",
	"VOLSD_RELEASE_POLICY":        "ReleasePolicy",
	"VOLSD_SNAPSHOT_KEEP":         "SnapshotKeep",
	"VOLSD_FREEZE_SECONDS":        "FreezeSeconds",
	"VOLSD_RECLAIM_GRACE":         "ReclaimGrace",
	"VOLSD_AUTOGROW_FREE_PERCENT": "AutoGrowFreePercent",
	"VOLSD_AUTOGROW_STEP_GIB":     "AutoGrowStepGiB",
	"VOLSD_AUTOGROW_MAX_GIB":      "AutoGrowMaxGiB",
	"VOLSD_FILL_ALARM_PERCENT":    "FillAlarmPercent",
	"VOLSD_SSM_MAX_CONCURRENCY":   "SSMMaxConcurrency",
	"VOLSD_SSM_MAX_ERRORS":        "SSMMaxErrors",
	"VOLSD_LOG_LEVEL":             "LogLevel",
}

// placeholderKeyArn stands in for a key construct's ARN token.
const placeholderKeyArn = "arn:aws:kms:us-east-1:111111111111:key/00000000-0000-0000-0000-000000000000"

// checkFunctionSettings runs every Lambda's own configuration loader over
// the environment the construct gives it (resources' names, tokens at
// synth, by stand-ins) and turns each problem into an error that names
// the PoolProps setting, its value and the rule, and which Lambdas would
// refuse to start.
func checkFunctionSettings(pp PoolProps) error {
	refs := envRefs{table: jsii.String("volsd-table"), bucket: jsii.String("volsd-origin"), group: jsii.String("volsd-group"), kms: jsii.String("")}
	if pp.AutoScalingGroupName != "" {
		refs.group = jsii.String(pp.AutoScalingGroupName)
	}
	if pp.KmsKey != nil {
		refs.kms = jsii.String(placeholderKeyArn)
	}
	type problem struct{ variable, value, rule string }
	byProblem := map[problem][]string{}
	for _, name := range FunctionNames {
		env := map[string]string{}
		for k, v := range functionEnvironment(pp, refs, name) {
			env[k] = *v
		}
		for _, e := range envconfig.Problems(LoadFunctionConfig(name, envconfig.FromMap(env))) {
			k := problem{e.Name, env[e.Name], e.Rule}
			byProblem[k] = append(byProblem[k], name)
		}
	}
	if len(byProblem) == 0 {
		return nil
	}
	var lines []string
	for k, fns := range byProblem {
		setting := settingOfVariable[k.variable]
		if strings.HasPrefix(k.variable, "VOLSD_DOC_") {
			setting = "DocumentPrefix"
		}
		if setting == "" {
			setting = k.variable
		}
		slices.Sort(fns)
		lines = append(lines, fmt.Sprintf("%s %q: %s (%s of the %s Lambda, checked at its cold start)",
			setting, k.value, k.rule, k.variable, strings.Join(fns, ", ")))
	}
	sort.Strings(lines)
	return fmt.Errorf("volsd: pool %s: %s", pp.PoolName, strings.Join(lines, "; "))
}
