package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/schollz/progressbar/v3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// DefaultPartSize is the multipart threshold and part size.
const DefaultPartSize = 64 << 20

// headConcurrency bounds parallel HeadObject calls.
const headConcurrency = 16

// Sent is one request sent to the push queue, with what it took.
type Sent struct {
	RequestID string       `json:"requestId"`
	Op        events.Op    `json:"op"`
	Path      string       `json:"path"`
	Blob      *events.Blob `json:"blob,omitempty"`
	Manifest  string       `json:"manifest,omitempty"` // sha256 of a sync's manifest
	MessageID string       `json:"messageId"`
	SentAt    time.Time    `json:"sentAt"`
	// Files and Bytes are the content pushed; Uploaded* what was missing
	// from the origin and sent; Present what the origin had already.
	Files         int   `json:"files"`
	Bytes         int64 `json:"bytes"`
	UploadedBlobs int   `json:"uploadedBlobs"`
	UploadedBytes int64 `json:"uploadedBytes"`
	PresentBlobs  int   `json:"presentBlobs"`
	// ManifestUploaded is false when the origin had the manifest already.
	ManifestUploaded bool `json:"manifestUploaded,omitempty"`
	// Warnings says what the push changed on the way (special mode bits
	// dropped, sparse files made dense); also printed on stderr.
	Warnings []string `json:"warnings,omitempty"`
}

// NewRequestID returns a fresh request ID: "cli-", the UTC time, and 64
// random bits.
func NewRequestID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "cli-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Push sends LOCAL to DEST: a file as a put of its blob, a directory as a
// sync of its manifest. Blobs are uploaded only when the origin lacks them
// (HeadObject), large ones in parts; the manifest after its blobs; then one
// message with a fresh request ID goes to the push queue.
func (a *App) Push(ctx context.Context, local, rawDest string) (Sent, error) {
	d, err := parseDest(rawDest)
	if err != nil {
		return Sent{}, err
	}
	op, files, err := scan(local)
	if err != nil {
		return Sent{}, err
	}
	dpath, err := d.target(op, baseName(local))
	if err != nil {
		return Sent{}, err
	}
	if err := hashFiles(ctx, files); err != nil {
		return Sent{}, err
	}
	s := Sent{Op: op, Path: dpath, Files: len(files), Warnings: warnings(files)}
	for _, w := range s.Warnings {
		fmt.Fprintf(a.errOut(), "volsd: warning: %s\n", w)
	}
	for _, f := range files {
		s.Bytes += f.size
	}
	var manifest []byte
	if op == events.OpSync {
		if manifest, s.Manifest, err = buildManifest(files); err != nil {
			return Sent{}, err
		}
	} else {
		f := files[0]
		s.Blob = &events.Blob{SHA256: f.sha256, Size: f.size, Mode: f.mode}
	}
	if err := a.uploadBlobs(ctx, files, &s); err != nil {
		return Sent{}, err
	}
	if op == events.OpSync {
		key := events.ManifestKey(s.Manifest)
		have, err := a.size(ctx, key)
		if err != nil {
			return Sent{}, err
		}
		if have != int64(len(manifest)) {
			if err := a.putSmall(ctx, key, s.Manifest, bytes.NewReader(manifest), int64(len(manifest))); err != nil {
				return Sent{}, err
			}
			s.ManifestUploaded = true
		}
	}
	req := events.PushRequest{Version: events.PushVersion, Op: op, Path: dpath, Blob: s.Blob}
	if op == events.OpSync {
		req.Manifest = &events.ManifestRef{SHA256: s.Manifest}
	}
	return s, a.send(ctx, req, &s)
}

// Delete asks the pool to delete DEST (a file or a tree).
func (a *App) Delete(ctx context.Context, rawDest string) (Sent, error) {
	pd, err := parseDest(rawDest)
	if err != nil {
		return Sent{}, err
	}
	d, err := pd.target(events.OpDelete, "")
	if err != nil {
		return Sent{}, err
	}
	s := Sent{Op: events.OpDelete, Path: d}
	return s, a.send(ctx, events.PushRequest{Version: events.PushVersion, Op: events.OpDelete, Path: d}, &s)
}

// send puts one request on the push queue with a fresh request ID.
func (a *App) send(ctx context.Context, req events.PushRequest, s *Sent) error {
	req.RequestID = NewRequestID(a.now())
	if err := req.Validate(); err != nil {
		return inputErr("%v", err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var out *sqs.SendMessageOutput
	err = awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		var err error
		out, err = a.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(a.Cfg.QueueURL), MessageBody: aws.String(string(body))})
		return err
	})
	if err != nil {
		return fmt.Errorf("send the request to %s: %w", a.Cfg.QueueURL, err)
	}
	s.RequestID, s.MessageID, s.SentAt = req.RequestID, aws.ToString(out.MessageId), a.now()
	return nil
}

// size returns an origin object's size, -1 when it does not exist.
func (a *App) size(ctx context.Context, key string) (int64, error) {
	var out *s3.HeadObjectOutput
	err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		var err error
		out, err = a.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(a.Cfg.Bucket), Key: aws.String(key)})
		return err
	})
	switch {
	case err == nil:
		return aws.ToInt64(out.ContentLength), nil
	case awserr.IsNotFound(err):
		return -1, nil
	default:
		return 0, fmt.Errorf("check s3://%s/%s: %w", a.Cfg.Bucket, key, err)
	}
}

// uploadBlobs uploads the distinct blobs the origin lacks (or holds with
// another size, which can only be a damaged object).
func (a *App) uploadBlobs(ctx context.Context, files []localFile, s *Sent) error {
	byBlob := map[string]localFile{}
	var order []string
	for _, f := range files {
		if _, ok := byBlob[f.sha256]; !ok {
			byBlob[f.sha256] = f
			order = append(order, f.sha256)
		}
	}
	missing := make([]bool, len(order))
	if err := parallel(ctx, len(order), headConcurrency, func(ctx context.Context, i int) error {
		have, err := a.size(ctx, events.BlobKey(order[i]))
		missing[i] = have != byBlob[order[i]].size
		return err
	}); err != nil {
		return err
	}
	var todo []localFile
	var total int64
	for i, sha := range order {
		if missing[i] {
			todo = append(todo, byBlob[sha])
			total += byBlob[sha].size
		} else {
			s.PresentBlobs++
		}
	}
	if len(todo) == 0 {
		return nil
	}
	var bar *progressbar.ProgressBar
	if a.Progress {
		bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(a.errOut()), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription(fmt.Sprintf("uploading %d blobs", len(todo))), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionSetWidth(30))
		defer func() { _ = bar.Finish() }()
	}
	uploads := a.Uploads
	if uploads <= 0 {
		uploads = 4
	}
	err := parallel(ctx, len(todo), uploads, func(ctx context.Context, i int) error {
		return a.uploadFile(ctx, todo[i], bar)
	})
	if err != nil {
		return err
	}
	s.UploadedBlobs, s.UploadedBytes = len(todo), total
	return nil
}

// uploadFile uploads one file as blobs/<sha256>: in one PutObject with its
// SHA-256 checksum (S3 refuses a body that does not match) when it is
// smaller than the part size, else in parts. A file that changed since it
// was hashed is withdrawn from the origin and the push fails.
func (a *App) uploadFile(ctx context.Context, f localFile, bar *progressbar.ProgressBar) error {
	fh, err := openLocal(f.abs)
	if err != nil {
		return err
	}
	defer fh.Close()
	key := events.BlobKey(f.sha256)
	body := &progressFile{f: fh, size: f.size, bar: bar}
	partSize := a.PartSize
	if partSize <= 0 {
		partSize = DefaultPartSize
	}
	partSize = max(partSize, manager.MinUploadPartSize)
	if f.size < partSize {
		err = a.putSmall(ctx, key, f.sha256, body, f.size)
	} else {
		up := manager.NewUploader(a.S3, func(u *manager.Uploader) { u.PartSize, u.Concurrency = partSize, 4 })
		_, err = up.Upload(ctx, &s3.PutObjectInput{Bucket: aws.String(a.Cfg.Bucket), Key: aws.String(key), Body: body})
	}
	if err != nil {
		return fmt.Errorf("upload %s to s3://%s/%s: %w", f.abs, a.Cfg.Bucket, key, err)
	}
	if !f.unchanged() {
		_, derr := a.S3.DeleteObject(context.WithoutCancel(ctx), &s3.DeleteObjectInput{Bucket: aws.String(a.Cfg.Bucket), Key: aws.String(key)})
		if derr != nil {
			return inputErr("%s changed while it was pushed, and withdrawing s3://%s/%s failed (%v): delete that object, then push again", f.abs, a.Cfg.Bucket, key, derr)
		}
		return inputErr("%s changed while it was pushed; nothing was sent: push again", f.abs)
	}
	return nil
}

// putSmall uploads one object in one PutObject with its SHA-256 checksum.
func (a *App) putSmall(ctx context.Context, key, sha string, body io.ReadSeeker, size int64) error {
	raw, err := hex.DecodeString(sha)
	if err != nil {
		return err
	}
	sum := base64.StdEncoding.EncodeToString(raw)
	return awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := a.S3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(a.Cfg.Bucket), Key: aws.String(key), Body: body,
			ContentLength: aws.Int64(size), ChecksumSHA256: aws.String(sum),
		})
		return err
	})
}

// progressFile is a file that counts what is read of it into a progress
// bar, at most its size (retries and checksum passes re-read).
type progressFile struct {
	f    *os.File
	size int64
	seen atomic.Int64
	bar  *progressbar.ProgressBar
}

func (p *progressFile) count(n int) {
	if p.bar == nil || n <= 0 {
		return
	}
	after := p.seen.Add(int64(n))
	before := after - int64(n)
	if add := min(after, p.size) - min(before, p.size); add > 0 {
		_ = p.bar.Add64(add)
	}
}

func (p *progressFile) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	p.count(n)
	return n, err
}

func (p *progressFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.f.ReadAt(b, off)
	p.count(n)
	return n, err
}

func (p *progressFile) Seek(off int64, whence int) (int64, error) { return p.f.Seek(off, whence) }

// parallel runs fn for 0..n-1, at most limit at a time, and returns the
// first error (the others are cancelled).
func parallel(ctx context.Context, n, limit int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, limit)
	)
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
