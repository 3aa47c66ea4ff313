package story

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// Sizes scale the story: the demo's full size, the test's small one.
type Sizes struct {
	Tree      harness.TreeSpec
	IdlePerAZ int
	Launch    int // first instances
	ScaleOut  int
	ScaleIn   int
	// Converge bounds each wait for the fleet.
	Converge time.Duration
}

// DemoSizes is what `make demo` runs: ≥ 500 files, ≥ 200 MB, one file of
// 100 MiB.
func DemoSizes() Sizes {
	return Sizes{
		Tree:      harness.TreeSpec{Files: 600, TotalBytes: 240 << 20, BigFile: 100 << 20, Seed: 1},
		IdlePerAZ: 2, Launch: 3, ScaleOut: 2, ScaleIn: 2, Converge: 5 * time.Minute,
	}
}

// TestSizes is the end-to-end test's story: the same steps, small content.
func TestSizes() Sizes {
	return Sizes{
		Tree:      harness.TreeSpec{Files: 120, TotalBytes: 6 << 20, BigFile: 2 << 20, Seed: 2},
		IdlePerAZ: 2, Launch: 3, ScaleOut: 2, ScaleIn: 2, Converge: 2 * time.Minute,
	}
}

// Remote is where the story pushes its tree on the volumes.
const Remote = "site"

// Result is what the story measured.
type Result struct {
	Files        int
	Bytes        int64
	PushDuration time.Duration
	Head         int64
	SnapshotSeq  int64
	CaughtUp     int // entries the instance from the refreshed volume applied
	Status       string
}

// Run tells the story on c, checking every step; the first failed check
// ends it with an error.
func Run(ctx context.Context, c *harness.Cluster, n *Narrator, sz Sizes) (*Result, error) {
	res := &Result{}
	op, err := NewOperator(c)
	if err != nil {
		return res, err
	}
	pool := c.Opts.Pool

	// 1. The idle pool.
	done := n.Step("reconcile (schedule) fills the idle pool: %d volumes per AZ in %s", sz.IdlePerAZ, strings.Join(c.Opts.AZs, ", "))
	if _, err := c.Schedule(ctx, "reconcile"); err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	idle, err := IdleByAZ(ctx, c)
	if err != nil {
		return res, err
	}
	for _, az := range c.Opts.AZs {
		if len(idle[az]) != sz.IdlePerAZ {
			return res, fmt.Errorf("after reconcile %s has %d idle volumes; want %d", az, len(idle[az]), sz.IdlePerAZ)
		}
		for _, v := range idle[az] {
			if !c.Disks.HasVolume(v.VolumeID) {
				return res, fmt.Errorf("idle volume %s has no EBS image: it was not created through EC2", v.VolumeID)
			}
		}
	}
	done("%d idle volumes, each a sparse %d GiB image", sz.IdlePerAZ*len(c.Opts.AZs), c.Opts.VolumeSizeGiB)

	// 2. Launch.
	done = n.Step("launch %d instances (launch hook → lifecycle Lambda claims and attaches; agent `up` mounts and completes the hook)", sz.Launch)
	results, err := scaleOut(ctx, c, sz.Launch)
	if err != nil {
		return res, err
	}
	for _, r := range results {
		n.Note("%s in %s: %s after %.1f s", r.InstanceID, r.AZ, r.Result, r.Took.Seconds())
	}
	if err := checkHolders(ctx, c); err != nil {
		return res, err
	}
	done("%d instances in service, each with its own volume mounted", len(c.Group.InService()))

	// 3. Content.
	done = n.Step("generate a content tree (%d files, %s, one file of %s)", sz.Tree.Files, mib(sz.Tree.TotalBytes), mib(sz.Tree.BigFile))
	src := filepath.Join(c.WorkDir(), "content", Remote)
	st, err := harness.GenerateTree(src, sz.Tree)
	if err != nil {
		return res, err
	}
	want, err := Pushed(c.WorkDir(), src, Remote)
	if err != nil {
		return res, err
	}
	res.Files, res.Bytes = st.Files, st.Bytes
	done("%d files in %d directories, %s", st.Files, st.Dirs, mib(st.Bytes))

	// 4. Push and converge.
	done = n.Step("volsd push --wait: upload blobs and manifest, queue the request; push Lambda → journal → volsd-Apply on every instance")
	begin := time.Now()
	out, err := op.Push(ctx, src, Remote)
	if err != nil {
		return res, err
	}
	res.PushDuration = time.Since(begin)
	n.Note("%s", lastLines(out, 4))
	if err := WaitConverged(ctx, c, want, sz.Converge); err != nil {
		return res, err
	}
	head, err := c.Store.Head(ctx, pool)
	if err != nil {
		return res, err
	}
	done("all %d instances hold the same %d files (rsync -rlpcni --delete finds nothing to change); journal head %d; %.1f MB/s end to end",
		len(c.Group.InService()), want.Len(), head, float64(st.Bytes)/1e6/res.PushDuration.Seconds())

	// 5. Scale out.
	done = n.Step("scale out by %d: new instances enter service only with current content", sz.ScaleOut)
	before := map[string]bool{}
	for _, id := range c.Group.InService() {
		before[id] = true
	}
	results, err = scaleOut(ctx, c, sz.ScaleOut)
	if err != nil {
		return res, err
	}
	for _, r := range results {
		in, ok := c.Fleet.Get(r.InstanceID)
		if !ok {
			return res, fmt.Errorf("new instance %s is gone", r.InstanceID)
		}
		// Checked at once: the hook completed, so the content must be there.
		if err := VerifyInstance(in, want); err != nil {
			return res, fmt.Errorf("instance entered service without the current content: %w", err)
		}
		rep := in.UpReport()
		applied := -1
		if rep != nil {
			applied = rep.Applied
		}
		n.Note("%s in %s: in service after %.1f s with seq %d (applied %d entries at start)", r.InstanceID, r.AZ, r.Took.Seconds(), head, applied)
	}
	if err := VerifyAll(c, want); err != nil {
		return res, err
	}
	done("%d instances in service, all identical", len(c.Group.InService()))

	// 6. Delete a directory.
	dir := pickDirectory(want, Remote)
	done = n.Step("volsd delete --wait %s", dir)
	out, err = op.Delete(ctx, dir)
	if err != nil {
		return res, err
	}
	n.Note("%s", lastLines(out, 3))
	had := want.Len()
	if want, err = want.Without(dir); err != nil {
		return res, err
	}
	removed := had - want.Len()
	if err := WaitConverged(ctx, c, want, sz.Converge); err != nil {
		return res, err
	}
	done("%d files gone from every instance; %d files remain", removed, want.Len())

	// 7. Scale in with recycle.
	done = n.Step("scale in by %d (release policy %s): terminate hook → agent releases → detach → back to the idle pool", sz.ScaleIn, c.Opts.ReleasePolicy)
	head, _ = c.Store.Head(ctx, pool)
	held := map[string]string{}
	for _, id := range c.Group.InService() {
		if inst, err := c.Store.GetInstance(ctx, pool, id); err == nil {
			held[id] = inst.VolumeID
		}
	}
	terms, err := c.Group.ScaleInResults(ctx, sz.ScaleIn)
	if err != nil {
		return res, err
	}
	if err := c.Settle(ctx); err != nil {
		return res, err
	}
	for _, t := range terms {
		id := t.InstanceID
		if t.Result != "CONTINUE" || t.TimedOut {
			return res, fmt.Errorf("terminate hook of %s: %s (timed out: %v); the lifecycle Lambda must complete it after the release", id, t.Result, t.TimedOut)
		}
		vol := held[id]
		if vol == "" {
			return res, fmt.Errorf("terminated instance %s had no volume in the table", id)
		}
		v, err := c.Store.GetVolume(ctx, pool, vol)
		if err != nil {
			return res, fmt.Errorf("volume %s of terminated %s: %w", vol, id, err)
		}
		if v.State != store.VolumeIdle || v.InstanceID != "" || v.Seq != head {
			return res, fmt.Errorf("volume %s of terminated %s is %s (instance %q, seq %d); recycle wants idle at seq %d", vol, id, v.State, v.InstanceID, v.Seq, head)
		}
		if _, attached := c.Disks.Loop(vol); attached {
			return res, fmt.Errorf("volume %s of terminated %s is still a loop device", vol, id)
		}
		n.Note("%s terminated (hook completed after %.1f s); its volume %s is idle again at seq %d", id, t.Took.Seconds(), vol, v.Seq)
	}
	if err := VerifyAll(c, want); err != nil {
		return res, err
	}
	done("%d instances left, all identical", len(c.Group.InService()))

	// 8. An update the recycled volumes miss.
	done = n.Step("volsd push --wait an update (one changed file)")
	if err := touchFile(src, want.Paths()); err != nil {
		return res, err
	}
	if want, err = want.Replace(Remote, src); err != nil {
		return res, err
	}
	if _, err = op.Push(ctx, src, Remote); err != nil {
		return res, err
	}
	if err := WaitConverged(ctx, c, want, sz.Converge); err != nil {
		return res, err
	}
	head, _ = c.Store.Head(ctx, pool)
	done("journal head %d; every instance has the new file", head)

	// 9. Snapshot.
	done = n.Step("snapshot (schedule): freeze an in-service volume, CreateSnapshot (a copy of its image), thaw")
	if _, err := c.Schedule(ctx, "snapshot"); err != nil {
		return res, fmt.Errorf("snapshot: %w", err)
	}
	snap, err := newestSnapshot(ctx, c)
	if err != nil {
		return res, err
	}
	if snap.Seq != head {
		return res, fmt.Errorf("snapshot %s holds seq %d; the head was %d", snap.SnapshotID, snap.Seq, head)
	}
	if err := checkSnapshotTags(ctx, c, snap); err != nil {
		return res, err
	}
	res.SnapshotSeq = snap.Seq
	done("%s of %s at seq %d, tagged volsd:pool and volsd:seq", snap.SnapshotID, snap.VolumeID, snap.Seq)

	// 10. Changes after the snapshot.
	done = n.Step("volsd push --wait after the snapshot (one new file)")
	if err := os.WriteFile(filepath.Join(src, "after-snapshot.html"), []byte("<p>written after the snapshot</p>\n"), 0o644); err != nil {
		return res, err
	}
	if want, err = want.Replace(Remote, src); err != nil {
		return res, err
	}
	if _, err = op.Push(ctx, src, Remote); err != nil {
		return res, err
	}
	if err := WaitConverged(ctx, c, want, sz.Converge); err != nil {
		return res, err
	}
	head, _ = c.Store.Head(ctx, pool)
	done("journal head %d, %d entries after the snapshot", head, head-snap.Seq)

	// 11. Refresh.
	done = n.Step("reconcile refreshes idle volumes behind the head from the snapshot")
	refreshed, err := refreshUntilFresh(ctx, c, snap, 6)
	if err != nil {
		return res, err
	}
	vols, _ := PoolVolumes(ctx, c)
	n.Note("%s", vols)
	done("%d idle volumes, all made from %s at seq %d", refreshed, snap.SnapshotID, snap.Seq)

	// 12. A new instance from a refreshed volume.
	done = n.Step("scale out by 1: the new instance gets a refreshed volume and catches up only the entries after the snapshot")
	results, err = scaleOut(ctx, c, 1)
	if err != nil {
		return res, err
	}
	id := results[len(results)-1].InstanceID
	inst, err := c.Store.GetInstance(ctx, pool, id)
	if err != nil {
		return res, err
	}
	vol, err := c.Store.GetVolume(ctx, pool, inst.VolumeID)
	if err != nil {
		return res, err
	}
	if vol.SnapshotID != snap.SnapshotID {
		return res, fmt.Errorf("instance %s got volume %s made from %q; want one from %s", id, vol.VolumeID, vol.SnapshotID, snap.SnapshotID)
	}
	in, _ := c.Fleet.Get(id)
	// The hook completes inside `volsd-agent up`, just before it prints its
	// report and exits: wait for the process, not only for the hook.
	select {
	case <-in.UpDone():
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	rep := in.UpReport()
	if rep == nil {
		return res, fmt.Errorf("instance %s has no report from `volsd-agent up`", id)
	}
	if int64(rep.Applied) != head-snap.Seq {
		return res, fmt.Errorf("instance %s applied %d entries at start; the snapshot is at %d and the head at %d, so only %d were due",
			id, rep.Applied, snap.Seq, head, head-snap.Seq)
	}
	if err := VerifyInstance(in, want); err != nil {
		return res, err
	}
	res.CaughtUp = rep.Applied
	done("%s: volume %s from %s, applied %d entries (%d..%d), content identical", id, vol.VolumeID, snap.SnapshotID, rep.Applied, snap.Seq+1, head)

	// 13. Status.
	done = n.Step("volsd status")
	status, err := op.Status(ctx)
	if err != nil {
		return res, err
	}
	res.Status = status
	n.Note("%s", status)
	if err := VerifyAll(c, want); err != nil {
		return res, err
	}
	if err := c.Settle(ctx); err != nil {
		return res, err
	}
	if errs := c.AsyncErrors(); len(errs) > 0 {
		return res, fmt.Errorf("asynchronous invocations failed after retries: %w", errors.Join(errs...))
	}
	js, err := op.StatusJSON(ctx)
	if err != nil {
		return res, err
	}
	if err := StatusTells(ctx, c, js, head, id); err != nil {
		return res, fmt.Errorf("volsd status does not tell the truth: %w", err)
	}
	n.Note("status truth: %s (the newest) and every instance in service ready at seq %d; each in-use volume record at its instance's seq", id, head)
	res.Head = head
	done("%d instances, journal head %d, every instance byte-identical", len(c.Group.InService()), head)
	return res, nil
}

// scaleOut launches n instances and waits until they are in service; an
// abandoned launch is an error (it means the lifecycle failed).
func scaleOut(ctx context.Context, c *harness.Cluster, n int) ([]harness.LaunchResult, error) {
	ls, err := c.Group.ScaleOut(ctx, n)
	if err != nil {
		return nil, err
	}
	results, err := c.Group.WaitInService(ctx, ls)
	if err != nil {
		return results, err
	}
	for _, r := range results {
		if r.Result != "CONTINUE" {
			why := "the lifecycle Lambda abandoned it"
			if r.TimedOut {
				why = "the launch hook timed out (the agent never completed it)"
			}
			return results, fmt.Errorf("launch of %s in %s: %s: %s; see %s", r.InstanceID, r.AZ, r.Result, why, c.LogDir())
		}
	}
	return results, nil
}

// checkHolders checks that every in-service instance holds exactly one pool
// volume, in its AZ, attached in EC2, mounted by its agent.
func checkHolders(ctx context.Context, c *harness.Cluster) error {
	for _, id := range c.Group.InService() {
		out, err := c.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
			{Name: aws.String("attachment.instance-id"), Values: []string{id}},
			{Name: aws.String("tag:volsd:pool"), Values: []string{c.Opts.Pool}},
		}})
		if err != nil {
			return err
		}
		if len(out.Volumes) != 1 {
			return fmt.Errorf("instance %s has %d pool volumes attached; want exactly 1", id, len(out.Volumes))
		}
		vol := aws.ToString(out.Volumes[0].VolumeId)
		in, _ := c.Fleet.Get(id)
		if aws.ToString(out.Volumes[0].AvailabilityZone) != in.AZ {
			return fmt.Errorf("instance %s in %s got volume %s from %s", id, in.AZ, vol, aws.ToString(out.Volumes[0].AvailabilityZone))
		}
		mps, err := c.Disks.Mounted(vol)
		if err != nil {
			return err
		}
		if len(mps) != 1 || mps[0] != in.Mount {
			return fmt.Errorf("volume %s of %s is mounted at %v; want %s", vol, id, mps, in.Mount)
		}
	}
	return nil
}

// pickDirectory picks a directory of the pushed tree to delete: the
// largest course directory.
func pickDirectory(want Expected, root string) string {
	counts := map[string]int{}
	for _, p := range want.Paths() {
		parts := strings.Split(p, "/")
		if len(parts) > 3 && parts[1] == "courses" {
			counts[strings.Join(parts[:3], "/")]++
		}
	}
	best := ""
	for _, d := range slices.Sorted(maps.Keys(counts)) {
		if best == "" || counts[d] > counts[best] {
			best = d
		}
	}
	if best == "" {
		return root + "/assets"
	}
	return best
}

// touchFile rewrites one file of the local tree with new content.
func touchFile(src string, expected []string) error {
	for _, p := range expected {
		if strings.HasSuffix(p, ".css") {
			return os.WriteFile(filepath.Join(src, strings.TrimPrefix(p, Remote+"/")), []byte(fmt.Sprintf("/* updated %s */\nbody{margin:0}\n", time.Now().Format(time.RFC3339Nano))), 0o644)
		}
	}
	return errors.New("no .css file to update")
}

func newestSnapshot(ctx context.Context, c *harness.Cluster) (store.Snapshot, error) {
	snaps, err := c.Store.ListSnapshots(ctx, c.Opts.Pool)
	if err != nil {
		return store.Snapshot{}, err
	}
	var best store.Snapshot
	for _, s := range snaps {
		if s.State == store.SnapshotCompleted && (best.SnapshotID == "" || s.CreatedAt.After(best.CreatedAt) || s.Seq > best.Seq) {
			best = s
		}
	}
	if best.SnapshotID == "" {
		return best, fmt.Errorf("no completed snapshot in the table (records: %+v)", snaps)
	}
	return best, nil
}

func checkSnapshotTags(ctx context.Context, c *harness.Cluster, s store.Snapshot) error {
	out, err := c.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s.SnapshotID}})
	if err != nil {
		return err
	}
	if len(out.Snapshots) != 1 {
		return fmt.Errorf("snapshot %s not in EC2", s.SnapshotID)
	}
	tags := map[string]string{}
	for _, t := range out.Snapshots[0].Tags {
		tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	if tags[events.TagPool] != c.Opts.Pool || tags[events.TagSeq] != fmt.Sprint(s.Seq) {
		return fmt.Errorf("snapshot %s tags %v; want volsd:pool=%s volsd:seq=%d", s.SnapshotID, tags, c.Opts.Pool, s.Seq)
	}
	return nil
}

// refreshUntilFresh runs reconcile until every idle volume was made from
// snap (reconcile replaces at most VOLSD_REFRESH_MAX per run).
func refreshUntilFresh(ctx context.Context, c *harness.Cluster, snap store.Snapshot, runs int) (int, error) {
	for i := 0; i < runs; i++ {
		if _, err := c.Schedule(ctx, "reconcile"); err != nil {
			return 0, fmt.Errorf("reconcile: %w", err)
		}
		idle, err := IdleByAZ(ctx, c)
		if err != nil {
			return 0, err
		}
		total, fresh := 0, 0
		for _, vs := range idle {
			for _, v := range vs {
				total++
				if v.SnapshotID == snap.SnapshotID && v.Seq == snap.Seq {
					fresh++
				}
			}
		}
		if total > 0 && fresh == total {
			return total, nil
		}
	}
	vols, _ := PoolVolumes(ctx, c)
	return 0, fmt.Errorf("after %d reconcile runs not every idle volume was made from %s:\n%s", runs, snap.SnapshotID, vols)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
