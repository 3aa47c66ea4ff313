package awsfake_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/testenv"
)

func applyDoc(f *awsfake.SSM) {
	f.AddDocument("volsd-Apply", map[string]string{"upTo": `^[0-9]{1,20}$`})
}

func poolTarget(pool string) []types.Target {
	return []types.Target{{Key: aws.String("tag:volsd:pool"), Values: []string{pool}}}
}

// TestSSMSendByTagReachesTaggedInstancesOnly: 500 pool instances and 20
// others; one SendCommand by tag; the runner sees 500 invocations, never
// more than MaxConcurrency at once; every invocation emits InProgress and
// Success events; GetCommandInvocation first answers
// InvocationDoesNotExist, then the output.
func TestSSMSendByTagReachesTaggedInstancesOnly(t *testing.T) {
	ctx := context.Background()
	f := awsfake.NewSSM()
	applyDoc(f)
	for i := 0; i < 500; i++ {
		f.AddInstance(fmt.Sprintf("i-%017x", i), map[string]string{"volsd:pool": "web"})
	}
	for i := 0; i < 20; i++ {
		f.AddInstance(fmt.Sprintf("i-%017x", 1000+i), map[string]string{"volsd:pool": "other"})
	}
	var running, peak, runs atomic.Int64
	f.Runner = func(ctx context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		running.Add(-1)
		runs.Add(1)
		return awsfake.SSMResult{Status: types.CommandInvocationStatusSuccess, Stdout: "applying\n" + fmt.Sprintf(`{"command":"apply","instance":%q,"seq":%s}`, inv.InstanceID, inv.Parameters["upTo"][0])}
	}
	var mu sync.Mutex
	statuses := map[string]int{}
	f.OnEvent = func(raw []byte) {
		var cs events.CommandStatus
		if _, err := events.DecodeDetail(raw, events.DetailTypeSSMStatus, &cs); err != nil || cs.Validate() != nil {
			t.Errorf("event does not decode: %v %s", err, raw)
		}
		mu.Lock()
		statuses[cs.Status]++
		mu.Unlock()
	}
	out, err := f.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("volsd-Apply"), Targets: poolTarget("web"),
		Parameters: map[string][]string{"upTo": {"42"}}, MaxConcurrency: aws.String("10"), MaxErrors: aws.String("25%"),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.Wait()
	if out.Command.TargetCount != 500 || runs.Load() != 500 || peak.Load() > 10 {
		t.Fatalf("targets %d, runs %d, peak concurrency %d (limit 10)", out.Command.TargetCount, runs.Load(), peak.Load())
	}
	if statuses["InProgress"] != 500 || statuses["Success"] != 500 {
		t.Fatalf("events %v", statuses)
	}
	in := &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String(fmt.Sprintf("i-%017x", 7))}
	if _, err := f.GetCommandInvocation(ctx, in); awserr.Code(err) != "InvocationDoesNotExist" {
		t.Fatalf("first read: %v, want InvocationDoesNotExist", err)
	}
	inv, err := f.GetCommandInvocation(ctx, in)
	if err != nil || inv.Status != types.CommandInvocationStatusSuccess {
		t.Fatalf("second read: %+v %v", inv, err)
	}
	rep, err := events.ParseAgentReport(aws.ToString(inv.StandardOutputContent))
	if err != nil || rep.Seq != 42 {
		t.Fatalf("report %+v %v", rep, err)
	}
	if _, err := f.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String(fmt.Sprintf("i-%017x", 1000))}); awserr.Code(err) != "InvocationDoesNotExist" {
		t.Fatalf("instance of another pool: %v", err)
	}
	// ListCommandInvocations pages as AWS does: at most 50 per call
	// (MaxResults 1..50, default 50), each with its output under Details.
	pages, seen := 0, map[string]bool{}
	pg := ssm.NewListCommandInvocationsPaginator(f, &ssm.ListCommandInvocationsInput{CommandId: out.Command.CommandId, Details: true})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil || len(page.CommandInvocations) > 50 {
			t.Fatalf("page %d: %d invocations, %v", pages, len(page.CommandInvocations), err)
		}
		for _, ci := range page.CommandInvocations {
			if seen[aws.ToString(ci.InstanceId)] || aws.ToString(ci.CommandPlugins[0].Output) == "" {
				t.Fatalf("page %d: %s twice or without output", pages, aws.ToString(ci.InstanceId))
			}
			seen[aws.ToString(ci.InstanceId)] = true
		}
		pages++
	}
	if pages != 10 || len(seen) != 500 {
		t.Fatalf("list: %d pages, %d invocations; want 10 pages of 50", pages, len(seen))
	}
	if _, err := f.ListCommandInvocations(ctx, &ssm.ListCommandInvocationsInput{CommandId: out.Command.CommandId, MaxResults: aws.Int32(51)}); awserr.Code(err) != "ValidationException" {
		t.Fatalf("MaxResults 51: %v, want ValidationException", err)
	}
	if _, err := f.ListCommandInvocations(ctx, &ssm.ListCommandInvocationsInput{CommandId: out.Command.CommandId, NextToken: aws.String("bogus")}); awserr.Code(err) != "InvalidNextToken" {
		t.Fatalf("bad token: %v, want InvalidNextToken", err)
	}
	if cmds := f.Commands(); len(cmds) != 1 || cmds[0].Status != types.CommandStatusSuccess || cmds[0].CompletedCount != 500 {
		t.Fatalf("commands %+v", cmds)
	}
}

func TestSSMSendCommandValidation(t *testing.T) {
	ctx := context.Background()
	f := awsfake.NewSSM()
	applyDoc(f)
	f.AddInstance("i-0123456789abcdef0", map[string]string{"volsd:pool": "web"})
	many := make([]string, 51)
	for i := range many {
		many[i] = fmt.Sprintf("i-%017x", i)
	}
	ok := func() *ssm.SendCommandInput {
		return &ssm.SendCommandInput{DocumentName: aws.String("volsd-Apply"), Targets: poolTarget("web"), Parameters: map[string][]string{"upTo": {"1"}}}
	}
	cases := []struct {
		name   string
		change func(*ssm.SendCommandInput)
		code   string
	}{
		{"max concurrency 0", func(in *ssm.SendCommandInput) { in.MaxConcurrency = aws.String("0") }, "ValidationException"},
		{"max concurrency 101%", func(in *ssm.SendCommandInput) { in.MaxConcurrency = aws.String("101%") }, "ValidationException"},
		{"max concurrency words", func(in *ssm.SendCommandInput) { in.MaxConcurrency = aws.String("half") }, "ValidationException"},
		{"max errors negative", func(in *ssm.SendCommandInput) { in.MaxErrors = aws.String("-1") }, "ValidationException"},
		{"max errors 100.5%", func(in *ssm.SendCommandInput) { in.MaxErrors = aws.String("100.5%") }, "ValidationException"},
		{"ids and targets", func(in *ssm.SendCommandInput) { in.InstanceIds = []string{"i-0123456789abcdef0"} }, "ValidationException"},
		{"neither", func(in *ssm.SendCommandInput) { in.Targets = nil }, "ValidationException"},
		{"51 instance IDs", func(in *ssm.SendCommandInput) { in.Targets, in.InstanceIds = nil, many }, "ValidationException"},
		{"6 targets", func(in *ssm.SendCommandInput) {
			in.Targets = append(in.Targets, in.Targets[0], in.Targets[0], in.Targets[0], in.Targets[0], in.Targets[0])
		}, "ValidationException"},
		{"long comment", func(in *ssm.SendCommandInput) { in.Comment = aws.String(strings.Repeat("c", 101)) }, "ValidationException"},
		{"unknown document", func(in *ssm.SendCommandInput) { in.DocumentName = aws.String("volsd-Nope") }, "InvalidDocument"},
		{"unknown parameter", func(in *ssm.SendCommandInput) { in.Parameters["script"] = []string{"rm -rf /"} }, "InvalidParameters"},
		{"parameter pattern", func(in *ssm.SendCommandInput) { in.Parameters["upTo"] = []string{"1; reboot"} }, "InvalidParameters"},
		{"unmanaged instance", func(in *ssm.SendCommandInput) { in.Targets, in.InstanceIds = nil, []string{"i-00000000000000bad"} }, "InvalidInstanceId"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := ok()
			tc.change(in)
			_, err := f.SendCommand(ctx, in)
			if awserr.Code(err) != tc.code || awserr.IsRetryable(err) {
				t.Fatalf("got %v (code %q), want %s", err, awserr.Code(err), tc.code)
			}
		})
	}
	if len(f.Commands()) != 0 {
		t.Fatalf("refused sends created commands: %+v", f.Commands())
	}
	out, err := f.SendCommand(ctx, ok())
	if err != nil || out.Command.TargetCount != 1 || aws.ToString(out.Command.MaxConcurrency) != "50" {
		t.Fatalf("valid send: %+v %v", out, err)
	}
	// Without a Runner the invocation waits for Complete, and its output is
	// empty until then.
	in := &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String("i-0123456789abcdef0")}
	_, _ = f.GetCommandInvocation(ctx, in)
	inv, err := f.GetCommandInvocation(ctx, in)
	if err != nil || inv.Status != types.CommandInvocationStatusPending || aws.ToString(inv.StandardOutputContent) != "" {
		t.Fatalf("pending read: %+v %v", inv, err)
	}
	long := strings.Repeat("x", 30000) + "\n{\"seq\":1}"
	if err := f.Complete(aws.ToString(out.Command.CommandId), "i-0123456789abcdef0", awsfake.SSMResult{Status: types.CommandInvocationStatusFailed, ResponseCode: 1, Stdout: long, Stderr: long}); err != nil {
		t.Fatal(err)
	}
	inv, _ = f.GetCommandInvocation(ctx, in)
	if inv.Status != types.CommandInvocationStatusFailed || inv.ResponseCode != 1 || len(aws.ToString(inv.StandardOutputContent)) != awsfake.SSMOutputLimit ||
		len(aws.ToString(inv.StandardErrorContent)) != awsfake.SSMErrorLimit {
		t.Fatalf("completed read: status %s code %d output %d chars, stderr %d", inv.Status, inv.ResponseCode, len(aws.ToString(inv.StandardOutputContent)), len(aws.ToString(inv.StandardErrorContent)))
	}
	// A timed-out command shows no stdout.
	out, _ = f.SendCommand(ctx, ok())
	_ = f.Complete(aws.ToString(out.Command.CommandId), "i-0123456789abcdef0", awsfake.SSMResult{Status: types.CommandInvocationStatusTimedOut, Stdout: "{\"seq\":3}"})
	in.CommandId = out.Command.CommandId
	_, _ = f.GetCommandInvocation(ctx, in)
	if inv, _ = f.GetCommandInvocation(ctx, in); inv.Status != types.CommandInvocationStatusTimedOut || aws.ToString(inv.StandardOutputContent) != "" {
		t.Fatalf("timed out: %s %q", inv.Status, aws.ToString(inv.StandardOutputContent))
	}
}

// TestSSMTargetsOnMoto checks what the fake copies from moto: SendCommand by
// tag target resolves through EC2 tags, and GetCommandInvocation of an
// instance outside the command is InvocationDoesNotExist.
func TestSSMTargetsOnMoto(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.Moto(t)
	e := ec2.NewFromConfig(cfg)
	s := ssm.NewFromConfig(cfg)
	pool := testenv.UniqueName(t, "p")
	run := func(tag string, n int32) []string {
		out, err := e.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String("ami-12c6146b"), MinCount: aws.Int32(n), MaxCount: aws.Int32(n), InstanceType: ec2types.InstanceTypeT3Micro,
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{{Key: aws.String("volsd:pool"), Value: aws.String(tag)}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, i := range out.Instances {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
		return ids
	}
	mine := run(pool, 3)
	others := run(pool+"-other", 2)
	out, err := s.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), Targets: poolTarget(pool), Parameters: map[string][]string{"commands": {"true"}}, MaxConcurrency: aws.String("50%"), MaxErrors: aws.String("25%")})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, id := range out.Command.InstanceIds {
		got[id] = true
	}
	for _, id := range mine {
		if !got[id] {
			t.Errorf("moto did not target %s", id)
		}
	}
	for _, id := range others {
		if got[id] {
			t.Errorf("moto targeted %s of another pool", id)
		}
	}
	_, err = s.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String(others[0])})
	if awserr.Code(err) != "InvocationDoesNotExist" {
		t.Errorf("moto: invocation outside the command: %v", err)
	}
	raw, _ := json.Marshal(out.Command.Targets)
	if !strings.Contains(string(raw), "tag:volsd:pool") {
		t.Errorf("targets not echoed: %s", raw)
	}
}
