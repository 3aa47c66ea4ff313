// Command snapshot is the snapshot Lambda (EventBridge schedule): it
// freezes one in-service volume, snapshots it, thaws it, applies retention
// compacts the journal and reclaims the origin. The logic is in internal/snapshot; this only
// wires clients and configuration.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

func main() {
	env, err := snapshot.LoadEnv(envconfig.New(os.LookupEnv))
	log, cfg := lambdamain.Setup("snapshot", env.LogLevel, err)
	st := store.New(dynamodb.NewFromConfig(cfg), env.Table)
	r, err := snapshot.New(env.Config, st, ec2.NewFromConfig(cfg), ssm.NewFromConfig(cfg),
		autoscaling.NewFromConfig(cfg), log, metrics.New(os.Stdout))
	if err != nil {
		log.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	lambda.Start(r.WithOrigin(s3.NewFromConfig(cfg)).Handle)
}
