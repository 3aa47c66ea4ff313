package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

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
