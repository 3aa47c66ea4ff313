// Command volsd-agent runs on each instance of a volsd pool: it mounts the
// pool volume, catches up with the journal and applies journal entries
// with rsync (see docs/agent.md). This main only wires the AWS clients.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/agent"
	"github.com/volsd/volsd/internal/store"

	"github.com/volsd/volsd/internal/awserr"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := agent.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv, connect)
	stop()
	os.Exit(code)
}

// connect builds the AWS clients once. Endpoints come only from the SDK's
// standard variables (AWS_ENDPOINT_URL_*, AWS_EC2_METADATA_SERVICE_ENDPOINT);
// the region from the configuration, else from IMDS.
func connect(ctx context.Context, c agent.Config, log *slog.Logger) (agent.Deps, error) {
	// One retryer for every client (awserr.NewRetryer; docs/retries.md).
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRetryer(awserr.NewRetryer))
	if err != nil {
		return agent.Deps{}, err
	}
	md := imds.NewFromConfig(cfg)
	cfg.Region = c.Region
	if cfg.Region == "" {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := md.GetRegion(rctx, &imds.GetRegionInput{})
		cancel()
		if err != nil {
			return agent.Deps{}, fmt.Errorf("no region in the configuration or AWS_REGION, and IMDS did not answer: %w", err)
		}
		cfg.Region = out.Region
	}
	log.Debug("aws", "region", cfg.Region)
	return agent.Deps{
		IMDS:        md,
		EC2:         ec2.NewFromConfig(cfg),
		AutoScaling: autoscaling.NewFromConfig(cfg),
		// Blobs and manifests are read with signed GETs built from the S3
		// client's resolved options (agent.S3Getter); the agent verifies
		// the size and sha256 of everything it reads.
		S3:      agent.NewS3Getter(s3.NewFromConfig(cfg).Options()),
		Journal: store.NewJournalReader(dynamodb.NewFromConfig(cfg), c.Table),
	}, nil
}
