package agent

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/testenv"
)

// Against moto: whole objects, ranges and S3's own errors, as the SDK
// client sees them.
func TestS3GetterOnMoto(t *testing.T) {
	ctx := context.Background()
	c := s3.NewFromConfig(testenv.Moto(t), func(o *s3.Options) { o.UsePathStyle = true })
	bucket := strings.ToLower(testenv.UniqueName(t, "getter"))
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 1000)
	key := "blobs/some key+odd%chars"
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	g := NewS3Getter(c.Options())

	out, err := g.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, data) || aws.ToInt64(out.ContentLength) != int64(len(data)) {
		t.Fatalf("whole object: %d bytes (ContentLength %d), want %d", len(got), aws.ToInt64(out.ContentLength), len(data))
	}

	out, err = g.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key, Range: aws.String("bytes=10-29")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, data[10:30]) {
		t.Fatalf("range: got %q", got)
	}
	if total, ok := rangeTotal(aws.ToString(out.ContentRange)); !ok || total != int64(len(data)) {
		t.Fatalf("range: Content-Range %q", aws.ToString(out.ContentRange))
	}

	for _, tc := range []struct{ bucket, key, code string }{
		{bucket, "blobs/missing", "NoSuchKey"},
		{bucket + "-absent", "blobs/x", "NoSuchBucket"},
	} {
		_, err := g.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(tc.bucket), Key: aws.String(tc.key)})
		if awserr.Code(err) != tc.code || !awserr.IsNotFound(err) {
			t.Errorf("%s/%s: got %v (code %q, class %v), want %s, not found", tc.bucket, tc.key, err, awserr.Code(err), awserr.Classify(err), tc.code)
		}
		var sdkErr error
		_, sdkErr = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(tc.bucket), Key: aws.String(tc.key)})
		if awserr.Classify(sdkErr) != awserr.Classify(err) || awserr.Code(sdkErr) != awserr.Code(err) {
			t.Errorf("%s/%s: the SDK says %v, the getter %v", tc.bucket, tc.key, sdkErr, err)
		}
	}
}

// The request is a valid SigV4 request for S3 in the client's region:
// the server signs the same request again with the SDK's signer and the
// signatures must agree.
func TestS3GetterSignsLikeTheSDK(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "session-token")
	var seen *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Clone(context.Background())
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	g := NewS3Getter(s3.New(s3.Options{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true, Credentials: creds}).Options())
	out, err := g.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("origin"), Key: aws.String("manifests/ab cd.json"), Range: aws.String("bytes=0-1")})
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()

	if seen.URL.EscapedPath() != "/origin/manifests/ab%20cd.json" {
		t.Errorf("path %q", seen.URL.EscapedPath())
	}
	auth := seen.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") || !strings.Contains(auth, "/eu-west-1/s3/aws4_request") {
		t.Fatalf("Authorization %q", auth)
	}
	if seen.Header.Get("X-Amz-Security-Token") != "session-token" || seen.Header.Get("X-Amz-Content-Sha256") != emptySHA256 {
		t.Errorf("headers %v", seen.Header)
	}
	at, err := time.Parse("20060102T150405Z", seen.Header.Get("X-Amz-Date"))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := http.NewRequest(http.MethodGet, srv.URL+seen.URL.RequestURI(), nil)
	again.URL.RawPath = seen.URL.EscapedPath()
	again.Header.Set("Range", seen.Header.Get("Range"))
	again.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	v, _ := creds.Retrieve(context.Background())
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	if err := signer.SignHTTP(context.Background(), v, again, emptySHA256, "s3", "eu-west-1", at); err != nil {
		t.Fatal(err)
	}
	if want := again.Header.Get("Authorization"); auth != want {
		t.Errorf("signature differs:\n got %s\nwant %s", auth, want)
	}
}

// Without a custom endpoint the bucket is addressed as on AWS:
// virtual-hosted style, by the SDK's endpoint rules.
func TestS3GetterResolvesAWSEndpoints(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider("a", "b", "")
	for _, tc := range []struct {
		opts s3.Options
		want string
	}{
		{s3.Options{Region: "us-east-1", Credentials: creds}, "https://volsd-origin.s3.us-east-1.amazonaws.com"},
		{s3.Options{Region: "eu-central-1", Credentials: creds, EndpointOptions: s3.EndpointResolverOptions{UseFIPSEndpoint: aws.FIPSEndpointStateEnabled}}, "https://volsd-origin.s3-fips.eu-central-1.amazonaws.com"},
		{s3.Options{Region: "us-west-2", Credentials: creds, UsePathStyle: true}, "https://s3.us-west-2.amazonaws.com/volsd-origin"},
	} {
		u, err := NewS3Getter(s3.New(tc.opts).Options()).endpoint(context.Background(), "volsd-origin")
		if err != nil || u.String() != tc.want {
			t.Errorf("%+v: got %v, %v; want %s", tc.opts.EndpointOptions, u, err, tc.want)
		}
	}
}

// Failed responses classify as the SDK's do: throttling and server errors
// are retryable, a 404 is not found, a refusal is final.
func TestS3GetterErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		code   string
		class  awserr.Class
	}{
		{503, `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`, "SlowDown", awserr.Retryable},
		{500, ``, "", awserr.Retryable},
		{403, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`, "AccessDenied", awserr.Invalid},
		{404, ``, "NotFound", awserr.NotFound},
		{404, `<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`, "NoSuchKey", awserr.NotFound},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Amz-Request-Id", "REQ123")
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		}))
		g := NewS3Getter(s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
			Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")}).Options())
		_, err := g.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("blobs/k")})
		srv.Close()
		if awserr.Code(err) != tc.code || awserr.Classify(err) != tc.class {
			t.Errorf("%d %q: got %v (code %q, class %v), want code %q, %v", tc.status, tc.body, err, awserr.Code(err), awserr.Classify(err), tc.code, tc.class)
		}
		if err != nil && !strings.Contains(err.Error(), "GetObject") {
			t.Errorf("%d: error %q does not name the operation", tc.status, err)
		}
	}
}
