package pool_test

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
)

// sizes returns every pool volume's size in EC2 and in its record.
func (e *env) sizes() (ec2Sizes, recordSizes map[string]int32) {
	ec2Sizes, recordSizes = map[string]int32{}, map[string]int32{}
	for _, v := range e.ec2.Volumes() {
		if v.Tags[pool.TagPool] == e.cfg.Pool {
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
