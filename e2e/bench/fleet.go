package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// fleetEC2 is an indexed, read-only in-memory EC2 of a large steady fleet
// for the reconcile benchmark: volumes (idle, or attached to a running
// instance) and instances, answering the Describe calls reconcile makes
// like EC2 does — filters tag:<key>, volume-id and instance-id, MaxResults
// and NextToken pagination, the same error codes for what it does not
// support. Lookups go through maps, so the time a run takes is volsd's and
// DynamoDB Local's, not a fake's scan of 10,000 items per call
// (internal/awsfake's EC2 is built for behaviour, not for that size).
// Mutations are refused: a steady pool must not need any.
type fleetEC2 struct {
	volumes   map[string]types.Volume
	volIDs    []string // sorted
	instances map[string]types.Instance
}

func newFleetEC2() *fleetEC2 {
	return &fleetEC2{volumes: map[string]types.Volume{}, instances: map[string]types.Instance{}}
}

// add puts a volume in the fleet, attached (at /dev/sdf, since an hour)
// to a new running instance in its AZ when attach is set. It returns the
// volume and instance IDs.
func (f *fleetEC2) add(az string, sizeGiB int32, tags map[string]string, attach bool) (vol, inst string) {
	n := len(f.volumes)
	vol = fmt.Sprintf("vol-%017x", 0xb0000000+n)
	created := time.Now().Add(-time.Hour).UTC()
	var tl []types.Tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		tl = append(tl, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	v := types.Volume{
		VolumeId: aws.String(vol), AvailabilityZone: aws.String(az), CreateTime: aws.Time(created), Encrypted: aws.Bool(true),
		Size: aws.Int32(sizeGiB), State: types.VolumeStateAvailable, VolumeType: types.VolumeTypeGp3, Tags: tl,
	}
	if attach {
		inst = fmt.Sprintf("i-%017x", 0xb0000000+n)
		v.State = types.VolumeStateInUse
		v.Attachments = []types.VolumeAttachment{{
			VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf"),
			State: types.VolumeAttachmentStateAttached, AttachTime: aws.Time(created), DeleteOnTermination: aws.Bool(false),
		}}
		f.instances[inst] = types.Instance{
			InstanceId: aws.String(inst), Placement: &types.Placement{AvailabilityZone: aws.String(az)},
			State:          &types.InstanceState{Name: types.InstanceStateNameRunning, Code: aws.Int32(16)},
			RootDeviceName: aws.String("/dev/xvda"), RootDeviceType: types.DeviceTypeEbs, LaunchTime: aws.Time(created), Tags: tl,
			BlockDeviceMappings: []types.InstanceBlockDeviceMapping{
				{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsInstanceBlockDevice{VolumeId: aws.String("vol-root" + inst[2:]), Status: types.AttachmentStatusAttached}},
				{DeviceName: aws.String("/dev/sdf"), Ebs: &types.EbsInstanceBlockDevice{VolumeId: aws.String(vol), Status: types.AttachmentStatusAttached}},
			},
		}
	}
	f.volumes[vol] = v
	f.volIDs = append(f.volIDs, vol) // IDs grow, so the list stays sorted
	return vol, inst
}

func fleetError(code, msg string) error { return &smithy.GenericAPIError{Code: code, Message: msg} }

// page cuts ids at the NextToken (an index) into MaxResults (min 5, max
// 1000, as EC2's) and returns the next token.
func page(ids []string, maxResults *int32, next *string, def int) ([]string, *string, error) {
	start := 0
	if tok := aws.ToString(next); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(ids) {
			return nil, nil, fleetError("InvalidParameterValue", "The token '"+tok+"' is invalid.")
		}
		start = n
	}
	size := def
	if maxResults != nil {
		size = int(*maxResults)
		if size < 5 || size > 1000 {
			return nil, nil, fleetError("InvalidParameterValue", fmt.Sprintf("Value ( %d ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", size))
		}
	}
	end := min(len(ids), start+size)
	var tok *string
	if end < len(ids) {
		tok = aws.String(strconv.Itoa(end))
	}
	return ids[start:end], tok, nil
}

// DescribeVolumes answers by volume-id or tag:<key> filters.
func (f *fleetEC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, _ ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(in.VolumeIds) > 0 {
		return nil, fleetError("UnsupportedOperation", "fleetEC2: DescribeVolumes by VolumeIds is not used by reconcile")
	}
	ids := f.volIDs
	for _, flt := range in.Filters {
		name := aws.ToString(flt.Name)
		want := map[string]bool{}
		for _, v := range flt.Values {
			want[v] = true
		}
		var kept []string
		switch {
		case name == "volume-id":
			for _, v := range flt.Values {
				if _, ok := f.volumes[v]; ok {
					kept = append(kept, v)
				}
			}
			sort.Strings(kept)
			kept = intersect(ids, kept)
		case strings.HasPrefix(name, "tag:"):
			key := strings.TrimPrefix(name, "tag:")
			for _, id := range ids {
				for _, t := range f.volumes[id].Tags {
					if aws.ToString(t.Key) == key && want[aws.ToString(t.Value)] {
						kept = append(kept, id)
						break
					}
				}
			}
		default:
			return nil, fleetError("InvalidParameterValue", "The filter '"+name+"' is invalid")
		}
		ids = kept
	}
	pg, next, err := page(ids, in.MaxResults, in.NextToken, 1000)
	if err != nil {
		return nil, err
	}
	out := &ec2.DescribeVolumesOutput{NextToken: next}
	for _, id := range pg {
		out.Volumes = append(out.Volumes, f.volumes[id])
	}
	return out, nil
}

// intersect keeps the elements of sub (sorted) that are in all (sorted).
func intersect(all, sub []string) []string {
	if len(all) == len(sub) {
		return sub
	}
	set := map[string]bool{}
	for _, s := range all {
		set[s] = true
	}
	var out []string
	for _, s := range sub {
		if set[s] {
			out = append(out, s)
		}
	}
	return out
}

// DescribeInstances answers by an instance-id filter (reconcile's batches
// of 200), one reservation per instance.
func (f *fleetEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ids []string
	switch {
	case len(in.InstanceIds) > 0:
		for _, id := range in.InstanceIds {
			if _, ok := f.instances[id]; !ok {
				return nil, fleetError("InvalidInstanceID.NotFound", "The instance ID '"+id+"' does not exist")
			}
		}
		ids = append(ids, in.InstanceIds...)
	case len(in.Filters) == 1 && aws.ToString(in.Filters[0].Name) == "instance-id":
		for _, id := range in.Filters[0].Values {
			if _, ok := f.instances[id]; ok {
				ids = append(ids, id)
			}
		}
	default:
		return nil, fleetError("UnsupportedOperation", "fleetEC2: DescribeInstances answers an instance-id filter or InstanceIds only")
	}
	sort.Strings(ids)
	pg, next, err := page(ids, in.MaxResults, in.NextToken, 1000)
	if err != nil {
		return nil, err
	}
	out := &ec2.DescribeInstancesOutput{NextToken: next}
	for _, id := range pg {
		out.Reservations = append(out.Reservations, types.Reservation{ReservationId: aws.String("r-" + id[2:]), Instances: []types.Instance{f.instances[id]}})
	}
	return out, nil
}

func (f *fleetEC2) refuse(op string) error {
	return fleetError("UnauthorizedOperation", "fleetEC2: "+op+" in a steady pool: reconcile should not change anything")
}

func (f *fleetEC2) CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	return nil, f.refuse("CreateVolume")
}

func (f *fleetEC2) AttachVolume(context.Context, *ec2.AttachVolumeInput, ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error) {
	return nil, f.refuse("AttachVolume")
}

func (f *fleetEC2) DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error) {
	return nil, f.refuse("DetachVolume")
}

func (f *fleetEC2) DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error) {
	return nil, f.refuse("DeleteVolume")
}

func (f *fleetEC2) ModifyVolume(context.Context, *ec2.ModifyVolumeInput, ...func(*ec2.Options)) (*ec2.ModifyVolumeOutput, error) {
	return nil, f.refuse("ModifyVolume")
}

func (f *fleetEC2) DescribeVolumesModifications(context.Context, *ec2.DescribeVolumesModificationsInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesModificationsOutput, error) {
	return nil, f.refuse("DescribeVolumesModifications")
}
