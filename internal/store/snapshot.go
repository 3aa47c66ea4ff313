package store

import (
	"context"
	"fmt"
	"time"
)

// SnapshotState is where a pool snapshot is.
type SnapshotState string

// Snapshot states mirror EC2's, plus deleted once volsd removed it.
const (
	SnapshotPending   SnapshotState = "pending"
	SnapshotCompleted SnapshotState = "completed"
	SnapshotError     SnapshotState = "error"
	SnapshotDeleted   SnapshotState = "deleted"
)

// Snapshot is one EBS snapshot of a pool volume; Seq is the watermark of the
// volume when it was taken (also its volsd:seq tag).
type Snapshot struct {
	Pool       string        `json:"pool"`
	SnapshotID string        `json:"snapshotId"`
	State      SnapshotState `json:"state"`
	Seq        int64         `json:"seq"`
	VolumeID   string        `json:"volumeId"`
	CreatedAt  time.Time     `json:"createdAt"`
	UpdatedAt  time.Time     `json:"updatedAt"`
	Rev        int64         `json:"rev"`
	LastError  string        `json:"lastError,omitempty"`
}

func snapshotSK(id string) string { return prefixSnapshot + id }

// PutSnapshot records a new snapshot at Rev 1; ErrExists if it is known.
func (s *Store) PutSnapshot(ctx context.Context, sn Snapshot) (Snapshot, error) {
	now := s.now()
	if sn.CreatedAt.IsZero() {
		sn.CreatedAt = now
	}
	sn.UpdatedAt, sn.Rev = now, 1
	item, err := marshal(sn, poolPK(sn.Pool), snapshotSK(sn.SnapshotID))
	if err != nil {
		return sn, err
	}
	return sn, s.putNew(ctx, item, "put snapshot "+sn.SnapshotID)
}

// GetSnapshot reads one snapshot record (consistent).
func (s *Store) GetSnapshot(ctx context.Context, pool, snapshotID string) (Snapshot, error) {
	var sn Snapshot
	err := s.get(ctx, poolPK(pool), snapshotSK(snapshotID), &sn)
	return sn, err
}

// UpdateSnapshot writes next if the stored snapshot still has next.Rev.
func (s *Store) UpdateSnapshot(ctx context.Context, next Snapshot) (Snapshot, error) {
	rev := next.Rev
	next.Rev, next.UpdatedAt = rev+1, s.now()
	item, err := marshal(next, poolPK(next.Pool), snapshotSK(next.SnapshotID))
	if err != nil {
		return next, err
	}
	return next, s.putAtRev(ctx, item, rev, "", nil, nil, fmt.Sprintf("snapshot %s@%d", next.SnapshotID, rev))
}

// DeleteSnapshotRecord drops a snapshot record if it still has rev.
func (s *Store) DeleteSnapshotRecord(ctx context.Context, pool, snapshotID string, rev int64) error {
	return s.deleteAtRev(ctx, poolPK(pool), snapshotSK(snapshotID), rev, fmt.Sprintf("delete snapshot %s@%d", snapshotID, rev))
}

// ListSnapshots lists every snapshot record of a pool (consistent).
func (s *Store) ListSnapshots(ctx context.Context, pool string) ([]Snapshot, error) {
	return queryPrefix[Snapshot](ctx, s, poolPK(pool), prefixSnapshot)
}
