package pool

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// ec2Volume is EC2's view of one volume.
type ec2Volume struct {
	ID, AZ, SnapshotID, Type string
	State                    types.VolumeState
	SizeGiB                  int32
	Created                  time.Time
	Tags                     map[string]string
	// Attachment (the first; pool volumes are never multi-attached).
	Instance, Device string
	Attach           types.VolumeAttachmentState
	AttachTime       time.Time
}

func fromEC2(v types.Volume) ec2Volume {
	out := ec2Volume{
		ID: aws.ToString(v.VolumeId), AZ: aws.ToString(v.AvailabilityZone), SnapshotID: aws.ToString(v.SnapshotId),
		Type: string(v.VolumeType), State: v.State, SizeGiB: aws.ToInt32(v.Size), Created: aws.ToTime(v.CreateTime),
		Tags: map[string]string{},
	}
	for _, t := range v.Tags {
		out.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	if len(v.Attachments) > 0 {
		a := v.Attachments[0]
		out.Instance, out.Device, out.Attach, out.AttachTime = aws.ToString(a.InstanceId), aws.ToString(a.Device), a.State, aws.ToTime(a.AttachTime)
	}
	return out
}

// attached reports whether the volume has an attachment that is not on its
// way out.
func (v ec2Volume) attached() bool {
	return v.Instance != "" && (v.Attach == types.VolumeAttachmentStateAttaching || v.Attach == types.VolumeAttachmentStateAttached || v.Attach == types.VolumeAttachmentStateBusy)
}

// free reports whether the volume is available with no attachment at all.
func (v ec2Volume) free() bool { return v.State == types.VolumeStateAvailable && v.Instance == "" }

// going reports whether the volume is being deleted or gone.
func (v ec2Volume) going() bool {
	return v.State == types.VolumeStateDeleting || v.State == types.VolumeStateDeleted
}

// describeVolume reads one volume; found is false when EC2 says it does
// not exist.
func (p *Pool) describeVolume(ctx context.Context, id string) (v ec2Volume, found bool, err error) {
	return p.readVolume(ctx, id, p.read)
}

// lookVolume is describeVolume without retries: a poll's next look is
// its retry.
func (p *Pool) lookVolume(ctx context.Context, id string) (v ec2Volume, found bool, err error) {
	return p.readVolume(ctx, id, func(ctx context.Context, fn func(context.Context) error) error { return fn(ctx) })
}

func (p *Pool) readVolume(ctx context.Context, id string, retry func(context.Context, func(context.Context) error) error) (v ec2Volume, found bool, err error) {
	var out *ec2.DescribeVolumesOutput
	err = retry(ctx, func(ctx context.Context) error {
		var err error
		out, err = p.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		return err
	})
	switch {
	case awserr.IsNotFound(err):
		return v, false, nil
	case err != nil:
		return v, false, fmt.Errorf("describe volume %s: %w", id, err)
	case len(out.Volumes) == 0 || fromEC2(out.Volumes[0]).State == types.VolumeStateDeleted:
		return v, false, nil
	}
	return fromEC2(out.Volumes[0]), true, nil
}

// describeVolumes lists volumes matching filters, all pages.
func (p *Pool) describeVolumes(ctx context.Context, filters []types.Filter) (map[string]ec2Volume, error) {
	out := map[string]ec2Volume{}
	in := &ec2.DescribeVolumesInput{Filters: filters, MaxResults: aws.Int32(500)}
	for {
		var page *ec2.DescribeVolumesOutput
		err := p.read(ctx, func(ctx context.Context) error {
			var err error
			page, err = p.ec2.DescribeVolumes(ctx, in)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("describe volumes: %w", err)
		}
		for _, v := range page.Volumes {
			ev := fromEC2(v)
			out[ev.ID] = ev
		}
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

// poolVolumes lists every volume tagged with the pool.
func (p *Pool) poolVolumes(ctx context.Context) (map[string]ec2Volume, error) {
	return p.describeVolumes(ctx, []types.Filter{{Name: aws.String("tag:" + events.TagPool), Values: []string{p.cfg.Pool}}})
}

// volumesByID lists the volumes of ids that exist (a filter, so missing
// ones are simply absent).
func (p *Pool) volumesByID(ctx context.Context, ids []string) (map[string]ec2Volume, error) {
	out := map[string]ec2Volume{}
	for len(ids) > 0 {
		n := min(len(ids), 200)
		got, err := p.describeVolumes(ctx, []types.Filter{{Name: aws.String("volume-id"), Values: ids[:n]}})
		if err != nil {
			return nil, err
		}
		for k, v := range got {
			out[k] = v
		}
		ids = ids[n:]
	}
	return out, nil
}

// describeInstance reads one instance; found is false when EC2 does not
// know it.
func (p *Pool) describeInstance(ctx context.Context, id string) (types.Instance, bool, error) {
	var out *ec2.DescribeInstancesOutput
	err := p.read(ctx, func(ctx context.Context) error {
		var err error
		out, err = p.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		return err
	})
	switch {
	case awserr.IsNotFound(err):
		return types.Instance{}, false, nil
	case err != nil:
		return types.Instance{}, false, fmt.Errorf("describe instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if aws.ToString(in.InstanceId) == id {
				return in, true, nil
			}
		}
	}
	return types.Instance{}, false, nil
}

// instancesByID describes the instances of ids that EC2 still knows.
func (p *Pool) instancesByID(ctx context.Context, ids []string) (map[string]types.Instance, error) {
	out := map[string]types.Instance{}
	for len(ids) > 0 {
		n := min(len(ids), 200)
		in := &ec2.DescribeInstancesInput{
			Filters:    []types.Filter{{Name: aws.String("instance-id"), Values: ids[:n]}},
			MaxResults: aws.Int32(1000),
		}
		for {
			var page *ec2.DescribeInstancesOutput
			err := p.read(ctx, func(ctx context.Context) error {
				var err error
				page, err = p.ec2.DescribeInstances(ctx, in)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("describe instances: %w", err)
			}
			for _, r := range page.Reservations {
				for _, i := range r.Instances {
					out[aws.ToString(i.InstanceId)] = i
				}
			}
			if aws.ToString(page.NextToken) == "" {
				break
			}
			in.NextToken = page.NextToken
		}
		ids = ids[n:]
	}
	return out, nil
}

// instanceGone reports whether an instance is terminating or terminated.
// Stopped instances (warm pool) keep their volumes and are not gone.
func instanceGone(in types.Instance) bool {
	if in.State == nil {
		return false
	}
	return in.State.Name == types.InstanceStateNameShuttingDown || in.State.Name == types.InstanceStateNameTerminated
}

// detach asks EC2 to detach volumeID from instanceID. A volume that is not
// attached there (IncorrectState, InvalidAttachment.NotFound) or does not
// exist counts as detached.
func (p *Pool) detach(ctx context.Context, volumeID, instanceID string, force bool) error {
	in := &ec2.DetachVolumeInput{VolumeId: aws.String(volumeID), InstanceId: aws.String(instanceID)}
	if force {
		in.Force = aws.Bool(true)
	}
	err := p.retry(ctx, func(ctx context.Context) error {
		_, err := p.ec2.DetachVolume(ctx, in)
		return err
	})
	if err == nil || awserr.IsNotFound(err) || awserr.IsAlreadyDetached(err) {
		return nil
	}
	return fmt.Errorf("detach %s from %s: %w", volumeID, instanceID, err)
}

// Device names volsd attaches at, in order of preference.
var deviceNames = func() []string {
	var out []string
	for c := 'f'; c <= 'p'; c++ {
		out = append(out, "/dev/sd"+string(c))
	}
	return out
}()

// deviceSlot normalizes a device name so /dev/sdf, /dev/xvdf, sdf and xvdf
// compare equal.
func deviceSlot(name string) string {
	name = strings.TrimPrefix(name, "/dev/")
	if r, ok := strings.CutPrefix(name, "xvd"); ok {
		return "sd" + r
	}
	return name
}

// usedDevices returns the device slots taken on an instance.
func usedDevices(in types.Instance) map[string]bool {
	used := map[string]bool{}
	if in.RootDeviceName != nil {
		used[deviceSlot(*in.RootDeviceName)] = true
	}
	for _, m := range in.BlockDeviceMappings {
		used[deviceSlot(aws.ToString(m.DeviceName))] = true
	}
	return used
}
