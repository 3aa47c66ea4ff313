package agent

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Getter reads objects with one SigV4-signed HTTP GET each, built from
// the SDK's own parts: the S3 client's resolved options (credentials,
// region, endpoint settings, HTTP client), its endpoint rules (resolved once
// per bucket) and its SigV4 signer. It skips the SDK's per-call
// middleware stack, which is built anew for every call: about 150 µs of CPU
// and 470 allocations per GetObject, a fifth of a whole apply of 10,000
// small files on two cores (docs/agent.md, "Performance").
//
// It implements the agent's S3 interface (GetObject with Bucket, Key and
// Range; the per-call option functions are ignored) for general purpose
// buckets — the origin volsd creates. Retries are the caller's (the agent
// retries a whole blob with backoff); errors carry the status, S3 error
// code and message as the SDK's do, so awserr classifies them alike.
type S3Getter struct {
	opts      s3.Options // the client's: Region, Credentials, endpoint settings
	http      aws.HTTPClient
	signer    *v4.Signer
	endpoints sync.Map // bucket → *url.URL
}

// emptySHA256 is the payload hash of a request without a body.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// NewS3Getter returns a getter that uses the options of an S3 client made
// by s3.NewFromConfig or s3.New (c.Options()). An SDK default HTTP client
// keeps FileWorkers+RangedWorkers idle connections per host instead of 10,
// so parallel fetches reuse their TLS connections.
func NewS3Getter(o s3.Options) *S3Getter {
	hc := o.HTTPClient
	if b, ok := hc.(*awshttp.BuildableClient); ok {
		hc = b.WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, FileWorkers+RangedWorkers)
		})
	}
	return &S3Getter{
		opts:   o,
		http:   hc,
		signer: v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true }),
	}
}

// endpoint resolves the bucket's endpoint with the SDK's S3 rules, once.
func (g *S3Getter) endpoint(ctx context.Context, bucket string) (*url.URL, error) {
	if u, ok := g.endpoints.Load(bucket); ok {
		return u.(*url.URL), nil
	}
	o := g.opts
	resolver := o.EndpointResolverV2
	if resolver == nil {
		resolver = s3.NewDefaultEndpointResolverV2()
	}
	ep, err := resolver.ResolveEndpoint(ctx, s3.EndpointParameters{
		Bucket:         aws.String(bucket),
		Region:         aws.String(o.Region),
		UseFIPS:        aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack:   aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
		Endpoint:       o.BaseEndpoint,
		ForcePathStyle: aws.Bool(o.UsePathStyle),
		Accelerate:     aws.Bool(o.UseAccelerate),
	})
	if err != nil {
		return nil, fmt.Errorf("resolve the S3 endpoint of bucket %s: %w", bucket, err)
	}
	u := ep.URI
	g.endpoints.Store(bucket, &u)
	return &u, nil
}

// GetObject gets in.Key of in.Bucket (the byte range in.Range when set).
// The caller closes the body.
func (g *S3Getter) GetObject(ctx context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := g.get(ctx, in)
	if err != nil {
		return nil, &smithy.OperationError{ServiceID: "S3", OperationName: "GetObject", Err: err}
	}
	return out, nil
}

func (g *S3Getter) get(ctx context.Context, in *s3.GetObjectInput) (*s3.GetObjectOutput, error) {
	bucket, key := aws.ToString(in.Bucket), aws.ToString(in.Key)
	if bucket == "" || key == "" {
		return nil, &smithy.GenericAPIError{Code: "InvalidParameter", Message: "bucket and key are required", Fault: smithy.FaultClient}
	}
	base, err := g.endpoint(ctx, bucket)
	if err != nil {
		return nil, err
	}
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + key
	u.RawPath = strings.TrimSuffix(base.EscapedPath(), "/") + "/" + escapeKey(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	if in.Range != nil {
		req.Header.Set("Range", *in.Range)
	}
	if g.opts.Credentials == nil {
		return nil, fmt.Errorf("no AWS credentials configured")
	}
	creds, err := g.opts.Credentials.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("get AWS credentials: %w", err)
	}
	if err := g.signer.SignHTTP(ctx, creds, req, emptySHA256, "s3", g.opts.Region, time.Now().UTC()); err != nil {
		return nil, fmt.Errorf("sign the request: %w", err)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	out := &s3.GetObjectOutput{Body: resp.Body}
	if resp.ContentLength >= 0 {
		out.ContentLength = aws.Int64(resp.ContentLength)
	}
	if cr := resp.Header.Get("Content-Range"); cr != "" {
		out.ContentRange = aws.String(cr)
	}
	if et := resp.Header.Get("ETag"); et != "" {
		out.ETag = aws.String(et)
	}
	return out, nil
}

// escapeKey escapes each segment of an object key for the URL path (S3
// keys are signed as sent: the signer does not escape them again).
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// responseError turns a failed response into the error the SDK would
// return: status, request id, and S3's error code and message when the body
// has them (<Error><Code>…</Code><Message>…</Message></Error>).
func responseError(resp *http.Response) error {
	var body struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = xml.Unmarshal(data, &body)
	api := &smithy.GenericAPIError{Code: body.Code, Message: body.Message, Fault: smithy.FaultClient}
	if resp.StatusCode >= 500 {
		api.Fault = smithy.FaultServer
	}
	if api.Code == "" && resp.StatusCode == http.StatusNotFound {
		api.Code = "NotFound" // what the SDK says for a 404 without a body
	}
	if api.Message == "" {
		api.Message = http.StatusText(resp.StatusCode)
	}
	var err error = api
	if api.Code == "" {
		err = fmt.Errorf("%s", api.Message) // no code: classified by status only
	}
	return &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp}, Err: err},
		RequestID:     resp.Header.Get("X-Amz-Request-Id"),
	}
}
