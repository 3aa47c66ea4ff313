package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/volsd/volsd/events"
)

// BenchmarkAppend measures one uncontended append (3 DynamoDB calls: request
// check, head read, transaction).
func BenchmarkAppend(b *testing.B) {
	s, _ := newStore(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.Append(ctx, "web", entry(fmt.Sprint("b", i))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendParallel measures appends from GOMAXPROCS×4 goroutines
// fighting for the head of one journal.
func BenchmarkAppendParallel(b *testing.B) {
	s, _ := newStore(b)
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.Append(ctx, "web", entry(fmt.Sprint("p", n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAppendBatch10 measures appending an SQS-sized batch of 10 in one
// transaction; ns/op is per batch.
func BenchmarkAppendBatch10(b *testing.B) {
	s, _ := newStore(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch := make([]events.JournalEntry, 10)
		for k := range batch {
			batch[k] = entry(fmt.Sprintf("b%d-%d", i, k))
		}
		if _, err := s.AppendBatch(ctx, "web", batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClaimIdle measures one claim from a pool of idle volumes
// (instance read, GSI query, transaction).
func BenchmarkClaimIdle(b *testing.B) {
	s, _ := newStore(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if _, err := s.PutVolume(ctx, idleVolume("web", "eu-west-1a", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.ClaimIdle(ctx, "web", "eu-west-1a", fmt.Sprintf("i-%017x", i+1)); err != nil {
			b.Fatal(err)
		}
	}
}
