package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/testenv"
)

// badOrigin is an S3 origin on 127.0.0.1 that serves objects and
// misbehaves as told: each GET of a key (and range) takes the next fault
// queued for it; with none left it answers properly.
type badOrigin struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	objects map[string][]byte   // by key
	faults  map[string][]string // by "key" or "key bytes=a-b"
	gets    []string            // "key range" of every GET, in order
}

// Faults.
const (
	faultSlowDown   = "503 SlowDown"
	fault500        = "500"
	faultShortBody  = "short body"      // Content-Length says all, half is sent
	faultReset      = "reset mid-body"  // half is sent, then a TCP reset
	faultTrickle    = "1 byte/s"        // the body at one byte a second
	faultStall      = "stalled headers" // no answer at all for a minute
	faultWholeRange = "200 to Range"    // the whole object, 200, to a range request
)

func newBadOrigin(t *testing.T) *badOrigin {
	o := &badOrigin{t: t, objects: map[string][]byte{}, faults: map[string][]string{}}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.CloseClientConnections)
	t.Cleanup(o.srv.Close)
	return o
}

func (o *badOrigin) put(data []byte) events.Blob {
	b := events.Blob{SHA256: sum(data), Size: int64(len(data)), Mode: 0o644}
	o.mu.Lock()
	o.objects[events.BlobKey(b.SHA256)] = data
	o.mu.Unlock()
	return b
}

func (o *badOrigin) fail(key string, faults ...string) {
	o.mu.Lock()
	o.faults[key] = append(o.faults[key], faults...)
	o.mu.Unlock()
}

func (o *badOrigin) serve(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/origin/")
	rng := r.Header.Get("Range")
	o.mu.Lock()
	o.gets = append(o.gets, strings.TrimSpace(key+" "+rng))
	data, ok := o.objects[key]
	var fault string
	for _, k := range []string{strings.TrimSpace(key + " " + rng), key} {
		if q := o.faults[k]; len(q) > 0 {
			fault, o.faults[k] = q[0], q[1:]
			break
		}
	}
	o.mu.Unlock()
	if !ok {
		w.WriteHeader(404)
		io.WriteString(w, `<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`)
		return
	}
	body, status := data, http.StatusOK
	if rng != "" && fault != faultWholeRange {
		var a, b int64
		if _, err := fmt.Sscanf(rng, "bytes=%d-%d", &a, &b); err != nil {
			o.t.Errorf("bad Range %q", rng)
			return
		}
		body, status = data[a:b+1], http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(data)))
	}
	switch fault {
	case faultSlowDown:
		w.WriteHeader(503)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		return
	case fault500:
		w.WriteHeader(500)
		io.WriteString(w, `<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>`)
		return
	case faultStall:
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	switch fault {
	case faultShortBody:
		w.Write(body[:len(body)/2])
		panic(http.ErrAbortHandler) // close the connection short of Content-Length
	case faultReset:
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			o.t.Error(err)
			return
		}
		conn.(*net.TCPConn).SetLinger(0) // close with a reset
		conn.Close()
	case faultTrickle:
		for i := range body {
			if _, err := w.Write(body[i : i+1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
	default:
		w.Write(body)
	}
}

// originFor is the agent's origin on o, through the agent's S3 getter,
// with the timeouts short enough for a test.
func (o *badOrigin) origin() origin {
	g := NewS3Getter(s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(o.srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")}).Options())
	return origin{s3: g, bucket: "origin", budget: awserr.NewBudget(fetchBackoff),
		headerTimeout: 500 * time.Millisecond, idleTimeout: 500 * time.Millisecond}
}

func (o *badOrigin) getsOf(key string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, g := range o.gets {
		if strings.HasPrefix(g, key) {
			out = append(out, g)
		}
	}
	return out
}

// TestFetchRidesOutAMisbehavingOrigin: every fault an S3 read can meet
// ends in the verified blob, retried as it should be: throttling beyond
// four tries, server errors, a body shorter than its Content-Length, a
// connection reset mid-body, a body at one byte a second, headers that
// never come, a 200 answer to a range request (only that range is
// fetched again). None of them may hang the fetch.
func TestFetchRidesOutAMisbehavingOrigin(t *testing.T) {
	small := gen("small", 200<<10)
	for _, tc := range []struct {
		fault string
		times int
		gets  int // GETs of the blob in all
	}{
		{faultSlowDown, 7, 8},
		{fault500, 2, 3},
		{faultShortBody, 2, 3},
		{faultReset, 2, 3},
		{faultTrickle, 1, 2},
		{faultStall, 2, 3},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			bo := newBadOrigin(t)
			b := bo.put(small)
			key := events.BlobKey(b.SHA256)
			for range tc.times {
				bo.fail(key, tc.fault)
			}
			dst := filepath.Join(t.TempDir(), "blob")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			n, err := bo.origin().blob(ctx, b, dst, func(*os.File) error { return nil })
			if err != nil {
				t.Fatalf("fetch after %d × %s: %v (kind %s)", tc.times, tc.fault, err, KindOf(err))
			}
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got, small) || n < b.Size {
				t.Fatalf("staged %d bytes (fetched %d), want the blob's %d", len(got), n, b.Size)
			}
			if gets := bo.getsOf(key); len(gets) != tc.gets {
				t.Fatalf("%d GETs, want %d: %v", len(gets), tc.gets, gets)
			}
		})
	}

	t.Run("range answered with 200 and a short range", func(t *testing.T) {
		bo := newBadOrigin(t)
		big := gen("big", RangedThreshold+PartSize/2)
		b := bo.put(big)
		key := events.BlobKey(b.SHA256)
		second := fmt.Sprintf("%s bytes=%d-%d", key, PartSize, 2*PartSize-1)
		third := fmt.Sprintf("%s bytes=%d-%d", key, 2*PartSize, 3*PartSize-1)
		bo.fail(second, faultWholeRange)
		bo.fail(third, faultReset)
		dst := filepath.Join(t.TempDir(), "blob")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := bo.origin().blob(ctx, b, dst, func(*os.File) error { return nil }); err != nil {
			t.Fatalf("ranged fetch: %v (kind %s)", err, KindOf(err))
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, big) {
			t.Fatal("staged blob differs")
		}
		parts := int((b.Size + PartSize - 1) / PartSize)
		gets := bo.getsOf(key)
		count := map[string]int{}
		for _, g := range gets {
			count[g]++
		}
		if len(gets) != parts+2 || count[second] != 2 || count[third] != 2 {
			t.Fatalf("%d GETs for %d parts, want each part once and the two failed ranges once more: %v", len(gets), parts, gets)
		}
	})
}

// TestFetchBudgetIsShared: one budget bounds the retries of every GET of
// an apply: with the origin failing every request, 36 parallel fetches
// give up together, well before each spends its own tries, and say the
// budget ran out.
func TestFetchBudgetIsShared(t *testing.T) {
	bo := newBadOrigin(t)
	o := bo.origin()
	var blobs []events.Blob
	for i := range 36 {
		b := bo.put(gen("f"+strconv.Itoa(i), 1000))
		for range 100 {
			bo.fail(events.BlobKey(b.SHA256), fault500)
		}
		blobs = append(blobs, b)
	}
	dir := t.TempDir()
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	for i, b := range blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = o.blob(context.Background(), b, filepath.Join(dir, strconv.Itoa(i)), func(*os.File) error { return nil })
		}()
	}
	wg.Wait()
	used := 0
	for i, err := range errs {
		if err == nil || KindOf(err) != KindRetryable {
			t.Fatalf("fetch %d: %v; want a retryable failure", i, err)
		}
		if strings.Contains(err.Error(), "retry budget used up") {
			used++
		}
	}
	bo.mu.Lock()
	gets := len(bo.gets)
	bo.mu.Unlock()
	if max := 36 + awserr.BudgetTokens/awserr.RetryCost; used == 0 || gets > max {
		t.Fatalf("%d GETs (at most %d with one shared budget), %d fetches saw the budget used up", gets, max, used)
	}
}

// blockingS3 never answers: each GET waits until its context ends.
type blockingS3 struct{}

func (blockingS3) GetObject(ctx context.Context, _ *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestApplyHasADeadline: an entry that cannot finish (an origin that
// never answers, below the GET timeouts' radar) fails retryable at its
// deadline, naming it, instead of holding the apply lock; the watermark
// stays.
func TestApplyHasADeadline(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{EntryTimeout: time.Second})
	mountedVolume(t, a, 64)
	w.put("f", gen("f", 1000), 0o644)
	a.origin.s3 = blockingS3{}
	a.origin.headerTimeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var r Report
	err := a.Apply(ctx, 0, false, &r)
	if KindOf(err) != KindRetryable || !strings.Contains(err.Error(), "within its deadline") || ctx.Err() != nil {
		t.Fatalf("apply: %v (kind %s); want a retryable failure at the entry's deadline", err, KindOf(err))
	}
	if watermark(t, cfg.MountPath) != 0 {
		t.Fatal("watermark moved")
	}
}
