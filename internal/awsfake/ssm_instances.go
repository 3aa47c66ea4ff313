package awsfake

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

type ssmPing struct {
	status types.PingStatus
	at     time.Time
}

// SetPingStatus sets what DescribeInstanceInformation says of a registered
// instance (Online, ConnectionLost, Inactive) and when it last pinged.
// Registered instances are Online, pinging now, until this is called.
func (f *SSM) SetPingStatus(id string, status types.PingStatus, last time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pings == nil {
		f.pings = map[string]ssmPing{}
	}
	f.pings[id] = ssmPing{status, last.UTC()}
}

// DescribeInstanceInformation lists the registered (managed) instances as
// SSM does: Filters on InstanceIds, PingStatus and tag:<key> (values ORed,
// filters ANDed; an unknown key is InvalidFilterKey), the older
// InstanceInformationFilterList on InstanceIds and PingStatus, MaxResults
// 5..50 (default 10; ValidationException outside) with a NextToken.
// Instances that are not registered are simply not listed.
func (f *SSM) DescribeInstanceInformation(ctx context.Context, in *ssm.DescribeInstanceInformationInput, _ ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error) {
	if err := f.enter("DescribeInstanceInformation"); err != nil {
		return nil, err
	}
	if len(in.Filters) > 0 && len(in.InstanceInformationFilterList) > 0 {
		return nil, ssmValidation("Filters and InstanceInformationFilterList cannot be used together")
	}
	max := int32(10)
	if in.MaxResults != nil {
		max = *in.MaxResults
	}
	if max < 5 || max > 50 {
		return nil, ssmValidation("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 50 and greater than or equal to 5", max)
	}
	type filter struct {
		key    string
		values []string
	}
	var filters []filter
	for _, fl := range in.Filters {
		filters = append(filters, filter{aws.ToString(fl.Key), fl.Values})
	}
	for _, fl := range in.InstanceInformationFilterList {
		filters = append(filters, filter{string(fl.Key), fl.ValueSet})
	}
	for _, fl := range filters {
		switch {
		case fl.key == "InstanceIds", fl.key == "PingStatus", len(fl.key) > 4 && fl.key[:4] == "tag:":
		default:
			return nil, &types.InvalidFilterKey{Message: aws.String("The specified key is not valid: " + fl.key)}
		}
		if len(fl.values) == 0 {
			return nil, &types.InvalidInstanceInformationFilterValue{Message: aws.String("The filter " + fl.key + " needs at least one value")}
		}
	}
	f.mu.Lock()
	ids := make([]string, 0, len(f.instances))
	for id := range f.instances {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var list []types.InstanceInformation
	for _, id := range ids {
		p, ok := f.pings[id]
		if !ok {
			p = ssmPing{types.PingStatusOnline, f.now()}
		}
		match := true
		for _, fl := range filters {
			var have string
			switch {
			case fl.key == "InstanceIds":
				have = id
			case fl.key == "PingStatus":
				have = string(p.status)
			default:
				var tagged bool
				have, tagged = f.instances[id][fl.key[4:]]
				if !tagged {
					match = false
				}
			}
			if !slices.Contains(fl.values, have) {
				match = false
			}
		}
		if match {
			list = append(list, types.InstanceInformation{
				InstanceId: aws.String(id), PingStatus: p.status, LastPingDateTime: aws.Time(p.at),
				ResourceType: types.ResourceTypeEc2Instance, PlatformType: types.PlatformTypeLinux,
			})
		}
	}
	f.mu.Unlock()
	start := 0
	if t := aws.ToString(in.NextToken); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(list) {
			return nil, &types.InvalidNextToken{Message: aws.String("The specified token is not valid.")}
		}
		start = n
	}
	end := min(start+int(max), len(list))
	out := &ssm.DescribeInstanceInformationOutput{InstanceInformationList: list[start:end]}
	if end < len(list) {
		out.NextToken = aws.String(strconv.Itoa(end))
	}
	return out, nil
}
