package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/schollz/progressbar/v3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/checksum"
)

// partsInFlight is how many parts of one file upload at once.
const partsInFlight = 4

// maxParts is S3's limit of parts per upload.
const maxParts = 10000

// verified is the CLI's one presence check: the origin holds key with the
// bytes of sum (hex SHA-256) and size, proven by its stored checksum
// (HeadObject with ChecksumMode ENABLED, checksum.Verify), never by size
// alone. An object there with other bytes, or without a checksum, is not
// verified: the caller uploads it again and so overwrites it.
func (a *App) verified(ctx context.Context, key, sum string, size int64) (bool, error) {
	var out *s3.HeadObjectOutput
	err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		var err error
		out, err = a.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(a.Cfg.Bucket), Key: aws.String(key), ChecksumMode: s3types.ChecksumModeEnabled})
		return err
	})
	switch {
	case awserr.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("check s3://%s/%s: %w", a.Cfg.Bucket, key, err)
	}
	if err := checksum.Verify(out, sum, size); err != nil {
		if !errors.Is(err, checksum.ErrMismatch) {
			return false, err
		}
		fmt.Fprintf(a.errOut(), "volsd: s3://%s/%s is there but not verified (%v); uploading the right bytes over it\n", a.Cfg.Bucket, key, err)
		return false, nil
	}
	return true, nil
}

// uploadFile uploads one file as blobs/<sha256> so that the object holds
// exactly the bytes hashed, or nothing: below the part size in one
// PutObject with its SHA-256 checksum (S3 refuses a body that does not
// match); else in parts, each with its SHA-256, hashing the whole stream
// as it is sent and completing the upload only when that hash is the
// blob's name. A file whose bytes, size, mtime or ctime changed since it
// was hashed fails the push ("changed while it was pushed").
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
	partSize = max(partSize, manager.MinUploadPartSize, (f.size+maxParts-1)/maxParts)
	if f.size < partSize {
		err = a.putSmall(ctx, key, f.sha256, io.NewSectionReader(body, 0, f.size), f.size)
	} else {
		err = a.putParts(ctx, key, f, body, partSize)
	}
	switch {
	case awserr.IsBadDigest(err), errors.Is(err, errChanged):
		return changedErr(f)
	case err != nil:
		return fmt.Errorf("upload %s to s3://%s/%s: %w", f.abs, a.Cfg.Bucket, key, err)
	case !f.unchanged():
		// What is in the origin is right for its name (S3 or the stream
		// hash checked it), but the file is no longer what was hashed.
		return changedErr(f)
	}
	return nil
}

// errChanged marks a stream whose bytes do not hash to the blob's name.
var errChanged = errors.New("the bytes read are not the bytes hashed")

func changedErr(f localFile) error {
	return inputErr("%s changed while it was pushed (its bytes, size or times are not those hashed); nothing wrong was published: push again once it is stable", f.abs)
}

// putSmall uploads one object in one PutObject with its SHA-256 checksum.
func (a *App) putSmall(ctx context.Context, key, sum string, body io.ReadSeeker, size int64) error {
	b64, err := checksum.FromHex(sum)
	if err != nil {
		return err
	}
	return awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := a.S3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(a.Cfg.Bucket), Key: aws.String(key), Body: body, ContentLength: aws.Int64(size),
			ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(b64),
		})
		return err
	})
}

// putParts uploads f in parts of partSize, partsInFlight at a time. The
// file is read once, in order: each part goes up with the SHA-256 of its
// buffer (S3 checks it), the whole stream is hashed on the way, and the
// upload is completed — with the full-object SHA-256 in the metadata
// (checksum.MetadataKey) — only when that hash is f's sha256 and the file
// ended where it should; otherwise it is aborted.
func (a *App) putParts(ctx context.Context, key string, f localFile, body io.Reader, partSize int64) (err error) {
	bucket := aws.String(a.Cfg.Bucket)
	var created *s3.CreateMultipartUploadOutput
	if err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		var err error
		created, err = a.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
			Bucket: bucket, Key: aws.String(key), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256,
			ChecksumType: s3types.ChecksumTypeComposite, Metadata: map[string]string{checksum.MetadataKey: f.sha256},
		})
		return err
	}); err != nil {
		return err
	}
	id := created.UploadId
	defer func() {
		if err != nil {
			_, _ = a.S3.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: bucket, Key: aws.String(key), UploadId: id})
		}
	}()
	n := int((f.size + partSize - 1) / partSize)
	parts := make([]s3types.CompletedPart, n)
	whole := sha256.New()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		slots = make(chan struct{}, partsInFlight)
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			cancel()
		}
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		buf := make([]byte, min(partSize, f.size-int64(i)*partSize))
		if _, err := io.ReadFull(body, buf); err != nil {
			<-slots
			fail(fmt.Errorf("read %s: %w", f.abs, err))
			break
		}
		whole.Write(buf)
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			sum := checksum.Of(buf)
			var out *s3.UploadPartOutput
			err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
				var err error
				out, err = a.S3.UploadPart(ctx, &s3.UploadPartInput{
					Bucket: bucket, Key: aws.String(key), UploadId: id, PartNumber: aws.Int32(int32(i + 1)),
					Body: bytes.NewReader(buf), ContentLength: aws.Int64(int64(len(buf))),
					ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(sum),
				})
				return err
			})
			if err != nil {
				fail(err)
				return
			}
			parts[i] = s3types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag, ChecksumSHA256: aws.String(sum)}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if extra, _ := body.Read(make([]byte, 1)); extra > 0 || hex.EncodeToString(whole.Sum(nil)) != f.sha256 {
		return errChanged
	}
	return awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		_, err := a.S3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: bucket, Key: aws.String(key), UploadId: id, MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
		})
		return err
	})
}
