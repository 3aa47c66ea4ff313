package report_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
)

// TestCommandResultsAreReadInPages: the final event of a command sent to
// 120 instances is recorded with 3 ListCommandInvocations calls (50 per
// page) and GetCommandInvocation only for the two entries a page cannot
// vouch for: an agent that failed, and one whose report lies past the
// 2,500 characters a page carries. Every instance ends at its seq, the
// failed one with its error.
func TestCommandResultsAreReadInPages(t *testing.T) {
	var ids []string
	for i := range 120 {
		ids = append(ids, fmt.Sprintf("i-%017x", 0x100+i))
	}
	rr := newReportRig(t, ids...)
	failed, chatty := ids[7], ids[77]
	rr.ssm.Runner = func(_ context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		rep := events.AgentReport{Command: "apply", Instance: inv.InstanceID, Seq: 9, Head: 9}
		status, before := ssmtypes.CommandInvocationStatusSuccess, "applied\n"
		switch inv.InstanceID {
		case failed:
			rep.Seq, rep.Error, rep.ErrorKind = 8, "disk full", "io"
			status = ssmtypes.CommandInvocationStatusFailed
		case chatty:
			before = strings.Repeat("progress line\n", 300) // > 2,500 characters
		}
		line, _ := json.Marshal(rep)
		return awsfake.SSMResult{Status: status, Stdout: before + string(line) + "\n", ResponseCode: map[bool]int32{true: 1}[status != ssmtypes.CommandInvocationStatusSuccess]}
	}
	cmdEvents := make(chan []byte, 4)
	rr.ssm.OnCommandEvent = func(raw []byte) { cmdEvents <- raw }
	_, err := rr.ssm.SendCommand(context.Background(), &ssm.SendCommandInput{
		DocumentName: aws.String("volsd-Apply"), Parameters: map[string][]string{"upTo": {"9"}},
		Targets: []ssmtypes.Target{{Key: aws.String("tag:volsd:pool"), Values: []string{"web"}}}, MaxConcurrency: aws.String("100%"), MaxErrors: aws.String("100%"),
	})
	if err != nil {
		t.Fatal(err)
	}
	rr.ssm.Wait()
	var ev []byte
	select {
	case ev = <-cmdEvents:
	case <-time.After(30 * time.Second):
		t.Fatal("no command status event")
	}
	gets, lists := rr.ssm.Calls("GetCommandInvocation"), rr.ssm.Calls("ListCommandInvocations")
	if err := rr.r.HandleEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if n := rr.ssm.Calls("ListCommandInvocations") - lists; n != 3 {
		t.Errorf("%d ListCommandInvocations calls for 120 instances, want 3", n)
	}
	// The failed and the chatty instance, each read twice: the fake first
	// answers InvocationDoesNotExist, as SSM may right after a command.
	if n := rr.ssm.Calls("GetCommandInvocation") - gets; n != 4 {
		t.Errorf("%d GetCommandInvocation calls, want 4 (2 instances × 2 reads)", n)
	}
	insts, err := rr.st.ListInstances(context.Background(), "web")
	if err != nil || len(insts) != 120 {
		t.Fatalf("instances %d %v", len(insts), err)
	}
	for _, in := range insts {
		switch {
		case in.InstanceID == failed && (in.Seq != 8 || !strings.Contains(in.LastError, "disk full")):
			t.Errorf("failed instance: seq %d, error %q", in.Seq, in.LastError)
		case in.InstanceID != failed && (in.Seq != 9 || in.LastError != ""):
			t.Errorf("%s: seq %d, error %q", in.InstanceID, in.Seq, in.LastError)
		}
	}
}
