package stacks

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/volsd/volsd/infra/volsd"
)

// Build adds the configured stacks to app, with the cdk-nag AwsSolutions
// checks (an unsuppressed finding is an error annotation, which fails
// `cdk synth`). It checks that the code assets exist first.
func Build(app awscdk.App, c Config) error {
	for _, name := range volsd.FunctionNames {
		p := filepath.Join(c.LambdaAssetDir, name, "bootstrap")
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("volsd app: Lambda code %s is missing (run `make build` first, or set -c lambdaDir=…): %w", p, err)
		}
	}
	if c.Example {
		found, err := filepath.Glob(c.AgentPackage)
		if err != nil || len(found) != 1 {
			return fmt.Errorf("volsd app: agentPackage %s matches %d files %v, want one volsd-agent .rpm for arm64 (run `make package` first, or set -c agentPackage=…)", c.AgentPackage, len(found), found)
		}
		c.AgentPackage = found[0]
	}
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	if c.AutoScalingGroupName != "" {
		NewPoolStack(app, "volsd-"+c.Pool, c)
	}
	if c.Example {
		NewExampleStack(app, "volsd-example-"+c.Pool, c)
	}
	return nil
}

// PoolProps turns the configuration into the construct's props for group.
func (c Config) PoolProps(scope constructs.Construct, group string) *volsd.PoolProps {
	idle := c.IdlePerAZ
	p := &volsd.PoolProps{
		PoolName:             c.Pool,
		AutoScalingGroupName: group,
		IdlePerAZ:            &idle,
		AvailabilityZones:    c.AvailabilityZones,
		VolumeSizeGiB:        c.VolumeSizeGiB,
		VolumeType:           c.VolumeType,
		VolumeIops:           c.VolumeIops,
		VolumeThroughput:     c.VolumeThroughput,
		VolumeInitRate:       c.VolumeInitRate,
		SourceSnapshotID:     c.SourceSnapshotID,
		ReleasePolicy:        c.ReleasePolicy,
		MountPath:            c.MountPath,
		Filesystem:           c.Filesystem,
		SnapshotKeep:         c.SnapshotKeep,
		SnapshotInterval:     awscdk.Duration_Hours(jsii.Number(c.SnapshotHours)),
		DocumentPrefix:       c.DocumentPrefix,
		LogLevel:             c.LogLevel,
		LambdaAssetDir:       c.LambdaAssetDir,
	}
	p.ReclaimGrace = time.Duration(c.ReclaimGraceDays) * 24 * time.Hour
	if c.ReclaimGraceDays == 0 {
		p.ReclaimGrace = volsd.NoReclaim
	}
	if c.KmsKeyArn != "" {
		p.KmsKey = awskms.Key_FromKeyArn(scope, jsii.String("EbsKey"), jsii.String(c.KmsKeyArn))
	}
	return p
}

// NewPoolStack deploys the pool for the existing group c.AutoScalingGroupName.
func NewPoolStack(scope constructs.Construct, id string, c Config) awscdk.Stack {
	stack := awscdk.NewStack(scope, jsii.String(id), &awscdk.StackProps{
		Env:         Environment(),
		Description: jsii.String("volsd pool " + c.Pool + " for Auto Scaling group " + c.AutoScalingGroupName),
	})
	pool := volsd.NewPool(stack, "Pool", c.PoolProps(stack, c.AutoScalingGroupName))
	pool.AddOutputs()
	return stack
}
