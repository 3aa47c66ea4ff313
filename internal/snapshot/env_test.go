package snapshot_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

const (
	testGroup = "web-asg"
	testAZ    = "us-east-1a"
)

// env is one pool with a real store, a fake SSM agent fleet, a fake group
// and EC2 (fake or moto).
type env struct {
	t       testing.TB
	pool    string
	st      *store.Store
	ssm     *fakeSSM
	asg     *fakeASG
	ec2     snapshot.EC2
	cfg     snapshot.Config
	logs    *testenv.Buffer
	metrics *testenv.Buffer
}

func newEnv(t testing.TB, ec2c snapshot.EC2, mod func(*snapshot.Config)) *env {
	t.Helper()
	e := &env{t: t, pool: testenv.UniqueName(t, "web"), st: storetest.New(t), ssm: newFakeSSM(), asg: newFakeASG(testGroup), ec2: ec2c,
		logs: &testenv.Buffer{}, metrics: &testenv.Buffer{}}
	e.cfg = snapshot.Config{
		Pool: e.pool, Group: testGroup, Keep: 3, FreezeSeconds: 30,
		DocFreeze: "volsd-Freeze", DocThaw: "volsd-Thaw", CompactGrace: time.Hour,
		PollInterval: 5 * time.Millisecond, ThawTimeout: 2 * time.Second,
	}
	if mod != nil {
		mod(&e.cfg)
	}
	return e
}

func (e *env) runner() *snapshot.Runner {
	e.t.Helper()
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := snapshot.New(e.cfg, e.st, e.ec2, e.ssm, e.asg, log, metrics.New(e.metrics))
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// appendEntries appends n entries to the pool's journal.
func (e *env) appendEntries(n int) {
	e.t.Helper()
	ctx := context.Background()
	head, err := e.st.Head(ctx, e.pool)
	if err != nil {
		e.t.Fatal(err)
	}
	batch := make([]events.JournalEntry, n)
	for i := range batch {
		batch[i] = events.JournalEntry{Op: events.OpDelete, Path: fmt.Sprintf("old/%d", head+int64(i)+1), RequestID: fmt.Sprintf("req-%d", head+int64(i)+1)}
	}
	for len(batch) > 0 {
		k := min(len(batch), store.MaxAppendBatch)
		if _, err := e.st.AppendBatch(ctx, e.pool, batch[:k]); err != nil {
			e.t.Fatal(err)
		}
		batch = batch[k:]
	}
}

// serve records instance inst serving volume vol: volume in-use, instance
// reported seq, InService in the group, and an agent whose volume is at
// agentSeq.
func (e *env) serve(inst, vol string, reported, agentSeq int64) {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.st.PutVolume(ctx, store.Volume{Pool: e.pool, VolumeID: vol, State: store.VolumeInUse, AZ: testAZ,
		InstanceID: inst, Device: "/dev/xvdf", Seq: reported, SizeGiB: 1}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.st.PutInstance(ctx, store.Instance{Pool: e.pool, InstanceID: inst, VolumeID: vol, AZ: testAZ,
		State: store.InstanceReady, Seq: reported, LastReportAt: time.Now().UTC()}); err != nil {
		e.t.Fatal(err)
	}
	e.asg.set(inst, astypes.LifecycleStateInService)
	e.ssm.addAgent(inst, vol, agentSeq)
}

// assertThawedAfterFreeze checks that every freeze sent to inst was
// followed by a thaw, that the agent ends thawed, and returns the number of
// freezes.
func (e *env) assertThawedAfterFreeze(inst string) int {
	e.t.Helper()
	freezes, open := 0, false
	for _, c := range e.ssm.commands() {
		if len(c.Instances) != 1 {
			e.t.Errorf("command %s %s sent to %v, want exactly one instance", c.ID, c.Doc, c.Instances)
			continue
		}
		if c.Instances[0] != inst {
			continue
		}
		switch c.Doc {
		case "volsd-Freeze":
			freezes++
			open = true
		case "volsd-Thaw":
			open = false
		}
	}
	if open {
		e.t.Errorf("%s: a freeze was not followed by a thaw (commands %+v)", inst, e.ssm.commands())
	}
	if a := e.ssm.agent(inst); a.frozen {
		e.t.Errorf("%s: agent still frozen; history %v", inst, a.history)
	}
	return freezes
}

// motoEC2 returns an EC2 client on moto server and a new volume there.
func motoEC2(t testing.TB) (*ec2.Client, string) {
	t.Helper()
	c := ec2.NewFromConfig(testenv.Moto(t))
	return c, motoVolume(t, c)
}

func motoVolume(t testing.TB, c *ec2.Client) string {
	t.Helper()
	out, err := c.CreateVolume(context.Background(), &ec2.CreateVolumeInput{AvailabilityZone: aws.String(testAZ), Size: aws.Int32(1),
		VolumeType: ec2types.VolumeTypeGp3})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.VolumeId)
}
