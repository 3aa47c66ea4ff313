package awsfake_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/checksum"
	"github.com/volsd/volsd/internal/testenv"
)

// s3API is what the parity scenario calls, on moto and on the fake alike.
type s3API interface {
	manager.UploadAPIClient
	CreateBucket(context.Context, *s3.CreateBucketInput, ...func(*s3.Options)) (*s3.CreateBucketOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

func motoS3(t *testing.T) *s3.Client {
	return s3.NewFromConfig(testenv.Moto(t), func(o *s3.Options) { o.UsePathStyle = true })
}

// TestS3FakeBehavesLikeMoto runs one scenario against moto server and
// against the fake and compares what matters to callers: error codes and
// their classes, sizes, contents, listings.
func TestS3FakeBehavesLikeMoto(t *testing.T) {
	moto := motoS3(t)
	for _, tc := range []struct {
		name   string
		client s3API
	}{{"moto", moto}, {"fake", awsfake.NewS3()}} {
		t.Run(tc.name, func(t *testing.T) { s3Scenario(t, tc.client, tc.name == "moto") })
	}
}

// s3Scenario checks S3 behaviour; moto skips the two checks where moto
// differs from AWS: it stores a body whose ChecksumSHA256 does not match
// (AWS: BadDigest) and answers UploadPart on an aborted upload with a 500
// (AWS: NoSuchUpload).
func s3Scenario(t *testing.T, c s3API, moto bool) {
	ctx := context.Background()
	bucket := testenv.UniqueName(t, "b")
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("nope")}); awserr.Code(err) != "NotFound" || !awserr.IsNotFound(err) {
		t.Errorf("head missing: code %q class %v (%v)", awserr.Code(err), awserr.Classify(err), err)
	}
	_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("nope")})
	var nsk *types.NoSuchKey
	if !errors.As(err, &nsk) || !awserr.IsNotFound(err) {
		t.Errorf("get missing: %v", err)
	}
	if _, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket + "-absent"), Key: aws.String("k")}); awserr.Code(err) != "NoSuchBucket" {
		t.Errorf("get from missing bucket: code %q (%v)", awserr.Code(err), err)
	}

	data := []byte("hello, volsd")
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("blobs/a"), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("blobs/a")})
	if err != nil || aws.ToInt64(h.ContentLength) != int64(len(data)) || aws.ToString(h.ETag) == "" {
		t.Fatalf("head: %+v %v", h, err)
	}
	g, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("blobs/a"), Range: aws.String("bytes=7-11")})
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(g.Body)
	if string(part) != "volsd" || aws.ToString(g.ContentRange) != fmt.Sprintf("bytes 7-11/%d", len(data)) {
		t.Errorf("range read %q, Content-Range %q", part, aws.ToString(g.ContentRange))
	}

	// A SHA-256 checksum that does not match the body is refused.
	wrong := sha256.Sum256([]byte("other"))
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("blobs/b"), Body: bytes.NewReader(data), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(wrong[:]))})
	if moto {
		// moto 5.2 stores it (and reports the claimed checksum): tests that
		// need S3 to refuse a mismatch run on the fake. Fail when moto
		// starts checking, so they can move to moto.
		if err != nil {
			t.Errorf("moto refused a wrong checksum (%v): it checks now", err)
		}
	} else if err == nil {
		t.Errorf("put with a wrong checksum succeeded")
	} else if code := awserr.Code(err); code != "BadDigest" && code != "InvalidRequest" {
		t.Errorf("put with a wrong checksum: code %q (%v)", code, err)
	}
	s3Checksums(t, c, bucket)
	right := sha256.Sum256(data)
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("blobs/b"), Body: bytes.NewReader(data), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(right[:]))}); err != nil {
		t.Errorf("put with the right checksum: %v", err)
	}

	// Listing pages through keys in order.
	for _, k := range []string{"blobs/c", "blobs/d", "blobs/e", "manifests/m.json"} {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(k), Body: strings.NewReader(k)}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: aws.String("blobs/"), MaxKeys: aws.Int32(2)})
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	if strings.Join(keys, ",") != "blobs/a,blobs/b,blobs/c,blobs/d,blobs/e" || pages != 3 {
		t.Errorf("listed %v in %d pages", keys, pages)
	}
	top, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket, Delimiter: aws.String("/")})
	if err != nil || len(top.CommonPrefixes) != 2 || len(top.Contents) != 0 {
		t.Errorf("delimiter listing: %+v %v", top, err)
	}

	// Multipart: a part below 5 MiB that is not the last is refused at completion.
	mp, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	for i, chunk := range [][]byte{[]byte("small part"), []byte("last")} {
		up, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: aws.String("big"), UploadId: mp.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(chunk)})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: aws.String("big"), UploadId: mp.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if awserr.Code(err) != "EntityTooSmall" {
		t.Errorf("complete with a small part: code %q (%v)", awserr.Code(err), err)
	}
	if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: aws.String("big"), UploadId: mp.UploadId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: aws.String("big"), UploadId: mp.UploadId, PartNumber: aws.Int32(3), Body: strings.NewReader("x")})
	if !moto && awserr.Code(err) != "NoSuchUpload" {
		t.Errorf("upload part after abort: code %q (%v)", awserr.Code(err), err)
	}

	// The SDK's upload manager works in parts of 5 MiB.
	big := bytes.Repeat([]byte("0123456789abcdef"), (11<<20)/16+3)
	up := manager.NewUploader(c, func(u *manager.Uploader) { u.PartSize = 5 << 20 })
	if _, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("managed"), Body: bytes.NewReader(big)}); err != nil {
		t.Fatal(err)
	}
	g, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("managed")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(g.Body)
	if !bytes.Equal(got, big) {
		t.Errorf("multipart round trip: %d bytes back, %d sent", len(got), len(big))
	}
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: aws.String("never-there")}); err != nil {
		t.Errorf("delete of a missing key: %v", err)
	}
}

func TestS3FakeFaultsAndCounts(t *testing.T) {
	ctx := context.Background()
	f := awsfake.NewS3("b")
	f.FailNext("HeadObject", 2, &smithy.GenericAPIError{Code: "SlowDown", Message: "Please reduce your request rate."})
	for i := 0; i < 2; i++ {
		_, err := f.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
		if !awserr.IsRetryable(err) || !awserr.IsThrottle(err) {
			t.Fatalf("call %d: %v is not a retryable throttle", i, err)
		}
		var oe *smithy.OperationError
		if !errors.As(err, &oe) || oe.Operation() != "HeadObject" {
			t.Fatalf("fault not wrapped like the SDK: %T", err)
		}
	}
	if _, err := f.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("b"), Key: aws.String("k")}); !awserr.IsNotFound(err) {
		t.Fatalf("third call: %v, want NotFound", err)
	}
	if n := f.Calls("HeadObject"); n != 3 {
		t.Fatalf("Calls = %d, want 3", n)
	}
	f.FailWhen(func(op string) error {
		if op == "PutObject" {
			return &smithy.GenericAPIError{Code: "InternalError", Fault: smithy.FaultServer}
		}
		return nil
	})
	if _, err := f.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("x")}); !awserr.IsRetryable(err) {
		t.Fatalf("put under FailWhen: %v", err)
	}
	if _, ok := f.Object("b", "k"); ok {
		t.Fatal("a failed put stored the object")
	}
	f.FailWhen(nil)
	if _, err := f.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("x"), IfNoneMatch: aws.String("*")}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("y"), IfNoneMatch: aws.String("*")}); awserr.Code(err) != "PreconditionFailed" {
		t.Fatalf("conditional put over an object: %v", err)
	}
}

// s3Checksums: an object put with ChecksumAlgorithm SHA256 reports its
// SHA-256 on HeadObject with ChecksumMode ENABLED (and not without it); a
// multipart upload with per-part SHA-256 reports the composite "…-N" and
// keeps its metadata — what checksum.Verify relies on.
func s3Checksums(t *testing.T, c s3API, bucket string) {
	ctx := context.Background()
	data := []byte("checked bytes")
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("sum/one"), Body: bytes.NewReader(data), ChecksumAlgorithm: types.ChecksumAlgorithmSha256}); err != nil {
		t.Fatal(err)
	}
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("sum/one"), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil || aws.ToString(h.ChecksumSHA256) != checksum.Of(data) || checksum.Verify(h, shaHex(data), int64(len(data))) != nil {
		t.Errorf("head with checksum mode: %q %v, want %q", aws.ToString(h.ChecksumSHA256), err, checksum.Of(data))
	}
	if h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("sum/one")}); err != nil || h.ChecksumSHA256 != nil {
		t.Errorf("head without checksum mode: %v %v", h.ChecksumSHA256, err)
	}
	parts := [][]byte{bytes.Repeat([]byte("p"), 5<<20), []byte("tail")}
	var whole []byte
	mp, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: aws.String("sum/parts"), ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
		ChecksumType: types.ChecksumTypeComposite, Metadata: map[string]string{checksum.MetadataKey: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	var done []types.CompletedPart
	for i, p := range parts {
		whole = append(whole, p...)
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: aws.String("sum/parts"), UploadId: mp.UploadId, PartNumber: aws.Int32(int32(i + 1)),
			Body: bytes.NewReader(p), ContentLength: aws.Int64(int64(len(p))), ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(checksum.Of(p))})
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag, ChecksumSHA256: aws.String(checksum.Of(p))})
	}
	if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: aws.String("sum/parts"), UploadId: mp.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}); err != nil {
		t.Fatal(err)
	}
	h, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("sum/parts"), ChecksumMode: types.ChecksumModeEnabled})
	// AWS (and the fake) answer "<composite>-2"; moto's HEAD leaves out the
	// -2 (its GET has it).
	if err != nil || aws.ToString(h.ChecksumSHA256) == "" || h.Metadata[checksum.MetadataKey] != "x" {
		t.Errorf("multipart head: checksum %q metadata %v %v", aws.ToString(h.ChecksumSHA256), h.Metadata, err)
	}
	h.Metadata[checksum.MetadataKey] = shaHex(whole)
	if err := checksum.Verify(h, shaHex(whole), int64(len(whole))); err != nil {
		t.Errorf("multipart verify: %v", err)
	}
	for _, k := range []string{"sum/one", "sum/parts"} {
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
}

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
