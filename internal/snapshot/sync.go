package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// poolSnapshot is an EC2 snapshot of the pool as volsd reads it.
type poolSnapshot struct {
	ID       string
	VolumeID string
	State    ec2types.SnapshotState
	Message  string
	Start    time.Time
	Seq      int64
	SeqOK    bool // the volsd:seq tag is present and a number
	SeqTag   string
	KMSKeyID string
	Crypted  bool
}

// describePool lists the pool's snapshots (tag volsd:pool, owned by this
// account), every page, with extra filters if given.
func (r *Runner) describePool(ctx context.Context, extra ...ec2types.Filter) ([]poolSnapshot, error) {
	in := &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters:  append([]ec2types.Filter{{Name: aws.String("tag:" + events.TagPool), Values: []string{r.cfg.Pool}}}, extra...),
	}
	var out []poolSnapshot
	p := ec2.NewDescribeSnapshotsPaginator(r.ec2, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe snapshots of pool %s: %w", r.cfg.Pool, err)
		}
		for _, s := range page.Snapshots {
			ps := poolSnapshot{
				ID: aws.ToString(s.SnapshotId), VolumeID: aws.ToString(s.VolumeId), State: s.State,
				Message: aws.ToString(s.StateMessage), Start: aws.ToTime(s.StartTime).UTC(),
				KMSKeyID: aws.ToString(s.KmsKeyId), Crypted: aws.ToBool(s.Encrypted),
			}
			for _, t := range s.Tags {
				if aws.ToString(t.Key) == events.TagSeq {
					ps.SeqTag = aws.ToString(t.Value)
					n, err := strconv.ParseInt(ps.SeqTag, 10, 64)
					ps.Seq, ps.SeqOK = n, err == nil && n >= 0
				}
			}
			out = append(out, ps)
		}
	}
	return out, nil
}

// recordState maps an EC2 snapshot state to a record state; ok is false for
// states volsd does not track (recoverable, recovering: the Recycle Bin).
func recordState(s ec2types.SnapshotState) (store.SnapshotState, bool) {
	switch s {
	case ec2types.SnapshotStatePending:
		return store.SnapshotPending, true
	case ec2types.SnapshotStateCompleted:
		return store.SnapshotCompleted, true
	case ec2types.SnapshotStateError:
		return store.SnapshotError, true
	}
	return "", false
}

// SyncResult says what SyncRecords changed.
type SyncResult struct {
	Updated []string // records whose state changed (pending → completed/error)
	Adopted []string // pool snapshots that had no record
	Dropped []string // records of snapshots that no longer exist
}

// SyncRecords brings the pool's snapshot records in line with EC2: a
// record's state follows its snapshot's (pending → completed or error), a
// pool snapshot with a volsd:seq tag but no record is adopted (a run that
// died between CreateSnapshot and PutSnapshot), and the record of a snapshot
// that no longer exists is dropped once it is older than RecordGrace.
// Records in state deleted are left to Retain. Conflicting writes are left
// for the next run.
func (r *Runner) SyncRecords(ctx context.Context) (SyncResult, error) {
	var res SyncResult
	snaps, err := r.describePool(ctx)
	if err != nil {
		return res, err
	}
	recs, err := r.st.ListSnapshots(ctx, r.cfg.Pool)
	if err != nil {
		return res, err
	}
	byID := make(map[string]store.Snapshot, len(recs))
	for _, rec := range recs {
		byID[rec.SnapshotID] = rec
	}
	seen := make(map[string]bool, len(snaps))
	var errs []error
	for _, s := range snaps {
		seen[s.ID] = true
		log := r.log.With("snapshot", s.ID, "volume", s.VolumeID, "seq", s.Seq)
		if !s.SeqOK {
			log.Warn("pool snapshot without a valid volsd:seq tag; volsd ignores it", "tag", s.SeqTag)
			continue
		}
		state, ok := recordState(s.State)
		if !ok {
			log.Warn("pool snapshot in a state volsd does not track", "state", s.State)
			continue
		}
		if state == store.SnapshotCompleted {
			r.checkKey(s)
		}
		rec, known := byID[s.ID]
		switch {
		case !known:
			_, err := r.st.PutSnapshot(ctx, store.Snapshot{
				Pool: r.cfg.Pool, SnapshotID: s.ID, State: state, Seq: s.Seq, VolumeID: s.VolumeID,
				CreatedAt: s.Start, LastError: errorMessage(state, s.Message),
			})
			switch {
			case err == nil:
				res.Adopted = append(res.Adopted, s.ID)
				log.Info("snapshot record adopted", "state", state)
			case !errors.Is(err, store.ErrExists):
				errs = append(errs, err)
			}
		case rec.State == store.SnapshotDeleted, rec.State == state:
		default:
			next := rec
			next.State, next.LastError = state, errorMessage(state, s.Message)
			if rec.Seq != s.Seq {
				log.Warn("snapshot record seq differs from its tag; the tag wins", "recordSeq", rec.Seq)
				next.Seq = s.Seq
			}
			_, err := r.st.UpdateSnapshot(ctx, next)
			switch {
			case err == nil:
				res.Updated = append(res.Updated, s.ID)
				log.Info("snapshot state recorded", "from", rec.State, "to", state, "stateMessage", s.Message)
			case !errors.Is(err, store.ErrConflict):
				errs = append(errs, err)
			}
		}
	}
	now := r.now()
	for _, rec := range recs {
		if seen[rec.SnapshotID] {
			continue
		}
		if rec.State == store.SnapshotPending && now.Sub(rec.CreatedAt) < r.cfg.RecordGrace {
			continue // DescribeSnapshots may not list a new snapshot yet
		}
		err := r.st.DeleteSnapshotRecord(ctx, r.cfg.Pool, rec.SnapshotID, rec.Rev)
		switch {
		case err == nil:
			res.Dropped = append(res.Dropped, rec.SnapshotID)
			r.log.Info("snapshot no longer exists; record dropped", "snapshot", rec.SnapshotID, "state", rec.State, "seq", rec.Seq)
		case !errors.Is(err, store.ErrConflict):
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

func errorMessage(s store.SnapshotState, msg string) string {
	if s != store.SnapshotError {
		return ""
	}
	if msg == "" {
		return "EC2 reports the snapshot in state error"
	}
	return msg
}

// checkKey warns about a completed snapshot that is not encrypted with the
// pool's key (when one is configured).
func (r *Runner) checkKey(s poolSnapshot) {
	if r.cfg.KMSKeyID == "" {
		return
	}
	want := r.cfg.KMSKeyID
	if !s.Crypted || !(s.KMSKeyID == want || strings.HasSuffix(s.KMSKeyID, "/"+want) || strings.HasSuffix(want, "/"+s.KMSKeyID)) {
		r.log.Warn("pool snapshot is not encrypted with the pool's KMS key", "snapshot", s.ID,
			"encrypted", s.Crypted, "kmsKeyId", s.KMSKeyID, "want", want)
	}
}

// Newest returns the newest completed snapshot among records: the highest
// seq, then the latest CreatedAt, then the highest ID. Retention keeps the
// first K in this order; reconcile should create volumes from Newest.
func Newest(recs []store.Snapshot) (store.Snapshot, bool) {
	done := completed(recs)
	if len(done) == 0 {
		return store.Snapshot{}, false
	}
	return done[0], true
}

// completed returns the completed records, newest first (see Newest).
func completed(recs []store.Snapshot) []store.Snapshot {
	var out []store.Snapshot
	for _, r := range recs {
		if r.State == store.SnapshotCompleted {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return newer(out[i].Seq, out[i].CreatedAt, out[i].SnapshotID, out[j].Seq, out[j].CreatedAt, out[j].SnapshotID)
	})
	return out
}

// newer orders snapshots newest first: seq, then start time, then ID.
func newer(seqA int64, atA time.Time, idA string, seqB int64, atB time.Time, idB string) bool {
	if seqA != seqB {
		return seqA > seqB
	}
	if !atA.Equal(atB) {
		return atA.After(atB)
	}
	return idA > idB
}
