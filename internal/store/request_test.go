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
	"unicode/utf8"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

func TestRejectRequestRecordsOnceAndNeverOverwritesAnAppend(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()

	r, created, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "bad-1", Op: "put", Path: "../etc", Reason: `path: must not contain ".." components`})
	if err != nil || !created {
		t.Fatalf("first reject: created=%v err=%v", created, err)
	}
	if r.State != store.RequestRejected || r.ExpiresAt < time.Now().Add(6*24*time.Hour).Unix() {
		t.Fatalf("record %+v", r)
	}
	again, created, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "bad-1", Reason: "another reason"})
	if err != nil || created || again.Reason != r.Reason {
		t.Fatalf("second reject: %+v created=%v err=%v; want the first record unchanged", again, created, err)
	}
	got, err := s.GetRequest(ctx, "web", "bad-1")
	if err != nil || got.State != store.RequestRejected || got.Reason != r.Reason || got.Path != "../etc" {
		t.Fatalf("stored %+v %v", got, err)
	}
	// A rejected request never enters the journal.
	if _, _, err := s.Append(ctx, "web", delEntry("bad-1", "a")); !errors.Is(err, store.ErrRejected) {
		t.Fatalf("append after reject: %v, want ErrRejected", err)
	}
	if head, _ := s.Head(ctx, "web"); head != 0 {
		t.Fatalf("head %d after a rejected request", head)
	}

	// An appended request is never turned into a rejected one.
	seq, _, err := s.Append(ctx, "web", delEntry("good-1", "b"))
	if err != nil {
		t.Fatal(err)
	}
	prev, created, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "good-1", Reason: "late"})
	if err != nil || created || prev.State != store.RequestAppended || prev.Seq != seq {
		t.Fatalf("reject of appended: %+v created=%v err=%v", prev, created, err)
	}
	rej, err := s.ListRejected(ctx, "web", 0)
	if err != nil || len(rej) != 1 || rej[0].RequestID != "bad-1" {
		t.Fatalf("ListRejected = %+v %v", rej, err)
	}
}

func TestRejectRequestRefusesAnInvalidID(t *testing.T) {
	s, _ := newStore(t)
	if _, _, err := s.RejectRequest(context.Background(), "web", store.Rejection{RequestID: "a/b", Reason: "x"}); err == nil {
		t.Fatal("a request ID that cannot be a key was accepted")
	}
}

func TestRejectRequestSanitizesHostileInput(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	path := "a\xff\xfe/" + strings.Repeat("é", 2000)
	r, _, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "h", Op: "put\x00", Path: path, Reason: strings.Repeat("why ", 1000)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRequest(ctx, "web", "h")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{got.Path, got.Reason, string(got.Op)} {
		if !utf8.ValidString(v) {
			t.Errorf("stored invalid UTF-8 %q", v)
		}
	}
	if len(got.Path) > events.MaxPathBytes || !strings.HasSuffix(got.Path, "…") || !strings.HasPrefix(got.Path, "a\uFFFD") {
		t.Errorf("path kept as %q (%d bytes)", got.Path[:20], len(got.Path))
	}
	if len(got.Reason) > 2048 || got.Reason != r.Reason {
		t.Errorf("reason %d bytes", len(got.Reason))
	}
}

func TestListRejectedNewestFirstWithLimit(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, _, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: fmt.Sprintf("r%d", i), Reason: "bad"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, _, err := s.RejectRequest(ctx, "other", store.Rejection{RequestID: "x", Reason: "bad"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListRejected(ctx, "web", 3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.RequestID)
	}
	if strings.Join(ids, ",") != "r4,r3,r2" {
		t.Fatalf("ListRejected(3) = %v, want r4,r3,r2", ids)
	}
	all, _ := s.ListRejected(ctx, "web", 0)
	if len(all) != 5 {
		t.Fatalf("ListRejected(0) = %d items, want 5", len(all))
	}
	// The rejection index does not leak into the other listings.
	if vols, _ := s.ListVolumes(ctx, "web"); len(vols) != 0 {
		t.Fatalf("volumes %+v", vols)
	}
}

// TestConcurrentRejectionsWriteOnce: 20 goroutines reject the same request;
// exactly one writes, every one sees the same record, the index holds one.
func TestConcurrentRejectionsWriteOnce(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	reasons := map[string]bool{}
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r, c, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "same", Reason: fmt.Sprintf("reason %d", g)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if c {
				created++
			}
			reasons[r.Reason] = true
		}(g)
	}
	wg.Wait()
	if created != 1 || len(reasons) != 1 {
		t.Fatalf("created %d times, %d distinct reasons seen; want 1 and 1", created, len(reasons))
	}
	if all, _ := s.ListRejected(ctx, "web", 0); len(all) != 1 {
		t.Fatalf("index holds %d rejections", len(all))
	}
}

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
