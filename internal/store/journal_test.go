package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// readOnly hides every DynamoDB method but the two a JournalReader may use,
// so the test fails to compile if the reader needs more.
type readOnly struct{ db *dynamodb.Client }

func (r readOnly) GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	if in.ConsistentRead == nil || !*in.ConsistentRead {
		return nil, fmt.Errorf("GetItem without ConsistentRead")
	}
	return r.db.GetItem(ctx, in, optFns...)
}

func (r readOnly) Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	if in.ConsistentRead == nil || !*in.ConsistentRead {
		return nil, fmt.Errorf("Query without ConsistentRead")
	}
	return r.db.Query(ctx, in, optFns...)
}

func TestJournalReaderReadsHeadAndEntriesConsistently(t *testing.T) {
	s, db := newStore(t)
	ctx := context.Background()
	r := store.NewJournalReader(readOnly{db}, s.Table())
	if h, err := r.Head(ctx, "web"); err != nil || h != 0 {
		t.Fatalf("empty journal head = %d, %v; want 0", h, err)
	}
	for i := 1; i <= 5; i++ {
		if _, _, err := s.Append(ctx, "web", entry(fmt.Sprintf("req-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if h, err := r.Head(ctx, "web"); err != nil || h != 5 {
		t.Fatalf("head = %d, %v; want 5", h, err)
	}
	got, err := r.Entries(ctx, "web", 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 5 || got[0].RequestID != "req-3" {
		t.Fatalf("entries after 2: %+v", got)
	}
	if got, err := r.Entries(ctx, "web", 1, 2); err != nil || len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("entries (1,2]: %+v %v", got, err)
	}
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
