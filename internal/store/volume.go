package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/internal/awserr"
)

// VolumeState is where a pool volume is in its life (docs/design.md §2).
type VolumeState string

// Volume states: creating → idle → claimed → attaching → in-use →
// releasing → (idle | deleting) → gone, plus failed.
const (
	VolumeCreating  VolumeState = "creating"
	VolumeIdle      VolumeState = "idle"
	VolumeClaimed   VolumeState = "claimed"
	VolumeAttaching VolumeState = "attaching"
	VolumeInUse     VolumeState = "in-use"
	VolumeReleasing VolumeState = "releasing"
	VolumeDeleting  VolumeState = "deleting"
	VolumeGone      VolumeState = "gone"
	VolumeFailed    VolumeState = "failed"
)

// Volume is one EBS volume of a pool.
type Volume struct {
	Pool       string      `json:"pool"`
	VolumeID   string      `json:"volumeId"`
	State      VolumeState `json:"state"`
	AZ         string      `json:"az"`
	InstanceID string      `json:"instanceId,omitempty"`
	Device     string      `json:"device,omitempty"`
	// Seq is the journal watermark the volume is known to hold (from the
	// snapshot it was made from, or the agent's last report).
	Seq        int64     `json:"seq"`
	SnapshotID string    `json:"snapshotId,omitempty"`
	SizeGiB    int32     `json:"sizeGiB"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	// Rev increases by one with every write; transitions are conditional on it.
	Rev       int64  `json:"rev"`
	LastError string `json:"lastError,omitempty"`
	// Space is the volume's filesystem as the agent of the instance that
	// last held it reported it (kept while the volume is idle: a recycled
	// volume keeps its content).
	Space *Space `json:"space,omitempty"`
}

// Space is a mounted filesystem's size, used and free bytes (statfs) as an
// agent reported them at At. Free is what an unprivileged writer can use
// (the filesystem's reserve is in neither Used nor Free).
type Space struct {
	SizeBytes int64     `json:"sizeBytes"`
	UsedBytes int64     `json:"usedBytes"`
	FreeBytes int64     `json:"freeBytes"`
	At        time.Time `json:"at"`
}

// FreeFraction is Free / (Used + Free): the share of the usable space
// still free (0 when nothing is known).
func (s *Space) FreeFraction() float64 {
	if s == nil || s.UsedBytes+s.FreeBytes <= 0 {
		return 0
	}
	return float64(s.FreeBytes) / float64(s.UsedBytes+s.FreeBytes)
}

func volumeSK(id string) string { return prefixVolume + id }

// gsi1PK is the GSI partition of volumes of one pool, AZ and state.
func gsi1PK(pool, az string, state VolumeState) string {
	return prefixPool + pool + "#" + az + "#" + string(state)
}

func (s *Store) volumeItem(v Volume) (map[string]types.AttributeValue, error) {
	item, err := marshal(v, poolPK(v.Pool), volumeSK(v.VolumeID))
	if err != nil {
		return nil, err
	}
	item[AttrGSI1PK] = str(gsi1PK(v.Pool, v.AZ, v.State))
	item[AttrGSI1SK] = str(v.CreatedAt.UTC().Format(sortTime) + "#" + v.VolumeID)
	return item, nil
}

// newVolumeItem stamps v as a new record (created now unless CreatedAt is
// set, updated now, Rev 1) and returns its item.
func (s *Store) newVolumeItem(v *Volume) (map[string]types.AttributeValue, error) {
	now := s.now()
	if v.CreatedAt.IsZero() {
		v.CreatedAt = now
	}
	v.UpdatedAt, v.Rev = now, 1
	return s.volumeItem(*v)
}

// PutVolume records a new volume at Rev 1; ErrExists if it is known already.
func (s *Store) PutVolume(ctx context.Context, v Volume) (Volume, error) {
	item, err := s.newVolumeItem(&v)
	if err != nil {
		return v, err
	}
	return v, s.putNew(ctx, item, "put volume "+v.VolumeID)
}

// GetVolume reads one volume (consistent).
func (s *Store) GetVolume(ctx context.Context, pool, volumeID string) (Volume, error) {
	var v Volume
	err := s.get(ctx, poolPK(pool), volumeSK(volumeID), &v)
	return v, err
}

// TransitionVolume writes next in place of the stored volume if that still
// has state from and revision next.Rev (the one the caller read). It returns
// the written volume with Rev incremented, or ErrConflict.
func (s *Store) TransitionVolume(ctx context.Context, next Volume, from VolumeState) (Volume, error) {
	rev := next.Rev
	next.Rev, next.UpdatedAt = rev+1, s.now()
	item, err := s.volumeItem(next)
	if err != nil {
		return next, err
	}
	return next, s.putAtRev(ctx, item, rev, "#state = :from", map[string]string{"#state": "state"},
		map[string]types.AttributeValue{":from": str(string(from))},
		fmt.Sprintf("volume %s %s@%d → %s", next.VolumeID, from, rev, next.State))
}

// DeleteVolume drops a volume record if it still has revision rev.
func (s *Store) DeleteVolume(ctx context.Context, pool, volumeID string, rev int64) error {
	return s.deleteAtRev(ctx, poolPK(pool), volumeSK(volumeID), rev, fmt.Sprintf("delete volume %s@%d", volumeID, rev))
}

// ListVolumes lists every volume record of a pool (one partition query,
// consistent).
func (s *Store) ListVolumes(ctx context.Context, pool string) ([]Volume, error) {
	return queryPrefix[Volume](ctx, s, poolPK(pool), prefixVolume)
}

// ListVolumesByState lists the volumes of one pool, AZ and state through the
// GSI, oldest first. GSI reads are eventually consistent: callers must treat
// the result as candidates and transition them conditionally.
func (s *Store) ListVolumesByState(ctx context.Context, pool, az string, state VolumeState) ([]Volume, error) {
	var out []Volume
	err := s.queryAll(ctx, gsiQuery(pool, az, state, 0), func(item map[string]types.AttributeValue) error {
		var v Volume
		if err := unmarshal(item, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

func gsiQuery(pool, az string, state VolumeState, limit int32) *dynamodb.QueryInput {
	in := &dynamodb.QueryInput{
		IndexName:                 aws.String(IndexGSI1),
		KeyConditionExpression:    aws.String("#g = :g"),
		ExpressionAttributeNames:  map[string]string{"#g": AttrGSI1PK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":g": str(gsi1PK(pool, az, state))},
	}
	if limit > 0 {
		in.Limit = aws.Int32(limit)
	}
	return in
}

// RaiseVolumeSeq raises the seq of the volume bound to instanceID, in use
// or still attaching, to seq, the watermark its agent reported on it, and
// records space when it is newer than the volume's; a volume in another
// state or bound to another instance is left alone, and seq never falls.
// Attaching counts: the agent can mount the volume, catch up and complete
// the launch hook, and the instance can enter service and report, before
// the lifecycle Lambda records the attachment (attaching → in-use keeps
// the raised seq). Conflicting writers are retried.
func (s *Store) RaiseVolumeSeq(ctx context.Context, pool, volumeID, instanceID string, seq int64, space *Space) error {
	for try := 0; ; try++ {
		v, err := s.GetVolume(ctx, pool, volumeID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if (v.State != VolumeInUse && v.State != VolumeAttaching) || v.InstanceID != instanceID {
			return nil
		}
		newerSpace := space != nil && (v.Space == nil || space.At.After(v.Space.At))
		if v.Seq >= seq && !newerSpace {
			return nil
		}
		next := v
		next.Seq = max(v.Seq, seq)
		if newerSpace {
			sp := *space
			next.Space = &sp
		}
		_, err = s.TransitionVolume(ctx, next, v.State)
		if !errors.Is(err, ErrConflict) {
			return err
		}
		if try+1 >= maxReportTries {
			return fmt.Errorf("raise seq of volume %s: gave up after %d tries: %w", volumeID, maxReportTries, err)
		}
		if err := awserr.Sleep(ctx, time.Duration(rand.IntN(10)+1)*time.Millisecond); err != nil {
			return err
		}
	}
}
