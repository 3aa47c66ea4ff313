package pool_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

// sizes returns every pool volume's size in EC2 and in its record.
func (e *env) sizes() (ec2Sizes, recordSizes map[string]int32) {
	ec2Sizes, recordSizes = map[string]int32{}, map[string]int32{}
	for _, v := range e.ec2.Volumes() {
		if v.Tags[events.TagPool] == e.cfg.Pool {
			ec2Sizes[v.ID] = v.SizeGiB
		}
	}
	for _, v := range e.volumes() {
		recordSizes[v.VolumeID] = v.SizeGiB
	}
	return ec2Sizes, recordSizes
}

func TestReconcileGrowsPoolVolumesInPlace(t *testing.T) {
	clk := awsfake.NewClock(time.Now().UTC())
	e := newEnv(t, awsfake.EC2Config{Now: clk.Now, OptimizeDelay: 2 * time.Hour},
		withTiming(func(tm *pool.Timing) { tm.Now = clk.Now }))
	e.seedIdle()
	// One volume in use by an instance: in-use volumes grow too.
	_, raw := e.launch("us-east-1a")
	e.mustHandle(raw)
	e.reconcile() // back to the idle target
	before, _ := e.sizes()
	if len(before) != 7 {
		t.Fatalf("want 6 idle + 1 in use, have %d volumes", len(before))
	}

	e.cfg.SizeGiB = 20
	e.rebuild()
	rep := e.reconcile()
	if rep.Grown != 7 {
		t.Fatalf("raising the size to 20 GiB grew %d of 7 volumes: %+v", rep.Grown, rep)
	}
	e.reconcile() // records follow EC2
	ec2s, recs := e.sizes()
	for id, s := range ec2s {
		if s != 20 || recs[id] != 20 {
			t.Errorf("volume %s: EC2 %d GiB, record %d GiB; want 20", id, s, recs[id])
		}
	}
	calls := e.ec2.Calls("ModifyVolume")

	// Raised again while EBS still optimizes (1 h) and within 6 hours of
	// the last modification (4 h): no ModifyVolume at all — EBS would
	// refuse it.
	e.cfg.SizeGiB = 30
	e.rebuild()
	for _, after := range []time.Duration{time.Hour, 3 * time.Hour} {
		clk.Advance(after)
		if rep := e.reconcile(); rep.Grown != 0 {
			t.Fatalf("grew %d volumes inside the cooldown (optimizing 2 h, cooldown 6 h)", rep.Grown)
		}
	}
	if n := e.ec2.Calls("ModifyVolume"); n != calls {
		t.Fatalf("%d ModifyVolume calls inside the cooldown", n-calls)
	}
	if len(e.logs.lines("6 hours")) == 0 || len(e.logs.lines("still optimizing")) == 0 {
		t.Errorf("the skipped grows were not logged with their reason")
	}
	clk.Advance(3 * time.Hour) // 7 h: cooldown over
	rep = e.reconcile()
	e.reconcile()
	ec2s, recs = e.sizes()
	grown := 0
	for id, s := range ec2s {
		if s == 30 && recs[id] == 30 {
			grown++
		}
	}
	if rep.Grown == 0 || grown != len(ec2s) {
		t.Fatalf("after the cooldown: grew %d, %d of %d volumes at 30 GiB", rep.Grown, grown, len(ec2s))
	}
}

func TestFakeEC2RefusesModificationsAsEBSDoes(t *testing.T) {
	clk := awsfake.NewClock(time.Now().UTC())
	f := awsfake.NewEC2(awsfake.EC2Config{Now: clk.Now, ModifyDelay: time.Second, OptimizeDelay: time.Hour})
	id := f.AddVolume(awsfake.VolumeSpec{AZ: "us-east-1a", SizeGiB: 10})
	modify := func(size int32) error {
		_, err := f.ModifyVolume(bg, &ec2.ModifyVolumeInput{VolumeId: &id, Size: &size})
		return err
	}
	if err := modify(5); awserr.Code(err) != "InvalidParameterValue" {
		t.Fatalf("shrink: %v", err)
	}
	if err := modify(20); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Volume(id); v.SizeGiB != 10 {
		t.Fatalf("size %d while modifying; EBS shows the new size from optimizing on", v.SizeGiB)
	}
	if err := modify(30); awserr.Code(err) != "IncorrectModificationState" {
		t.Fatalf("while modifying: %v", err)
	}
	clk.Advance(2 * time.Hour)
	if v, _ := f.Volume(id); v.SizeGiB != 20 {
		t.Fatalf("size %d after the modification", v.SizeGiB)
	}
	if err := modify(30); awserr.Code(err) != "VolumeModificationRateExceeded" || !awserr.IsModificationRefused(err) {
		t.Fatalf("within 6 hours: %v", err)
	}
	clk.Advance(5 * time.Hour)
	if err := modify(30); err != nil {
		t.Fatalf("after 7 hours: %v", err)
	}
}

// TestAutoGrowByReportedFreeSpace: with auto-grow on (below 10% free, steps
// of 5 GiB, at most 15 GiB), a volume whose agent reported it 95% full
// grows one step; one whose filesystem does not span its device yet (a
// grow the agent has not applied) and one with room do not; at the
// maximum and still full it cannot grow and is counted in
// VolumesFullCannotGrow (the fill alarm's metric).
func TestAutoGrowByReportedFreeSpace(t *testing.T) {
	clk := awsfake.NewClock(time.Now().UTC())
	e := newEnv(t, awsfake.EC2Config{Now: clk.Now, OptimizeDelay: time.Minute},
		withTiming(func(tm *pool.Timing) { tm.Now = clk.Now }),
		withConfig(func(c *pool.Config) {
			c.AutoGrowFreePercent, c.AutoGrowStepGiB, c.AutoGrowMaxGiB, c.FillAlarmPercent = 10, 5, 15, 90
		}))
	e.seedIdle()
	vols := e.volumes()
	if len(vols) < 4 {
		t.Fatalf("%d volumes", len(vols))
	}
	report := func(v store.Volume, sizeGiB float64, freePct float64) {
		t.Helper()
		cur, err := e.store.GetVolume(bg, v.Pool, v.VolumeID)
		if err != nil {
			t.Fatal(err)
		}
		size := int64(sizeGiB * (1 << 30))
		free := int64(float64(size) * freePct / 100)
		cur.Space = &store.Space{SizeBytes: size, UsedBytes: size - free, FreeBytes: free, At: clk.Now()}
		if _, err := e.store.TransitionVolume(bg, cur, cur.State); err != nil {
			t.Fatal(err)
		}
	}
	full, notSpanning, roomy := vols[0], vols[1], vols[2]
	report(full, 9.8, 5)
	report(notSpanning, 5, 2)
	report(roomy, 9.8, 50)
	if rep := e.reconcile(); rep.Grown != 1 {
		t.Fatalf("grew %d volumes, want 1 (the full one): %+v", rep.Grown, rep)
	}
	clk.Advance(7 * time.Hour)
	e.reconcile() // records follow EC2
	ec2s, recs := e.sizes()
	if ec2s[full.VolumeID] != 15 || recs[full.VolumeID] != 15 || ec2s[notSpanning.VolumeID] != 10 || ec2s[roomy.VolumeID] != 10 {
		t.Fatalf("sizes %v, records %v; want %s at 15, the rest at 10", ec2s, recs, full.VolumeID)
	}
	// The agent grew the filesystem; it is full again, at the maximum.
	report(full, 14.7, 3)
	e.metrics.b.Reset()
	clk.Advance(7 * time.Hour)
	if rep := e.reconcile(); rep.Grown != 0 {
		t.Fatalf("grew past the maximum: %+v", rep)
	}
	if ec2s, _ := e.sizes(); ec2s[full.VolumeID] != 15 {
		t.Fatalf("%s at %d GiB, want the maximum 15", full.VolumeID, ec2s[full.VolumeID])
	}
	var got []float64
	for _, l := range bytes.Split([]byte(e.metrics.String()), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil && m[metrics.VolumesFullCannotGrow] != nil {
			got = append(got, m[metrics.VolumesFullCannotGrow].(float64))
		}
	}
	if len(got) == 0 || got[len(got)-1] != 1 {
		t.Fatalf("VolumesFullCannotGrow %v, want 1", got)
	}
	if len(e.logs.lines("full and cannot grow")) == 0 {
		t.Error("the full volume was not logged")
	}
}
