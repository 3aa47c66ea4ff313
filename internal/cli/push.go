package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/sync/errgroup"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// DefaultPartSize is the multipart threshold and part size.
const DefaultPartSize = 64 << 20

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
	// VerifiedBlobs of them were named by the previous sync of the same
	// path (not checked again); CheckedBlobs were checked with HeadObject;
	// HashedFiles were read (the others: the hash index vouched for them).
	VerifiedBlobs int `json:"verifiedBlobs"`
	CheckedBlobs  int `json:"checkedBlobs"`
	HashedFiles   int `json:"hashedFiles"`
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
// sync of its manifest. A push costs what changed (docs/design.md §5a): files
// the hash index vouches for are not read again; the previous manifest of
// the same target, found in the journal, is the set of blobs already in
// the origin; only the others are uploaded — small ones at once, larger
// ones after a HeadObject says the origin lacks them, large ones in parts
// (DefaultDirectPutBelow); the manifest after its blobs; then one message with a fresh request ID goes to the push queue.
func (a *App) Push(ctx context.Context, local, rawDest string) (Sent, error) {
	d, err := parseDest(rawDest)
	if err != nil {
		return Sent{}, err
	}
	scanStart := time.Now()
	op, files, other, err := scan(local, a.CopyLinks)
	if err != nil {
		return Sent{}, err
	}
	dpath, err := d.target(op, baseName(local))
	if err != nil {
		return Sent{}, err
	}
	root := local
	if len(files) > 0 {
		root = strings.TrimSuffix(files[0].abs, "/"+files[0].rel)
	}
	ix := loadHashIndex(a.indexDir(), root)
	s := Sent{Op: op, Path: dpath, Files: len(files), Warnings: warnings(files)}
	for _, w := range s.Warnings {
		fmt.Fprintf(a.errOut(), "volsd: warning: %s\n", w)
	}
	if s.HashedFiles, err = hashFiles(ctx, files, ix); err != nil {
		return Sent{}, err
	}
	if ix.update(files, scanStart) {
		if err := ix.save(root); err != nil {
			fmt.Fprintf(a.errOut(), "note: the hash index %s was not saved (%v); the next push hashes every file again\n", ix.file, err)
		}
	}
	for _, f := range files {
		s.Bytes += f.size
	}
	var (
		manifest []byte
		m        events.Manifest
		check    events.BlobSet
		same     bool // the tree of the last sync of DEST: all in the origin
	)
	if op == events.OpSync {
		if m, manifest, s.Manifest, err = buildManifest(files, other); err != nil {
			return Sent{}, err
		}
		var verified events.BlobSet
		verified, same = a.previousBlobs(ctx, dpath, s.Manifest)
		if !same {
			if check, err = events.BlobsToCheck(m, verified); err != nil {
				return Sent{}, inputErr("%v", err)
			}
		}
		s.VerifiedBlobs = len(m.Blobs()) - len(check)
		s.PresentBlobs = s.VerifiedBlobs
	} else {
		f := files[0]
		s.Blob = &events.Blob{SHA256: f.sha256, Size: f.size, Mode: f.mode, Mtime: f.modTime.Unix()}
		check = events.BlobSet{f.sha256: f.size}
	}
	if a.DryRun || op == events.OpSync && a.Guard != nil {
		want := map[string]entryState{}
		if op == events.OpSync {
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
	if err := a.uploadBlobs(ctx, files, check, &s); err != nil {
		return Sent{}, err
	}
	if op == events.OpSync && !same {
		key := events.ManifestKey(s.Manifest)
		have := false
		if !a.directPut(int64(len(manifest))) {
			if have, err = a.verified(ctx, key, s.Manifest, int64(len(manifest))); err != nil {
				return Sent{}, err
			}
		}
		if !have {
			if err := a.putSmall(ctx, key, s.Manifest, bytes.NewReader(manifest), int64(len(manifest))); err != nil {
				return Sent{}, err
			}
			s.ManifestUploaded = true
		}
	}
	if op == events.OpSync {
		return s, a.send(ctx, syncRequest(dpath, s.Manifest), &s)
	}
	return s, a.send(ctx, events.PushRequest{Version: events.PushVersion, Op: op, Path: dpath, Blob: s.Blob}, &s)
}

func syncRequest(path, manifest string) events.PushRequest {
	return events.PushRequest{Version: events.PushVersion, Op: events.OpSync, Path: path, Manifest: &events.ManifestRef{SHA256: manifest}}
}

// indexDir is where hash indexes are kept: App.IndexDir, else the user's
// cache directory ($XDG_CACHE_HOME/volsd/hash-index); "" (none) when
// neither is known.
func (a *App) indexDir() string {
	if a.IndexDir != "" {
		return a.IndexDir
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "volsd", "hash-index")
}

// previousBlobs returns the blobs of the previous sync of path in the
// journal (nil when the pool or table is not configured, there is none, or
// it cannot be read: then every blob is checked) and whether that sync
// had the manifest sha itself.
func (a *App) previousBlobs(ctx context.Context, path, sha string) (events.BlobSet, bool) {
	if a.State == nil || a.Cfg.Pool == "" || a.Cfg.Table == "" {
		return nil, false
	}
	prev, found, err := a.State.PreviousSync(ctx, a.Cfg.Pool, path)
	if err != nil {
		fmt.Fprintf(a.errOut(), "note: the previous sync of %s was not found in the journal (%v); checking every blob in the origin\n", path, err)
		return nil, false
	}
	if !found {
		return nil, false
	}
	if prev.Manifest.SHA256 == sha {
		return nil, true
	}
	m, err := a.readManifest(ctx, prev.Manifest.SHA256)
	if err != nil {
		fmt.Fprintf(a.errOut(), "note: the manifest of seq %d was not read (%v); checking every blob in the origin\n", prev.Seq, err)
		return nil, false
	}
	return m.Blobs(), false
}

// readManifest reads and validates a manifest of the origin.
func (a *App) readManifest(ctx context.Context, sha string) (events.Manifest, error) {
	key := events.ManifestKey(sha)
	var m events.Manifest
	err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		out, err := a.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(a.Cfg.Bucket), Key: aws.String(key)})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		data, err := io.ReadAll(io.LimitReader(out.Body, events.MaxManifestBytes+1))
		if err != nil {
			return err
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
			return fmt.Errorf("s3://%s/%s does not hash to its name", a.Cfg.Bucket, key)
		}
		m, err = events.ParseManifestBytes(data)
		return err
	})
	return m, err
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

// DefaultDirectPutBelow is App.DirectPutBelow's default. Below it, a PUT
// costs about what the HeadObject that could spare it costs — one round
// trip (256 KiB take ~20 ms at 100 Mbit/s) — so a blob the previous sync
// does not vouch for is uploaded at once: a first push makes one request
// per blob, as aws s3 sync does, instead of a HeadObject and then a
// PutObject. Overwriting a blob the origin already holds is harmless (the
// same bytes under their own hash, checked by S3 against the SHA-256 sent);
// in the versioned origin it leaves a noncurrent version that the bucket's
// noncurrent-version expiry removes. Larger blobs are checked first.
const DefaultDirectPutBelow = 256 << 10

// smallUploads bounds parallel uploads of blobs below DirectPutBelow (and
// HeadObject calls of the others): each holds no buffer, so the bound is
// the connections' (aws s3 sync uses 10).
const smallUploads = 16

// directPut says a blob of size is uploaded without a HeadObject first.
func (a *App) directPut(size int64) bool {
	switch {
	case a.DirectPutBelow < 0:
		return false
	case a.DirectPutBelow == 0:
		return size < DefaultDirectPutBelow
	}
	return size < a.DirectPutBelow
}

// uploadBlobs uploads the blobs of check the origin may lack. Those below
// DirectPutBelow go up at once, smallUploads at a time; the others are
// checked first (HeadObject with its checksum, smallUploads at a time) and
// uploaded, Uploads at a time, only when the origin does not hold them
// verified (checksum.Verify): missing, or there with other bytes, another
// size or no checksum, which an upload overwrites with the right bytes.
// Checks and uploads overlap: an upload starts as soon as its check says
// the blob is missing.
func (a *App) uploadBlobs(ctx context.Context, files []localFile, check events.BlobSet, s *Sent) error {
	seen := map[string]bool{}
	var direct, ask []localFile
	for _, f := range files {
		if _, ok := check[f.sha256]; !ok || seen[f.sha256] {
			continue
		}
		seen[f.sha256] = true
		if a.directPut(f.size) {
			direct = append(direct, f)
		} else {
			ask = append(ask, f)
		}
	}
	if len(direct)+len(ask) == 0 {
		return nil
	}
	var total int64
	for _, f := range direct {
		total += f.size
	}
	var bar *progressbar.ProgressBar
	if a.Progress {
		// The checked blobs' bytes join the total as their checks find them missing.
		bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(a.errOut()), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription(fmt.Sprintf("uploading %d blobs", len(direct)+len(ask))), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionSetWidth(30))
		defer func() { _ = bar.Finish() }()
	}
	uploads := a.Uploads
	if uploads <= 0 {
		uploads = 4
	}
	var uploaded, present atomic.Int64
	uploadedBytes := atomic.Int64{}
	uploadedBytes.Store(total)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // small blobs: straight up
		return parallel(gctx, len(direct), smallUploads, func(ctx context.Context, i int) error {
			return a.uploadFile(ctx, direct[i], bar)
		})
	})
	missing := make(chan localFile)
	g.Go(func() error { // larger blobs: checked, the missing ones handed on
		defer close(missing)
		return parallel(gctx, len(ask), smallUploads, func(ctx context.Context, i int) error {
			ok, err := a.verified(ctx, events.BlobKey(ask[i].sha256), ask[i].sha256, ask[i].size)
			if err != nil || ok {
				if ok {
					present.Add(1)
				}
				return err
			}
			if bar != nil {
				bar.ChangeMax64(bar.GetMax64() + ask[i].size)
			}
			select {
			case missing <- ask[i]:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	for range uploads { // the missing larger blobs: up, Uploads at a time
		g.Go(func() error {
			for f := range missing {
				if err := a.uploadFile(gctx, f, bar); err != nil {
					return err
				}
				uploaded.Add(1)
				uploadedBytes.Add(f.size)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.CheckedBlobs = len(ask)
	s.PresentBlobs += int(present.Load())
	s.UploadedBlobs, s.UploadedBytes = len(direct)+int(uploaded.Load()), uploadedBytes.Load()
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
// first error (the others are cancelled, and no more are started).
func parallel(ctx context.Context, n, limit int, fn func(context.Context, int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for i := 0; i < n && gctx.Err() == nil; i++ {
		g.Go(func() error { return fn(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
