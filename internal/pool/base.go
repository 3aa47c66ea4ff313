package pool

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// base is what a new volume is made from: a snapshot (or nothing: blank)
// and the journal seq its content is at.
type base struct {
	SnapshotID string // "" = blank
	Seq        int64
	// Own reports a completed snapshot of the pool itself (not the
	// configured source).
	Own bool
}

// bases returns what new volumes may be made from, best first: the pool's
// completed snapshots, newest (highest seq) first; without any, the
// configured source snapshot, else blank. Once the pool has snapshots of its
// own the source is never used again: the journal below them may have been
// compacted away.
func (p *Pool) bases(ctx context.Context) ([]base, error) {
	var snaps []store.Snapshot
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		snaps, err = p.store.ListSnapshots(ctx, p.cfg.Pool)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return p.basesFrom(snaps), nil
}

func (p *Pool) basesFrom(snaps []store.Snapshot) []base {
	var out []base
	for _, s := range snaps {
		if s.State == store.SnapshotCompleted {
			out = append(out, base{SnapshotID: s.SnapshotID, Seq: s.Seq, Own: true})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq > out[j].Seq })
	if len(out) == 0 {
		out = append(out, base{SnapshotID: p.cfg.SourceSnapshot})
	}
	return out
}

// createInput is the CreateVolume request for a pool volume in az from b.
func (p *Pool) createInput(az string, b base, token string) *ec2.CreateVolumeInput {
	in := &ec2.CreateVolumeInput{
		AvailabilityZone: aws.String(az),
		Size:             aws.Int32(p.cfg.SizeGiB),
		VolumeType:       types.VolumeType(p.cfg.VolumeType),
		Encrypted:        aws.Bool(true),
		ClientToken:      aws.String(token),
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeVolume,
			Tags: []types.Tag{
				{Key: aws.String(events.TagPool), Value: aws.String(p.cfg.Pool)},
				{Key: aws.String(events.TagName), Value: aws.String("volsd-" + p.cfg.Pool)},
			},
		}},
	}
	if p.cfg.IOPS > 0 && p.cfg.VolumeType != "gp2" {
		in.Iops = aws.Int32(p.cfg.IOPS)
	}
	if p.cfg.Throughput > 0 && p.cfg.VolumeType == "gp3" {
		in.Throughput = aws.Int32(p.cfg.Throughput)
	}
	if p.cfg.KMSKeyID != "" {
		in.KmsKeyId = aws.String(p.cfg.KMSKeyID)
	}
	if b.SnapshotID != "" {
		in.SnapshotId = aws.String(b.SnapshotID)
		if p.cfg.InitRate > 0 {
			in.VolumeInitializationRate = aws.Int32(p.cfg.InitRate)
		}
	}
	return in
}
