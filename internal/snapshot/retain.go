package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/store"
)

// RetainResult says what Retain did.
type RetainResult struct {
	Kept    []string          // the newest K completed snapshots, newest first
	Deleted []string          // deleted now (or found gone)
	Skipped map[string]string // left for a later run, with the reason
}

// Retain keeps the newest Keep completed pool snapshots (by seq, then start
// time, the order of Newest) and deletes the other pool snapshots that are
// completed or in error. It never deletes a pending snapshot, one without a
// valid volsd:seq tag (volsd did not make it), or one that is the
// snapshotId of a volume record in state creating (checked again right
// before each delete). For each one it marks the record deleted (so nobody
// starts using it), calls DeleteSnapshot — InvalidSnapshot.NotFound means
// done, InvalidSnapshot.InUse means try again next run — and then drops the
// record.
func (r *Runner) Retain(ctx context.Context) (RetainResult, error) {
	res := RetainResult{Skipped: map[string]string{}}
	snaps, err := r.describePool(ctx)
	if err != nil {
		return res, err
	}
	var done []poolSnapshot
	for _, s := range snaps {
		if s.SeqOK && s.State == ec2types.SnapshotStateCompleted {
			done = append(done, s)
		}
	}
	sort.Slice(done, func(i, j int) bool {
		return newer(done[i].Seq, done[i].Start, done[i].ID, done[j].Seq, done[j].Start, done[j].ID)
	})
	keep := map[string]bool{}
	for _, s := range done[:min(r.cfg.Keep, len(done))] {
		keep[s.ID] = true
		res.Kept = append(res.Kept, s.ID)
	}
	var doomed []poolSnapshot
	for _, s := range snaps {
		switch {
		case !s.SeqOK || keep[s.ID]:
		case s.State == ec2types.SnapshotStateCompleted || s.State == ec2types.SnapshotStateError:
			doomed = append(doomed, s)
		}
	}
	recs, err := r.st.ListSnapshots(ctx, r.cfg.Pool)
	if err != nil {
		return res, err
	}
	byID := make(map[string]store.Snapshot, len(recs))
	var errs []error
	for _, rec := range recs {
		byID[rec.SnapshotID] = rec
		if keep[rec.SnapshotID] && rec.State == store.SnapshotDeleted {
			// Marked for deletion by an earlier run (and not deleted:
			// in use), but among the newest K now (K grew): keep it usable.
			next := rec
			next.State = store.SnapshotCompleted
			if _, err := r.st.UpdateSnapshot(ctx, next); err != nil && !errors.Is(err, store.ErrConflict) {
				errs = append(errs, err)
			}
		}
	}
	for _, s := range doomed {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		log := r.log.With("snapshot", s.ID, "seq", s.Seq, "state", s.State)
		if vol, err := r.baseOfCreating(ctx, s.ID); err != nil {
			errs = append(errs, err)
			continue
		} else if vol != "" {
			res.Skipped[s.ID] = "base of volume " + vol + " being created"
			log.Info("older snapshot kept: a volume is being created from it", "volume", vol)
			continue
		}
		rec, known := byID[s.ID]
		if known && rec.State != store.SnapshotDeleted {
			next := rec
			next.State = store.SnapshotDeleted
			if rec, err = r.st.UpdateSnapshot(ctx, next); err != nil {
				if errors.Is(err, store.ErrConflict) {
					res.Skipped[s.ID] = "record changed meanwhile"
					continue
				}
				errs = append(errs, err)
				continue
			}
		}
		err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
			_, err := r.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s.ID)})
			return err
		})
		switch {
		case err == nil, awserr.IsNotFound(err):
		case awserr.IsSnapshotInUse(err):
			res.Skipped[s.ID] = "in use: " + awserr.Message(err)
			log.Info("older snapshot is in use; retried next run", "error", awserr.Message(err))
			continue
		default:
			errs = append(errs, fmt.Errorf("delete snapshot %s: %w", s.ID, err))
			continue
		}
		res.Deleted = append(res.Deleted, s.ID)
		log.Info("older snapshot deleted", "keep", r.cfg.Keep)
		if known {
			if err := r.st.DeleteSnapshotRecord(ctx, r.cfg.Pool, s.ID, rec.Rev); err != nil && !errors.Is(err, store.ErrConflict) {
				errs = append(errs, err)
			}
		}
	}
	return res, errors.Join(errs...)
}

// baseOfCreating returns the volume being created from snapshot id, if any.
func (r *Runner) baseOfCreating(ctx context.Context, id string) (string, error) {
	vols, err := r.st.ListVolumes(ctx, r.cfg.Pool)
	if err != nil {
		return "", err
	}
	for _, v := range vols {
		if v.State == store.VolumeCreating && v.SnapshotID == id {
			return v.VolumeID, nil
		}
	}
	return "", nil
}
