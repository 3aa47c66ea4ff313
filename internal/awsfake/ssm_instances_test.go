package awsfake

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/internal/awserr"
)

// TestDescribeInstanceInformation: registered instances are listed Online
// until told otherwise, filtered by InstanceIds, PingStatus and tags, in
// pages of 5..50 with NextToken; bad input gets SSM's errors.
func TestDescribeInstanceInformation(t *testing.T) {
	f := NewSSM()
	ctx := context.Background()
	var ids []string
	for i := range 12 {
		id := fmt.Sprintf("i-%017d", i)
		ids = append(ids, id)
		f.AddInstance(id, map[string]string{"volsd:pool": map[bool]string{true: "web", false: "media"}[i%2 == 0]})
	}
	lost := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	f.SetPingStatus(ids[3], types.PingStatusConnectionLost, lost)
	list := func(in *ssm.DescribeInstanceInformationInput) []types.InstanceInformation {
		t.Helper()
		var all []types.InstanceInformation
		p := ssm.NewDescribeInstanceInformationPaginator(f, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.InstanceInformationList) > int(aws.ToInt32(in.MaxResults)) {
				t.Fatalf("page of %d, MaxResults %d", len(page.InstanceInformationList), aws.ToInt32(in.MaxResults))
			}
			all = append(all, page.InstanceInformationList...)
		}
		return all
	}
	if all := list(&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(5)}); len(all) != 12 {
		t.Fatalf("listed %d of 12", len(all))
	}
	got := list(&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(50),
		Filters: []types.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: []string{ids[2], ids[3], "i-0unknown00000000"}}}})
	if len(got) != 2 || aws.ToString(got[0].InstanceId) != ids[2] || got[0].PingStatus != types.PingStatusOnline ||
		got[1].PingStatus != types.PingStatusConnectionLost || !aws.ToTime(got[1].LastPingDateTime).Equal(lost) {
		t.Fatalf("by ids: %+v", got)
	}
	if got := list(&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(50), Filters: []types.InstanceInformationStringFilter{
		{Key: aws.String("PingStatus"), Values: []string{"Online"}}, {Key: aws.String("tag:volsd:pool"), Values: []string{"media"}}}}); len(got) != 5 {
		t.Fatalf("online media instances: %d, want 5", len(got))
	}
	for _, c := range []struct {
		in   *ssm.DescribeInstanceInformationInput
		code string
	}{
		{&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(4)}, "ValidationException"},
		{&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(51)}, "ValidationException"},
		{&ssm.DescribeInstanceInformationInput{Filters: []types.InstanceInformationStringFilter{{Key: aws.String("Color"), Values: []string{"x"}}}}, "InvalidFilterKey"},
		{&ssm.DescribeInstanceInformationInput{NextToken: aws.String("nope")}, "InvalidNextToken"},
	} {
		_, err := f.DescribeInstanceInformation(ctx, c.in)
		if awserr.Code(err) != c.code {
			t.Errorf("%+v: error %v, want %s", c.in, err, c.code)
		}
	}
	f.FailNext("DescribeInstanceInformation", 1, errors.New("boom"))
	if _, err := f.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{}); err == nil {
		t.Error("an injected fault was not returned")
	}
}
