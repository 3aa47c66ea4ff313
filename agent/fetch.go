package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// Fetch tuning: files larger than RangedThreshold are fetched with
// parallel ranged GETs of PartSize bytes, RangedWorkers at a time; up to
// FileWorkers files are fetched at once.
const (
	RangedThreshold = 64 << 20
	PartSize        = 16 << 20
	RangedWorkers   = 4
	FileWorkers     = 32
)

// copyBuffers are the buffers of blob downloads: large reads mean few
// syscalls per blob. A free list, not a sync.Pool: every garbage
// collection empties a sync.Pool, and with the agent's small heap
// collections are frequent, so its 256 KiB buffers were allocated again
// and again (and each allocation brought the next collection nearer).
var copyBuffers = newBufferList(FileWorkers+RangedWorkers, 256<<10)

// bufferList keeps up to cap(free) buffers of size bytes for reuse.
type bufferList struct {
	free chan []byte
	size int
}

func newBufferList(n, size int) *bufferList {
	return &bufferList{free: make(chan []byte, n), size: size}
}

func (l *bufferList) get() []byte {
	select {
	case b := <-l.free:
		return b
	default:
		return make([]byte, l.size)
	}
}

func (l *bufferList) put(b []byte) {
	select {
	case l.free <- b:
	default: // more in use than kept: let this one go
	}
}

// fetchBackoff retries a whole blob when the connection breaks mid-body
// (the SDK retries the request itself, not a body that stops halfway).
var fetchBackoff = awserr.Backoff{Initial: 200 * time.Millisecond, Factor: 2, Max: 3 * time.Second, Attempts: 4}

// origin reads blobs and manifests from the S3 origin bucket.
type origin struct {
	s3     S3
	bucket string
}

func (o origin) where(key string) string { return "s3://" + o.bucket + "/" + key }

// getErr turns a failed GetObject into an agent error: a missing object is
// bad input (the journal names content the origin does not have), anything
// else is retryable.
func (o origin) getErr(what, key string, err error) error {
	if awsKind(err, KindBadInput) == KindBadInput {
		return &Error{Kind: KindBadInput, Err: fmt.Errorf("%s is missing from the origin (%s): %s", what, o.where(key), awserr.Message(err))}
	}
	return &Error{Kind: KindRetryable, Err: fmt.Errorf("get %s (%s): %w", what, o.where(key), err)}
}

// manifest downloads, verifies and parses the manifest ref names.
func (o origin) manifest(ctx context.Context, ref events.ManifestRef) (events.Manifest, int64, error) {
	key := events.ManifestKey(ref.SHA256)
	what := "manifest " + short(ref.SHA256)
	var data []byte
	err := awserr.Retry(ctx, fetchBackoff, func(ctx context.Context) error {
		out, err := o.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &o.bucket, Key: &key})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		data, err = io.ReadAll(io.LimitReader(out.Body, events.MaxManifestBytes+1))
		return err
	})
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return events.Manifest{}, 0, err
		}
		return events.Manifest{}, 0, o.getErr(what, key, err)
	}
	n := int64(len(data))
	if n > events.MaxManifestBytes {
		return events.Manifest{}, n, badInput("%s: larger than %d bytes", what, events.MaxManifestBytes)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != ref.SHA256 {
		return events.Manifest{}, n, badInput("%s: sha256 mismatch: got %s", what, short(got))
	}
	m, err := events.ParseManifestBytes(data)
	if err != nil {
		return m, n, badInput("%s: %v", what, err)
	}
	return m, n, nil
}

// blob downloads blob b into a new file at dst, verifies its size and
// sha256, and calls finish on the verified file before closing it. On any
// error dst is removed.
func (o origin) blob(ctx context.Context, b events.Blob, dst string, finish func(*os.File) error) (int64, error) {
	var n int64
	err := awserr.Retry(ctx, fetchBackoff, func(ctx context.Context) error {
		var err error
		n, err = o.blobOnce(ctx, b, dst, finish)
		return err
	})
	if err != nil {
		os.Remove(dst)
		var ae *Error
		switch {
		case errors.As(err, &ae):
			return n, err
		case isNoSpace(err):
			return n, retryable("disk full while staging blob %s (%d bytes): %v", short(b.SHA256), b.Size, err)
		default:
			return n, o.getErr("blob "+short(b.SHA256), events.BlobKey(b.SHA256), err)
		}
	}
	return n, nil
}

func (o origin) blobOnce(ctx context.Context, b events.Blob, dst string, finish func(*os.File) error) (int64, error) {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	if b.Size > RangedThreshold {
		n, err = o.ranged(ctx, b, f)
	} else {
		n, err = o.whole(ctx, b, f)
	}
	if err != nil {
		return n, err
	}
	if err := finish(f); err != nil {
		return n, stageErr(err)
	}
	return n, f.Close()
}

// whole streams the blob in one GET, hashing as it writes.
func (o origin) whole(ctx context.Context, b events.Blob, f *os.File) (int64, error) {
	key := events.BlobKey(b.SHA256)
	out, err := o.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &o.bucket, Key: &key})
	if err != nil {
		return 0, err
	}
	defer out.Body.Close()
	if out.ContentLength != nil && *out.ContentLength != b.Size {
		return 0, badInput("blob %s: size mismatch: the origin has %d bytes, the journal says %d", short(b.SHA256), *out.ContentLength, b.Size)
	}
	h := sha256.New()
	buf := copyBuffers.get()
	defer copyBuffers.put(buf)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(out.Body, b.Size+1), buf)
	if err != nil {
		return n, err
	}
	if n != b.Size {
		return n, badInput("blob %s: size mismatch: got %d bytes, the journal says %d", short(b.SHA256), n, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
		return n, badInput("blob %s: sha256 mismatch: got %s", short(b.SHA256), short(got))
	}
	return n, nil
}

// ranged fetches a large blob with parallel ranged GETs written at their
// offsets, then hashes the file (read back from the page cache).
func (o origin) ranged(ctx context.Context, b events.Blob, f *os.File) (int64, error) {
	key := events.BlobKey(b.SHA256)
	if err := f.Truncate(b.Size); err != nil {
		return 0, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(RangedWorkers)
	for off := int64(0); off < b.Size; off += PartSize {
		end := min(off+PartSize, b.Size) - 1
		g.Go(func() error {
			out, err := o.s3.GetObject(gctx, &s3.GetObjectInput{
				Bucket: &o.bucket, Key: &key, Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
			})
			if err != nil {
				return err
			}
			defer out.Body.Close()
			if total, ok := rangeTotal(aws.ToString(out.ContentRange)); ok && total != b.Size {
				return badInput("blob %s: size mismatch: the origin has %d bytes, the journal says %d", short(b.SHA256), total, b.Size)
			}
			want := end - off + 1
			buf := copyBuffers.get()
			defer copyBuffers.put(buf)
			n, err := io.CopyBuffer(io.NewOffsetWriter(f, off), io.LimitReader(out.Body, want+1), buf)
			if err != nil {
				return err
			}
			if n != want {
				return badInput("blob %s: size mismatch: range %d-%d returned %d bytes", short(b.SHA256), off, end, n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, b.Size)); err != nil {
		return 0, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
		return b.Size, badInput("blob %s: sha256 mismatch: got %s", short(b.SHA256), short(got))
	}
	return b.Size, nil
}

// rangeTotal parses the total of a Content-Range "bytes a-b/total".
func rangeTotal(cr string) (int64, bool) {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	return n, err == nil
}

// short abbreviates a sha256 for messages.
func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12] + "…"
	}
	return sha
}
