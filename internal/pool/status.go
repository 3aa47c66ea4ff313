package pool

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// AskStatus handles "EC2 Instance Launch Successful" of the pool's group:
// the instance entered service, so its agent completed the launch hook with
// the content caught up. It sends volsd-Status (read-only on the instance)
// so that the agent's report reaches the report Lambda within seconds and
// the instance record becomes ready with the seq it reached, instead of
// waiting for the next push or snapshot. An instance the pool has no
// launching record of, or one entering the warm pool, is left alone.
func (p *Pool) AskStatus(ctx context.Context, r events.LaunchResult) error {
	log := p.log.With("instance", r.EC2InstanceID, "transition", "launch successful")
	if r.Destination == events.LocationWarmPool {
		log.Info("instance entered the warm pool, not service; nothing to ask")
		return nil
	}
	rec, err := p.getInstance(ctx, r.EC2InstanceID)
	if err != nil {
		return err
	}
	if rec == nil || rec.State != store.InstanceLaunching {
		log.Info("no launching record; nothing to ask", "record", rec != nil)
		return nil
	}
	if p.ssm == nil || p.cfg.DocStatus == "" {
		return nil
	}
	var out *ssm.SendCommandOutput
	err = p.retry(ctx, func(ctx context.Context) error {
		var err error
		out, err = p.ssm.SendCommand(ctx, &ssm.SendCommandInput{
			DocumentName:   aws.String(p.cfg.DocStatus),
			InstanceIds:    []string{r.EC2InstanceID},
			TimeoutSeconds: aws.Int32(60),
			Comment:        aws.String("volsd: report the seq of an instance that entered service"),
		})
		return err
	})
	if err != nil {
		// The SSM agent may not be registered yet: Lambda retries.
		return fmt.Errorf("ask %s for its status: %w", r.EC2InstanceID, err)
	}
	log.Info("asked the agent for its status", "command", aws.ToString(out.Command.CommandId), "volume", rec.VolumeID)
	return nil
}
