package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// appendEntries appends n delete entries to pool's journal.
func appendEntries(t testing.TB, s *store.Store, pool string, n int) {
	t.Helper()
	ctx := context.Background()
	batch := make([]events.JournalEntry, 0, n)
	head, err := s.Head(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		batch = append(batch, entry(fmt.Sprintf("%s-%d", pool, head+int64(i)+1)))
	}
	if _, err := s.AppendBatch(ctx, pool, batch); err != nil {
		t.Fatal(err)
	}
}

// expiries returns seq → expiresAt (0 = none) for entries 1..upTo.
func expiries(t testing.TB, s *store.Store, pool string, upTo int64) map[int64]int64 {
	t.Helper()
	list, err := s.EntryExpiries(context.Background(), pool, 0, upTo)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[int64]int64, len(list))
	for _, e := range list {
		m[e.Seq] = e.ExpiresAt
	}
	return m
}

func TestExpireAndKeepEntries(t *testing.T) {
	s, db := newStore(t)
	ctx := context.Background()
	const pool = "web"
	appendEntries(t, s, pool, 230) // more than two transactions' worth

	c, err := s.GetCompaction(ctx, pool)
	if err != nil || c.Rev != 0 || c.Pool != pool {
		t.Fatalf("fresh marker: %+v %v", c, err)
	}
	if _, err := s.ExpireEntries(ctx, pool, 10, time.Now(), c); err == nil {
		t.Fatal("ExpireEntries with an unclaimed marker succeeded")
	}
	c.Marked, c.Floor = 200, 200
	c, err = s.PutCompaction(ctx, c)
	if err != nil || c.Rev != 1 {
		t.Fatalf("claim: %+v %v", c, err)
	}
	// An entry TTL removed meanwhile is skipped, not re-created.
	if _, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: ptr(s.Table()), Key: map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "JOURNAL#" + pool}, "sk": &types.AttributeValueMemberS{Value: store.SeqKey(7)},
	}}); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(2_000_000_000, 0)
	n, err := s.ExpireEntries(ctx, pool, 200, at, c)
	if err != nil || n != 199 {
		t.Fatalf("expire: %d %v, want 199 marked", n, err)
	}
	got := expiries(t, s, pool, 230)
	if _, ok := got[7]; ok {
		t.Error("entry 7 was removed but exists again")
	}
	for seq := int64(1); seq <= 230; seq++ {
		want := int64(0)
		if seq <= 200 && seq != 7 {
			want = at.Unix()
		}
		if seq != 7 && got[seq] != want {
			t.Fatalf("entry %d expiresAt %d, want %d", seq, got[seq], want)
		}
	}
	// Marking again keeps the first expiry.
	if n, err := s.ExpireEntries(ctx, pool, 210, at.Add(time.Hour), c); err != nil || n != 10 {
		t.Fatalf("second expire: %d %v, want 10", n, err)
	}
	got = expiries(t, s, pool, 230)
	if got[100] != at.Unix() || got[205] != at.Add(time.Hour).Unix() {
		t.Errorf("expiries after second run: 100→%d 205→%d", got[100], got[205])
	}
	// Entries are still readable whole: marking only added expiresAt.
	es, err := s.Entries(ctx, pool, 7, 12)
	if err != nil || len(es) != 5 || es[0].Seq != 8 || es[0].RequestID == "" {
		t.Fatalf("entries after marking: %+v %v", es, err)
	}

	n, err = s.KeepEntries(ctx, pool, 150, 230)
	if err != nil || n != 60 {
		t.Fatalf("keep: %d %v, want 60", n, err)
	}
	got = expiries(t, s, pool, 230)
	for seq := int64(1); seq <= 230; seq++ {
		if has := got[seq] != 0; has != (seq <= 150 && seq != 7) {
			t.Fatalf("after keep: entry %d expiresAt %d", seq, got[seq])
		}
	}
}

// TestExpireEntriesIsFenced: a run whose marker another run claimed since
// marks nothing.
func TestExpireEntriesIsFenced(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const pool = "web"
	appendEntries(t, s, pool, 20)
	c, err := s.PutCompaction(ctx, store.Compaction{Pool: pool, Marked: 20, Floor: 20})
	if err != nil {
		t.Fatal(err)
	}
	stale := c
	if _, err := s.PutCompaction(ctx, c); err != nil { // the other run claims
		t.Fatal(err)
	}
	if _, err := s.PutCompaction(ctx, stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("claim with a stale rev: %v, want ErrConflict", err)
	}
	n, err := s.ExpireEntries(ctx, pool, 20, time.Now(), stale)
	if !errors.Is(err, store.ErrConflict) || n != 0 {
		t.Fatalf("stale expire: %d %v, want 0 and ErrConflict", n, err)
	}
	for seq, at := range expiries(t, s, pool, 20) {
		if at != 0 {
			t.Errorf("entry %d marked by a stale run", seq)
		}
	}
	if _, err := s.PutCompaction(ctx, store.Compaction{Pool: "other"}); err != nil {
		t.Fatalf("first marker of another pool: %v", err)
	}
	if _, err := s.PutCompaction(ctx, store.Compaction{Pool: "other"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second rev-0 marker: %v, want ErrConflict", err)
	}
}

func ptr(s string) *string { return &s }
