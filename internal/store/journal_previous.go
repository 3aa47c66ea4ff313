package store

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/events"
)

// PreviousSyncPages bounds how many query pages (at most 1 MB each, some
// 4,000 journal entries) PreviousSync reads back from the head. A sync
// further back is not found: the caller then checks every blob (correct,
// slower).
const PreviousSyncPages = 4

// PreviousSync returns the newest sync entry of path still in the pool's
// journal and not marked to expire (compaction sets expiresAt on entries
// below the floor; the origin's blobs are kept for every entry without
// it). It reads the journal backwards from the head, eventually
// consistent, at most PreviousSyncPages pages; found is false when there
// is none there. Every entry in the journal was checked by the push Lambda
// before it was appended, so its manifest's blobs are in the origin.
func (s *Store) PreviousSync(ctx context.Context, pool, path string) (e events.JournalEntry, found bool, err error) {
	in := &dynamodb.QueryInput{
		TableName:              &s.table,
		KeyConditionExpression: aws.String("#pk = :pk"),
		FilterExpression:       aws.String("#op = :sync AND #path = :path AND attribute_not_exists(#ttl)"),
		ExpressionAttributeNames: map[string]string{
			"#pk": AttrPK, "#op": "op", "#path": "path", "#ttl": AttrTTL,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": str(journalPK(pool)), ":sync": str(string(events.OpSync)), ":path": str(path),
		},
		ScanIndexForward: aws.Bool(false),
	}
	p := dynamodb.NewQueryPaginator(s.db, in)
	for page := 0; page < PreviousSyncPages && p.HasMorePages(); page++ {
		out, err := p.NextPage(ctx)
		if err != nil {
			return e, false, fmt.Errorf("find the previous sync of %q in %s: %w", path, pool, err)
		}
		for _, item := range out.Items {
			if err := unmarshal(item, &e); err != nil {
				return e, false, fmt.Errorf("journal entry %v: %w", item[AttrSK], err)
			}
			if e.Manifest != nil {
				return e, true, nil
			}
		}
	}
	return events.JournalEntry{}, false, nil
}
