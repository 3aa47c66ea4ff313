// Package testenv gives tests AWS configs pointed at the local emulators
// that scripts/with-emulators.sh (and so `make test`) starts: DynamoDB Local
// and moto server, both on 127.0.0.1.
//
// A test that needs an emulator calls DynamoDB(t) or Moto(t). When the
// endpoint variable is missing the test is skipped, unless
// VOLSD_TEST_EMULATORS=1 says the emulators were meant to be there: then it
// fails, so CI can never pass by skipping.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// Environment variables set by scripts/with-emulators.sh.
const (
	EnvDynamoDB  = "VOLSD_TEST_DYNAMODB_ENDPOINT"
	EnvMoto      = "VOLSD_TEST_MOTO_ENDPOINT"
	EnvRequired  = "VOLSD_TEST_EMULATORS"
	Region       = "us-east-1"
	AccessKey    = "testing"
	SecretKey    = "testing"
	MotoAccount  = "123456789012"
	emulatorHint = "run the tests through `make test` or ./scripts/with-emulators.sh"
)

// Endpoint returns the endpoint in env var name, skipping or failing t when
// it is not set (see the package doc).
func Endpoint(t testing.TB, name string) string {
	t.Helper()
	ep := os.Getenv(name)
	if ep != "" {
		return ep
	}
	if os.Getenv(EnvRequired) == "1" {
		t.Fatalf("%s is not set although %s=1; %s", name, EnvRequired, emulatorHint)
	}
	t.Skipf("%s not set; %s", name, emulatorHint)
	return ""
}

// DynamoDB returns an AWS config whose endpoint is DynamoDB Local.
func DynamoDB(t testing.TB) aws.Config { return Config(t, Endpoint(t, EnvDynamoDB)) }

// Moto returns an AWS config whose endpoint is moto server (EC2, S3, SQS,
// SSM, Auto Scaling all answer there).
func Moto(t testing.TB) aws.Config { return Config(t, Endpoint(t, EnvMoto)) }

// Config returns an AWS config with static test credentials, Region, and
// every service pointed at endpoint.
func Config(t testing.TB, endpoint string) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(Region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")),
		config.WithBaseEndpoint(endpoint),
		// The SDK's standard retryer, 3 attempts, as before issue 14: with
		// awserr.NewRetryer here, setup calls that are not idempotent
		// (CreateLaunchTemplate, AddRoleToInstanceProfile, CreateSnapshot)
		// were retried after an answer lost under load and failed three CI
		// runs in a row; the cause is not yet understood (docs/design.md §8).
		config.WithRetryMaxAttempts(3),
	)
	if err != nil {
		t.Fatalf("load AWS config for %s: %v", endpoint, err)
	}
	return cfg
}

// UniqueName returns a name for an AWS resource owned by one test: prefix,
// the test's name squeezed to [a-z0-9-], and a random suffix, at most 60
// characters, so packages and repeated runs never collide.
func UniqueName(t testing.TB, prefix string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return strings.Trim(prefix+"-"+strings.Trim(name, "-"), "-") + "-" + hex.EncodeToString(rnd[:])
}

// DynamoDBClient returns a client for DynamoDB Local. Response CRC32
// validation is off: DynamoDB Local sends a checksum that does not match
// some error bodies, which only makes the SDK log warnings.
func DynamoDBClient(t testing.TB) *dynamodb.Client {
	return dynamodb.NewFromConfig(DynamoDB(t), func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
}

// RequireRoot skips t unless it runs as root (loop devices, mounts); when
// VOLSD_TEST_EMULATORS=1 (make test, CI) demands that every test run, it
// fails instead. why names what needs root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	requireRoot(t, why, os.Geteuid(), os.Getenv(EnvRequired))
}

// requireRoot is RequireRoot's rule for effective user euid and the value
// required of EnvRequired.
func requireRoot(t testing.TB, why string, euid int, required string) {
	t.Helper()
	if euid == 0 {
		return
	}
	if required == "1" {
		t.Fatalf("%s needs root, and %s=1 says this test must run: run it as root (sudo make test)", why, EnvRequired)
	}
	t.Skipf("%s needs root", why)
}

// Buffer is a bytes.Buffer safe for concurrent writers (loggers, metrics,
// a Lambda sandbox's output) and readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
