package snapshot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/ssmcmd"
)

// Delivery timeouts (SendCommand TimeoutSeconds: how long SSM tries to
// start the command; 30 is its minimum). A freeze that did not start within
// 30 s is better not started at all; a thaw may come a little later.
const (
	freezeDelivery int32 = 30
	thawDelivery   int32 = 60
)

// sendCommand sends document doc to exactly one instance, retrying
// throttling, and returns the command ID.
func (r *Runner) sendCommand(ctx context.Context, doc, instanceID string, params map[string][]string, delivery int32) (string, error) {
	var id string
	err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		out, err := r.ssm.SendCommand(ctx, &ssm.SendCommandInput{
			DocumentName:   aws.String(doc),
			InstanceIds:    []string{instanceID},
			Parameters:     params,
			TimeoutSeconds: aws.Int32(delivery),
			Comment:        aws.String("volsd " + r.cfg.Pool + " snapshot"),
		})
		if err != nil {
			return err
		}
		if out.Command == nil || aws.ToString(out.Command.CommandId) == "" {
			return fmt.Errorf("SendCommand returned no command ID")
		}
		id = aws.ToString(out.Command.CommandId)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("send %s to %s: %w", doc, instanceID, err)
	}
	return id, nil
}

// waitCommand waits (ssmcmd.Waiter) for the invocation of command id on
// instanceID to end, or ctx to. A command that ended other than Success is
// an error carrying its status, exit code and the agent's report or stderr.
func (r *Runner) waitCommand(ctx context.Context, doc, id, instanceID string) (*ssm.GetCommandInvocationOutput, error) {
	w := ssmcmd.Waiter{SSM: r.ssm, Delay: func(n int) time.Duration {
		if n == 0 {
			return r.cfg.PollInterval
		}
		return min(r.cfg.PollInterval<<min(n, 16), 2*time.Second)
	}}
	out, err := w.Wait(ctx, id, instanceID)
	if err != nil {
		return nil, fmt.Errorf("%s (command %s) on %s: %w", doc, id, instanceID, err)
	}
	if out.Status != ssmtypes.CommandInvocationStatusSuccess {
		return out, fmt.Errorf("%s (command %s) on %s ended %s (%s, exit code %d): %s",
			doc, id, instanceID, out.Status, aws.ToString(out.StatusDetails), out.ResponseCode, failureText(out))
	}
	return out, nil
}

// failureText says why a command failed: the agent's report error if its
// last line is one, else the end of stderr.
func failureText(out *ssm.GetCommandInvocationOutput) string {
	if rep, err := events.ParseAgentReport(aws.ToString(out.StandardOutputContent)); err == nil && rep.Error != "" {
		if rep.ErrorKind != "" {
			return rep.ErrorKind + ": " + rep.Error
		}
		return rep.Error
	}
	s := strings.TrimSpace(aws.ToString(out.StandardErrorContent))
	if len(s) > 500 {
		s = "…" + s[len(s)-500:]
	}
	if s == "" {
		return "no report and no stderr"
	}
	return s
}
