package awsfake_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/testenv"
)

// ec2API is what the parity scenario calls, on moto and on the fake alike.
type ec2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	AttachVolume(context.Context, *ec2.AttachVolumeInput, ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
	DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
}

// TestEC2FakeBehavesLikeMoto runs one volume scenario against moto server
// and against the fake (zero delays, as moto's state changes are instant)
// and compares what the control plane depends on: tags and filters,
// attachment views, block device mappings and error codes.
func TestEC2FakeBehavesLikeMoto(t *testing.T) {
	moto := ec2.NewFromConfig(testenv.Moto(t))
	run, err := moto.RunInstances(fakeCtx, &ec2.RunInstancesInput{ImageId: aws.String("ami-03cf127a"), MinCount: aws.Int32(1),
		MaxCount: aws.Int32(1), InstanceType: types.InstanceTypeT3Micro, Placement: &types.Placement{AvailabilityZone: aws.String("us-east-1b")}})
	if err != nil {
		t.Fatal(err)
	}
	fake := awsfake.NewEC2(awsfake.EC2Config{})
	for _, tc := range []struct {
		name   string
		client ec2API
		inst   string
	}{
		{"moto", moto, aws.ToString(run.Instances[0].InstanceId)},
		{"fake", fake, fake.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1b", RootDevice: "/dev/sda1"})},
	} {
		t.Run(tc.name, func(t *testing.T) { ec2Scenario(t, tc.client, tc.inst) })
	}
}

func ec2Scenario(t *testing.T, c ec2API, inst string) {
	pool := testenv.UniqueName(t, "pool")
	tagFilter := []types.Filter{{Name: aws.String("tag:volsd:pool"), Values: []string{pool}}}
	out, err := c.CreateVolume(fakeCtx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), Size: aws.Int32(4),
		VolumeType: types.VolumeTypeGp3, Encrypted: aws.Bool(true), TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{{Key: aws.String("volsd:pool"), Value: &pool}, {Key: aws.String("Name"), Value: aws.String("volsd-" + pool)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.VolumeId)
	if aws.ToInt32(out.Size) != 4 || !aws.ToBool(out.Encrypted) || len(out.Tags) != 2 {
		t.Fatalf("CreateVolume output %+v", out)
	}
	list, err := c.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{Filters: tagFilter, MaxResults: aws.Int32(500)})
	if err != nil || len(list.Volumes) != 1 || *list.Volumes[0].VolumeId != id || list.Volumes[0].State != types.VolumeStateAvailable {
		t.Fatalf("by tag: %+v %v", list, err)
	}
	list, err = c.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("volume-id"), Values: []string{id, "vol-0000000000000dead"}}}})
	if err != nil || len(list.Volumes) != 1 {
		t.Fatalf("by volume-id filter with a missing ID: %+v %v", list, err)
	}
	_, err = c.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{VolumeIds: []string{"vol-0000000000000dead"}})
	if awserr.Code(err) != "InvalidVolume.NotFound" || !awserr.IsNotFound(err) {
		t.Fatalf("missing volume: %v", err)
	}
	_, err = c.DescribeInstances(fakeCtx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0000000000000dead"}})
	if awserr.Code(err) != "InvalidInstanceID.NotFound" {
		t.Fatalf("missing instance: %v", err)
	}
	di, err := c.DescribeInstances(fakeCtx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{inst, "i-0000000000000dead"}}}})
	if err != nil || len(di.Reservations) != 1 || aws.ToString(di.Reservations[0].Instances[0].Placement.AvailabilityZone) != "us-east-1b" {
		t.Fatalf("instance by filter: %+v %v", di, err)
	}
	if _, err := c.AttachVolume(fakeCtx, &ec2.AttachVolumeInput{VolumeId: &id, InstanceId: &inst, Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	list, err = c.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil || list.Volumes[0].State != types.VolumeStateInUse || len(list.Volumes[0].Attachments) != 1 ||
		aws.ToString(list.Volumes[0].Attachments[0].InstanceId) != inst || aws.ToString(list.Volumes[0].Attachments[0].Device) != "/dev/sdf" {
		t.Fatalf("after attach: %+v %v", list, err)
	}
	di, err = c.DescribeInstances(fakeCtx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst}})
	if err != nil {
		t.Fatal(err)
	}
	devs := map[string]bool{}
	for _, m := range di.Reservations[0].Instances[0].BlockDeviceMappings {
		devs[aws.ToString(m.DeviceName)] = true
	}
	if !devs["/dev/sdf"] || !devs[aws.ToString(di.Reservations[0].Instances[0].RootDeviceName)] {
		t.Fatalf("block device mappings %v", devs)
	}
	_, err = c.DeleteVolume(fakeCtx, &ec2.DeleteVolumeInput{VolumeId: &id})
	if awserr.Code(err) != "VolumeInUse" || !awserr.IsIncorrectState(err) {
		t.Fatalf("delete while attached: %v", err)
	}
	if _, err := c.DetachVolume(fakeCtx, &ec2.DetachVolumeInput{VolumeId: &id, InstanceId: &inst}); err != nil {
		t.Fatal(err)
	}
	// Detaching again: moto says InvalidAttachment.NotFound, AWS (and the
	// fake) IncorrectState; the control plane takes both as detached.
	_, err = c.DetachVolume(fakeCtx, &ec2.DetachVolumeInput{VolumeId: &id, InstanceId: &inst})
	if code := awserr.Code(err); code != "InvalidAttachment.NotFound" && code != "IncorrectState" {
		t.Fatalf("detach twice: %v", err)
	}
	if _, err := c.DeleteVolume(fakeCtx, &ec2.DeleteVolumeInput{VolumeId: &id}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteVolume(fakeCtx, &ec2.DeleteVolumeInput{VolumeId: &id})
	if awserr.Code(err) != "InvalidVolume.NotFound" {
		t.Fatalf("delete twice: %v", err)
	}
	list, err = c.DescribeVolumes(fakeCtx, &ec2.DescribeVolumesInput{Filters: tagFilter})
	if err != nil || len(list.Volumes) != 0 {
		t.Fatalf("after delete: %+v %v", list, err)
	}
}
