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
	"runtime/debug"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/volsd/volsd/internal/awserr"
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
	if limit, ok := MemoryLimit(os.LookupEnv); ok {
		debug.SetMemoryLimit(limit)
	}
	// One retryer for every client (awserr.NewRetryer; docs/retries.md).
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRetryer(awserr.NewRetryer))
	if err != nil {
		log.Error("load AWS config", "error", err)
		os.Exit(1)
	}
	return log, cfg
}

// MemoryLimitShare is the share of the function's memory that Go's garbage
// collector keeps the process under (the rest: the binary, and what the
// runtime does not account).
const MemoryLimitShare = 0.9

// MemoryLimit is the Go memory limit of a function with the memory Lambda
// gives it (AWS_LAMBDA_FUNCTION_MEMORY_SIZE, MiB): MemoryLimitShare of it.
// Without a limit Go lets the heap grow to twice what is live before it
// collects, so a function that holds a big manifest would need twice its
// memory. None when GOMEMLIMIT is set (Go applies that itself) or the size
// is unknown.
func MemoryLimit(lookup func(string) (string, bool)) (int64, bool) {
	if _, set := lookup("GOMEMLIMIT"); set {
		return 0, false
	}
	v, ok := lookup("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
	mib, err := strconv.Atoi(v)
	if !ok || err != nil || mib <= 0 {
		return 0, false
	}
	return MemoryLimitBytes(mib), true
}

// MemoryLimitBytes is MemoryLimitShare of mib MiB.
func MemoryLimitBytes(mib int) int64 {
	return int64(float64(mib) * MemoryLimitShare * (1 << 20))
}
