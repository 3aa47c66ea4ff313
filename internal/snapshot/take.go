package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// maxAttempts is how many in-service volumes one run tries to freeze when
// the freeze itself fails (an agent that does not answer should not stop
// the pool's snapshots).
const maxAttempts = 2

// TakeResult says what Take did.
type TakeResult struct {
	SnapshotID string
	VolumeID   string
	InstanceID string
	Seq        int64 // the frozen volume's watermark, also the volsd:seq tag
	// Reused is set when a snapshot of this volume at this seq existed
	// already (a retried run): none was created.
	Reused bool
	// Skipped says why no snapshot was taken ("" when one was).
	Skipped string
}

type candidate struct {
	vol  store.Volume
	inst store.Instance
}

// Take snapshots one in-service volume whose content is newer than the
// pool's newest snapshot (pending or completed): the one whose instance last
// reported the highest seq, the journal head if any did. It holds the pool's
// snapshot lease while it works, so concurrent runs skip.
//
// For the chosen instance it sends volsd-Freeze (maxSeconds =
// FreezeSeconds) and waits for Success within two thirds of that bound,
// reads the frozen seq from the agent's report, and calls CreateSnapshot
// (tags volsd:pool, volsd:seq, Name) while the volume is still frozen — or
// reuses a snapshot of that volume at that seq that a retried run already
// started. volsd-Thaw follows as soon as CreateSnapshot returns, and in any
// case once the freeze was attempted (error, timeout, cancelled ctx: the
// thaw runs on a fresh context bounded by ThawTimeout). The pending record
// is written after the thaw; SyncRecords adopts the snapshot if the run dies
// before.
func (r *Runner) Take(ctx context.Context) (TakeResult, error) {
	var res TakeResult
	head, err := r.st.Head(ctx, r.cfg.Pool)
	if err != nil {
		return res, err
	}
	newest, err := r.newestTaken(ctx)
	if err != nil {
		return res, err
	}
	cands, err := r.candidates(ctx)
	if err != nil {
		return res, err
	}
	if len(cands) == 0 {
		res.Skipped = "no in-service volume in the pool"
		r.log.Info("no snapshot taken", "reason", res.Skipped, "head", head)
		return res, nil
	}
	if best := cands[0].inst.Seq; best <= newest.Seq {
		res.Skipped = fmt.Sprintf("snapshot %s (%s) already holds seq %d; the best in-service volume is at seq %d",
			newest.SnapshotID, newest.State, newest.Seq, best)
		r.log.Info("no snapshot taken", "reason", res.Skipped, "head", head)
		return res, nil
	}

	owner := newOwner()
	bound := time.Duration(r.cfg.FreezeSeconds) * time.Second
	until := r.now().Add(maxAttempts*(bound+r.cfg.ThawTimeout) + time.Minute)
	if _, err := r.st.AcquireLease(ctx, r.cfg.Pool, LeaseName, owner, until); err != nil {
		if errors.Is(err, store.ErrConflict) {
			res.Skipped = "another run is taking a snapshot: " + err.Error()
			r.log.Info("no snapshot taken", "reason", res.Skipped)
			return res, nil
		}
		return res, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ThawTimeout)
		defer cancel()
		if err := r.st.ReleaseLease(rctx, r.cfg.Pool, LeaseName, owner); err != nil {
			r.log.Warn("snapshot lease not released; it runs out by itself", "until", until, "error", err)
		}
	}()

	// A run that held the lease until now may have taken it already.
	if newest, err = r.newestTaken(ctx); err != nil {
		return res, err
	}
	var errs []error
	for i, c := range cands {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if i >= maxAttempts || c.inst.Seq <= newest.Seq {
			break
		}
		res, freezeFailed, err := r.takeFrom(ctx, c, newest)
		if err == nil {
			return res, nil
		}
		errs = append(errs, err)
		if !freezeFailed {
			return res, errors.Join(errs...)
		}
		r.log.Warn("freeze failed; trying the next in-service volume", "instance", c.inst.InstanceID, "error", err)
	}
	if len(errs) == 0 {
		res.Skipped = fmt.Sprintf("snapshot %s (%s) already holds seq %d", newest.SnapshotID, newest.State, newest.Seq)
		r.log.Info("no snapshot taken", "reason", res.Skipped)
	}
	return res, errors.Join(errs...)
}

// newestTaken returns the pool's record with the highest seq among pending
// and completed ones (Seq -1 when there is none).
func (r *Runner) newestTaken(ctx context.Context) (store.Snapshot, error) {
	recs, err := r.st.ListSnapshots(ctx, r.cfg.Pool)
	best := store.Snapshot{Seq: -1}
	for _, rec := range recs {
		if (rec.State == store.SnapshotPending || rec.State == store.SnapshotCompleted) &&
			(best.Seq < 0 || newer(rec.Seq, rec.CreatedAt, rec.SnapshotID, best.Seq, best.CreatedAt, best.SnapshotID)) {
			best = rec
		}
	}
	return best, err
}

// candidates lists the pool's in-use volumes whose instance is InService in
// the group, best first: highest reported seq, then the latest report.
func (r *Runner) candidates(ctx context.Context) ([]candidate, error) {
	out, err := r.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{r.cfg.Group},
	})
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", r.cfg.Group, err)
	}
	if len(out.AutoScalingGroups) == 0 {
		return nil, fmt.Errorf("auto scaling group %s not found", r.cfg.Group)
	}
	inService := map[string]bool{}
	for _, g := range out.AutoScalingGroups {
		for _, in := range g.Instances {
			if in.LifecycleState == astypes.LifecycleStateInService {
				inService[aws.ToString(in.InstanceId)] = true
			}
		}
	}
	vols, err := r.st.ListVolumes(ctx, r.cfg.Pool)
	if err != nil {
		return nil, err
	}
	insts, err := r.st.ListInstances(ctx, r.cfg.Pool)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]store.Instance, len(insts))
	for _, in := range insts {
		byID[in.InstanceID] = in
	}
	var cands []candidate
	for _, v := range vols {
		in, ok := byID[v.InstanceID]
		if v.State != store.VolumeInUse || v.InstanceID == "" || !inService[v.InstanceID] || !ok ||
			in.State == store.InstanceTerminating || in.State == store.InstanceGone ||
			in.VolumeID != "" && in.VolumeID != v.VolumeID {
			continue
		}
		cands = append(cands, candidate{vol: v, inst: in})
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i].inst, cands[j].inst
		if a.Seq != b.Seq {
			return a.Seq > b.Seq
		}
		if !a.LastReportAt.Equal(b.LastReportAt) {
			return a.LastReportAt.After(b.LastReportAt)
		}
		return cands[i].vol.VolumeID < cands[j].vol.VolumeID
	})
	return cands, nil
}

// takeFrom freezes c's instance, snapshots its volume and thaws it.
// freezeFailed says the freeze itself did not succeed (so another volume
// may be tried).
func (r *Runner) takeFrom(ctx context.Context, c candidate, newest store.Snapshot) (res TakeResult, freezeFailed bool, err error) {
	inst, vol := c.inst.InstanceID, c.vol.VolumeID
	log := r.log.With("instance", inst, "volume", vol)
	res = TakeResult{InstanceID: inst, VolumeID: vol}
	bound := time.Duration(r.cfg.FreezeSeconds) * time.Second

	// From here on a freeze may reach the agent: thaw on every way out.
	thawed := false
	defer func() {
		if !thawed {
			err = errors.Join(err, r.thaw(ctx, log, inst))
		}
	}()
	sentAt := r.now()
	wctx, cancel := context.WithDeadline(ctx, sentAt.Add(bound*2/3))
	rep, err := r.freeze(wctx, inst)
	cancel()
	if err != nil {
		return res, true, err
	}
	if rep.Volume != "" && rep.Volume != vol {
		return res, true, fmt.Errorf("agent on %s froze %s but the table says it holds %s; no snapshot", inst, rep.Volume, vol)
	}
	res.Seq = rep.Seq
	log = log.With("seq", rep.Seq)
	log.Info("volume frozen", "head", rep.Head, "reportedSeq", c.inst.Seq)

	existing, err := r.describePool(ctx,
		ec2types.Filter{Name: aws.String("volume-id"), Values: []string{vol}},
		ec2types.Filter{Name: aws.String("tag:" + events.TagSeq), Values: []string{strconv.FormatInt(rep.Seq, 10)}})
	if err != nil {
		return res, false, err
	}
	var snap poolSnapshot
	for _, s := range existing {
		if s.SeqOK && s.Seq == rep.Seq && (s.State == ec2types.SnapshotStatePending || s.State == ec2types.SnapshotStateCompleted) {
			snap, res.Reused = s, true
			break
		}
	}
	switch {
	case res.Reused:
		log.Info("snapshot of this volume at this seq exists already; none created", "snapshot", snap.ID)
	case rep.Seq <= newest.Seq:
		res.Skipped = fmt.Sprintf("frozen volume is at seq %d; snapshot %s already holds seq %d", rep.Seq, newest.SnapshotID, newest.Seq)
		log.Info("no snapshot taken", "reason", res.Skipped)
		thawed = true
		return res, false, r.thaw(ctx, log, inst)
	default:
		// The agent thaws by itself FreezeSeconds after it froze, which is
		// after sentAt: CreateSnapshot must return before that.
		createBy := sentAt.Add(bound - time.Second)
		if !r.now().Before(createBy) {
			return res, false, fmt.Errorf("freeze of %s confirmed too late to snapshot within its %s bound", vol, bound)
		}
		cctx, cancel := context.WithDeadline(ctx, createBy)
		out, err := r.ec2.CreateSnapshot(cctx, &ec2.CreateSnapshotInput{
			VolumeId:    aws.String(vol),
			Description: aws.String(fmt.Sprintf("volsd %s: %s at seq %d", r.cfg.Pool, vol, rep.Seq)),
			TagSpecifications: []ec2types.TagSpecification{{
				ResourceType: ec2types.ResourceTypeSnapshot,
				Tags: []ec2types.Tag{
					{Key: aws.String(events.TagPool), Value: aws.String(r.cfg.Pool)},
					{Key: aws.String(events.TagSeq), Value: aws.String(strconv.FormatInt(rep.Seq, 10))},
					{Key: aws.String(events.TagName), Value: aws.String("volsd-" + r.cfg.Pool)},
				},
			}},
		})
		cancel()
		if err != nil {
			return res, false, fmt.Errorf("create snapshot of %s at seq %d: %w", vol, rep.Seq, err)
		}
		snap = poolSnapshot{ID: aws.ToString(out.SnapshotId), VolumeID: vol, State: out.State,
			Start: aws.ToTime(out.StartTime).UTC(), Seq: rep.Seq, SeqOK: true}
		log.Info("snapshot started", "snapshot", snap.ID, "state", snap.State)
	}
	thawed = true
	thawErr := r.thaw(ctx, log, inst)

	res.SnapshotID = snap.ID
	state, ok := recordState(snap.State)
	if !ok || snap.State == "" {
		state = store.SnapshotPending
	}
	if snap.Start.IsZero() {
		snap.Start = r.now()
	}
	_, err = r.st.PutSnapshot(ctx, store.Snapshot{
		Pool: r.cfg.Pool, SnapshotID: snap.ID, State: state, Seq: rep.Seq, VolumeID: vol, CreatedAt: snap.Start,
	})
	if errors.Is(err, store.ErrExists) {
		err = nil
	}
	return res, false, errors.Join(err, thawErr)
}

// freeze sends volsd-Freeze to one instance and returns the agent's report.
func (r *Runner) freeze(ctx context.Context, instanceID string) (events.AgentReport, error) {
	params := map[string][]string{"maxSeconds": {strconv.Itoa(r.cfg.FreezeSeconds)}}
	id, err := r.sendCommand(ctx, r.cfg.DocFreeze, instanceID, params, freezeDelivery)
	if err != nil {
		return events.AgentReport{}, err
	}
	out, err := r.waitCommand(ctx, r.cfg.DocFreeze, id, instanceID)
	if err != nil {
		return events.AgentReport{}, err
	}
	rep, err := events.ParseAgentReport(aws.ToString(out.StandardOutputContent))
	if err != nil {
		return rep, fmt.Errorf("%s on %s succeeded but its report is unreadable: %w", r.cfg.DocFreeze, instanceID, err)
	}
	switch {
	case rep.Error != "":
		return rep, fmt.Errorf("%s on %s reported an error: %s", r.cfg.DocFreeze, instanceID, rep.Error)
	case rep.Command != "" && rep.Command != "freeze":
		return rep, fmt.Errorf("%s on %s answered with a %q report, not freeze", r.cfg.DocFreeze, instanceID, rep.Command)
	case rep.Seq < 0:
		return rep, fmt.Errorf("%s on %s reported seq %d", r.cfg.DocFreeze, instanceID, rep.Seq)
	}
	return rep, nil
}

// thaw sends volsd-Thaw to one instance on a fresh context bounded by
// ThawTimeout (the run's ctx may be cancelled) and waits for its result in
// that bound. Not hearing back in time is only logged: the agent thaws by
// itself after FreezeSeconds. A thaw that failed is an error.
func (r *Runner) thaw(ctx context.Context, log *slog.Logger, instanceID string) error {
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ThawTimeout)
	defer cancel()
	id, err := r.sendCommand(tctx, r.cfg.DocThaw, instanceID, nil, thawDelivery)
	if err != nil {
		log.Error("thaw not sent; the agent thaws by itself", "maxSeconds", r.cfg.FreezeSeconds, "error", err)
		return fmt.Errorf("thaw %s: %w (the agent thaws by itself after %d s)", instanceID, err, r.cfg.FreezeSeconds)
	}
	_, err = r.waitCommand(tctx, r.cfg.DocThaw, id, instanceID)
	switch {
	case err == nil:
		log.Info("volume thawed", "command", id)
		return nil
	case tctx.Err() != nil:
		log.Warn("thaw sent but not confirmed in time; the agent thaws by itself", "command", id,
			"maxSeconds", r.cfg.FreezeSeconds, "error", err)
		return nil
	default:
		log.Error("thaw failed", "command", id, "error", err)
		return fmt.Errorf("thaw %s: %w", instanceID, err)
	}
}
