package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

func TestRecordReportNeverLowersSeq(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: "i-0123456789abcdef0", AZ: "eu-west-1a", State: store.InstanceReady}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		rep                store.InstanceReport
		wantSeq            int64
		wantStatus, errSub string
		changed            bool
	}{
		{store.InstanceReport{Seq: 5, CommandID: "c2", Status: "Success", At: t0.Add(2 * time.Second)}, 5, "Success", "", true},
		// older report arrives late: seq stays, status stays
		{store.InstanceReport{Seq: 3, CommandID: "c1", Status: "Failed", Error: "disk full", At: t0.Add(time.Second)}, 5, "Success", "", false},
		// the same report again: nothing changes
		{store.InstanceReport{Seq: 5, CommandID: "c2", Status: "Success", At: t0.Add(2 * time.Second)}, 5, "Success", "", false},
		// a newer failure with a lower seq (the agent's report says 4): status moves, seq does not
		{store.InstanceReport{Seq: 4, CommandID: "c3", Status: "Failed", Error: "rsync: exit 23", At: t0.Add(3 * time.Second)}, 5, "Failed", "rsync", true},
		// a newer success raises seq and clears the error
		{store.InstanceReport{Seq: 9, CommandID: "c4", Status: "Success", At: t0.Add(4 * time.Second)}, 9, "Success", "", true},
		// an old report with a higher seq still raises seq, but not the status
		{store.InstanceReport{Seq: 11, CommandID: "c0", Status: "Failed", Error: "old", At: t0}, 11, "Success", "", true},
	}
	for i, st := range steps {
		got, changed, err := s.RecordReport(ctx, "web", "i-0123456789abcdef0", st.rep)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got.Seq != st.wantSeq || got.LastStatus != st.wantStatus || changed != st.changed {
			t.Fatalf("step %d: seq=%d status=%s changed=%v; want %d %s %v", i, got.Seq, got.LastStatus, changed, st.wantSeq, st.wantStatus, st.changed)
		}
		if (st.errSub == "") != (got.LastError == "") || !strings.Contains(got.LastError, st.errSub) {
			t.Fatalf("step %d: lastError %q, want %q", i, got.LastError, st.errSub)
		}
	}
	if _, _, err := s.RecordReport(ctx, "web", "i-00000000000000000", store.InstanceReport{Seq: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown instance: %v", err)
	}
}

func TestRecordReportMarksLaunchingInstanceReady(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const inst = "i-0abcdefabcdefabc1"
	if _, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1a", 1)); err != nil {
		t.Fatal(err)
	}
	v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", inst) // instance record: launching, bound
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	got, _, err := s.RecordReport(ctx, "web", inst, store.InstanceReport{Seq: 3, Status: "Failed", Error: "disk full", At: t0})
	if err != nil || got.State != store.InstanceLaunching {
		t.Fatalf("a failed report must not make the instance ready: %+v %v", got, err)
	}
	got, _, err = s.RecordReport(ctx, "web", inst, store.InstanceReport{Seq: 4, Status: "Success", At: t0.Add(time.Second)})
	if err != nil || got.State != store.InstanceReady || got.VolumeID != v.VolumeID {
		t.Fatalf("after a successful report: %+v %v", got, err)
	}
	// A terminating instance is never moved back to ready.
	got.State = store.InstanceTerminating
	if _, err := s.UpdateInstance(ctx, got); err != nil {
		t.Fatal(err)
	}
	got, _, err = s.RecordReport(ctx, "web", inst, store.InstanceReport{Seq: 5, Status: "Success", At: t0.Add(2 * time.Second)})
	if err != nil || got.State != store.InstanceTerminating {
		t.Fatalf("terminating instance: %+v %v", got, err)
	}
}

// TestRecordReportRace: 40 goroutines report seqs 1..40 in random order at
// random times; the stored seq ends at 40 and the stored status is that of
// the newest report.
func TestRecordReportRace(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	id := "i-0123456789abcdef1"
	if _, err := s.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: id, AZ: "eu-west-1a", State: store.InstanceReady}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	order := rand.Perm(40)
	var wg sync.WaitGroup
	for _, k := range order {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			_, _, err := s.RecordReport(ctx, "web", id, store.InstanceReport{
				Seq: int64(k + 1), CommandID: fmt.Sprintf("c%d", k), Status: "Success", At: t0.Add(time.Duration(k) * time.Second),
			})
			if err != nil {
				t.Error(err)
			}
		}(k)
	}
	wg.Wait()
	got, err := s.GetInstance(ctx, "web", id)
	if err != nil || got.Seq != 40 || got.LastCommandID != "c39" {
		t.Fatalf("after race: seq=%d command=%s err=%v; want 40 c39", got.Seq, got.LastCommandID, err)
	}
}

func delEntry(id, path string) events.JournalEntry {
	return events.JournalEntry{Op: events.OpDelete, Path: path, RequestID: id}
}

// TestRecordReportRaisesInUseVolumeSeq: the in-use volume an instance
// holds carries the seq its agent last reported, under concurrent reports
// in any order; a lower report never lowers it, and a volume bound to
// another instance or not in use keeps its seq.
func TestRecordReportRaisesInUseVolumeSeq(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const inst, other = "i-0abcdefabcdefabc2", "i-0abcdefabcdefabc3"
	put := func(v store.Volume) store.Volume {
		t.Helper()
		got, err := s.PutVolume(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	mine := idleVolume("web", "eu-west-1a", 2)
	mine.Seq = 0
	mine.State, mine.InstanceID, mine.Device = store.VolumeInUse, inst, "/dev/sdf"
	mine = put(mine)
	if _, err := s.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: inst, AZ: "eu-west-1a", State: store.InstanceReady, VolumeID: mine.VolumeID}); err != nil {
		t.Fatal(err)
	}
	// A stale binding: the instance record names a volume now in use by another instance.
	theirs := idleVolume("web", "eu-west-1b", 1)
	theirs.State, theirs.InstanceID = store.VolumeInUse, other
	theirs = put(theirs)
	if _, err := s.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: other, AZ: "eu-west-1b", State: store.InstanceReady, VolumeID: theirs.VolumeID}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for _, k := range rand.Perm(30) {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			if _, _, err := s.RecordReport(ctx, "web", inst, store.InstanceReport{Seq: int64(k + 1), Status: "Success", At: t0.Add(time.Duration(k) * time.Second)}); err != nil {
				t.Error(err)
			}
		}(k)
	}
	wg.Wait()
	got, err := s.GetVolume(ctx, "web", mine.VolumeID)
	if err != nil || got.Seq != 30 || got.State != store.VolumeInUse || got.InstanceID != inst {
		t.Fatalf("in-use volume after reports 1..30: %+v %v", got, err)
	}
	if _, _, err := s.RecordReport(ctx, "web", inst, store.InstanceReport{Seq: 3, Status: "Success", At: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetVolume(ctx, "web", mine.VolumeID); got.Seq != 30 {
		t.Fatalf("a lower report lowered the volume's seq to %d", got.Seq)
	}
	// Rebind inst's record to the other instance's volume: its report must not move it.
	rec, _ := s.GetInstance(ctx, "web", inst)
	rec.VolumeID = theirs.VolumeID
	if _, err := s.UpdateInstance(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RecordReport(ctx, "web", inst, store.InstanceReport{Seq: 31, Status: "Success", At: t0.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetVolume(ctx, "web", theirs.VolumeID); got.Seq != 3 {
		t.Fatalf("another instance's volume took seq %d from %s's report", got.Seq, inst)
	}
}

// TestRecordReportRaisesAttachingVolumeSeq: an instance can enter service
// and report (its agent mounted the volume and caught up) before the
// lifecycle Lambda records the attachment; the report raises the attaching
// volume bound to it, and the later attaching → in-use keeps that seq.
func TestRecordReportRaisesAttachingVolumeSeq(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const inst = "i-0abcdefabcdefabc4"
	v := idleVolume("web", "eu-west-1a", 3)
	v.State, v.InstanceID = store.VolumeAttaching, inst
	v, err := s.PutVolume(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: inst, AZ: "eu-west-1a", State: store.InstanceLaunching, VolumeID: v.VolumeID}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RecordReport(ctx, "web", inst, store.InstanceReport{Seq: 4, Status: "Success", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVolume(ctx, "web", v.VolumeID)
	if err != nil || got.Seq != 4 || got.State != store.VolumeAttaching {
		t.Fatalf("attaching volume after the report of seq 4: %+v %v", got, err)
	}
	got.State, got.Device = store.VolumeInUse, "/dev/sdf"
	if got, err = s.TransitionVolume(ctx, got, store.VolumeAttaching); err != nil || got.Seq != 4 {
		t.Fatalf("in use: %+v %v", got, err)
	}
	if _, err := s.TransitionVolume(ctx, v, store.VolumeAttaching); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a write of the volume as read before the report (seq %d) went through: %v", v.Seq, err)
	}
}
