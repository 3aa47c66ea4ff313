package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/checksum"
)

// S3Origin is the part of the S3 API the push Lambda reads the origin with.
// It never lists: a check costs what the request changed, not what the
// origin holds.
type S3Origin interface {
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// PreviousSyncs finds the newest sync of a path in the journal
// (store.PreviousSync).
type PreviousSyncs interface {
	PreviousSync(ctx context.Context, pool, path string) (events.JournalEntry, bool, error)
}

// MaxCheckedManifestBytes is the largest manifest the push Lambda reads to
// check it (events.MaxManifestBytes, about a million entries). A bigger
// one is rejected with that reason: split the tree.
const MaxCheckedManifestBytes = events.MaxManifestBytes

// FunctionMemoryMiB is the push Lambda's memory (the construct sets it).
// A sync of a 1M-entry manifest (about 150 MiB of JSON) against a 1M-blob
// origin holds the new manifest's bytes and entries and the previous
// manifest's compact blob set, about 300 MiB live (docs/benchmarks.md,
// push cost); 1024 MiB keeps that within the Go memory limit
// (lambdamain: 90% of the function's memory) with room for a batch of
// smaller requests, and gives the function about 0.6 vCPU (Lambda's CPU
// grows with memory) for the parse and hash of such a manifest well within
// the 60 s timeout. A push costs GB-seconds only while it runs (tens of
// milliseconds for a usual batch).
const FunctionMemoryMiB = 1024

// headConcurrency bounds parallel HeadObject calls for one manifest.
const headConcurrency = 64

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
	s3       S3Origin
	bucket   string
	pool     string
	previous PreviousSyncs
	log      *slog.Logger
	// manifests bounds the manifest bytes held at once by the requests
	// of a batch (MaxCheckedManifestBytes): a batch of ten syncs of 1M
	// entries checks their manifests one after the other, not all at once.
	manifests *semaphore.Weighted
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
		return o.checkSync(ctx, r.Path, r.Manifest.SHA256)
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

// checkSync checks a sync's manifest and the blobs that the previous sync
// of the same path did not name (events.BlobsToCheck): a re-push of a
// big tree with one changed file costs one manifest read, the previous
// manifest's read and one HeadObject, whatever the tree and the origin
// hold. A re-push of the previous manifest itself costs nothing.
func (o origin) checkSync(ctx context.Context, path, sha string) *originProblem {
	prev, found, err := o.previous.PreviousSync(ctx, o.pool, path)
	if err != nil {
		return unavailable("read the journal", err)
	}
	if found && prev.Manifest.SHA256 == sha {
		return nil // checked when that entry was appended
	}
	// The previous manifest first, kept only as its compact blob set, so
	// that at most one manifest's text and entries are in memory at once.
	var verified events.VerifiedBlobs
	if found {
		data, release, p := o.readManifestData(ctx, prev.Manifest.SHA256)
		var blobs events.CompactBlobs
		if p == nil {
			blobs, err = events.ManifestBlobs(data)
			release()
			if err != nil {
				p = wrong("manifest %s is invalid: %v", prev.Manifest.SHA256, err)
			}
		}
		switch {
		case p != nil && p.kind == problemUnavailable:
			return p
		case p != nil:
			// cannot happen for an appended entry unless the origin was
			// changed by hand: check every blob
			o.log.Warn("previous manifest unusable; checking every blob", "path", path, "seq", prev.Seq, "manifest", prev.Manifest.SHA256, "reason", p.Error())
		default:
			verified = blobs
		}
	}
	want, p := o.manifestBlobsToCheck(ctx, sha, verified)
	if p != nil {
		return p
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

// manifestBlobsToCheck reads, checks and validates the manifest sha and
// returns its blobs that verified does not hold (events.BlobsToCheck). The
// manifest's strings share the bytes read (no second copy of a big
// manifest), and neither outlives the call.
func (o origin) manifestBlobsToCheck(ctx context.Context, sha string, verified events.VerifiedBlobs) (events.BlobSet, *originProblem) {
	data, release, p := o.readManifestData(ctx, sha)
	if p != nil {
		return nil, p
	}
	defer release()
	m, err := events.ParseManifestOwned(data)
	if err != nil {
		return nil, wrong("manifest %s is invalid: %v", sha, err)
	}
	want, err := events.BlobsToCheck(m, verified)
	if err != nil {
		return nil, wrong("manifest %s: %v", sha, err)
	}
	return want, nil
}

// readManifestData reads a manifest's bytes with one GetObject and checks
// that they hash to its name. It holds the manifest's size of o.manifests
// until release is called (on success only).
func (o origin) readManifestData(ctx context.Context, sha string) (data []byte, release func(), _ *originProblem) {
	key := events.ManifestKey(sha)
	out, err := o.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &o.bucket, Key: &key})
	if err != nil {
		if awserr.IsNotFound(err) {
			return nil, nil, missing("manifest %s is not in the origin (s3://%s/%s)", sha, o.bucket, key)
		}
		return nil, nil, unavailable("read s3://"+o.bucket+"/"+key, err)
	}
	defer out.Body.Close()
	size := aws.ToInt64(out.ContentLength)
	if size > MaxCheckedManifestBytes {
		return nil, nil, wrong("manifest %s has %d bytes, more than the %d the push Lambda checks; split the tree into several syncs", sha, size, MaxCheckedManifestBytes)
	}
	weight := max(size, 1)
	if err := o.manifests.Acquire(ctx, weight); err != nil {
		return nil, nil, unavailable("wait to read s3://"+o.bucket+"/"+key, err)
	}
	release = func() { o.manifests.Release(weight) }
	fail := func(p *originProblem) ([]byte, func(), *originProblem) {
		release()
		return nil, nil, p
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(size, 0)+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(out.Body, MaxCheckedManifestBytes+1)); err != nil {
		return fail(unavailable("read s3://"+o.bucket+"/"+key, err))
	}
	data = buf.Bytes()
	if len(data) > MaxCheckedManifestBytes {
		return fail(wrong("manifest %s has more than the %d bytes the push Lambda checks; split the tree into several syncs", sha, MaxCheckedManifestBytes))
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
		return fail(wrong("manifest %s does not match its name: its content hashes to %s", sha, hex.EncodeToString(sum[:])))
	}
	return data, release, nil
}

// verifyBlobs checks the wanted blobs (sha256 → size) with verifyBlob,
// headConcurrency at a time, and returns those not in the origin, or the
// first problem.
func (o origin) verifyBlobs(ctx context.Context, want map[string]int64) ([]string, *originProblem) {
	var (
		mu     sync.Mutex
		heads  errgroup.Group
		first  *originProblem
		absent []string
	)
	heads.SetLimit(headConcurrency)
	for blob, size := range want {
		heads.Go(func() error {
			present, p := o.verifyBlob(ctx, blob, size)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case p != nil && first == nil:
				first = p
			case p == nil && !present:
				absent = append(absent, blob)
			}
			return nil
		})
	}
	_ = heads.Wait()
	return absent, first
}
