package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/store"
)

// TestStatusVolumesJournal fills a table and reads it back through the
// commands, as JSON and as tables.
func TestStatusVolumesJournal(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for i := 0; i < 12; i++ {
		if _, _, err := w.st.Append(ctx, "web", events.JournalEntry{Op: events.OpDelete, Path: fmt.Sprintf("old/%d", i), RequestID: fmt.Sprintf("r%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	vol := func(id, az string, st store.VolumeState, seq int64) {
		if _, err := w.st.PutVolume(ctx, store.Volume{Pool: "web", VolumeID: id, AZ: az, State: st, Seq: seq, SizeGiB: 20}); err != nil {
			t.Fatal(err)
		}
	}
	vol("vol-0a1", "eu-west-1a", store.VolumeIdle, 12)
	vol("vol-0a2", "eu-west-1a", store.VolumeIdle, 3)
	vol("vol-0a3", "eu-west-1a", store.VolumeInUse, 12)
	vol("vol-0b1", "eu-west-1b", store.VolumeInUse, 10)
	vol("vol-0b2", "eu-west-1b", store.VolumeAttaching, 10)
	vol("vol-0b3", "eu-west-1b", store.VolumeGone, 1)
	full, _ := w.st.GetVolume(ctx, "web", "vol-0a3")
	full.Space = &store.Space{SizeBytes: 20 << 30, UsedBytes: 17 << 30, FreeBytes: 2 << 30, At: time.Now().Add(-5 * time.Minute)}
	if _, err := w.st.TransitionVolume(ctx, full, store.VolumeInUse); err != nil {
		t.Fatal(err)
	}
	w.instance("i-0aaaaaaaaaaaaaaa1", store.InstanceReady, false)
	w.instance("i-0bbbbbbbbbbbbbbb1", store.InstanceReady, false)
	w.instance("i-0ccccccccccccccc1", store.InstanceGone, false)
	if _, _, err := w.st.RecordReport(ctx, "web", "i-0aaaaaaaaaaaaaaa1", store.InstanceReport{Seq: 12, Status: "Success", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.st.RecordReport(ctx, "web", "i-0bbbbbbbbbbbbbbb1", store.InstanceReport{Seq: 10, Status: "Failed", Error: "bad-input: entry 11: sha256 mismatch", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []store.Snapshot{
		{Pool: "web", SnapshotID: "snap-old", State: store.SnapshotCompleted, Seq: 5, CreatedAt: time.Now().Add(-2 * time.Hour)},
		{Pool: "web", SnapshotID: "snap-new", State: store.SnapshotCompleted, Seq: 11, CreatedAt: time.Now().Add(-time.Hour)},
		{Pool: "web", SnapshotID: "snap-pending", State: store.SnapshotPending, Seq: 12, CreatedAt: time.Now()},
	} {
		if _, err := w.st.PutSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := w.st.RejectRequest(ctx, "web", store.Rejection{RequestID: "evil", Op: "put", Path: "a\x1b[31mred\nline", Reason: `path: must not contain NUL or control bytes`}); err != nil {
		t.Fatal(err)
	}

	if _, err := w.st.RecordReclaimRun(ctx, store.ReclaimRun{Pool: "web", At: time.Now().Add(-time.Hour), Deleted: 3, DeletedBytes: 3 << 20,
		Waiting: 2, WaitingBytes: 2048, Grace: "168h0m0s"}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := w.run("status", "--json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	var st cli.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.Head != 12 || len(st.Zones) != 2 || st.LastSnapshot == nil || st.LastSnapshot.SnapshotID != "snap-new" {
		t.Fatalf("status %+v", st)
	}
	if a := st.Zones[0]; a.AZ != "eu-west-1a" || a.Idle != 2 || a.InUse != 1 || a.Behind != 1 {
		t.Errorf("zone a %+v", a)
	}
	if b := st.Zones[1]; b.Idle != 0 || b.InUse != 1 || b.Other["attaching"] != 1 || b.Other["gone"] != 0 {
		t.Errorf("zone b %+v", b)
	}
	if len(st.Instances) != 2 || st.Instances[0].Lag != 0 || st.Instances[1].Lag != 2 || !strings.Contains(st.Instances[1].LastError, "sha256 mismatch") {
		t.Errorf("instances %+v", st.Instances)
	}
	if len(st.Rejected) != 1 || st.Rejected[0].RequestID != "evil" {
		t.Errorf("rejected %+v", st.Rejected)
	}
	if r := st.Reclaim; r == nil || r.Deleted != 3 || r.TotalDeleted != 3 || r.WaitingBytes != 2048 {
		t.Errorf("reclaim %+v", st.Reclaim)
	}
	if len(st.Volumes) != 5 || st.Volumes[2].VolumeID != "vol-0a3" || st.Volumes[2].Space == nil ||
		st.Volumes[2].Space.UsedBytes != 17<<30 || st.Volumes[2].Space.FreeBytes != 2<<30 || st.Volumes[0].Space != nil {
		t.Errorf("volumes with their space: %+v", st.Volumes)
	}

	code, out, _ = w.run("status")
	for _, want := range []string{"journal head 12", "snap-new at seq 11", "FS SIZE", "20.0 GiB", "origin reclaim 1h00m ago: 3 objects (3.0 MiB) deleted; 2 unreferenced (2.0 KiB) waiting out the grace of 168h0m0s; 3 objects (3.0 MiB) reclaimed in all", "17.0 GiB", "2.0 GiB", "11%", "5m ago", "eu-west-1a", "i-0bbbbbbbbbbbbbbb1", "sha256 mismatch", "REJECTED REQUEST", `a\x1b[31mred\nline`} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") || strings.Contains(out, "i-0ccccccccccccccc1") {
		t.Errorf("status table shows a raw escape or a gone instance:\n%s", out)
	}

	code, out, _ = w.run("volumes", "--json")
	var vols []cli.VolumeRow
	if err := json.Unmarshal([]byte(out), &vols); err != nil || code != 0 || len(vols) != 5 {
		t.Fatalf("volumes: %d %v %s", len(vols), err, out)
	}
	if vols[0].VolumeID != "vol-0a1" || vols[1].VolumeID != "vol-0a2" || vols[1].Lag != 9 {
		t.Errorf("volume order or lag: %+v", vols[:2])
	}
	code, out, _ = w.run("volumes")
	if code != 0 || !strings.Contains(out, "vol-0b2") || !strings.Contains(out, "attaching") {
		t.Errorf("volumes table:\n%s", out)
	}

	code, out, _ = w.run("journal", "--last", "3", "--json")
	var es []events.JournalEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil || code != 0 || len(es) != 3 || es[0].Seq != 10 || es[2].Seq != 12 {
		t.Fatalf("journal --last 3: %+v %v", es, err)
	}
	code, out, _ = w.run("journal")
	if code != 0 || strings.Count(out, "\n") != 13 || !strings.Contains(out, "old/11") {
		t.Errorf("journal table:\n%s", out)
	}
}

func TestUsageAndConfigurationErrors(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"push", "only-one"}, cli.ExitUsage, "LOCAL and DEST"},
		{[]string{"push", "--nope", "a", "b"}, cli.ExitUsage, "unknown flag"},
		{[]string{"push", "/does/not/exist", "x"}, cli.ExitUsage, "no such file"},
		{[]string{"delete", "../../etc"}, cli.ExitUsage, `".."`},
		{[]string{"delete", "/"}, cli.ExitUsage, "root"},
		{[]string{"status", "--pool", "bad pool!"}, cli.ExitUsage, "pool"},
		{[]string{"status", "--outputs", "/does/not/exist.json"}, cli.ExitUsage, "stack outputs"},
	} {
		code, _, errs := w.run(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.says) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.says)
		}
	}
}
