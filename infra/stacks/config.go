// Package stacks builds the volsd CDK app from context values: a stack with
// the Pool construct for an existing Auto Scaling group (-c asgName=…), and
// an example stack with a VPC, a launch template that installs the agent and
// serves the volume with nginx, and a small arm64 group (-c example=true).
package stacks

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/events"
)

// Config is what the app deploys; ConfigFromContext reads it from `-c key=value`.
type Config struct {
	Pool                 string // context pool, default "web"
	AutoScalingGroupName string // context asgName: deploy the pool stack for this existing group
	Example              bool   // context example=true: deploy the example fleet

	IdlePerAZ         int // idlePerAz, default 1
	AvailabilityZones []string
	VolumeSizeGiB     int    // volumeSizeGiB, default 10
	VolumeType        string // volumeType, default gp3
	VolumeIops        int
	VolumeThroughput  int
	VolumeInitRate    int
	SourceSnapshotID  string
	KmsKeyArn         string // kmsKeyArn: customer managed key for EBS
	ReleasePolicy     string // releasePolicy: recycle or delete
	MountPath         string
	Filesystem        string
	SnapshotKeep      int
	SnapshotHours     int    // snapshotIntervalHours, default 6
	ReclaimGraceDays  int    // reclaimGraceDays, default 7; 0 turns origin reclaim off
	DocumentPrefix    string // documentPrefix, default volsd-
	LogLevel          string

	LambdaAssetDir string // lambdaDir, default build/lambda
	AgentPackage   string // agentPackage, default the arm64 .rpm of `make package` (a glob matching one file)

	ExampleInstanceType string // exampleInstanceType, default t4g.small
	ExampleAllowCidr    string // exampleAllowCidr: who may reach nginx on port 80; empty = nobody
	ExampleCapacity     int    // exampleCapacity, default 2
}

// ContextKeys lists every context key the app reads.
var ContextKeys = []string{
	"pool", "asgName", "example", "idlePerAz", "azs", "volumeSizeGiB", "volumeType", "volumeIops",
	"volumeThroughput", "volumeInitRate", "sourceSnapshot", "kmsKeyArn", "releasePolicy", "mountPath",
	"filesystem", "snapshotKeep", "snapshotIntervalHours", "reclaimGraceDays", "documentPrefix", "logLevel", "lambdaDir",
	"agentPackage", "exampleInstanceType", "exampleAllowCidr", "exampleCapacity",
}

// ConfigFromContext reads the configuration from the app's context. It
// returns an error naming the key when a value is malformed, and when
// neither asgName nor example is given.
func ConfigFromContext(app awscdk.App) (Config, error) {
	get := func(key string) string {
		v := app.Node().TryGetContext(jsii.String(key))
		if v == nil {
			return ""
		}
		return strings.TrimSpace(fmt.Sprint(v))
	}
	var errs []string
	num := func(key string, def int) int {
		s := get(key)
		if s == "" {
			return def
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("context %s=%q: want a non-negative integer", key, s))
		}
		return n
	}
	str := func(key, def string) string {
		if s := get(key); s != "" {
			return s
		}
		return def
	}
	c := Config{
		Pool:                 str("pool", "web"),
		AutoScalingGroupName: get("asgName"),
		IdlePerAZ:            num("idlePerAz", 1),
		VolumeSizeGiB:        num("volumeSizeGiB", 10),
		VolumeType:           str("volumeType", "gp3"),
		VolumeIops:           num("volumeIops", 0),
		VolumeThroughput:     num("volumeThroughput", 0),
		VolumeInitRate:       num("volumeInitRate", 0),
		SourceSnapshotID:     get("sourceSnapshot"),
		KmsKeyArn:            get("kmsKeyArn"),
		ReleasePolicy:        str("releasePolicy", "recycle"),
		MountPath:            str("mountPath", "/srv/volsd"),
		Filesystem:           str("filesystem", "ext4"),
		SnapshotKeep:         num("snapshotKeep", 3),
		SnapshotHours:        num("snapshotIntervalHours", 6),
		ReclaimGraceDays:     num("reclaimGraceDays", 7),
		DocumentPrefix:       str("documentPrefix", events.DefaultDocumentPrefix),
		LogLevel:             str("logLevel", "info"),
		LambdaAssetDir:       str("lambdaDir", "build/lambda"),
		AgentPackage:         str("agentPackage", "build/pkg/volsd-agent-*.aarch64.rpm"),
		ExampleInstanceType:  str("exampleInstanceType", "t4g.small"),
		ExampleAllowCidr:     get("exampleAllowCidr"),
		ExampleCapacity:      num("exampleCapacity", 2),
	}
	if azs := get("azs"); azs != "" {
		for _, az := range strings.Split(azs, ",") {
			c.AvailabilityZones = append(c.AvailabilityZones, strings.TrimSpace(az))
		}
	}
	switch ex := get("example"); ex {
	case "", "false":
	case "true":
		c.Example = true
	default:
		errs = append(errs, fmt.Sprintf("context example=%q: want true or false", ex))
	}
	if c.SnapshotHours < 1 {
		errs = append(errs, "context snapshotIntervalHours: must be at least 1")
	}
	if c.ExampleCapacity < 1 || c.ExampleCapacity > 10 {
		errs = append(errs, fmt.Sprintf("context exampleCapacity=%d: must be 1..10", c.ExampleCapacity))
	}
	if c.AutoScalingGroupName == "" && !c.Example {
		errs = append(errs, "nothing to deploy: give -c asgName=<existing Auto Scaling group> (and -c pool=<name>), or -c example=true for the example fleet")
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("volsd app: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// Environment returns the deployment environment: the CLI's account and
// region when it knows them (CDK_DEFAULT_ACCOUNT/REGION), else nil, an
// environment-agnostic stack, so synth needs no credentials.
func Environment() *awscdk.Environment {
	account, region := os.Getenv("CDK_DEFAULT_ACCOUNT"), os.Getenv("CDK_DEFAULT_REGION")
	if account == "" || region == "" {
		return nil
	}
	return &awscdk.Environment{Account: jsii.String(account), Region: jsii.String(region)}
}
