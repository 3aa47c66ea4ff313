package pool_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

func TestReconcileTopsUpToTargetWithinMaxSize(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{CreateDelay: 5 * time.Millisecond})
	rep := e.reconcile()
	if rep.Created != 6 || rep.Target != 2 || !rep.Complete {
		t.Fatalf("first run %+v", rep)
	}
	for _, az := range testAZs {
		if rep.Idle[az] != 2 || e.idle()[az] != 2 {
			t.Fatalf("idle %v (report %v)", e.idle(), rep.Idle)
		}
	}
	for _, ev := range e.ec2.Volumes() {
		if ev.Tags[events.TagPool] != "web" || ev.Tags["Name"] != "volsd-web" || !ev.Encrypted || ev.SizeGiB != 10 {
			t.Fatalf("volume %+v", ev)
		}
	}
	if !strings.Contains(e.metrics.String(), `"IdleVolumes":2`) {
		t.Fatalf("no IdleVolumes metric:\n%s", e.metrics.String())
	}
	// As the idle pool alarm reads it: namespace volsd, dimensions AZ and Pool.
	zones := map[string]bool{}
	for _, l := range metrics.ParseLines([]byte(e.metrics.String())) {
		if l.Name == metrics.IdleVolumes && l.Namespace == metrics.Namespace &&
			slices.Equal(l.Dimensions, metrics.Read[metrics.IdleVolumes]) && l.Values["Pool"] == "web" {
			zones[l.Values["AZ"]] = true
		}
	}
	if len(zones) != len(testAZs) {
		t.Fatalf("IdleVolumes with dimensions %v for zones %v, want %v:\n%s", metrics.Read[metrics.IdleVolumes], zones, testAZs, e.metrics.String())
	}
	if rep := e.reconcile(); rep.Changed() {
		t.Fatalf("second run changed things: %+v", rep)
	}

	// MaxSize caps the target: a group of at most 1 instance needs 1.
	e.asg.SetMaxSize(e.cfg.Group, 1)
	rep = e.reconcile()
	if rep.Target != 1 || rep.Deleted != 3 {
		t.Fatalf("after MaxSize 1: %+v", rep)
	}
	// VOLSD_AZS restricts the zones.
	e.asg.SetMaxSize(e.cfg.Group, 40)
	e.cfg.AZs = []string{"us-east-1b"}
	e.cfg.IdlePerAZ = 3
	e.rebuild()
	rep = e.reconcile()
	if rep.Created != 2 || len(rep.Idle) != 1 || rep.Idle["us-east-1b"] != 3 {
		t.Fatalf("with VOLSD_AZS: %+v", rep)
	}
	if got := e.idle(); got["us-east-1a"] != 1 || got["us-east-1c"] != 1 {
		t.Fatalf("zones outside VOLSD_AZS were touched: %v", got)
	}
}

func TestReconcileDeletesSurplusLowestSeqFirst(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{}, withConfig(func(c *pool.Config) { c.IdlePerAZ = 1 }))
	for i, seq := range []int64{7, 3, 9} {
		id := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1a", SizeGiB: 10, Tags: map[string]string{events.TagPool: "web"}})
		if _, err := e.store.PutVolume(bg, store.Volume{Pool: "web", VolumeID: id, State: store.VolumeIdle, AZ: "us-east-1a",
			Seq: seq, SizeGiB: 10, CreatedAt: time.Now().Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	e.reconcile()
	var left []int64
	for _, v := range e.volumes() {
		if v.AZ == "us-east-1a" {
			left = append(left, v.Seq)
		}
	}
	if len(left) != 1 || left[0] != 9 {
		t.Fatalf("kept seqs %v, want [9]", left)
	}
}

func TestReconcileAdoptsOrDeletesOrphans(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{}, withConfig(func(c *pool.Config) { c.IdlePerAZ = 1 }),
		withTiming(func(tm *pool.Timing) { tm.OrphanGrace = time.Minute }))
	snap := e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 10})
	oldSnap := e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 10})
	if _, err := e.store.PutSnapshot(bg, store.Snapshot{Pool: "web", SnapshotID: snap, State: store.SnapshotCompleted, Seq: 33}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	tags := map[string]string{events.TagPool: "web"}
	adopt := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1a", SizeGiB: 10, SnapshotID: snap, Tags: tags, Created: old})
	surplus := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1a", SizeGiB: 10, SnapshotID: snap, Tags: tags, Created: old})
	wrongSize := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1b", SizeGiB: 20, SnapshotID: snap, Tags: tags, Created: old})
	unknownBase := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1c", SizeGiB: 10, SnapshotID: oldSnap, Tags: tags, Created: old})
	young := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1c", SizeGiB: 10, SnapshotID: snap, Tags: tags})
	otherPool := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1c", SizeGiB: 10, Tags: map[string]string{events.TagPool: "other"}, Created: old})
	inst := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1b"})
	attached := e.ec2.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1b", SizeGiB: 10, SnapshotID: snap, Tags: tags, Created: old})
	if _, err := e.ec2.AttachVolume(bg, &ec2.AttachVolumeInput{VolumeId: &attached, InstanceId: &inst, Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}

	rep := e.reconcile()
	if rep.Adopted != 1 {
		t.Fatalf("report %+v", rep)
	}
	gone := func(id string) bool {
		v, ok := e.ec2.Volume(id)
		return !ok || v.State == types.VolumeStateDeleting
	}
	// Of two equal orphans in us-east-1a (target 1) one is adopted, the
	// other deleted.
	if _, err := e.store.GetVolume(bg, "web", adopt); err != nil {
		adopt, surplus = surplus, adopt
	}
	rec, err := e.store.GetVolume(bg, "web", adopt)
	if err != nil || rec.State != store.VolumeIdle || rec.Seq != 33 || rec.SnapshotID != snap || rec.AZ != "us-east-1a" {
		t.Fatalf("adopted record %+v %v", rec, err)
	}
	for name, id := range map[string]string{"surplus": surplus, "wrong size": wrongSize, "unknown base": unknownBase} {
		if !gone(id) {
			t.Errorf("%s orphan %s not deleted", name, id)
		}
	}
	for name, id := range map[string]string{"young": young, "other pool": otherPool, "attached": attached} {
		if gone(id) {
			t.Errorf("%s volume %s deleted", name, id)
		}
		if _, err := e.store.GetVolume(bg, "web", id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s volume %s recorded", name, id)
		}
	}
	if len(e.logs.lines("unknown to the table is attached")) != 1 {
		t.Fatal("no warning about the attached orphan")
	}
	// Every zone reaches its target with new volumes from the snapshot.
	for _, v := range e.volumes() {
		if v.SnapshotID != snap || v.Seq != 33 {
			t.Fatalf("new volume %+v not from the newest snapshot", v)
		}
	}
}

func TestReconcileDropsRecordsOfVolumesThatAreGone(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	victim := e.volumes()[0]
	if _, err := e.ec2.DeleteVolume(bg, &ec2.DeleteVolumeInput{VolumeId: &victim.VolumeID}); err != nil {
		t.Fatal(err)
	}
	rep := e.reconcile()
	if rep.Dropped != 1 || rep.Created != 1 {
		t.Fatalf("report %+v", rep)
	}
	if _, err := e.store.GetVolume(bg, "web", victim.VolumeID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record of the deleted volume: %v", err)
	}
	if e.idle()[victim.AZ] != 2 {
		t.Fatalf("idle %v", e.idle())
	}
}

func TestReconcileHealsStuckClaims(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{}, withTiming(func(tm *pool.Timing) { tm.StuckAfter = 0 }))
	e.seedIdle()
	claimIn := func(az, inst string) store.Volume {
		v, err := e.store.ClaimIdle(bg, "web", az, inst)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// 1. A launch died right after its claim; the instance lives.
	alive := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1a"})
	claimed := claimIn("us-east-1a", alive)
	// 2. A launch died after AttachVolume; EC2 attached it.
	attachedInst := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1b"})
	att := claimIn("us-east-1b", attachedInst)
	att, err := e.store.TransitionVolume(bg, withState(att, store.VolumeAttaching), store.VolumeClaimed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.AttachVolume(bg, &ec2.AttachVolumeInput{VolumeId: &att.VolumeID, InstanceId: &attachedInst, Device: aws.String("/dev/sdk")}); err != nil {
		t.Fatal(err)
	}
	// 3. A launch died after its claim and the instance is gone since.
	dead := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1c"})
	deadClaim := claimIn("us-east-1c", dead)
	e.ec2.TerminateInstance(dead)
	// 4. A terminate died after fencing (releasing) and detaching; the
	// agent had reported seq 12.
	relInst := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1c"})
	rel := claimIn("us-east-1c", relInst)
	rel, _ = e.store.TransitionVolume(bg, withState(rel, store.VolumeInUse), store.VolumeClaimed)
	rel, _ = e.store.TransitionVolume(bg, withState(rel, store.VolumeReleasing), store.VolumeInUse)
	in := e.instance(relInst)
	in.Seq, in.LastReportAt, in.State = 12, time.Now().UTC(), store.InstanceTerminating
	if _, err := e.store.UpdateInstance(bg, in); err != nil {
		t.Fatal(err)
	}

	// 5. A launch that lost its claim (reconcile gave it back) attached
	// the now idle volume anyway and died.
	strayInst := e.ec2.AddInstance(awsfake.InstanceSpec{AZ: "us-east-1a"})
	var stray store.Volume
	for _, v := range e.volumes() {
		if v.State == store.VolumeIdle && v.AZ == "us-east-1a" {
			stray = v
		}
	}
	if _, err := e.ec2.AttachVolume(bg, &ec2.AttachVolumeInput{VolumeId: &stray.VolumeID, InstanceId: &strayInst, Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}

	rep := e.reconcile()
	if rep.Healed != 5 {
		t.Fatalf("report %+v\n%s", rep, e.logs.String())
	}
	check := func(id string, st store.VolumeState, inst string, seq int64) {
		t.Helper()
		v, err := e.store.GetVolume(bg, "web", id)
		if err != nil || v.State != st || v.InstanceID != inst || seq >= 0 && v.Seq != seq {
			t.Fatalf("volume %s: %+v %v; want %s for %q", id, v, err, st, inst)
		}
	}
	check(claimed.VolumeID, store.VolumeIdle, "", claimed.Seq)
	check(att.VolumeID, store.VolumeInUse, attachedInst, -1)
	if v, _ := e.store.GetVolume(bg, "web", att.VolumeID); v.Device != "/dev/sdk" {
		t.Fatalf("healed device %q", v.Device)
	}
	check(deadClaim.VolumeID, store.VolumeIdle, "", deadClaim.Seq)
	check(rel.VolumeID, store.VolumeIdle, "", 12)
	check(stray.VolumeID, store.VolumeIdle, "", stray.Seq)
	if ev, _ := e.ec2.Volume(stray.VolumeID); ev.Instance != "" {
		t.Fatalf("stray attachment left: %+v", ev)
	}
	if e.instance(alive).VolumeID != "" || e.instance(dead).VolumeID != "" || e.instance(relInst).VolumeID != "" {
		t.Fatal("bindings of healed claims left")
	}
	if e.instance(attachedInst).VolumeID != att.VolumeID {
		t.Fatal("binding of the attached volume lost")
	}
	// The run ends with every zone at target again.
	e.reconcile()
	for _, az := range testAZs {
		if e.idle()[az] != 2 {
			t.Fatalf("idle %v", e.idle())
		}
	}
}

func withState(v store.Volume, st store.VolumeState) store.Volume {
	v.State = st
	return v
}

func TestReconcileCleansUpHooklessTermination(t *testing.T) {
	for _, known := range []bool{true, false} {
		t.Run(map[bool]string{true: "seq known", false: "seq unknown"}[known], func(t *testing.T) {
			e := newEnv(t, awsfake.EC2Config{DetachDelay: time.Millisecond, TerminateDelay: time.Millisecond})
			e.seedIdle()
			id, raw := e.launch("us-east-1a")
			e.mustHandle(raw)
			v := checkAttached(t, e, id)
			if known {
				e.agentUp(raw, 21)
			}
			e.ec2.TerminateInstance(id) // Spot interruption: no hook
			time.Sleep(5 * time.Millisecond)
			e.reconcile()
			rec, err := e.store.GetVolume(bg, "web", v.VolumeID)
			if known {
				if err != nil || rec.State != store.VolumeIdle || rec.Seq != 21 {
					t.Fatalf("volume of the vanished instance: %+v %v", rec, err)
				}
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("volume with unknown seq kept: %+v %v", rec, err)
			}
			e.reconcile()
			if in := e.instance(id); in.State != store.InstanceGone || in.VolumeID != "" {
				t.Fatalf("instance record %+v", in)
			}
			if e.idle()["us-east-1a"] != 2 {
				t.Fatalf("idle %v", e.idle())
			}
		})
	}
}

func TestReconcileReplacesFailedCreations(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{CreateDelay: time.Millisecond})
	e.ec2.FailNextCreate()
	rep := e.reconcile()
	if rep.Deleted != 1 {
		t.Fatalf("report %+v", rep)
	}
	e.reconcile()
	for _, az := range testAZs {
		if e.idle()[az] != 2 {
			t.Fatalf("idle %v", e.idle())
		}
	}
	for _, ev := range e.ec2.Volumes() {
		if ev.State == types.VolumeStateError {
			t.Fatalf("failed volume %s left", ev.ID)
		}
	}
}

func TestReconcileStopsAtItsActionBudget(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{}, withTiming(func(tm *pool.Timing) { tm.MaxActions = 4 }))
	rep := e.reconcile()
	if rep.Created != 4 || rep.Complete {
		t.Fatalf("first run %+v", rep)
	}
	rep = e.reconcile()
	if rep.Created != 2 || !rep.Complete {
		t.Fatalf("second run %+v", rep)
	}
}

// idleWatch is a DynamoDB client that, after every write, reads the pool
// through a separate store and records the smallest idle count per zone.
type idleWatch struct {
	store.DynamoDB
	check *store.Store
	mu    sync.Mutex
	min   map[string]int
	on    bool
	t     *testing.T
}

func (w *idleWatch) after() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.on {
		return
	}
	vs, err := w.check.ListVolumes(context.Background(), "web")
	if err != nil {
		w.t.Error(err)
		return
	}
	n := map[string]int{}
	for _, v := range vs {
		if v.State == store.VolumeIdle {
			n[v.AZ]++
		}
	}
	for _, az := range testAZs {
		if m, ok := w.min[az]; !ok || n[az] < m {
			w.min[az] = n[az]
		}
	}
}

func (w *idleWatch) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	out, err := w.DynamoDB.PutItem(ctx, in, o...)
	w.after()
	return out, err
}

func (w *idleWatch) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	out, err := w.DynamoDB.DeleteItem(ctx, in, o...)
	w.after()
	return out, err
}

func (w *idleWatch) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	out, err := w.DynamoDB.UpdateItem(ctx, in, o...)
	w.after()
	return out, err
}

func (w *idleWatch) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	out, err := w.DynamoDB.TransactWriteItems(ctx, in, o...)
	w.after()
	return out, err
}

func TestRefreshReplacesStaleIdleVolumesWithoutDippingBelowTarget(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{CreateDelay: 3 * time.Millisecond, DeleteDelay: time.Millisecond},
		withConfig(func(c *pool.Config) { c.IdlePerAZ = 3; c.RefreshBehind = 100; c.RefreshMax = 2 }))
	watch := &idleWatch{DynamoDB: e.db, check: e.store, min: map[string]int{}, t: t}
	e.store = store.New(watch, e.cfg.Table)
	e.rebuild()

	old := e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 10})
	if _, err := e.store.PutSnapshot(bg, store.Snapshot{Pool: "web", SnapshotID: old, State: store.SnapshotCompleted, Seq: 10}); err != nil {
		t.Fatal(err)
	}
	e.seedIdle()
	// The journal moves on 300 entries and a new snapshot completes.
	appendEntries(t, e, 300)
	fresh := e.ec2.AddSnapshot(awsfake.SnapshotSpec{SizeGiB: 10})
	if _, err := e.store.PutSnapshot(bg, store.Snapshot{Pool: "web", SnapshotID: fresh, State: store.SnapshotCompleted, Seq: 290}); err != nil {
		t.Fatal(err)
	}
	// One idle volume is recent enough (seq 250: 50 behind) and stays.
	var keep string
	for _, v := range e.volumes() {
		if v.AZ == "us-east-1a" {
			v.Seq = 250
			if _, err := e.store.TransitionVolume(bg, v, store.VolumeIdle); err != nil {
				t.Fatal(err)
			}
			keep = v.VolumeID
			break
		}
	}

	watch.mu.Lock()
	watch.on = true
	watch.mu.Unlock()
	var reps []pool.Report
	for i := 0; i < 6; i++ {
		rep := e.reconcile()
		reps = append(reps, rep)
		if rep.Refreshed > 2 {
			t.Fatalf("run %d refreshed %d volumes; VOLSD_REFRESH_MAX is 2", i, rep.Refreshed)
		}
		for az, n := range rep.Idle {
			if n != 3 {
				t.Fatalf("run %d ended with %d idle in %s", i, n, az)
			}
		}
	}
	watch.mu.Lock()
	for _, az := range testAZs {
		if watch.min[az] < 3 {
			t.Errorf("idle count in %s dipped to %d during refresh", az, watch.min[az])
		}
	}
	watch.mu.Unlock()
	total := 0
	for _, r := range reps {
		total += r.Refreshed
	}
	if total != 8 {
		t.Fatalf("%d replacements in all; want 8 (the 8 stale volumes): %+v", total, reps)
	}
	var seqs []int64
	for _, v := range e.volumes() {
		if v.VolumeID == keep {
			if v.Seq != 250 {
				t.Fatalf("fresh-enough volume changed: %+v", v)
			}
			continue
		}
		if v.SnapshotID != fresh || v.Seq != 290 {
			t.Fatalf("volume %+v not replaced from the new snapshot", v)
		}
		seqs = append(seqs, v.Seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if len(seqs) != 8 {
		t.Fatalf("%d replaced volumes", len(seqs))
	}
	if last := reps[len(reps)-1]; last.Changed() {
		t.Fatalf("refresh did not settle: %+v", last)
	}
}

// appendEntries appends n delete entries to the pool's journal.
func appendEntries(t *testing.T, e *env, n int) {
	t.Helper()
	var batch []events.JournalEntry
	for i := 0; i < n; i++ {
		batch = append(batch, events.JournalEntry{Op: events.OpDelete, Path: fmt.Sprintf("old/%d", i), RequestID: fmt.Sprintf("req-%s-%d", t.Name(), i)})
	}
	if _, err := e.store.AppendBatch(bg, e.cfg.Pool, batch); err != nil {
		t.Fatal(err)
	}
	if head, _ := e.store.Head(bg, e.cfg.Pool); head != int64(n) {
		t.Fatalf("head %d after %d appends", head, n)
	}
}
