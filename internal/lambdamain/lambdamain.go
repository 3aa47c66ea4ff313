// Package lambdamain is the start-up every volsd Lambda main shares: a JSON
// logger on stderr (stdout carries EMF metrics), exit code 2 for a bad
// configuration (retrying the cold start cannot mend it), and the AWS config
// from the SDK's default chain, so the standard AWS_ENDPOINT_URL_* variables
// point the clients anywhere.
package lambdamain

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Setup returns the logger of function and the AWS config. It exits with 2
// when configErr (the result of loading the function's environment) is not
// nil, and with 1 when the AWS config cannot be loaded.
func Setup(function string, level slog.Level, configErr error) (*slog.Logger, aws.Config) {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("function", function)
	if configErr != nil {
		log.Error("bad configuration", "error", configErr)
		os.Exit(2)
	}
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Error("load AWS config", "error", err)
		os.Exit(1)
	}
	return log, cfg
}
