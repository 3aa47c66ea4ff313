package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
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
	// Plan is what the push does on its target (with --dry-run, or for a
	// sync checked by the deletion guard).
	Plan *Plan `json:"plan,omitempty"`
	// DryRun says nothing was uploaded or sent.
	DryRun bool `json:"dryRun,omitempty"`
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
	if a.DryRun || op == events.OpSync && a.Guard != nil {
		want := map[string]entryState{}
		if op == events.OpSync {
			m, err := events.ParseManifestBytes(manifest)
			if err != nil {
				return Sent{}, err
			}
			for _, e := range m.Entries {
				if e.Kind() != events.TypeDir {
					want[joinPath(dpath, e.Path)] = stateOf(e)
				}
			}
		} else {
			want[dpath] = stateOf(events.ManifestEntry{Type: events.TypeFile, SHA256: s.Blob.SHA256, Size: s.Blob.Size, Mode: s.Blob.Mode})
		}
		p, err := a.plan(ctx, dpath, want)
		if err != nil {
			return Sent{}, err
		}
		s.Plan = &p
		if a.DryRun {
			s.DryRun = true
			return s, nil
		}
		if err := a.Guard.refuse(p, dpath); err != nil {
			return Sent{}, err
		}
	}
	if err := a.uploadBlobs(ctx, files, &s); err != nil {
		return Sent{}, err
	}
	if op == events.OpSync {
		key := events.ManifestKey(s.Manifest)
		have, err := a.verified(ctx, key, s.Manifest, int64(len(manifest)))
		if err != nil {
			return Sent{}, err
		}
		if !have {
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

// uploadBlobs uploads the distinct blobs the origin does not hold
// verified (checksum.Verify): missing, or there with other bytes, another
// size or no checksum, which an upload overwrites with the right bytes.
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
		ok, err := a.verified(ctx, events.BlobKey(order[i]), order[i], byBlob[order[i]].size)
		missing[i] = !ok
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
