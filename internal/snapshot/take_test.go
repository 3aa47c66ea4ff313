package snapshot_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

// TestSnapshotIsTaggedWithFrozenSeq: against moto, a snapshot of a volume
// whose agent froze it at seq n carries volsd:seq n (not the seq the
// instance reported earlier), volsd:pool and Name, and its record says n.
func TestSnapshotIsTaggedWithFrozenSeq(t *testing.T) {
	for _, n := range []int64{0, 1, 7, 130} {
		t.Run(strconv.FormatInt(n, 10), func(t *testing.T) {
			ec2c, vol := motoEC2(t)
			e := newEnv(t, ec2c, nil)
			e.appendEntries(int(n) + 2)
			// The instance last reported n-1 (or 0); its agent has applied up to n since.
			e.serve("i-0aaaaaaaaaaaaaaa1", vol, max(n-1, 0), n)
			ctx := context.Background()
			res, err := e.runner().Take(ctx)
			if err != nil {
				t.Fatalf("take: %v\nlogs:\n%s", err, e.logs)
			}
			if res.SnapshotID == "" || res.Seq != n || res.VolumeID != vol || res.Reused || res.Skipped != "" {
				t.Fatalf("result %+v, want a new snapshot of %s at seq %d", res, vol, n)
			}
			out, err := ec2c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{res.SnapshotID}})
			if err != nil || len(out.Snapshots) != 1 {
				t.Fatalf("describe %s: %v %v", res.SnapshotID, out, err)
			}
			s := out.Snapshots[0]
			tags := map[string]string{}
			for _, tg := range s.Tags {
				tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
			}
			want := map[string]string{"volsd:pool": e.pool, "volsd:seq": strconv.FormatInt(n, 10), "Name": "volsd-" + e.pool}
			for k, v := range want {
				if tags[k] != v {
					t.Errorf("tag %s = %q, want %q (tags %v)", k, tags[k], v, tags)
				}
			}
			if aws.ToString(s.VolumeId) != vol {
				t.Errorf("snapshot of %s, want %s", aws.ToString(s.VolumeId), vol)
			}
			rec, err := e.st.GetSnapshot(ctx, e.pool, res.SnapshotID)
			if err != nil || rec.Seq != n || rec.VolumeID != vol || rec.State == store.SnapshotError || rec.State == store.SnapshotDeleted {
				t.Errorf("record %+v %v", rec, err)
			}
			cmds := e.ssm.commands()
			if len(cmds) != 2 || cmds[0].Doc != "volsd-Freeze" || cmds[1].Doc != "volsd-Thaw" {
				t.Fatalf("commands %+v, want freeze then thaw", cmds)
			}
			if got := cmds[0].Params["maxSeconds"]; len(got) != 1 || got[0] != "30" {
				t.Errorf("freeze maxSeconds %v, want [30]", got)
			}
			e.assertThawedAfterFreeze("i-0aaaaaaaaaaaaaaa1")
		})
	}
}

// TestTakePicksInServiceVolumeAtHead: of the in-use volumes, only those of
// InService instances count, and the one whose instance reported the head
// is frozen; no other instance gets a command.
func TestTakePicksInServiceVolumeAtHead(t *testing.T) {
	f := newFakeEC2("vol-1", "vol-2", "vol-3", "vol-4")
	e := newEnv(t, f, nil)
	e.appendEntries(9)
	e.serve("i-1", "vol-1", 5, 5)
	e.serve("i-2", "vol-2", 9, 9)
	e.serve("i-3", "vol-3", 9, 9)
	e.asg.set("i-3", astypes.LifecycleStateTerminatingWait)
	e.serve("i-4", "vol-4", 8, 8)
	res, err := e.runner().Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.VolumeID != "vol-2" || res.InstanceID != "i-2" || res.Seq != 9 {
		t.Fatalf("took %+v, want vol-2 on i-2 at 9", res)
	}
	for _, c := range e.ssm.commands() {
		if c.Instances[0] != "i-2" {
			t.Errorf("command %s sent to %v", c.Doc, c.Instances)
		}
	}
	e.assertThawedAfterFreeze("i-2")
}

// TestTakeHighestWhenNoneAtHead: no instance reported the head; the
// highest in-service seq is taken.
func TestTakeHighestWhenNoneAtHead(t *testing.T) {
	f := newFakeEC2("vol-1", "vol-2")
	e := newEnv(t, f, nil)
	e.appendEntries(20)
	e.serve("i-1", "vol-1", 12, 12)
	e.serve("i-2", "vol-2", 15, 15)
	res, err := e.runner().Take(context.Background())
	if err != nil || res.VolumeID != "vol-2" || res.Seq != 15 {
		t.Fatalf("took %+v %v, want vol-2 at 15", res, err)
	}
}

func TestTakeSkips(t *testing.T) {
	ctx := context.Background()
	t.Run("no in-service volume", func(t *testing.T) {
		e := newEnv(t, newFakeEC2("vol-1"), nil)
		e.serve("i-1", "vol-1", 3, 3)
		e.asg.set("i-1", astypes.LifecycleStatePending)
		res, err := e.runner().Take(ctx)
		if err != nil || res.Skipped == "" || len(e.ssm.commands()) != 0 {
			t.Fatalf("%+v %v, commands %v; want skipped without commands", res, err, e.ssm.commands())
		}
	})
	t.Run("nothing new since the last snapshot", func(t *testing.T) {
		f := newFakeEC2("vol-1")
		e := newEnv(t, f, nil)
		e.appendEntries(4)
		e.serve("i-1", "vol-1", 4, 4)
		r := e.runner()
		first, err := r.Take(ctx)
		if err != nil || first.SnapshotID == "" {
			t.Fatalf("first: %+v %v", first, err)
		}
		second, err := r.Take(ctx)
		if err != nil || second.Skipped == "" || second.SnapshotID != "" {
			t.Fatalf("second: %+v %v, want skipped", second, err)
		}
		if f.createCalls() != 1 || e.assertThawedAfterFreeze("i-1") != 1 {
			t.Errorf("creates %d, commands %v; want one freeze and one snapshot", f.createCalls(), e.ssm.commands())
		}
	})
}

// TestFreezeAlwaysEndsThawed: whatever fails after the freeze was sent,
// volsd-Thaw follows and the agent ends thawed.
func TestFreezeAlwaysEndsThawed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(e *env, f *fakeEC2)
		run     func(ctx context.Context, cancel context.CancelFunc, e *env, f *fakeEC2)
		wantErr string
	}{
		{
			name: "CreateSnapshot fails",
			setup: func(e *env, f *fakeEC2) {
				f.CreateErr = apiErr("SnapshotCreationPerVolumeRateExceeded", "too many snapshots of vol-1")
			},
			wantErr: "SnapshotCreationPerVolumeRateExceeded",
		},
		{
			name: "freeze status never arrives (SSM timeout)",
			setup: func(e *env, f *fakeEC2) {
				e.ssm.FreezeHangs = true
				e.cfg.FreezeSeconds = 5
			},
			wantErr: "no result in time",
		},
		{
			name:  "run cancelled after the freeze",
			setup: func(e *env, f *fakeEC2) { f.CreateBlocks = true },
			run: func(ctx context.Context, cancel context.CancelFunc, e *env, f *fakeEC2) {
				<-f.Creating
				cancel()
			},
			wantErr: "context canceled",
		},
		{
			name:    "agent froze another volume",
			setup:   func(e *env, f *fakeEC2) { e.ssm.agents["i-1"].volume = "vol-other" },
			wantErr: "froze vol-other",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEC2("vol-1")
			e := newEnv(t, f, nil)
			e.appendEntries(3)
			e.serve("i-1", "vol-1", 3, 3)
			tc.setup(e, f)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			if tc.run != nil {
				go func() { defer close(done); tc.run(ctx, cancel, e, f) }()
			} else {
				close(done)
			}
			res, err := e.runner().Take(ctx)
			<-done
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("take: %+v %v, want an error with %q", res, err, tc.wantErr)
			}
			if e.assertThawedAfterFreeze("i-1") != 1 {
				t.Errorf("commands %+v, want one freeze", e.ssm.commands())
			}
			if ids := f.ids(); len(ids) != 0 {
				t.Errorf("snapshots %v exist after a failed run", ids)
			}
			recs, _ := e.st.ListSnapshots(context.Background(), e.pool)
			if len(recs) != 0 {
				t.Errorf("records %+v after a failed run", recs)
			}
		})
	}
}

// TestFreezeFailureTriesNextVolume: an agent that cannot freeze is thawed
// (it may have half-frozen) and the next in-service volume is snapshotted.
func TestFreezeFailureTriesNextVolume(t *testing.T) {
	f := newFakeEC2("vol-1", "vol-2")
	e := newEnv(t, f, nil)
	e.appendEntries(6)
	e.serve("i-1", "vol-1", 6, 6)
	e.serve("i-2", "vol-2", 5, 5)
	e.ssm.FreezeFails["i-1"] = true
	res, err := e.runner().Take(context.Background())
	if err != nil || res.VolumeID != "vol-2" || res.Seq != 5 {
		t.Fatalf("take: %+v %v, want vol-2 at 5", res, err)
	}
	e.assertThawedAfterFreeze("i-1")
	e.assertThawedAfterFreeze("i-2")
	if !strings.Contains(e.logs.String(), "volume not mounted") {
		t.Errorf("the agent's error is not logged:\n%s", e.logs)
	}
}

// TestTakeToleratesSlowSSM: throttled sends and invocations that are not
// visible yet are retried.
func TestTakeToleratesSlowSSM(t *testing.T) {
	f := newFakeEC2("vol-1")
	e := newEnv(t, f, nil)
	e.appendEntries(2)
	e.serve("i-1", "vol-1", 2, 2)
	e.ssm.NotYet, e.ssm.ThrottleSends = 3, 2
	res, err := e.runner().Take(context.Background())
	if err != nil || res.SnapshotID == "" {
		t.Fatalf("take: %+v %v", res, err)
	}
	e.assertThawedAfterFreeze("i-1")
}

// TestTakeReusesSnapshotOfRetriedRun: a run that died after CreateSnapshot
// left a pool snapshot of the volume at that seq but no record; the retry
// records it instead of making a second one.
func TestTakeReusesSnapshotOfRetriedRun(t *testing.T) {
	f := newFakeEC2("vol-1")
	e := newEnv(t, f, nil)
	e.appendEntries(7)
	e.serve("i-1", "vol-1", 7, 7)
	earlier := f.put("vol-1", ec2types.SnapshotStatePending, f.now(), map[string]string{"volsd:pool": e.pool, "volsd:seq": "7"})
	res, err := e.runner().Take(context.Background())
	if err != nil || !res.Reused || res.SnapshotID != earlier {
		t.Fatalf("take: %+v %v, want %s reused", res, err, earlier)
	}
	if f.createCalls() != 0 || len(f.ids()) != 1 {
		t.Errorf("CreateSnapshot called %d times; snapshots %v", f.createCalls(), f.ids())
	}
	if rec, err := e.st.GetSnapshot(context.Background(), e.pool, earlier); err != nil || rec.Seq != 7 || rec.State != store.SnapshotPending {
		t.Errorf("record %+v %v", rec, err)
	}
	e.assertThawedAfterFreeze("i-1")
}

// TestConcurrentRunsMakeOneSnapshot: eight runs at once (a duplicated
// schedule event) make exactly one snapshot, and freezes never overlap.
func TestConcurrentRunsMakeOneSnapshot(t *testing.T) {
	f := newFakeEC2("vol-1")
	e := newEnv(t, f, nil)
	e.appendEntries(5)
	e.serve("i-1", "vol-1", 5, 5)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []string
	)
	for range 8 {
		r := e.runner()
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.Take(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			if res.SnapshotID != "" && !res.Reused {
				mu.Lock()
				created = append(created, res.SnapshotID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(created) != 1 || len(f.ids()) != 1 || f.createCalls() != 1 {
		t.Fatalf("created %v, snapshots %v, CreateSnapshot calls %d; want exactly one", created, f.ids(), f.createCalls())
	}
	if n := e.assertThawedAfterFreeze("i-1"); n != 1 {
		t.Errorf("%d freezes, want 1: the runs after the first see its record", n)
	}
	hist := e.ssm.agent("i-1").history
	for i, h := range hist {
		if want := []string{"freeze", "thaw"}[i%2]; h != want {
			t.Fatalf("agent history %v: overlapping freezes", hist)
		}
	}
}

// TestFreezeReportUnreadableAgainstMoto: moto runs SendCommand and
// GetCommandInvocation for real (its invocation has no agent report); the
// run refuses to snapshot and still sends volsd-Thaw to that instance.
func TestFreezeReportUnreadableAgainstMoto(t *testing.T) {
	ctx := context.Background()
	cfg := motoConfig(t)
	ec2c := ec2.NewFromConfig(cfg)
	vol := motoVolume(t, ec2c)
	inst := motoInstance(t, ec2c)
	ssmc := motoSSMWithDocuments(t, cfg)
	e := newEnv(t, ec2c, nil)
	e.appendEntries(2)
	e.serve(inst, vol, 2, 2)
	r, err := snapshot.New(e.cfg, e.st, ec2c, ssmc, e.asg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Take(ctx)
	if err == nil || !strings.Contains(err.Error(), "report is unreadable") {
		t.Fatalf("take: %+v %v, want an unreadable-report error", res, err)
	}
	docs := motoCommands(t, ssmc, inst, e.pool)
	if len(docs) != 2 || docs[0] != "volsd-Freeze" || docs[1] != "volsd-Thaw" {
		t.Fatalf("moto saw commands %v for %s, want freeze then thaw", docs, inst)
	}
	out, err := ec2c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:volsd:pool"), Values: []string{e.pool}}}})
	if err != nil || len(out.Snapshots) != 0 {
		t.Fatalf("snapshots after a refused freeze: %v %v", out, err)
	}
}
