// Command infra is the volsd CDK app (cdk.json: `go run ./infra`). It only
// wires: context → stacks.Config → stacks.Build → synth.
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/infra/stacks"
)

func main() {
	os.Exit(run())
}

func run() int {
	defer jsii.Close()
	app := awscdk.NewApp(nil)
	cfg, err := stacks.ConfigFromContext(app)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := stacks.Build(app, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	app.Synth(nil)
	return 0
}
