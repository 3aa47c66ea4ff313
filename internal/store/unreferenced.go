package store

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// prefixUnref is the sort-key prefix of unreferenced origin objects
// (UNREF#<object key>; tree.go lists the reclaim items).
const prefixUnref = "UNREF#"

// Unreferenced is an origin object a reclaim run found referenced by
// nothing: Since is when a run first found it so (its last reference was
// before), LastModified its upload time then.
type Unreferenced struct {
	Key          string    `json:"key"`
	Size         int64     `json:"size"`
	Since        time.Time `json:"since"`
	LastModified time.Time `json:"lastModified"`
}

// ListUnreferenced lists the pool's unreferenced origin objects by key.
func (s *Store) ListUnreferenced(ctx context.Context, pool string) (map[string]Unreferenced, error) {
	list, err := queryPrefix[Unreferenced](ctx, s, poolPK(pool), prefixUnref)
	out := make(map[string]Unreferenced, len(list))
	for _, u := range list {
		out[u.Key] = u
	}
	return out, err
}

// PutUnreferenced records u (overwriting a record of the same key).
func (s *Store) PutUnreferenced(ctx context.Context, pool string, u Unreferenced) error {
	item, err := marshal(u, poolPK(pool), prefixUnref+u.Key)
	if err == nil {
		_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.table, Item: item})
	}
	if err != nil {
		return fmt.Errorf("record %s unreferenced: %w", u.Key, err)
	}
	return nil
}

// DeleteUnreferenced drops the record of key (referenced again, or gone).
func (s *Store) DeleteUnreferenced(ctx context.Context, pool, objectKey string) error {
	if _, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.table, Key: key(poolPK(pool), prefixUnref+objectKey)}); err != nil {
		return fmt.Errorf("drop the unreferenced record of %s: %w", objectKey, err)
	}
	return nil
}
