package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/checksum"
)

// S3Origin is the part of the S3 API the push Lambda reads the origin with.
type S3Origin interface {
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// MaxCheckedManifestBytes is the largest manifest the push Lambda reads to
// check it. A bigger one is rejected with that reason: split the tree.
const MaxCheckedManifestBytes = 64 << 20

// headConcurrency bounds parallel HeadObject calls for one manifest.
const headConcurrency = 16

// problemKind says what a failed origin check means for the request.
type problemKind int

const (
	problemMissing     problemKind = iota + 1 // not there yet: may still be uploading, retry up to a bound
	problemInvalid                            // there but wrong: reject
	problemUnavailable                        // S3 failed (throttling, 5xx, access): retry, do not reject
)

// originProblem is why a request's content is not usable (yet).
type originProblem struct {
	kind   problemKind
	reason string
	err    error
}

func (p *originProblem) Error() string {
	if p.err != nil {
		return p.reason + ": " + p.err.Error()
	}
	return p.reason
}

func missing(format string, args ...any) *originProblem {
	return &originProblem{kind: problemMissing, reason: fmt.Sprintf(format, args...)}
}

func wrong(format string, args ...any) *originProblem {
	return &originProblem{kind: problemInvalid, reason: fmt.Sprintf(format, args...)}
}

func unavailable(what string, err error) *originProblem {
	return &originProblem{kind: problemUnavailable, reason: what, err: err}
}

// origin checks that what a request names is in the S3 origin.
type origin struct {
	s3     S3Origin
	bucket string
}

// check returns nil when the request's blob, or its manifest and every blob
// the manifest names, are in the origin with the right sizes (and the
// manifest's content hashes to its name and is valid).
func (o origin) check(ctx context.Context, r events.PushRequest) *originProblem {
	switch r.Op {
	case events.OpPut:
		present, p := o.verifyBlob(ctx, r.Blob.SHA256, r.Blob.Size)
		if p == nil && !present {
			return missing("blob %s is not in the origin (s3://%s/%s)", r.Blob.SHA256, o.bucket, events.BlobKey(r.Blob.SHA256))
		}
		return p
	case events.OpSync:
		return o.checkManifest(ctx, r.Manifest.SHA256)
	default:
		return nil // delete names no content
	}
}

// verifyBlob is the push Lambda's one blob check: false when the blob is
// not in the origin; a problem (rejected at once) when it is there but its
// stored SHA-256 checksum does not prove it holds size bytes hashing to sum
// (checksum.Verify: no checksum, another one, another size), because every
// agent would refuse it and stop at that seq.
func (o origin) verifyBlob(ctx context.Context, sum string, size int64) (bool, *originProblem) {
	key := events.BlobKey(sum)
	out, err := o.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &o.bucket, Key: &key, ChecksumMode: s3types.ChecksumModeEnabled})
	switch {
	case awserr.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, unavailable("check s3://"+o.bucket+"/"+key, err)
	}
	if err := checksum.Verify(out, sum, size); err != nil {
		return true, wrong("blob %s in the origin is not proven to hold its bytes (%v): push it again; the CLI uploads it with its SHA-256 checksum", sum, err)
	}
	return true, nil
}

// head returns an object's size, -1 when it does not exist.
func (o origin) head(ctx context.Context, key string) (int64, *originProblem) {
	out, err := o.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &o.bucket, Key: &key})
	switch {
	case err == nil:
		return aws.ToInt64(out.ContentLength), nil
	case awserr.IsNotFound(err):
		return -1, nil
	default:
		return 0, unavailable("check s3://"+o.bucket+"/"+key, err)
	}
}

func (o origin) checkManifest(ctx context.Context, sha string) *originProblem {
	key := events.ManifestKey(sha)
	size, p := o.head(ctx, key)
	switch {
	case p != nil:
		return p
	case size < 0:
		return missing("manifest %s is not in the origin (s3://%s/%s)", sha, o.bucket, key)
	case size > MaxCheckedManifestBytes:
		return wrong("manifest %s has %d bytes, more than the %d the push Lambda checks; split the tree into several syncs", sha, size, MaxCheckedManifestBytes)
	}
	out, err := o.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &o.bucket, Key: &key})
	if err != nil {
		if awserr.IsNotFound(err) {
			return missing("manifest %s is not in the origin (s3://%s/%s)", sha, o.bucket, key)
		}
		return unavailable("read s3://"+o.bucket+"/"+key, err)
	}
	defer out.Body.Close()
	h := sha256.New()
	m, err := events.ParseManifest(io.TeeReader(io.LimitReader(out.Body, MaxCheckedManifestBytes+1), h))
	if err != nil {
		var ve *events.ValidationError
		if !errors.As(err, &ve) {
			return unavailable("read s3://"+o.bucket+"/"+key, err)
		}
		return wrong("manifest %s is invalid: %v", sha, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return wrong("manifest %s does not match its name: its content hashes to %s", sha, got)
	}
	want := map[string]int64{}
	for _, e := range m.Entries {
		if e.Kind() != events.TypeFile {
			continue // dirs and links have no blob
		}
		if prev, ok := want[e.SHA256]; ok && prev != e.Size {
			return wrong("manifest %s lists blob %s with sizes %d and %d", sha, e.SHA256, prev, e.Size)
		}
		want[e.SHA256] = e.Size
	}
	absent, p := o.verifyBlobs(ctx, want)
	if p != nil {
		p.reason = "manifest " + sha + ": " + p.reason
		return p
	}
	if len(absent) > 0 {
		sort.Strings(absent)
		more := ""
		if len(absent) > 3 {
			more = fmt.Sprintf(" and %d more", len(absent)-3)
			absent = absent[:3]
		}
		return missing("manifest %s names blobs that are not in the origin: %s%s", sha, strings.Join(absent, ", "), more)
	}
	return nil
}

// verifyBlobs checks the wanted blobs (sha256 → size) with verifyBlob,
// headConcurrency at a time, and returns those not in the origin, or the
// first problem.
func (o origin) verifyBlobs(ctx context.Context, want map[string]int64) ([]string, *originProblem) {
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		first  *originProblem
		absent []string
		sem    = make(chan struct{}, headConcurrency)
	)
	for blob, size := range want {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			present, p := o.verifyBlob(ctx, blob, size)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case p != nil && first == nil:
				first = p
			case p == nil && !present:
				absent = append(absent, blob)
			}
		}()
	}
	wg.Wait()
	return absent, first
}
