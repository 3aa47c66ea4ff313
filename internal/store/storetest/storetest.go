// Package storetest gives tests a store over a fresh table on DynamoDB
// Local (testenv: skipped, or failed when VOLSD_TEST_EMULATORS=1, without
// the emulator).
package storetest

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

// New creates a uniquely named volsd table, deleted when t ends, and
// returns the store over it.
func New(t testing.TB) *store.Store {
	t.Helper()
	st, _ := NewWithClient(t)
	return st
}

// NewWithClient is New that also returns the DynamoDB client.
func NewWithClient(t testing.TB) (*store.Store, *dynamodb.Client) {
	t.Helper()
	db := testenv.DynamoDBClient(t)
	name := testenv.UniqueName(t, "volsd")
	if err := store.CreateTable(context.Background(), db, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &name}) })
	return store.New(db, name), db
}
