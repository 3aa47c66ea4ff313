// Command lifecycle is the lifecycle Lambda (EventBridge: Auto Scaling
// launch and terminate lifecycle actions of the pool's group): it gives
// every new instance one volume in its zone and releases it on terminate.
// The logic is in internal/pool; this only wires clients and configuration.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

func main() {
	cfg, err := pool.LoadConfig(envconfig.New(os.LookupEnv))
	log, awsCfg := lambdamain.Setup("lifecycle", cfg.LogLevel, err)
	p := pool.New(cfg, pool.Deps{
		Store:       store.New(dynamodb.NewFromConfig(awsCfg), cfg.Table),
		EC2:         ec2.NewFromConfig(awsCfg, func(o *ec2.Options) { o.Retryer = pool.Retryer(5)() }),
		AutoScaling: autoscaling.NewFromConfig(awsCfg),
		SSM:         ssm.NewFromConfig(awsCfg),
		Log:         log,
		Metrics:     metrics.New(os.Stdout),
	})
	lambda.Start(p.HandleLifecycle)
}
