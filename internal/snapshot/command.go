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

// waitCommand polls the invocation of command id on instanceID until it
// ends or ctx does. InvocationDoesNotExist right after SendCommand is normal
// and polled through, as are throttling and server errors. A command that
// ended other than Success is an error carrying its status, exit code and
// the agent's report or stderr.
func (r *Runner) waitCommand(ctx context.Context, doc, id, instanceID string) (*ssm.GetCommandInvocationOutput, error) {
	wait := r.cfg.PollInterval
	last := "not yet visible"
	for {
		out, err := r.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{
			CommandId: aws.String(id), InstanceId: aws.String(instanceID),
		})
		switch {
		case err == nil:
			last = string(out.Status)
			switch out.Status {
			case ssmtypes.CommandInvocationStatusSuccess:
				return out, nil
			case ssmtypes.CommandInvocationStatusPending, ssmtypes.CommandInvocationStatusInProgress,
				ssmtypes.CommandInvocationStatusDelayed, ssmtypes.CommandInvocationStatusCancelling:
			default:
				return out, fmt.Errorf("%s (command %s) on %s ended %s (%s, exit code %d): %s",
					doc, id, instanceID, out.Status, aws.ToString(out.StatusDetails), out.ResponseCode, failureText(out))
			}
		case awserr.IsInvocationMissing(err), awserr.IsRetryable(err):
		default:
			return nil, fmt.Errorf("get invocation of %s (command %s) on %s: %w", doc, id, instanceID, err)
		}
		if err := awserr.Sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("%s (command %s) on %s: no result in time (last status: %s): %w", doc, id, instanceID, last, err)
		}
		wait = min(2*wait, 2*time.Second)
	}
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
