package stacks

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3assets"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/volsd/volsd/infra/volsd"
)

// Files the example's instances get besides the volsd-agent package (its
// program, units and configuration template: agent/packaging); reviewable
// in infra/stacks/instance/.
var (
	//go:embed instance/nginx-volsd.conf
	nginxDropIn string
	//go:embed instance/nginx.conf
	nginxConf string
)

// ExampleGroupName is the name of the example's Auto Scaling group.
func ExampleGroupName(pool string) string { return "volsd-example-" + pool }

// heredoc writes content to path in a shell script with a quoted delimiter
// (no expansion); content must not contain the delimiter line.
func heredoc(path, content string) string {
	const delim = "VOLSD_EOF"
	if strings.Contains(content, "\n"+delim+"\n") {
		panic("volsd example: " + path + " contains the heredoc delimiter")
	}
	return fmt.Sprintf("cat > %s <<'%s'\n%s\n%s", path, delim, strings.TrimRight(content, "\n"), delim)
}

func nag(c constructs.IConstruct, rule, reason string) {
	cdknag.NagSuppressions_AddResourceSuppressions(c, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String(rule), Reason: jsii.String(reason),
	}}, jsii.Bool(true))
}

// NewExampleStack deploys a working fleet: a VPC with public subnets, a
// launch template whose user data installs the volsd-agent package, writes
// /etc/volsd/agent.json, enables the agent's systemd units and serves the
// mount with nginx, a small arm64 Auto Scaling group created with the volsd
// lifecycle hooks, and the pool for it.
func NewExampleStack(scope constructs.Construct, id string, c Config) awscdk.Stack {
	stack := awscdk.NewStack(scope, jsii.String(id), &awscdk.StackProps{
		Env:         Environment(),
		Description: jsii.String("volsd example fleet for pool " + c.Pool + ": VPC, nginx on an arm64 Auto Scaling group, volsd backend"),
	})
	group := ExampleGroupName(c.Pool)

	props := c.PoolProps(stack, group)
	// The group is created below with the hooks in its own definition, so
	// the instances it launches at creation get volumes too.
	props.SkipLifecycleHooks = true
	pool := volsd.NewPool(stack, "Pool", props)
	pool.AddOutputs()

	vpc := awsec2.NewVpc(stack, jsii.String("Vpc"), &awsec2.VpcProps{
		MaxAzs:                       jsii.Number(2),
		NatGateways:                  jsii.Number(0),
		RestrictDefaultSecurityGroup: jsii.Bool(false),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{{
			Name: jsii.String("public"), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: jsii.Number(24),
		}},
	})
	nag(vpc, "AwsSolutions-VPC7", "Example VPC for a demo fleet; flow logs add cost and are not needed to try volsd.")

	sg := awsec2.NewSecurityGroup(stack, jsii.String("WebSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("volsd example web servers: HTTP from exampleAllowCidr only"),
		AllowAllOutbound: jsii.Bool(true),
	})
	if c.ExampleAllowCidr != "" {
		sg.AddIngressRule(awsec2.Peer_Ipv4(jsii.String(c.ExampleAllowCidr)), awsec2.Port_Tcp(jsii.Number(80)),
			jsii.String("HTTP to nginx serving the volsd volume"), nil)
		if c.ExampleAllowCidr == "0.0.0.0/0" {
			nag(sg, "AwsSolutions-EC23", "The operator chose exampleAllowCidr=0.0.0.0/0 to serve the example content publicly over HTTP.")
		}
	}

	role := awsiam.NewRole(stack, jsii.String("InstanceRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ec2.amazonaws.com"), nil),
		Description: jsii.String("volsd example instances: SSM agent and volsd-agent"),
		ManagedPolicies: &[]awsiam.IManagedPolicy{
			awsiam.ManagedPolicy_FromAwsManagedPolicyName(jsii.String("AmazonSSMManagedInstanceCore")),
		},
	})
	nag(role, "AwsSolutions-IAM4", "AmazonSSMManagedInstanceCore is AWS's maintained minimum for the SSM agent, which delivers the volsd Run Command documents.")
	pool.GrantAgent(role)

	agent := awss3assets.NewAsset(stack, jsii.String("AgentPackage"), &awss3assets.AssetProps{Path: jsii.String(c.AgentPackage)})
	role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("ReadAgentPackage"),
		Actions:   jsii.Strings("s3:GetObject"),
		Resources: &[]*string{agent.Bucket().ArnForObjects(agent.S3ObjectKey())},
	}))

	userData := awsec2.UserData_ForLinux(nil)
	userData.AddCommands(jsii.String("set -euo pipefail"), jsii.String("dnf install -y nginx"))
	userData.AddS3DownloadCommand(&awsec2.S3DownloadOptions{
		Bucket: agent.Bucket(), BucketKey: agent.S3ObjectKey(), LocalFile: jsii.String("/tmp/volsd-agent.rpm"),
	})
	userData.AddCommands(
		// The package brings the program, the units and the tools it runs
		// (rsync, e2fsprogs, xfsprogs, util-linux) and enables nothing.
		jsii.String("dnf install -y /tmp/volsd-agent.rpm && rm -f /tmp/volsd-agent.rpm"),
		jsii.String("install -d -m 0755 /etc/systemd/system/nginx.service.d "+c.MountPath),
		// The package's configuration file is a template; this one stays
		// across package upgrades (%config(noreplace)).
		awscdk.Fn_Join(jsii.String(""), &[]*string{
			jsii.String("cat > /etc/volsd/agent.json <<'VOLSD_EOF'\n"), pool.AgentConfigJSON(), jsii.String("\nVOLSD_EOF"),
		}),
		jsii.String(heredoc("/etc/systemd/system/nginx.service.d/volsd.conf", nginxDropIn)),
		jsii.String(heredoc("/etc/nginx/nginx.conf", strings.ReplaceAll(nginxConf, "@MOUNT@", c.MountPath))),
		jsii.String("systemctl daemon-reload"),
		jsii.String("systemctl enable --now volsd-agent.service volsd-apply.timer nginx.service"),
	)

	template := awsec2.NewLaunchTemplate(stack, jsii.String("LaunchTemplate"), &awsec2.LaunchTemplateProps{
		MachineImage: awsec2.MachineImage_LatestAmazonLinux2023(&awsec2.AmazonLinux2023ImageSsmParameterProps{
			CpuType: awsec2.AmazonLinuxCpuType_ARM_64,
		}),
		InstanceType:             awsec2.NewInstanceType(jsii.String(c.ExampleInstanceType)),
		UserData:                 userData,
		Role:                     role,
		SecurityGroup:            sg,
		RequireImdsv2:            jsii.Bool(true),
		AssociatePublicIpAddress: jsii.Bool(true),
		BlockDevices: &[]*awsec2.BlockDevice{{
			DeviceName: jsii.String("/dev/xvda"),
			Volume: awsec2.BlockDeviceVolume_Ebs(jsii.Number(20), &awsec2.EbsDeviceOptions{
				Encrypted: jsii.Bool(true), VolumeType: awsec2.EbsDeviceVolumeType_GP3, DeleteOnTermination: jsii.Bool(true),
			}),
		}},
	})

	capacity := float64(c.ExampleCapacity)
	asg := awsautoscaling.NewAutoScalingGroup(stack, jsii.String("Group"), &awsautoscaling.AutoScalingGroupProps{
		AutoScalingGroupName: jsii.String(group),
		Vpc:                  vpc,
		VpcSubnets:           &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PUBLIC},
		LaunchTemplate:       template,
		MinCapacity:          jsii.Number(capacity),
		MaxCapacity:          jsii.Number(capacity + 2),
	})
	cfnGroup := asg.Node().DefaultChild().(awsautoscaling.CfnAutoScalingGroup)
	specs := []interface{}{}
	for _, h := range pool.LifecycleHookSpecifications() {
		specs = append(specs, h)
	}
	cfnGroup.SetLifecycleHookSpecificationList(&specs)
	// The pool's Lambdas and rules must exist before the first launch.
	asg.Node().AddDependency(pool.Construct)
	awscdk.Tags_Of(asg).Add(jsii.String(volsd.TagPool), jsii.String(c.Pool), &awscdk.TagProps{ApplyToLaunchedInstances: jsii.Bool(true)})
	nag(asg, "AwsSolutions-AS3", "Example group: scaling notifications are not needed to try volsd; the pool's alarms cover volsd itself.")

	// The pool's outputs (AddOutputs) name the group: AutoScalingGroupName.
	return stack
}
