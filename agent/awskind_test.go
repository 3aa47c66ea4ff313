package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

func answer(t *testing.T, status int, contentType, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

var someCreds = credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")

// ddbClient answers every call with DynamoDB's error of type errType and
// makes one attempt per call.
func ddbClient(t *testing.T, status int, errType, msg string) *dynamodb.Client {
	url := answer(t, status, "application/x-amz-json-1.0", `{"__type":"`+errType+`","message":"`+msg+`"}`)
	return dynamodb.New(dynamodb.Options{BaseEndpoint: &url, Region: "eu-west-1", Credentials: someCreds, Retryer: aws.NopRetryer{}})
}

// A call the instance's role may not make fails the same way however
// often it is retried: the command ends as bad input (exit 2, which
// systemd does not restart) naming the permission to grant, not as a
// retryable failure that repeats forever. Throttling, server errors and
// credentials that may still refresh stay retryable.
func TestDeniedAWSCallsAreBadInput(t *testing.T) {
	ctx := context.Background()

	// The journal read through the agent's store reader, denied.
	denied := ddbClient(t, 400, "com.amazon.coral.service#AccessDeniedException",
		"User: arn:aws:sts::1:assumed-role/volsd-pool/i-1 is not authorized to perform: dynamodb:GetItem on resource: arn:aws:dynamodb:eu-west-1:1:table/volsd")
	_, err := store.NewJournalReader(denied, "volsd").Head(ctx, "p")
	if err == nil {
		t.Fatal("denied journal read succeeded")
	}
	for name, err := range map[string]error{"unwrapped": err, "awsFailure": awsFailure(err, "read journal head of pool %s", "p")} {
		var r Report
		if code := finish(&r, err); code != ExitBadInput || r.ErrorKind != string(KindBadInput) {
			t.Errorf("%s: denied journal read: exit %d kind %q, want %d %q (%s)", name, code, r.ErrorKind, ExitBadInput, KindBadInput, r.Error)
		}
		if !strings.Contains(r.Error, "instance role lacks dynamodb:") {
			t.Errorf("%s: message does not name the permission: %s", name, r.Error)
		}
	}

	// A manifest GET denied by S3 (what S3 answers for a missing key too
	// when the role lacks s3:ListBucket) is the instance's configuration,
	// not content missing from the origin: it does not stall the pool.
	url := answer(t, 403, "application/xml", `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
	o := origin{s3: NewS3Getter(s3.New(s3.Options{Region: "eu-west-1", BaseEndpoint: &url, UsePathStyle: true, Credentials: someCreds}).Options()), bucket: "origin"}
	_, _, err = o.manifest(ctx, events.ManifestRef{SHA256: strings.Repeat("ab", 32)})
	var r Report
	if code := finish(&r, err); code != ExitBadInput || !isLocal(err) {
		t.Errorf("denied GET: exit %d local %v, want %d and local (%v)", code, isLocal(err), ExitBadInput, err)
	}
	if !strings.Contains(r.Error, "instance role lacks s3:GetObject") || strings.Contains(r.Error, "missing from the origin") {
		t.Errorf("denied GET message: %s", r.Error)
	}

	// What may pass stays retryable.
	for _, tc := range []struct {
		name         string
		status       int
		errType, msg string
	}{
		{"throttled", 400, "com.amazonaws.dynamodb.v20120810#ThrottlingException", "Rate exceeded"},
		{"server error", 500, "com.amazonaws.dynamodb.v20120810#InternalServerError", "Internal server error"},
		{"expired credentials", 400, "com.amazon.coral.service#ExpiredTokenException", "The security token included in the request is expired"},
	} {
		_, err := ddbClient(t, tc.status, tc.errType, tc.msg).GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("volsd")})
		var r Report
		if code := finish(&r, err); code != ExitRetryable || KindOf(awsFailure(err, "get")) != KindRetryable {
			t.Errorf("%s: exit %d, want %d (%v)", tc.name, code, ExitRetryable, err)
		}
	}
	var ae *Error
	if err := awsFailure(errors.New("boom"), "x"); !errors.As(err, &ae) || ae.Kind != KindRetryable || ae.Local {
		t.Errorf("plain error: %+v", ae)
	}
}
