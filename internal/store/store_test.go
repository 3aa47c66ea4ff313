package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

// newStore creates a fresh table on DynamoDB Local for one test.
func newStore(t testing.TB) (*store.Store, *dynamodb.Client) {
	t.Helper()
	db := testenv.DynamoDBClient(t)
	name := testenv.UniqueName(t, "volsd")
	ctx := context.Background()
	if err := store.CreateTable(ctx, db, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &name}) })
	return store.New(db, name), db
}

func idleVolume(pool, az string, i int) store.Volume {
	return store.Volume{Pool: pool, VolumeID: fmt.Sprintf("vol-%s%04d", az[len(az)-1:], i), State: store.VolumeIdle, AZ: az, SizeGiB: 10, Seq: 3}
}

func TestCreateTableIsIdempotent(t *testing.T) {
	s, db := newStore(t)
	if err := store.CreateTable(context.Background(), db, s.Table()); err != nil {
		t.Fatalf("second CreateTable: %v", err)
	}
}

func TestVolumeLifecycleAndConflicts(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	v, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1a", 1))
	if err != nil {
		t.Fatal(err)
	}
	if v.Rev != 1 || v.CreatedAt.IsZero() {
		t.Fatalf("put returned %+v", v)
	}
	if _, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1a", 1)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second put: %v, want ErrExists", err)
	}
	got, err := s.GetVolume(ctx, "web", v.VolumeID)
	if err != nil || got.State != store.VolumeIdle || got.Rev != 1 || got.Seq != 3 || got.AZ != "eu-west-1a" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if !got.CreatedAt.Equal(v.CreatedAt) {
		t.Errorf("createdAt round trip: %v vs %v", got.CreatedAt, v.CreatedAt)
	}

	next := got
	next.State = store.VolumeClaimed
	next.InstanceID = "i-0123456789abcdef0"
	claimed, err := s.TransitionVolume(ctx, next, store.VolumeIdle)
	if err != nil || claimed.Rev != 2 {
		t.Fatalf("transition: %+v %v", claimed, err)
	}
	// Stale rev: the caller read rev 1, the item is at rev 2 now.
	stale := got
	stale.State = store.VolumeDeleting
	if _, err := s.TransitionVolume(ctx, stale, store.VolumeIdle); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale rev: %v, want ErrConflict", err)
	}
	// Right rev, wrong expected state.
	wrong := claimed
	wrong.State = store.VolumeInUse
	if _, err := s.TransitionVolume(ctx, wrong, store.VolumeIdle); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("wrong from-state: %v, want ErrConflict", err)
	}
	after, _ := s.GetVolume(ctx, "web", v.VolumeID)
	if after.State != store.VolumeClaimed || after.Rev != 2 {
		t.Fatalf("failed transitions changed the item: %+v", after)
	}
	if err := s.DeleteVolume(ctx, "web", v.VolumeID, 1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete with stale rev: %v", err)
	}
	if err := s.DeleteVolume(ctx, "web", v.VolumeID, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVolume(ctx, "web", v.VolumeID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestListVolumesByStateUsesAZAndState(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1a", i))
	}
	mustPut(t, s, idleVolume("web", "eu-west-1b", 7))
	mustPut(t, s, idleVolume("other", "eu-west-1a", 9))
	busy := idleVolume("web", "eu-west-1a", 8)
	busy.State = store.VolumeInUse
	mustPut(t, s, busy)

	idle, err := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeIdle)
	if err != nil || len(idle) != 3 {
		t.Fatalf("idle in a: %d %v", len(idle), err)
	}
	for _, v := range idle {
		if v.Pool != "web" || v.AZ != "eu-west-1a" || v.State != store.VolumeIdle {
			t.Errorf("unexpected %+v", v)
		}
	}
	inUse, _ := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeInUse)
	if len(inUse) != 1 || inUse[0].VolumeID != busy.VolumeID {
		t.Errorf("in-use: %+v", inUse)
	}
	all, err := s.ListVolumes(ctx, "web")
	if err != nil || len(all) != 5 {
		t.Errorf("ListVolumes(web) = %d %v, want 5", len(all), err)
	}
}

func mustPut(t *testing.T, s *store.Store, v store.Volume) store.Volume {
	t.Helper()
	v, err := s.PutVolume(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestClaimIdleRace: 50 goroutines claim from 10 idle volumes in one AZ while
// 5 idle volumes wait in another AZ. Exactly 10 claims succeed, no volume is
// claimed twice, the other AZ is untouched.
func TestClaimIdleRace(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1a", i))
	}
	for i := 0; i < 5; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1b", i))
	}
	type result struct {
		inst string
		v    store.Volume
		err  error
	}
	results := make(chan result, 50)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start
			inst := fmt.Sprintf("i-%017x", g+1)
			v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", inst)
			results <- result{inst, v, err}
		}(g)
	}
	close(start)
	wg.Wait()
	close(results)

	byVolume := map[string]string{}
	claims, empty := 0, 0
	for r := range results {
		switch {
		case r.err == nil:
			claims++
			if other, dup := byVolume[r.v.VolumeID]; dup {
				t.Errorf("volume %s claimed by %s and %s", r.v.VolumeID, other, r.inst)
			}
			byVolume[r.v.VolumeID] = r.inst
			if r.v.AZ != "eu-west-1a" || r.v.State != store.VolumeClaimed || r.v.InstanceID != r.inst {
				t.Errorf("claim result %+v for %s", r.v, r.inst)
			}
		case errors.Is(r.err, store.ErrNoIdle):
			empty++
		default:
			t.Errorf("%s: unexpected error %v", r.inst, r.err)
		}
	}
	if claims != 10 || empty != 40 {
		t.Errorf("claims = %d, no-idle = %d; want 10 and 40", claims, empty)
	}
	// The table agrees: 10 claimed in a, each bound both ways.
	claimed, _ := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeClaimed)
	if len(claimed) != 10 {
		t.Errorf("%d claimed volumes in the table, want 10", len(claimed))
	}
	for _, v := range claimed {
		inst, err := s.GetInstance(ctx, "web", v.InstanceID)
		if err != nil || inst.VolumeID != v.VolumeID || inst.State != store.InstanceLaunching {
			t.Errorf("instance %s binding: %+v %v", v.InstanceID, inst, err)
		}
	}
	other, _ := s.ListVolumesByState(ctx, "web", "eu-west-1b", store.VolumeIdle)
	if len(other) != 5 {
		t.Errorf("other AZ has %d idle volumes, want 5 untouched", len(other))
	}
	for _, v := range other {
		if v.Rev != 1 {
			t.Errorf("other AZ volume %s was written (rev %d)", v.VolumeID, v.Rev)
		}
	}
}

// TestClaimIdleIsIdempotentPerInstance: the same instance claiming 20 times
// at once (duplicate lifecycle events) ends with exactly one volume.
func TestClaimIdleIsIdempotentPerInstance(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		mustPut(t, s, idleVolume("web", "eu-west-1a", i))
	}
	const inst = "i-0aaaaaaaaaaaaaaaa"
	var wg sync.WaitGroup
	got := make([]string, 20)
	for g := range got {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", inst)
			if err != nil {
				t.Errorf("claim %d: %v", g, err)
				return
			}
			got[g] = v.VolumeID
		}(g)
	}
	wg.Wait()
	for _, id := range got[1:] {
		if id != got[0] {
			t.Fatalf("same instance got different volumes: %v", got)
		}
	}
	idle, _ := s.ListVolumesByState(ctx, "web", "eu-west-1a", store.VolumeIdle)
	if len(idle) != 4 {
		t.Errorf("%d idle left, want 4 (one claim only)", len(idle))
	}
	// A later call still returns it.
	v, err := s.ClaimIdle(ctx, "web", "eu-west-1a", inst)
	if err != nil || v.VolumeID != got[0] {
		t.Errorf("later claim: %v %v", v.VolumeID, err)
	}
}

func TestClaimIdleEmptyAZ(t *testing.T) {
	s, _ := newStore(t)
	_, err := s.ClaimIdle(context.Background(), "web", "eu-west-1c", "i-0bbbbbbbbbbbbbbbb")
	if !errors.Is(err, store.ErrNoIdle) {
		t.Fatalf("got %v, want ErrNoIdle", err)
	}
}

func TestAssignNewIsIdempotent(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const inst = "i-0cccccccccccccccc"
	v := store.Volume{Pool: "web", VolumeID: "vol-0new", State: store.VolumeCreating, AZ: "eu-west-1a", InstanceID: inst, SizeGiB: 10}
	a, err := s.AssignNew(ctx, v)
	if err != nil || a.Rev != 1 {
		t.Fatalf("assign: %+v %v", a, err)
	}
	b, err := s.AssignNew(ctx, v)
	if err != nil || b.VolumeID != "vol-0new" {
		t.Fatalf("repeat assign: %+v %v", b, err)
	}
	other := v
	other.VolumeID = "vol-0other"
	held, err := s.AssignNew(ctx, other)
	if !errors.Is(err, store.ErrExists) || held.VolumeID != "vol-0new" {
		t.Fatalf("second volume for the instance: %+v %v, want ErrExists naming vol-0new", held, err)
	}
	if _, err := s.GetVolume(ctx, "web", "vol-0other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the extra volume was recorded: %v", err)
	}
	// After unbinding, the instance can be bound again.
	if err := s.UnbindInstance(ctx, "web", inst, "vol-0new"); err != nil {
		t.Fatal(err)
	}
	in, _ := s.GetInstance(ctx, "web", inst)
	if in.VolumeID != "" || in.State != store.InstanceLaunching {
		t.Errorf("after unbind: %+v", in)
	}
	// Unbound, the instance may be given a new volume.
	fresh := v
	fresh.VolumeID = "vol-0fresh"
	if got, err := s.AssignNew(ctx, fresh); err != nil || got.VolumeID != "vol-0fresh" {
		t.Errorf("assign after unbind: %+v %v", got, err)
	}
}

func TestInstanceSeqNeverDecreases(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	in, err := s.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: "i-0ddddddddddddddd1", AZ: "eu-west-1a", State: store.InstanceReady, Seq: 5})
	if err != nil {
		t.Fatal(err)
	}
	lower := in
	lower.Seq = 4
	if _, err := s.UpdateInstance(ctx, lower); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("lowering seq: %v, want ErrConflict", err)
	}
	higher := in
	higher.Seq, higher.LastReportAt = 9, time.Now().UTC()
	up, err := s.UpdateInstance(ctx, higher)
	if err != nil || up.Rev != 2 {
		t.Fatalf("raise seq: %+v %v", up, err)
	}
	if _, err := s.UpdateInstance(ctx, higher); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale rev: %v", err)
	}
	got, _ := s.GetInstance(ctx, "web", in.InstanceID)
	if got.Seq != 9 || got.LastReportAt.IsZero() {
		t.Errorf("stored %+v", got)
	}
	list, _ := s.ListInstances(ctx, "web")
	if len(list) != 1 {
		t.Errorf("ListInstances = %d", len(list))
	}
}

func TestSnapshots(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	sn, err := s.PutSnapshot(ctx, store.Snapshot{Pool: "web", SnapshotID: "snap-01", State: store.SnapshotPending, Seq: 12, VolumeID: "vol-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSnapshot(ctx, sn); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate snapshot: %v", err)
	}
	sn.State = store.SnapshotCompleted
	done, err := s.UpdateSnapshot(ctx, sn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateSnapshot(ctx, sn); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale snapshot update: %v", err)
	}
	list, _ := s.ListSnapshots(ctx, "web")
	if len(list) != 1 || list[0].State != store.SnapshotCompleted || list[0].Seq != 12 {
		t.Errorf("list %+v", list)
	}
	if err := s.DeleteSnapshotRecord(ctx, "web", "snap-01", done.Rev); err != nil {
		t.Fatal(err)
	}
}

func entry(reqID string) events.JournalEntry {
	return events.JournalEntry{Op: events.OpDelete, Path: "old/" + reqID, RequestID: reqID}
}

// TestAppendRace: 20 goroutines append 50 requests each, 10% of them
// repeating a requestId another goroutine also sends. The journal is exactly
// 1..N without gaps, each requestId appears once, and every caller of a
// repeated requestId gets the same seq.
func TestAppendRace(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const workers, per = 20, 50
	type res struct {
		req string
		seq int64
	}
	out := make(chan res, workers*per)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				req := fmt.Sprintf("req-%d-%d", w, i)
				if i%10 == 0 { // 10%: a request also sent by worker (w+1)%workers
					req = fmt.Sprintf("shared-%d", (w/2)*per+i)
				}
				seq, _, err := s.Append(ctx, "web", entry(req))
				if err != nil {
					t.Errorf("append %s: %v", req, err)
					return
				}
				out <- res{req, seq}
			}
		}(w)
	}
	wg.Wait()
	close(out)

	seqOf := map[string]int64{}
	for r := range out {
		if prev, ok := seqOf[r.req]; ok && prev != r.seq {
			t.Errorf("request %s answered with seq %d and %d", r.req, prev, r.seq)
		}
		seqOf[r.req] = r.seq
	}
	n := int64(len(seqOf))
	if want := int64(workers*per - workers*per/10/2); n != want {
		t.Fatalf("%d distinct requests, want %d", n, want)
	}
	head, err := s.Head(ctx, "web")
	if err != nil || head != n {
		t.Fatalf("head = %d %v, want %d", head, err, n)
	}
	entries, err := s.Entries(ctx, "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(entries)) != n {
		t.Fatalf("%d entries, want %d", len(entries), n)
	}
	seen := map[string]bool{}
	for i, e := range entries {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d: gap or disorder", i, e.Seq)
		}
		if seen[e.RequestID] {
			t.Errorf("request %s appended twice", e.RequestID)
		}
		seen[e.RequestID] = true
		if seqOf[e.RequestID] != e.Seq {
			t.Errorf("request %s: caller got %d, journal has %d", e.RequestID, seqOf[e.RequestID], e.Seq)
		}
	}
}

func TestAppendReturnsOriginalSeqAndEntriesRange(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		seq, dup, err := s.Append(ctx, "web", entry(fmt.Sprint("r", i)))
		if err != nil || dup || seq != int64(i) {
			t.Fatalf("append %d: seq=%d dup=%v err=%v", i, seq, dup, err)
		}
	}
	seq, dup, err := s.Append(ctx, "web", entry("r2"))
	if err != nil || !dup || seq != 2 {
		t.Fatalf("retry of r2: seq=%d dup=%v err=%v, want 2 dup", seq, dup, err)
	}
	es, err := s.Entries(ctx, "web", 2, 4)
	if err != nil || len(es) != 2 || es[0].Seq != 3 || es[1].Seq != 4 || es[0].RequestID != "r3" {
		t.Fatalf("Entries(2,4) = %+v %v", es, err)
	}
	if es[0].Op != events.OpDelete || es[0].Path != "old/r3" || es[0].CreatedAt.IsZero() {
		t.Errorf("entry fields lost: %+v", es[0])
	}
	if es, _ := s.Entries(ctx, "web", 5, 0); len(es) != 0 {
		t.Errorf("nothing after head, got %d", len(es))
	}
	if es, _ := s.Entries(ctx, "other", 0, 0); len(es) != 0 {
		t.Errorf("other pool's journal not empty: %d", len(es))
	}
	r, err := s.GetRequest(ctx, "web", "r4")
	if err != nil || r.Seq != 4 || r.State != store.RequestAppended || r.ExpiresAt < time.Now().Add(6*24*time.Hour).Unix() {
		t.Errorf("request record %+v %v", r, err)
	}
}

func TestEntriesPaginates(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	// Entries large enough that one query page (1 MB) cannot hold them all.
	big := make([]byte, 900)
	for i := range big {
		big[i] = 'a'
	}
	const n = 1300
	for i := 1; i <= n; i++ {
		e := entry(fmt.Sprint("p", i))
		e.Path = fmt.Sprintf("%s/%d", big, i)
		if _, _, err := s.Append(ctx, "web", e); err != nil {
			t.Fatal(err)
		}
	}
	es, err := s.Entries(ctx, "web", 0, 0)
	if err != nil || len(es) != n || es[n-1].Seq != n {
		t.Fatalf("got %d entries, err %v", len(es), err)
	}
}

func TestAppendBatch(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, _, err := s.Append(ctx, "web", entry("a")); err != nil {
		t.Fatal(err)
	}
	// A batch with an earlier request, a repeat inside the batch, and more
	// entries than one transaction holds.
	batch := []events.JournalEntry{entry("a"), entry("b"), entry("b")}
	for i := 0; i < store.MaxAppendBatch+5; i++ {
		batch = append(batch, entry(fmt.Sprint("c", i)))
	}
	res, err := s.AppendBatch(ctx, "web", batch)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Seq != 1 || !res[0].Dup {
		t.Errorf("earlier request: %+v", res[0])
	}
	if res[1].Seq != 2 || res[1].Dup || res[2].Seq != 2 || !res[2].Dup {
		t.Errorf("repeat within batch: %+v %+v", res[1], res[2])
	}
	for i, r := range res[3:] {
		if r.Seq != int64(3+i) || r.Dup || r.Err != nil {
			t.Fatalf("entry c%d: %+v", i, r)
		}
	}
	head, _ := s.Head(ctx, "web")
	if want := int64(2 + store.MaxAppendBatch + 5); head != want {
		t.Errorf("head %d, want %d", head, want)
	}
	again, err := s.AppendBatch(ctx, "web", batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		if again[i].Seq != res[i].Seq || !again[i].Dup {
			t.Fatalf("replayed batch %d: %+v, first %+v", i, again[i], res[i])
		}
	}
}
