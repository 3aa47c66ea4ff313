package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/events"
)

// Items of the origin's reclaim (DESIGN.md §5b), all in POOL#<pool>:
//
//	TREE#<seq>#<part>   the base tree at seq, gzip'd JSON in parts (attribute data)
//	UNREF#<object key>  an origin object found unreferenced: since, size
//	RECLAIM             the last reclaim run's summary and running totals
const (
	prefixTree  = "TREE#"
	prefixUnref = "UNREF#"
	skReclaim   = "RECLAIM"
)

// MaxTreePart bounds one TREE# item's data (DynamoDB items are at most
// 400 KB).
const MaxTreePart = 300 << 10

func treeSK(seq int64, part int) string {
	return fmt.Sprintf("%s%s#%04d", prefixTree, SeqKey(seq), part)
}

// PutTree stores the base tree at seq as parts of at most MaxTreePart
// bytes. The same tree at the same seq may be put again (same items).
func (s *Store) PutTree(ctx context.Context, pool string, seq int64, data []byte) error {
	for part := 0; part == 0 || len(data) > 0; part++ {
		n := min(len(data), MaxTreePart)
		item := key(poolPK(pool), treeSK(seq, part))
		item["data"] = &types.AttributeValueMemberB{Value: data[:n]}
		item["last"] = &types.AttributeValueMemberBOOL{Value: n == len(data)}
		data = data[n:]
		if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.table, Item: item}); err != nil {
			return fmt.Errorf("put base tree of %s at %d part %d: %w", pool, seq, part, err)
		}
	}
	return nil
}

// GetTree reads the base tree at seq back; ErrNotFound when its parts are
// missing or incomplete.
func (s *Store) GetTree(ctx context.Context, pool string, seq int64) ([]byte, error) {
	var data []byte
	parts, last := 0, false
	err := s.queryAll(ctx, &dynamodb.QueryInput{
		KeyConditionExpression:    aws.String("#pk = :pk AND begins_with(#sk, :prefix)"),
		ExpressionAttributeNames:  map[string]string{"#pk": AttrPK, "#sk": AttrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(poolPK(pool)), ":prefix": str(prefixTree + SeqKey(seq) + "#")},
		ConsistentRead:            aws.Bool(true),
	}, func(item map[string]types.AttributeValue) error {
		b, _ := item["data"].(*types.AttributeValueMemberB)
		l, _ := item["last"].(*types.AttributeValueMemberBOOL)
		if b == nil || l == nil {
			return fmt.Errorf("base tree of %s at %d: part %d is malformed", pool, seq, parts)
		}
		data, parts, last = append(data, b.Value...), parts+1, l.Value
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !last {
		return nil, fmt.Errorf("base tree of %s at %d (%d parts, last missing): %w", pool, seq, parts, ErrNotFound)
	}
	return data, nil
}

// DeleteTreesBelow removes the parts of every base tree older than seq.
func (s *Store) DeleteTreesBelow(ctx context.Context, pool string, seq int64) error {
	var old []string
	err := s.queryAll(ctx, &dynamodb.QueryInput{
		KeyConditionExpression:    aws.String("#pk = :pk AND #sk BETWEEN :lo AND :hi"),
		ProjectionExpression:      aws.String("#sk"),
		ExpressionAttributeNames:  map[string]string{"#pk": AttrPK, "#sk": AttrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(poolPK(pool)), ":lo": str(prefixTree), ":hi": str(prefixTree + SeqKey(seq))},
	}, func(item map[string]types.AttributeValue) error {
		if sk, ok := item[AttrSK].(*types.AttributeValueMemberS); ok && !strings.HasPrefix(sk.Value, prefixTree+SeqKey(seq)) {
			old = append(old, sk.Value)
		}
		return nil
	})
	for _, sk := range old {
		if err != nil {
			break
		}
		_, err = s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.table, Key: key(poolPK(pool), sk)})
	}
	if err != nil {
		return fmt.Errorf("delete old base trees of %s: %w", pool, err)
	}
	return nil
}

// PresentEntries returns the journal entries in (after, upTo] that are
// still stored, in order; unlike Entries, entries DynamoDB's TTL removed
// leave gaps instead of an error.
func (s *Store) PresentEntries(ctx context.Context, pool string, after, upTo int64) ([]events.JournalEntry, error) {
	var out []events.JournalEntry
	err := s.queryEntries(ctx, pool, after, upTo, func(e events.JournalEntry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

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

// ReclaimRun is the summary of the pool's last reclaim run (RECLAIM) and
// the totals of every run.
type ReclaimRun struct {
	Pool string    `json:"pool"`
	At   time.Time `json:"at"`
	// Skipped names why the run deleted nothing on purpose ("" when it
	// swept).
	Skipped string `json:"skipped,omitempty"`
	// Error is what stopped the run early, if anything.
	Error string `json:"error,omitempty"`
	// Referenced is how many origin objects the run marked.
	Referenced int `json:"referenced"`
	// Objects is how many objects it listed under blobs/ and manifests/.
	Objects int `json:"objects"`
	// Waiting are the unreferenced objects still inside the grace period.
	Waiting      int   `json:"waiting"`
	WaitingBytes int64 `json:"waitingBytes"`
	// Deleted are the objects this run deleted.
	Deleted      int   `json:"deleted"`
	DeletedBytes int64 `json:"deletedBytes"`
	// TotalDeleted and TotalDeletedBytes add up every run's.
	TotalDeleted      int64  `json:"totalDeleted"`
	TotalDeletedBytes int64  `json:"totalDeletedBytes"`
	Grace             string `json:"grace"`
}

// GetReclaimRun reads the last run's summary; ErrNotFound before the first.
func (s *Store) GetReclaimRun(ctx context.Context, pool string) (ReclaimRun, error) {
	var r ReclaimRun
	err := s.get(ctx, poolPK(pool), skReclaim, &r)
	return r, err
}

// RecordReclaimRun stores run as the last one, adding its deletions to
// the stored totals (one update, safe against a concurrent writer).
func (s *Store) RecordReclaimRun(ctx context.Context, run ReclaimRun) (ReclaimRun, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.table, Key: key(poolPK(run.Pool), skReclaim),
		UpdateExpression: aws.String("SET #pool = :pool, #at = :at, #sk2 = :skipped, #err = :err, #ref = :ref, #obj = :obj, " +
			"#wait = :wait, #waitb = :waitb, #del = :del, #delb = :delb, #grace = :grace ADD #tot :del, #totb :delb"),
		ExpressionAttributeNames: map[string]string{
			"#pool": "pool", "#at": "at", "#sk2": "skipped", "#err": "error", "#ref": "referenced", "#obj": "objects",
			"#wait": "waiting", "#waitb": "waitingBytes", "#del": "deleted", "#delb": "deletedBytes",
			"#tot": "totalDeleted", "#totb": "totalDeletedBytes", "#grace": "grace",
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pool": str(run.Pool), ":at": str(run.At.UTC().Format(time.RFC3339Nano)), ":skipped": str(run.Skipped), ":err": str(run.Error),
			":ref": num(int64(run.Referenced)), ":obj": num(int64(run.Objects)), ":wait": num(int64(run.Waiting)),
			":waitb": num(run.WaitingBytes), ":del": num(int64(run.Deleted)), ":delb": num(run.DeletedBytes), ":grace": str(run.Grace),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if err != nil {
		return run, fmt.Errorf("record the reclaim run of %s: %w", run.Pool, err)
	}
	var stored ReclaimRun
	if err := unmarshal(out.Attributes, &stored); err != nil {
		return run, err
	}
	return stored, nil
}
