package agent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
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

// fetchBackoff spaces the tries of one GET (equal jitter, up to 20 s
// apart: long enough to ride out S3's SlowDown). Attempts bounds the tries
// of one GET for errors other than throttles; the apply's retry budget
// (awserr.Budget) bounds all retries of all its GETs together.
var fetchBackoff = awserr.Backoff{Initial: 200 * time.Millisecond, Factor: 2, Max: 20 * time.Second, Attempts: 8}

// Timeouts of one GET: for its response headers, and for each next read
// of its body (a stalled or trickling connection is cut and retried
// instead of holding the apply until its deadline).
const (
	GetHeaderTimeout = 30 * time.Second
	GetIdleTimeout   = 30 * time.Second
)

// origin reads blobs and manifests from the S3 origin bucket.
type origin struct {
	s3     S3
	bucket string
	// budget is the retry budget of the apply running (nil: each call
	// gets its own).
	budget *awserr.Budget
	// headerTimeout and idleTimeout: GetHeaderTimeout and GetIdleTimeout
	// unless set (tests).
	headerTimeout, idleTimeout time.Duration
}

func (o origin) where(key string) string { return "s3://" + o.bucket + "/" + key }

func (o origin) retry(ctx context.Context, fn func(context.Context) error) error {
	b := o.budget
	if b == nil {
		b = awserr.NewBudget(fetchBackoff)
	}
	return b.Retry(ctx, fn)
}

// stallError is a GET that stopped making progress: a network timeout
// (awserr retries it).
type stallError struct {
	what string
	d    time.Duration
}

func (e *stallError) Error() string   { return fmt.Sprintf("no %s for %s", e.what, e.d) }
func (e *stallError) Timeout() bool   { return true }
func (e *stallError) Temporary() bool { return true }

// get is one GetObject bounded by the header timeout, whose body is
// bounded by the idle timeout: each read must bring bytes within it. The
// caller closes the body.
func (o origin) get(ctx context.Context, in *s3.GetObjectInput) (*s3.GetObjectOutput, error) {
	ht, it := cmp.Or(o.headerTimeout, GetHeaderTimeout), cmp.Or(o.idleTimeout, GetIdleTimeout)
	ctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(ht, func() { cancel(&stallError{"response headers", ht}) })
	out, err := o.s3.GetObject(ctx, in)
	if !t.Stop() || err != nil {
		var se *stallError
		if c := context.Cause(ctx); errors.As(c, &se) {
			err = c
		}
		if out != nil {
			out.Body.Close()
		}
		cancel(nil)
		return nil, err
	}
	body := &idleBody{rc: out.Body, ctx: ctx, cancel: cancel, idle: it}
	body.timer = time.AfterFunc(it, func() { cancel(&stallError{"body bytes", it}) })
	out.Body = body
	return out, nil
}

// idleBody is a response body that ends its request when no read brings
// bytes for idle.
type idleBody struct {
	rc     io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	idle   time.Duration
	timer  *time.Timer
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	if err != nil && err != io.EOF {
		var se *stallError
		if c := context.Cause(b.ctx); errors.As(c, &se) {
			err = c
		}
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// getErr turns a failed GetObject into an agent error: a missing object is
// bad input (the journal names content the origin does not have), anything
// else is as awsKind says (a denied GET: bad input naming the permission).
func (o origin) getErr(what, key string, err error) error {
	if awserr.IsNotFound(err) {
		return &Error{Kind: KindBadInput, Err: fmt.Errorf("%s is missing from the origin (%s): %s", what, o.where(key), awserr.Message(err))}
	}
	return awsFailure(err, "get %s (%s)", what, o.where(key))
}

// manifest downloads, verifies and parses the manifest ref names.
func (o origin) manifest(ctx context.Context, ref events.ManifestRef) (events.Manifest, int64, error) {
	key := events.ManifestKey(ref.SHA256)
	what := "manifest " + short(ref.SHA256)
	var data []byte
	err := o.retry(ctx, func(ctx context.Context) error {
		out, err := o.get(ctx, &s3.GetObjectInput{Bucket: &o.bucket, Key: &key})
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
// sha256, and calls finish on the verified file before closing it. Each
// GET is retried on its own (a failed range re-fetches only that range),
// all under the apply's retry budget. On any error dst is removed.
func (o origin) blob(ctx context.Context, b events.Blob, dst string, finish func(*os.File) error) (int64, error) {
	n, err := o.blobOnce(ctx, b, dst, finish)
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

// local is an error of the local side of a fetch (the staged file):
// never retried as a GET.
type localErr struct{ err error }

func (e *localErr) Error() string { return e.err.Error() }
func (e *localErr) Unwrap() error { return e.err }

// localWriter marks f's write errors as local.
type localWriter struct{ w io.Writer }

func (l localWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if err != nil {
		err = &localErr{err}
	}
	return n, err
}

// whole streams the blob in one GET, hashing as it writes; a failed GET
// starts the file again.
func (o origin) whole(ctx context.Context, b events.Blob, f *os.File) (int64, error) {
	key := events.BlobKey(b.SHA256)
	var fetched int64
	err := o.retry(ctx, func(ctx context.Context) error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return &localErr{err}
		}
		if err := f.Truncate(0); err != nil {
			return &localErr{err}
		}
		out, err := o.get(ctx, &s3.GetObjectInput{Bucket: &o.bucket, Key: &key})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		if out.ContentLength != nil && *out.ContentLength != b.Size {
			return badInput("blob %s: size mismatch: the origin has %d bytes, the journal says %d", short(b.SHA256), *out.ContentLength, b.Size)
		}
		h := sha256.New()
		buf := copyBuffers.get()
		defer copyBuffers.put(buf)
		n, err := io.CopyBuffer(io.MultiWriter(localWriter{f}, h), io.LimitReader(out.Body, b.Size+1), buf)
		fetched += n
		if err != nil {
			return err
		}
		if n != b.Size {
			return badInput("blob %s: size mismatch: got %d bytes, the journal says %d", short(b.SHA256), n, b.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
			return badInput("blob %s: sha256 mismatch: got %s", short(b.SHA256), short(got))
		}
		return nil
	})
	return fetched, unwrapLocal(err)
}

func unwrapLocal(err error) error {
	var le *localErr
	if errors.As(err, &le) {
		return le.err
	}
	return err
}

// ranged fetches a large blob with parallel ranged GETs written at their
// offsets, each retried on its own, then hashes the file (read back from
// the page cache). Each answer must be a 206 whose Content-Range is the
// range asked for: a 200 (the whole object) is retried.
func (o origin) ranged(ctx context.Context, b events.Blob, f *os.File) (int64, error) {
	key := events.BlobKey(b.SHA256)
	if err := f.Truncate(b.Size); err != nil {
		return 0, err
	}
	var fetched atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(RangedWorkers)
	for off := int64(0); off < b.Size; off += PartSize {
		end := min(off+PartSize, b.Size) - 1
		g.Go(func() error {
			return unwrapLocal(o.retry(gctx, func(ctx context.Context) error {
				n, err := o.part(ctx, b, key, f, off, end)
				fetched.Add(n)
				return err
			}))
		})
	}
	if err := g.Wait(); err != nil {
		return fetched.Load(), err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, b.Size)); err != nil {
		return fetched.Load(), err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
		return fetched.Load(), badInput("blob %s: sha256 mismatch: got %s", short(b.SHA256), short(got))
	}
	return fetched.Load(), nil
}

// errWholeForRange: the origin answered a range request with something
// else than that range; retried (a proxy or a transient fault, not the
// content).
type rangeAnswerError struct{ want, got string }

func (e *rangeAnswerError) Error() string {
	return fmt.Sprintf("asked for bytes %s, the origin answered Content-Range %q (want a 206 with that range)", e.want, e.got)
}
func (e *rangeAnswerError) Timeout() bool   { return true } // retried like a broken connection
func (e *rangeAnswerError) Temporary() bool { return true }

// part fetches bytes off..end of b into f.
func (o origin) part(ctx context.Context, b events.Blob, key string, f *os.File, off, end int64) (int64, error) {
	out, err := o.get(ctx, &s3.GetObjectInput{
		Bucket: &o.bucket, Key: &key, Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
	})
	if err != nil {
		return 0, err
	}
	defer out.Body.Close()
	cr := aws.ToString(out.ContentRange)
	if total, ok := rangeTotal(cr); ok && total != b.Size {
		return 0, badInput("blob %s: size mismatch: the origin has %d bytes, the journal says %d", short(b.SHA256), total, b.Size)
	}
	if want := fmt.Sprintf("%d-%d", off, end); cr != "bytes "+want+"/"+strconv.FormatInt(b.Size, 10) {
		return 0, &rangeAnswerError{want: want, got: cr}
	}
	want := end - off + 1
	buf := copyBuffers.get()
	defer copyBuffers.put(buf)
	n, err := io.CopyBuffer(localWriter{io.NewOffsetWriter(f, off)}, io.LimitReader(out.Body, want+1), buf)
	if err != nil {
		return n, err
	}
	if n != want {
		return n, badInput("blob %s: size mismatch: range %d-%d returned %d bytes", short(b.SHA256), off, end, n)
	}
	return n, nil
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
