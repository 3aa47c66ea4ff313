// Command report is the report Lambda (EventBridge "EC2 Command Invocation
// Status-change Notification" of volsd documents): it reads each agent's
// report from the invocation output and records it on the instance. The
// logic is in internal/report; this only wires clients and configuration.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/store"
)

func main() {
	env, err := report.LoadEnv(envconfig.New(os.LookupEnv))
	log, cfg := lambdamain.Setup("report", env.LogLevel, err)
	st := store.New(dynamodb.NewFromConfig(cfg), env.Table)
	r := report.NewReporter(env.Config, st, ssm.NewFromConfig(cfg), log, metrics.New(os.Stdout))
	lambda.Start(r.HandleEvent)
}
