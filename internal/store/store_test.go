package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
)

// newStore is a store over a fresh table on DynamoDB Local, and its client.
func newStore(t testing.TB) (*store.Store, *dynamodb.Client) { return storetest.NewWithClient(t) }

func idleVolume(pool, az string, i int) store.Volume {
	return store.Volume{Pool: pool, VolumeID: fmt.Sprintf("vol-%s%04d", az[len(az)-1:], i), State: store.VolumeIdle, AZ: az, SizeGiB: 10, Seq: 3}
}

func TestCreateTableIsIdempotent(t *testing.T) {
	s, db := newStore(t)
	if err := store.CreateTable(context.Background(), db, s.Table()); err != nil {
		t.Fatalf("second CreateTable: %v", err)
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

func entry(reqID string) events.JournalEntry {
	return events.JournalEntry{Op: events.OpDelete, Path: "old/" + reqID, RequestID: reqID}
}
