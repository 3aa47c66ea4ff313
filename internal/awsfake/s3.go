package awsfake

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3 is an in-memory S3 with the calls volsd's push pipeline makes: objects
// (Head, Get with ranges, Put with SHA-256 checksums, Delete, ListObjectsV2
// with pagination and delimiters) and multipart uploads with S3's part
// rules. Errors carry S3's codes and types (NotFound for HEAD, NoSuchKey,
// NoSuchBucket, NoSuchUpload, InvalidPart, InvalidPartOrder,
// EntityTooSmall, BadDigest, InvalidRange, PreconditionFailed).
// It is safe for concurrent use.
type S3 struct {
	pipelineFaults
	// MinPartSize is the smallest size of a multipart part other than the
	// last (S3: 5 MiB). Tests may lower it before use.
	MinPartSize int64

	mu      sync.Mutex
	buckets map[string]map[string]*s3Object
	uploads map[string]*s3Upload
	now     func() time.Time
}

type s3Object struct {
	data     []byte
	etag     string
	modified time.Time
	meta     map[string]string
	// checksum is the stored SHA-256 checksum (base64; "<b64>-N" for a
	// multipart object, a checksum of the part checksums), "" for none.
	checksum     string
	checksumType types.ChecksumType
}

type s3Upload struct {
	bucket, key string
	parts       map[int32]*s3Object
	sha256      bool // created with ChecksumAlgorithm SHA256
	meta        map[string]string
}

// s3Checksum is the SHA-256 checksum S3 stores for a body: the one the
// caller sent (already checked against the body), or computed when the
// caller asked for the algorithm only.
func s3Checksum(data []byte, sent *string, algo types.ChecksumAlgorithm) string {
	switch {
	case aws.ToString(sent) != "":
		return aws.ToString(sent)
	case algo == types.ChecksumAlgorithmSha256:
		sum := sha256.Sum256(data)
		return base64.StdEncoding.EncodeToString(sum[:])
	}
	return ""
}

// NewS3 returns an empty S3 with the given buckets.
func NewS3(buckets ...string) *S3 {
	f := &S3{
		pipelineFaults: pipelineFaults{service: "S3"},
		MinPartSize:    5 << 20,
		buckets:        map[string]map[string]*s3Object{},
		uploads:        map[string]*s3Upload{},
		now:            func() time.Time { return time.Now().UTC() },
	}
	for _, b := range buckets {
		f.buckets[b] = map[string]*s3Object{}
	}
	return f
}

// SetClock makes now the source of objects' LastModified (e.g. an
// awsfake.Clock's Now); it returns f.
func (f *S3) SetClock(now func() time.Time) *S3 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
	return f
}

// Object returns a copy of an object's content and whether it exists.
func (f *S3) Object(bucket, key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.buckets[bucket][key]
	if !ok {
		return nil, false
	}
	return bytes.Clone(o.data), true
}

// Keys returns the keys of a bucket with the given prefix, sorted.
func (f *S3) Keys(bucket, prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.buckets[bucket] {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// PendingUploads returns how many multipart uploads are neither completed
// nor aborted.
func (f *S3) PendingUploads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.uploads)
}

func s3NoSuchBucket(bucket string) error {
	return &types.NoSuchBucket{Message: aws.String("The specified bucket does not exist: " + bucket)}
}

// bucket returns the objects of a bucket; call with f.mu held.
func (f *S3) bucket(name *string) (map[string]*s3Object, error) {
	objs, ok := f.buckets[aws.ToString(name)]
	if !ok {
		return nil, s3NoSuchBucket(aws.ToString(name))
	}
	return objs, nil
}

// CreateBucket creates a bucket; BucketAlreadyOwnedByYou if it exists.
func (f *S3) CreateBucket(ctx context.Context, in *s3.CreateBucketInput, _ ...func(*s3.Options)) (*s3.CreateBucketOutput, error) {
	if err := f.enter("CreateBucket"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	name := aws.ToString(in.Bucket)
	if _, ok := f.buckets[name]; ok {
		return nil, f.wrap("CreateBucket", &types.BucketAlreadyOwnedByYou{Message: aws.String("Your previous request to create the named bucket succeeded and you already own it.")})
	}
	f.buckets[name] = map[string]*s3Object{}
	return &s3.CreateBucketOutput{Location: aws.String("/" + name)}, nil
}

// HeadObject returns an object's metadata. Like S3 (a HEAD response has no
// body), a missing key or bucket is a bare NotFound.
func (f *S3) HeadObject(ctx context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	if err := f.enter("HeadObject"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.buckets[aws.ToString(in.Bucket)][aws.ToString(in.Key)]
	if !ok {
		return nil, f.wrap("HeadObject", &types.NotFound{Message: aws.String("Not Found")})
	}
	out := &s3.HeadObjectOutput{
		ContentLength: aws.Int64(int64(len(o.data))), ETag: aws.String(o.etag),
		LastModified: aws.Time(o.modified), Metadata: o.meta,
	}
	if in.ChecksumMode == types.ChecksumModeEnabled && o.checksum != "" {
		out.ChecksumSHA256, out.ChecksumType = aws.String(o.checksum), o.checksumType
	}
	return out, nil
}

// GetObject returns an object, or the byte range asked for
// ("bytes=a-b", "bytes=a-", "bytes=-n").
func (f *S3) GetObject(ctx context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	if err := f.enter("GetObject"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	objs, err := f.bucket(in.Bucket)
	if err != nil {
		return nil, f.wrap("GetObject", err)
	}
	o, ok := objs[aws.ToString(in.Key)]
	if !ok {
		return nil, f.wrap("GetObject", &types.NoSuchKey{Message: aws.String("The specified key does not exist.")})
	}
	data := o.data
	out := &s3.GetObjectOutput{ETag: aws.String(o.etag), LastModified: aws.Time(o.modified), Metadata: o.meta}
	if r := aws.ToString(in.Range); r != "" {
		lo, hi, err := s3Range(r, int64(len(data)))
		if err != nil {
			return nil, f.wrap("GetObject", err)
		}
		out.ContentRange = aws.String(fmt.Sprintf("bytes %d-%d/%d", lo, hi, len(data)))
		data = data[lo : hi+1]
	}
	out.ContentLength = aws.Int64(int64(len(data)))
	out.Body = io.NopCloser(bytes.NewReader(bytes.Clone(data)))
	return out, nil
}

// s3Range parses one HTTP byte range against an object of size n.
func s3Range(r string, n int64) (lo, hi int64, err error) {
	bad := pipelineAPIError("InvalidRange", "The requested range is not satisfiable", smithy.FaultClient)
	spec, ok := strings.CutPrefix(r, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, bad
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, bad
	}
	switch {
	case a == "": // suffix: the last b bytes
		k, err := strconv.ParseInt(b, 10, 64)
		if err != nil || k <= 0 || n == 0 {
			return 0, 0, bad
		}
		return max(0, n-k), n - 1, nil
	default:
		lo, err = strconv.ParseInt(a, 10, 64)
		if err != nil || lo >= n {
			return 0, 0, bad
		}
		hi = n - 1
		if b != "" {
			if hi, err = strconv.ParseInt(b, 10, 64); err != nil || hi < lo {
				return 0, 0, bad
			}
			hi = min(hi, n-1)
		}
		return lo, hi, nil
	}
}

// s3ReadBody reads a request body and checks ContentLength and a SHA-256
// checksum when the caller sent them.
func s3ReadBody(body io.Reader, length *int64, checksum *string) ([]byte, error) {
	var data []byte
	if body != nil {
		var err error
		if data, err = io.ReadAll(body); err != nil {
			return nil, err
		}
	}
	if length != nil && *length != int64(len(data)) {
		return nil, pipelineAPIError("IncompleteBody", fmt.Sprintf("You did not provide the number of bytes specified by the Content-Length HTTP header (%d, got %d)", *length, len(data)), smithy.FaultClient)
	}
	if c := aws.ToString(checksum); c != "" {
		sum := sha256.Sum256(data)
		if base64.StdEncoding.EncodeToString(sum[:]) != c {
			return nil, pipelineAPIError("BadDigest", "The SHA256 you specified did not match the calculated checksum.", smithy.FaultClient)
		}
	}
	return data, nil
}

func s3ETag(data []byte) string {
	sum := md5.Sum(data)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// PutObject stores an object. A ChecksumSHA256 that does not match the body
// is BadDigest; IfNoneMatch "*" on an existing key is PreconditionFailed.
func (f *S3) PutObject(ctx context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if err := f.enter("PutObject"); err != nil {
		return nil, err
	}
	data, err := s3ReadBody(in.Body, in.ContentLength, in.ChecksumSHA256)
	if err != nil {
		return nil, f.wrap("PutObject", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	objs, err := f.bucket(in.Bucket)
	if err != nil {
		return nil, f.wrap("PutObject", err)
	}
	key := aws.ToString(in.Key)
	if key == "" {
		return nil, f.wrap("PutObject", pipelineAPIError("InvalidArgument", "key must not be empty", smithy.FaultClient))
	}
	if _, exists := objs[key]; exists && aws.ToString(in.IfNoneMatch) == "*" {
		return nil, f.wrap("PutObject", pipelineAPIError("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", smithy.FaultClient))
	}
	o := &s3Object{data: data, etag: s3ETag(data), modified: f.now(), meta: in.Metadata, checksum: s3Checksum(data, in.ChecksumSHA256, in.ChecksumAlgorithm)}
	if o.checksum != "" {
		o.checksumType = types.ChecksumTypeFullObject
	}
	objs[key] = o
	return &s3.PutObjectOutput{ETag: aws.String(o.etag), ChecksumSHA256: aws.String(o.checksum)}, nil
}

// DeleteObject removes an object; deleting a missing key succeeds, as in S3.
func (f *S3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	if err := f.enter("DeleteObject"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	objs, err := f.bucket(in.Bucket)
	if err != nil {
		return nil, f.wrap("DeleteObject", err)
	}
	delete(objs, aws.ToString(in.Key))
	return &s3.DeleteObjectOutput{}, nil
}

// ListObjectsV2 lists keys in order with Prefix, StartAfter, Delimiter,
// MaxKeys (default and at most 1000) and continuation tokens.
func (f *S3) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, _ ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	if err := f.enter("ListObjectsV2"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	objs, err := f.bucket(in.Bucket)
	if err != nil {
		return nil, f.wrap("ListObjectsV2", err)
	}
	maxKeys := int(aws.ToInt32(in.MaxKeys))
	if in.MaxKeys == nil || maxKeys > 1000 {
		maxKeys = 1000
	}
	if maxKeys < 0 {
		return nil, f.wrap("ListObjectsV2", pipelineAPIError("InvalidArgument", "maxKeys should be non-negative", smithy.FaultClient))
	}
	prefix, delim := aws.ToString(in.Prefix), aws.ToString(in.Delimiter)
	after := aws.ToString(in.StartAfter)
	if tok := aws.ToString(in.ContinuationToken); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			return nil, f.wrap("ListObjectsV2", pipelineAPIError("InvalidArgument", "The continuation token provided is incorrect", smithy.FaultClient))
		}
		after = string(raw)
	}
	keys := make([]string, 0, len(objs))
	for k := range objs {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := &s3.ListObjectsV2Output{Name: in.Bucket, Prefix: in.Prefix, Delimiter: in.Delimiter, MaxKeys: aws.Int32(int32(maxKeys)), StartAfter: in.StartAfter, ContinuationToken: in.ContinuationToken}
	seenPrefix := map[string]bool{}
	count, last := 0, ""
	for _, k := range keys {
		cp := ""
		if delim != "" {
			if i := strings.Index(k[len(prefix):], delim); i >= 0 {
				cp = k[:len(prefix)+i+len(delim)]
			}
		}
		if cp != "" && seenPrefix[cp] {
			continue // rolled up into a common prefix already listed
		}
		if count == maxKeys {
			out.IsTruncated = aws.Bool(true)
			out.NextContinuationToken = aws.String(base64.RawURLEncoding.EncodeToString([]byte(last)))
			break
		}
		if cp != "" {
			seenPrefix[cp] = true
			out.CommonPrefixes = append(out.CommonPrefixes, types.CommonPrefix{Prefix: aws.String(cp)})
			count++
			last = cp + "\xff" // the next page starts after every key under cp
			continue
		}
		o := objs[k]
		out.Contents = append(out.Contents, types.Object{
			Key: aws.String(k), Size: aws.Int64(int64(len(o.data))), ETag: aws.String(o.etag),
			LastModified: aws.Time(o.modified), StorageClass: types.ObjectStorageClassStandard,
		})
		count++
		last = k
	}
	if out.IsTruncated == nil {
		out.IsTruncated = aws.Bool(false)
	}
	out.KeyCount = aws.Int32(int32(count))
	return out, nil
}

func s3NoSuchUpload() error {
	return &types.NoSuchUpload{Message: aws.String("The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")}
}

// CreateMultipartUpload starts a multipart upload.
func (f *S3) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	if err := f.enter("CreateMultipartUpload"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.bucket(in.Bucket); err != nil {
		return nil, f.wrap("CreateMultipartUpload", err)
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	uid := hex.EncodeToString(id[:])
	f.uploads[uid] = &s3Upload{bucket: aws.ToString(in.Bucket), key: aws.ToString(in.Key), parts: map[int32]*s3Object{},
		sha256: in.ChecksumAlgorithm == types.ChecksumAlgorithmSha256, meta: in.Metadata}
	return &s3.CreateMultipartUploadOutput{Bucket: in.Bucket, Key: in.Key, UploadId: aws.String(uid)}, nil
}

// UploadPart stores one part (numbers 1..10000).
func (f *S3) UploadPart(ctx context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	if err := f.enter("UploadPart"); err != nil {
		return nil, err
	}
	n := aws.ToInt32(in.PartNumber)
	if n < 1 || n > 10000 {
		return nil, f.wrap("UploadPart", pipelineAPIError("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive", smithy.FaultClient))
	}
	data, err := s3ReadBody(in.Body, in.ContentLength, in.ChecksumSHA256)
	if err != nil {
		return nil, f.wrap("UploadPart", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.uploads[aws.ToString(in.UploadId)]
	if !ok || u.bucket != aws.ToString(in.Bucket) || u.key != aws.ToString(in.Key) {
		return nil, f.wrap("UploadPart", s3NoSuchUpload())
	}
	p := &s3Object{data: data, etag: s3ETag(data), modified: f.now()}
	if u.sha256 {
		p.checksum = s3Checksum(data, in.ChecksumSHA256, types.ChecksumAlgorithmSha256)
	}
	u.parts[n] = p
	return &s3.UploadPartOutput{ETag: aws.String(p.etag), ChecksumSHA256: aws.String(p.checksum)}, nil
}

// CompleteMultipartUpload assembles the listed parts: ascending part
// numbers, ETags matching, every part but the last at least MinPartSize.
func (f *S3) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	if err := f.enter("CompleteMultipartUpload"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	uid := aws.ToString(in.UploadId)
	u, ok := f.uploads[uid]
	if !ok || u.bucket != aws.ToString(in.Bucket) || u.key != aws.ToString(in.Key) {
		return nil, f.wrap("CompleteMultipartUpload", s3NoSuchUpload())
	}
	if in.MultipartUpload == nil || len(in.MultipartUpload.Parts) == 0 {
		return nil, f.wrap("CompleteMultipartUpload", pipelineAPIError("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema", smithy.FaultClient))
	}
	parts := in.MultipartUpload.Parts
	var whole, partSums bytes.Buffer
	md5s := md5.New()
	prev := int32(0)
	for i, cp := range parts {
		n := aws.ToInt32(cp.PartNumber)
		if n <= prev {
			return nil, f.wrap("CompleteMultipartUpload", pipelineAPIError("InvalidPartOrder", "The list of parts was not in ascending order. The parts list must be specified in order by part number.", smithy.FaultClient))
		}
		prev = n
		p, ok := u.parts[n]
		if !ok || strings.Trim(aws.ToString(cp.ETag), `"`) != strings.Trim(p.etag, `"`) {
			return nil, f.wrap("CompleteMultipartUpload", pipelineAPIError("InvalidPart", fmt.Sprintf("One or more of the specified parts could not be found (part %d).", n), smithy.FaultClient))
		}
		if u.sha256 && aws.ToString(cp.ChecksumSHA256) != p.checksum {
			return nil, f.wrap("CompleteMultipartUpload", pipelineAPIError("InvalidPart", fmt.Sprintf("One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag (part %d: checksum %q).", n, aws.ToString(cp.ChecksumSHA256)), smithy.FaultClient))
		}
		if i < len(parts)-1 && int64(len(p.data)) < f.MinPartSize {
			return nil, f.wrap("CompleteMultipartUpload", pipelineAPIError("EntityTooSmall", fmt.Sprintf("Your proposed upload is smaller than the minimum allowed size (part %d has %d bytes)", n, len(p.data)), smithy.FaultClient))
		}
		whole.Write(p.data)
		raw, _ := hex.DecodeString(strings.Trim(p.etag, `"`))
		md5s.Write(raw)
		sum, _ := base64.StdEncoding.DecodeString(p.checksum)
		partSums.Write(sum)
	}
	objs, err := f.bucket(in.Bucket)
	if err != nil {
		return nil, f.wrap("CompleteMultipartUpload", err)
	}
	etag := fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(md5s.Sum(nil)), len(parts))
	o := &s3Object{data: whole.Bytes(), etag: etag, modified: f.now(), meta: u.meta}
	if u.sha256 {
		sum := sha256.Sum256(partSums.Bytes())
		o.checksum, o.checksumType = fmt.Sprintf("%s-%d", base64.StdEncoding.EncodeToString(sum[:]), len(parts)), types.ChecksumTypeComposite
	}
	objs[u.key] = o
	delete(f.uploads, uid)
	return &s3.CompleteMultipartUploadOutput{Bucket: in.Bucket, Key: in.Key, ETag: aws.String(etag), ChecksumSHA256: aws.String(o.checksum)}, nil
}

// AbortMultipartUpload drops an upload and its parts.
func (f *S3) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, _ ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	if err := f.enter("AbortMultipartUpload"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	uid := aws.ToString(in.UploadId)
	if _, ok := f.uploads[uid]; !ok {
		return nil, f.wrap("AbortMultipartUpload", s3NoSuchUpload())
	}
	delete(f.uploads, uid)
	return &s3.AbortMultipartUploadOutput{}, nil
}
