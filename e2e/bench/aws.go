package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// region is where the local run lives (moto's default account's region).
const region = "us-east-1"

// awsConfig is an SDK config for an emulator endpoint with test
// credentials.
func awsConfig(ctx context.Context, endpoint string) (aws.Config, error) {
	if endpoint == "" {
		return aws.Config{}, errors.New("emulator endpoint missing (run under scripts/with-emulators.sh)")
	}
	return config.LoadDefaultConfig(ctx,
		config.WithRegion(region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("testing", "testing", "")),
		config.WithBaseEndpoint(endpoint),
		config.WithRetryMaxAttempts(5),
	)
}

// ddbClient is a DynamoDB client for DynamoDB Local.
func ddbClient(ctx context.Context, endpoint string) (*dynamodb.Client, error) {
	cfg, err := awsConfig(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	return dynamodb.NewFromConfig(cfg), nil
}

// randomName is 8 random hex digits for resource names.
func randomName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
