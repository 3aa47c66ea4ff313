package snapshot_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

func TestAge(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil)
	age := func(now time.Time) time.Duration {
		t.Helper()
		a, err := snapshot.Age(ctx, e.st, e.pool, now)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if a := age(time.Now()); a != 0 {
		t.Errorf("empty journal: age %s, want 0", a)
	}
	e.appendEntries(5)
	first, err := e.st.Entries(ctx, e.pool, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	now := first[0].CreatedAt.Add(time.Hour)
	if a := age(now); a != time.Hour {
		t.Errorf("no snapshot: age %s, want the age of entry 1 (1h)", a)
	}
	// A completed snapshot holding the head is not stale, however old.
	old := now.Add(-30 * 24 * time.Hour)
	if _, err := e.st.PutSnapshot(ctx, store.Snapshot{Pool: e.pool, SnapshotID: "snap-5", State: store.SnapshotCompleted, Seq: 5, CreatedAt: old}); err != nil {
		t.Fatal(err)
	}
	if a := age(now); a != 0 {
		t.Errorf("snapshot at the head: age %s, want 0", a)
	}
	// Entry 6 arrives: the snapshot is stale since then, not since it was taken.
	e.appendEntries(3)
	sixth, err := e.st.Entries(ctx, e.pool, 5, 6)
	if err != nil {
		t.Fatal(err)
	}
	now = sixth[0].CreatedAt.Add(10 * time.Minute)
	if a := age(now); a != 10*time.Minute {
		t.Errorf("behind since entry 6: age %s, want 10m", a)
	}
	// A newer snapshot taken after entry 6 from a lagging volume (seq 5):
	// stale since it was taken. Pending ones do not count.
	taken := sixth[0].CreatedAt.Add(7 * time.Minute)
	if _, err := e.st.PutSnapshot(ctx, store.Snapshot{Pool: e.pool, SnapshotID: "snap-5b", State: store.SnapshotCompleted, Seq: 5, CreatedAt: taken}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.PutSnapshot(ctx, store.Snapshot{Pool: e.pool, SnapshotID: "snap-8", State: store.SnapshotPending, Seq: 8, CreatedAt: taken}); err != nil {
		t.Fatal(err)
	}
	if a := age(now); a != 3*time.Minute {
		t.Errorf("lagging snapshot: age %s, want 3m", a)
	}
}

// TestRunOverTime: the whole scheduled run against moto EC2 (snapshots
// complete at once there), DynamoDB Local and the fake agent: every run
// with new content snapshots it, retention keeps K, records follow, the
// journal floor follows the oldest kept snapshot, and the age metric is
// written.
func TestRunOverTime(t *testing.T) {
	ctx := context.Background()
	ec2c, vol := motoEC2(t)
	e := newEnv(t, ec2c, func(c *snapshot.Config) { c.Keep = 2 })
	const inst = "i-0bbbbbbbbbbbbbbb1"
	e.appendEntries(3)
	e.serve(inst, vol, 3, 3)
	r := e.runner()
	var seqs []int64
	for run := range 4 {
		if run > 0 { // new content reaches the serving volume
			e.appendEntries(4)
			head, _ := e.st.Head(ctx, e.pool)
			advance(t, e, inst, vol, head)
		}
		res, err := r.Run(ctx)
		if err != nil {
			t.Fatalf("run %d: %v\nlogs:\n%s", run, err, e.logs)
		}
		if res.Take.SnapshotID == "" || res.Take.Reused {
			t.Fatalf("run %d took %+v", run, res.Take)
		}
		seqs = append(seqs, res.Take.Seq)
		if res.AgeSeconds != 0 {
			t.Errorf("run %d: age %v right after a completed snapshot of the head", run, res.AgeSeconds)
		}
	}
	if want := []int64{3, 7, 11, 15}; !equal(seqs, want) {
		t.Fatalf("snapshot seqs %v, want %v", seqs, want)
	}
	// A run with nothing new takes nothing and keeps everything.
	res, err := r.Run(ctx)
	if err != nil || res.Take.Skipped == "" || len(res.Retain.Deleted) != 0 {
		t.Fatalf("quiet run: %+v %v", res, err)
	}
	out, err := ec2c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:volsd:pool"), Values: []string{e.pool}}}})
	if err != nil || len(out.Snapshots) != 2 {
		t.Fatalf("pool snapshots %v %v, want 2", out, err)
	}
	recs, _ := e.st.ListSnapshots(ctx, e.pool)
	if len(recs) != 2 {
		t.Fatalf("records %+v, want 2", recs)
	}
	for _, rec := range recs {
		if rec.State != store.SnapshotCompleted || rec.Seq != 11 && rec.Seq != 15 {
			t.Errorf("record %+v", rec)
		}
	}
	if res.Compact.Floor != 11 {
		t.Errorf("floor %d (%s), want 11 (oldest kept snapshot)", res.Compact.Floor, res.Compact.Reason)
	}
	checkJournal(t, e.st, e.pool, 15, 11)
	e.assertThawedAfterFreeze(inst)

	var sawMetric bool
	sc := bufio.NewScanner(strings.NewReader(e.metrics.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("metric line %q: %v", sc.Text(), err)
		}
		if _, ok := line["SnapshotAgeSeconds"]; ok && line["Pool"] == e.pool {
			sawMetric = true
			cw := line["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
			if cw["Namespace"] != metrics.Namespace || fmt.Sprint(cw["Dimensions"]) != fmt.Sprint([]any{metrics.Read[metrics.SnapshotAgeSeconds]}) {
				t.Errorf("namespace %v, dimensions %v; the alarm reads %s with %v", cw["Namespace"], cw["Dimensions"],
					metrics.Namespace, metrics.Read[metrics.SnapshotAgeSeconds])
			}
		}
	}
	if !sawMetric {
		t.Errorf("no SnapshotAgeSeconds line in %q", e.metrics.String())
	}
}

// advance moves the serving volume, its instance and its agent to seq.
func advance(t *testing.T, e *env, inst, vol string, seq int64) {
	t.Helper()
	ctx := context.Background()
	v, err := e.st.GetVolume(ctx, e.pool, vol)
	if err != nil {
		t.Fatal(err)
	}
	v.Seq = seq
	if _, err := e.st.TransitionVolume(ctx, v, store.VolumeInUse); err != nil {
		t.Fatal(err)
	}
	in, err := e.st.GetInstance(ctx, e.pool, inst)
	if err != nil {
		t.Fatal(err)
	}
	in.Seq, in.LastReportAt = seq, time.Now().UTC()
	if _, err := e.st.UpdateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	e.ssm.mu.Lock()
	e.ssm.agents[inst].seq = seq
	e.ssm.mu.Unlock()
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHandle(t *testing.T) {
	ctx := context.Background()
	scheduled, err := os.ReadFile("../../events/testdata/scheduled.json")
	if err != nil {
		t.Fatal(err)
	}
	launch, err := os.ReadFile("../../events/testdata/launch.json")
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeEC2("vol-1")
	e := newEnv(t, f, nil)
	e.appendEntries(2)
	e.serve("i-1", "vol-1", 2, 2)
	r := e.runner()
	for _, bad := range []struct{ name, body, want string }{
		{"lifecycle event", string(launch), `unexpected event "EC2 Instance-launch Lifecycle Action"`},
		{"not JSON", `{"detail-type": `, "not an EventBridge event"},
	} {
		if _, err := r.Handle(ctx, json.RawMessage(bad.body)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error with %q", bad.name, err, bad.want)
		}
	}
	if len(e.ssm.commands()) != 0 || f.createCalls() != 0 {
		t.Fatalf("a refused event did something: %v", e.ssm.commands())
	}
	res, err := r.Handle(ctx, scheduled)
	if err != nil || res.Take.SnapshotID == "" || res.Take.Seq != 2 {
		t.Fatalf("scheduled: %+v %v", res, err)
	}
}
