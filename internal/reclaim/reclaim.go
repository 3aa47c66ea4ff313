package reclaim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/store"
)

// S3 is the part of the S3 API reclaim uses: it lists blobs/ and
// manifests/, reads manifests and deletes what nothing references (IAM:
// s3:DeleteObject on those two prefixes, for the snapshot Lambda only).
type S3 interface {
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Prefixes are the origin prefixes reclaim sweeps.
var Prefixes = []string{"blobs/", "manifests/"}

// DefaultGrace is how long an object must have been unreferenced (and
// unchanged) before reclaim deletes it.
const DefaultGrace = 7 * 24 * time.Hour

// MaxPushInFlight is the push queue's message retention (the construct
// sets it from here): the longest a push request may wait between its
// upload and its append. MinGrace is that plus a day for the CLI's own
// upload before it sends the request; a shorter grace is refused.
const (
	MaxPushInFlight = 4 * 24 * time.Hour
	MinGrace        = MaxPushInFlight + 24*time.Hour
)

// Config is what a Reclaimer needs.
type Config struct {
	Pool   string
	Bucket string
	// Grace is how long an object stays after its last reference and
	// after its upload (VOLSD_RECLAIM_GRACE); 0 turns reclaim off.
	Grace time.Duration
}

// Reclaimer runs the origin's mark-and-sweep for one pool.
type Reclaimer struct {
	cfg     Config
	st      *store.Store
	s3      S3
	log     *slog.Logger
	metrics *metrics.Emitter
	// Now is the clock (a fake one in tests).
	Now func() time.Time
}

// New returns a Reclaimer; log and m may be nil.
func New(cfg Config, st *store.Store, s3c S3, log *slog.Logger, m *metrics.Emitter) *Reclaimer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reclaimer{cfg: cfg, st: st, s3: s3c, log: log.With("pool", cfg.Pool), metrics: m, Now: func() time.Time { return time.Now().UTC() }}
}

// LoadBase reads the pool's base tree as the compaction marker c names
// it. A pool that never kept one starts from the empty tree at seq 0 when
// nothing ever expired (c.Marked 0), else from an unknown tree at
// c.Marked (entries above it are all still there).
func LoadBase(ctx context.Context, st *store.Store, c store.Compaction) (Tree, error) {
	if !c.HasTree {
		return Tree{Seq: c.Marked, Known: c.Marked == 0}, nil
	}
	if c.TreeSeq == 0 {
		return Tree{Known: c.TreeKnown}, nil // nothing folded yet: the empty tree
	}
	data, err := st.GetTree(ctx, c.Pool, c.TreeSeq)
	if err != nil {
		return Tree{}, err
	}
	t, err := DecodeTree(data)
	if err == nil && t.Seq != c.TreeSeq {
		err = fmt.Errorf("base tree of %s: stored at %d but says %d", c.Pool, c.TreeSeq, t.Seq)
	}
	return t, err
}

// AdvanceBase folds the journal entries in (base, floor] into the pool's
// base tree and stores it at floor, before compaction lets those entries
// expire. An entry missing from that range makes the tree unknown. It
// returns the tree compaction must record (unchanged when floor is not
// above the base's seq).
func AdvanceBase(ctx context.Context, st *store.Store, c store.Compaction, floor int64) (Tree, error) {
	base, err := LoadBase(ctx, st, c)
	if err != nil || floor <= base.Seq {
		return base, err
	}
	entries, err := st.PresentEntries(ctx, c.Pool, base.Seq, floor)
	if err != nil {
		return base, err
	}
	next := base.Fold(entries)
	if next.Seq != floor {
		next.Seq, next.Known = floor, false
	}
	data, err := next.Encode()
	if err == nil {
		err = st.PutTree(ctx, c.Pool, next.Seq, data)
	}
	return next, err
}

// Result says what a run did.
type Result = store.ReclaimRun

// deleteBatch is how many deletions a run makes between two re-reads of
// the journal head.
const deleteBatch = 100

// Run marks every object the journal, the base tree and pushes in flight
// reference, then sweeps blobs/ and manifests/: an object nothing
// references gets an UNREF# record the first time a run sees it so
// (Since); it is deleted once both Since and its LastModified are at least
// Grace old and it is still unreferenced. An object referenced again
// loses its record. Nothing is deleted when the marks cannot be complete
// (the base tree unknown, a referenced manifest unreadable): the run says
// why. Cut off anywhere, the next run goes on.
//
// Why a concurrent push is safe: a push uploads its blobs and manifest
// first (LastModified = upload time), then sends its request; the push
// Lambda appends it within the queue's retention, which the construct
// keeps below the grace period. A run deletes only objects whose upload
// and first unreferenced sighting are both at least Grace ago, so an
// object a push uploaded is in the journal (and marked) long before it
// could be deleted. An object a push found already present and unchanged
// is marked too if any entry or the base tree still names it; one that
// nothing named for Grace is re-checked against the journal head right
// before each batch of deletions.
func (r *Reclaimer) Run(ctx context.Context) (Result, error) {
	now := r.Now()
	res := Result{Pool: r.cfg.Pool, At: now, Grace: r.cfg.Grace.String()}
	if r.cfg.Grace <= 0 {
		res.Skipped = "reclaim is off (grace 0)"
		return res, nil
	}
	err := r.run(ctx, now, &res)
	if err != nil {
		res.Error = err.Error()
	}
	if stored, rerr := r.st.RecordReclaimRun(context.WithoutCancel(ctx), res); rerr == nil {
		res = stored
	} else {
		err = errors.Join(err, rerr)
	}
	dims := map[string]string{"Pool": r.cfg.Pool}
	r.metrics.Put(metrics.ReclaimedBytes, float64(res.DeletedBytes), metrics.Bytes, dims)
	r.metrics.Put("ReclaimedObjects", float64(res.Deleted), metrics.Count, dims)
	r.metrics.Put(metrics.UnreferencedBytes, float64(res.WaitingBytes), metrics.Bytes, dims)
	r.metrics.Put("UnreferencedObjects", float64(res.Waiting), metrics.Count, dims)
	r.log.Info("origin reclaim", "referenced", res.Referenced, "objects", res.Objects, "waiting", res.Waiting, "waitingBytes", res.WaitingBytes,
		"deleted", res.Deleted, "deletedBytes", res.DeletedBytes, "skipped", res.Skipped, "error", err)
	return res, err
}

func (r *Reclaimer) run(ctx context.Context, now time.Time, res *Result) error {
	pool := r.cfg.Pool
	c, err := r.st.GetCompaction(ctx, pool)
	if err != nil {
		return err
	}
	base, err := LoadBase(ctx, r.st, c)
	if err != nil {
		return fmt.Errorf("read the base tree: %w", err)
	}
	if !base.Known {
		res.Skipped = fmt.Sprintf("the content before seq %d is not known (its entries expired before volsd kept a base tree); "+
			"reclaim deletes nothing until a sync of the root (/) replaces the whole content", base.Seq)
		return nil
	}
	m := &marker{r: r, marked: map[string]bool{}, manifests: map[string]bool{}}
	for _, ref := range base.Refs {
		if err := m.mark(ctx, ref.Kind, ref.SHA256); err != nil {
			return err
		}
	}
	head, err := r.st.Head(ctx, pool)
	if err != nil {
		return err
	}
	if err := m.markEntries(ctx, 0, head); err != nil {
		return err
	}
	unref, err := r.st.ListUnreferenced(ctx, pool)
	if err != nil {
		return err
	}
	var due []store.Unreferenced
	listed := map[string]bool{}
	for _, prefix := range Prefixes {
		pages := s3.NewListObjectsV2Paginator(r.s3, &s3.ListObjectsV2Input{Bucket: aws.String(r.cfg.Bucket), Prefix: aws.String(prefix)})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return fmt.Errorf("list %s of %s: %w", prefix, r.cfg.Bucket, err)
			}
			for _, o := range page.Contents {
				key, size, mod := aws.ToString(o.Key), aws.ToInt64(o.Size), aws.ToTime(o.LastModified)
				res.Objects++
				listed[key] = true
				u, known := unref[key]
				if m.marked[key] {
					if known {
						if err := r.st.DeleteUnreferenced(ctx, pool, key); err != nil {
							return err
						}
					}
					continue
				}
				if !known || mod.After(u.LastModified) {
					// First seen unreferenced (or uploaded again since):
					// its grace starts now.
					u = store.Unreferenced{Key: key, Size: size, Since: now, LastModified: mod}
					if err := r.st.PutUnreferenced(ctx, pool, u); err != nil {
						return err
					}
				}
				if now.Sub(u.Since) >= r.cfg.Grace && now.Sub(mod) >= r.cfg.Grace {
					due = append(due, u)
					continue
				}
				res.Waiting++
				res.WaitingBytes += size
			}
		}
	}
	for key := range unref {
		if !listed[key] {
			// Gone from the origin by other means.
			if err := r.st.DeleteUnreferenced(ctx, pool, key); err != nil {
				return err
			}
		}
	}
	res.Referenced = len(m.marked)
	for start := 0; start < len(due); start += deleteBatch {
		// Entries appended since the marks were made may name an object
		// that was due: mark them before deleting.
		newHead, err := r.st.Head(ctx, pool)
		if err != nil {
			return err
		}
		if newHead > head {
			if err := m.markEntries(ctx, head, newHead); err != nil {
				return err
			}
			head = newHead
		}
		for _, u := range due[start:min(start+deleteBatch, len(due))] {
			if m.marked[u.Key] {
				if err := r.st.DeleteUnreferenced(ctx, pool, u.Key); err != nil {
					return err
				}
				continue
			}
			err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
				_, err := r.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(r.cfg.Bucket), Key: aws.String(u.Key)})
				return err
			})
			if err != nil {
				return fmt.Errorf("delete %s: %w", u.Key, err)
			}
			r.log.Info("reclaimed an unreferenced origin object", "key", u.Key, "size", u.Size, "unreferencedSince", u.Since, "lastModified", u.LastModified)
			res.Deleted++
			res.DeletedBytes += u.Size
			if err := r.st.DeleteUnreferenced(ctx, pool, u.Key); err != nil {
				return err
			}
		}
	}
	return nil
}

// marker collects the keys of referenced objects.
type marker struct {
	r         *Reclaimer
	marked    map[string]bool
	manifests map[string]bool // read already
}

func (m *marker) markEntries(ctx context.Context, after, upTo int64) error {
	entries, err := m.r.st.PresentEntries(ctx, m.r.cfg.Pool, after, upTo)
	if err != nil {
		return err
	}
	for _, e := range entries {
		switch {
		case e.Blob != nil:
			err = m.mark(ctx, RefBlob, e.Blob.SHA256)
		case e.Manifest != nil:
			err = m.mark(ctx, RefManifest, e.Manifest.SHA256)
		}
		if err != nil {
			return fmt.Errorf("entry %d: %w", e.Seq, err)
		}
	}
	return nil
}

// mark marks one object; a manifest marks every blob it lists too. A
// manifest that cannot be read and checked stops the run: its blobs would
// go unmarked.
func (m *marker) mark(ctx context.Context, kind RefKind, sha string) error {
	if kind == RefBlob {
		m.marked[events.BlobKey(sha)] = true
		return nil
	}
	key := events.ManifestKey(sha)
	m.marked[key] = true
	if m.manifests[sha] {
		return nil
	}
	var data []byte
	err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
		out, err := m.r.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(m.r.cfg.Bucket), Key: aws.String(key)})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		data, err = io.ReadAll(io.LimitReader(out.Body, events.MaxManifestBytes+1))
		return err
	})
	if err != nil {
		return fmt.Errorf("read manifest %s to mark its blobs: %w", key, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
		return fmt.Errorf("manifest %s does not hash to its name; its blobs cannot be marked (repair it first)", key)
	}
	man, err := events.ParseManifestBytes(data)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", key, err)
	}
	for _, e := range man.Entries {
		if e.Kind() == events.TypeFile && e.SHA256 != "" {
			m.marked[events.BlobKey(e.SHA256)] = true
		}
	}
	m.manifests[sha] = true
	return nil
}
