package store

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/volsd/volsd/events"
)

// JournalReadAPI is the part of DynamoDB that reading a journal needs: the
// instance role of volsd-agent allows nothing more.
type JournalReadAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// JournalReader reads a pool's journal head and entries with consistent
// reads, with the same code as Store, over a client that can only read.
type JournalReader struct{ s *Store }

// NewJournalReader returns a JournalReader over table.
func NewJournalReader(db JournalReadAPI, table string) *JournalReader {
	return &JournalReader{s: New(readOnlyDB{db}, table)}
}

// Head returns the last assigned sequence number (0 for an empty journal).
func (r *JournalReader) Head(ctx context.Context, pool string) (int64, error) {
	return r.s.Head(ctx, pool)
}

// Entries returns the entries after `after` up to and including upTo
// (upTo <= 0: to the end), in order, without gaps; see Store.Entries.
func (r *JournalReader) Entries(ctx context.Context, pool string, after, upTo int64) ([]events.JournalEntry, error) {
	return r.s.Entries(ctx, pool, after, upTo)
}

// errReadOnly is what a write through a JournalReader's client returns; no
// JournalReader method writes, so it is never seen.
var errReadOnly = errors.New("store: journal reader is read-only")

type readOnlyDB struct{ JournalReadAPI }

func (readOnlyDB) PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	return nil, errReadOnly
}

func (readOnlyDB) UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return nil, errReadOnly
}

func (readOnlyDB) DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	return nil, errReadOnly
}

func (readOnlyDB) TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	return nil, errReadOnly
}
