// Command push is the push Lambda (SQS push queue, batches with
// ReportBatchItemFailures): it validates push requests against the S3
// origin, appends them to the journal and sends volsd-Apply to the pool's
// instances. The logic is in internal/push; this only wires clients and
// configuration.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/store"
)

func main() {
	env, err := push.LoadEnv(envconfig.New(os.LookupEnv))
	log, cfg := lambdamain.Setup("push", env.LogLevel, err)
	st := store.New(dynamodb.NewFromConfig(cfg), env.Table)
	p := push.NewPusher(env.Config, st, s3.NewFromConfig(cfg), ssm.NewFromConfig(cfg), log, metrics.New(os.Stdout))
	lambda.Start(p.HandleSQS)
}
