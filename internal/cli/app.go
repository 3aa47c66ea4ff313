package cli

import (
	"context"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// ObjectStore is the part of the S3 API the CLI uses: HeadObject to find
// what the origin has, GetObject to read the previous manifest of a target
// and the manifests a --dry-run or the deletion guard compares with,
// PutObject and the multipart calls of the SDK's
// upload manager to add what it lacks, DeleteObject to withdraw a blob whose
// file changed while it was uploaded.
type ObjectStore interface {
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	UploadPart(ctx context.Context, in *s3.UploadPartInput, optFns ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
}

// Queue is the part of the SQS API the CLI uses.
type Queue interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// State is the part of the store the CLI reads.
type State interface {
	Head(ctx context.Context, pool string) (int64, error)
	GetRequest(ctx context.Context, pool, requestID string) (store.Request, error)
	ListInstances(ctx context.Context, pool string) ([]store.Instance, error)
	ListVolumes(ctx context.Context, pool string) ([]store.Volume, error)
	ListSnapshots(ctx context.Context, pool string) ([]store.Snapshot, error)
	ListRejected(ctx context.Context, pool string, limit int) ([]store.Request, error)
	Entries(ctx context.Context, pool string, after, upTo int64) ([]events.JournalEntry, error)
	GetCompaction(ctx context.Context, pool string) (store.Compaction, error)
	GetReclaimRun(ctx context.Context, pool string) (store.ReclaimRun, error)
	PreviousSync(ctx context.Context, pool, path string) (events.JournalEntry, bool, error)
}

// App is the CLI's logic over its clients.
type App struct {
	Cfg   Config
	S3    ObjectStore
	SQS   Queue
	State State
	// Err receives progress and notes (stderr); results go to the caller.
	Err io.Writer
	// Progress shows a progress bar and wait status on Err (a terminal).
	Progress bool
	// PartSize is the size from which files are uploaded in parts, and the
	// part size (default 64 MiB, at least 5 MiB).
	PartSize int64
	// CopyLinks follows every symlink of a pushed tree and pushes what it
	// points to (rsync -L); without it in-tree relative links are carried
	// as links and others are refused.
	CopyLinks bool
	// Uploads is how many blobs of at least DirectPutBelow upload at once
	// (default 4); smaller ones go up smallUploads at a time.
	Uploads int
	// DirectPutBelow is the size below which a blob the previous sync does
	// not vouch for is uploaded without a HeadObject first (0: the default,
	// DefaultDirectPutBelow; negative: every blob is checked first).
	DirectPutBelow int64
	// DryRun makes Push compute its Plan and stop: nothing is uploaded or
	// sent.
	DryRun bool
	// Guard, when set, refuses a sync whose plan deletes too much (the CLI
	// always sets it).
	Guard *DeleteGuard
	// IndexDir is where the hash indexes are kept (default: the user's
	// cache directory, volsd/hash-index).
	IndexDir string
	// Poll is the longest pause between the reads of --wait (default
	// WaitPollMax); it reads sooner at first (see WaitPollMin).
	Poll time.Duration
	// Sleep pauses --wait between reads (default awserr.Sleep; tests
	// record the pauses).
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time
}

func (a *App) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now().UTC()
}

func (a *App) errOut() io.Writer {
	if a.Err == nil {
		return io.Discard
	}
	return a.Err
}
