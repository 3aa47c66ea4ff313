package pool

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/store"
)

// describeModificationsBatch is how many volume IDs one
// DescribeVolumesModifications call asks about.
const describeModificationsBatch = 200

// growable reports whether a volume may be grown in place: its record is
// idle or held by an instance, and EC2 shows it available or in use.
func growable(v store.Volume, ev ec2Volume) bool {
	switch v.State {
	case store.VolumeIdle, store.VolumeClaimed, store.VolumeAttaching, store.VolumeInUse:
	default:
		return false
	}
	return ev.State == types.VolumeStateAvailable || ev.State == types.VolumeStateInUse
}

// grow keeps pool volumes at the configured size (docs/design.md §5b): every
// volume smaller than SizeGiB — idle and in use alike — gets a ModifyVolume
// to SizeGiB, from the run's action budget, unless EBS would refuse it (a
// modification still modifying or optimizing, or one started less than 6
// hours ago: the next run after that grows it). The agent grows the
// filesystem once the device is larger. Records follow EC2's size.
func (r *recon) grow(ctx context.Context) {
	p := r.p
	var small []string
	wants := map[string]int32{}
	full := 0
	for _, id := range slices.Sorted(maps.Keys(r.vols)) {
		v := r.vols[id]
		ev, ok := r.ec2v[id]
		if !ok || !growable(v, ev) {
			continue
		}
		if ev.SizeGiB != v.SizeGiB {
			r.recordSize(ctx, v, ev.SizeGiB)
		}
		want, auto := wantSize(p.cfg, v, ev.SizeGiB)
		if want > ev.SizeGiB {
			small = append(small, id)
			wants[id] = want
			if auto {
				r.log.Info("auto-grow: the filesystem is short of free space", "volume", id, "size", ev.SizeGiB, "want", want,
					"freePercent", int(100*v.Space.FreeFraction()), "threshold", p.cfg.AutoGrowFreePercent)
			}
			continue
		}
		cannot := p.cfg.AutoGrowFreePercent <= 0 || ev.SizeGiB >= p.cfg.AutoGrowMaxGiB
		if fill := 100 * (1 - v.Space.FreeFraction()); cannot && v.Space != nil && fill >= float64(p.cfg.FillAlarmPercent) {
			full++
			r.log.Warn("volume is full and cannot grow (auto-grow off or at its maximum)", "volume", id, "size", ev.SizeGiB,
				"fillPercent", int(fill), "threshold", p.cfg.FillAlarmPercent, "autoGrowMaxGiB", p.cfg.AutoGrowMaxGiB)
		}
	}
	p.put(metrics.VolumesFullCannotGrow, float64(full), metrics.Count, "")
	if len(small) == 0 {
		return
	}
	last, err := p.lastModifications(ctx, small)
	if err != nil {
		r.fail(r.log, "read volume modifications", err)
		return
	}
	waiting := 0
	for _, id := range small {
		want := wants[id]
		log := r.log.With("volume", id, "size", r.ec2v[id].SizeGiB, "want", want)
		if m, ok := last[id]; ok {
			if m.ModificationState == types.VolumeModificationStateModifying || m.ModificationState == types.VolumeModificationStateOptimizing {
				log.Info("grow: a modification is still "+string(m.ModificationState)+"; next run", "target", aws.ToInt32(m.TargetSize))
				waiting++
				continue
			}
			if next := aws.ToTime(m.StartTime).Add(awserr.EBSModificationCooldown); r.now.Before(next) {
				log.Info("grow: EBS allows one modification per volume per 6 hours; next run after that", "after", next.UTC().Format(time.RFC3339))
				waiting++
				continue
			}
		}
		if !r.spend(ctx) {
			return
		}
		err := p.retry(ctx, func(ctx context.Context) error {
			_, err := p.ec2.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Size: aws.Int32(want)})
			return err
		})
		switch {
		case awserr.IsModificationRefused(err):
			log.Info("grow: EBS refused the modification for now; next run", "detail", awserr.Message(err))
			waiting++
		case err != nil:
			r.fail(log, "grow", err)
		default:
			r.rep.Grown++
			log.Info("grow: volume modification started")
		}
	}
	p.put("VolumesWaitingToGrow", float64(waiting), metrics.Count, "")
}

// wantSize is the size a pool volume should have: the pool's size, never
// below what it has; with auto-grow, one step more (up to the maximum)
// when the agent last reported its filesystem short of free space — only
// once the filesystem spans the device (at least 90% of it), so a grow
// the agent has not applied yet does not trigger another. auto says the
// step was taken.
func wantSize(cfg Config, v store.Volume, size int32) (want int32, auto bool) {
	want = max(cfg.SizeGiB, size)
	sp := v.Space
	if cfg.AutoGrowFreePercent <= 0 || sp == nil || sp.SizeBytes*10 < int64(size)<<30*9 ||
		100*sp.FreeFraction() >= float64(cfg.AutoGrowFreePercent) || size >= cfg.AutoGrowMaxGiB {
		return want, false
	}
	return max(want, min(size+cfg.AutoGrowStepGiB, cfg.AutoGrowMaxGiB)), true
}

// recordSize makes a volume record show EC2's size (a conditional write:
// a record that changed meanwhile is left to the next run).
func (r *recon) recordSize(ctx context.Context, v store.Volume, size int32) {
	next := v
	next.SizeGiB = size
	err := r.p.retry(ctx, func(ctx context.Context) error {
		var err error
		next, err = r.p.store.TransitionVolume(ctx, next, v.State)
		return err
	})
	if err != nil {
		r.fail(r.log.With("volume", v.VolumeID), "record the volume's size", err)
		return
	}
	r.set(next)
}

// lastModifications returns each volume's newest modification, if any.
func (p *Pool) lastModifications(ctx context.Context, ids []string) (map[string]types.VolumeModification, error) {
	out := map[string]types.VolumeModification{}
	for start := 0; start < len(ids); start += describeModificationsBatch {
		batch := ids[start:min(start+describeModificationsBatch, len(ids))]
		var page *ec2.DescribeVolumesModificationsOutput
		var token *string
		for {
			err := p.retry(ctx, func(ctx context.Context) error {
				var err error
				page, err = p.ec2.DescribeVolumesModifications(ctx, &ec2.DescribeVolumesModificationsInput{VolumeIds: batch, NextToken: token})
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("describe volume modifications: %w", err)
			}
			for _, m := range page.VolumesModifications {
				id := aws.ToString(m.VolumeId)
				if have, ok := out[id]; !ok || aws.ToTime(m.StartTime).After(aws.ToTime(have.StartTime)) {
					out[id] = m
				}
			}
			if token = page.NextToken; token == nil || *token == "" {
				break
			}
		}
	}
	return out, nil
}
