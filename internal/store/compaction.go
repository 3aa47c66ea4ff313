package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/internal/awserr"
)

// skCompact is the sort key of a pool's compaction marker.
const skCompact = "COMPACT"

// Compaction is a pool's compaction marker (POOL#<pool>, COMPACT). It is
// also the fencing token of compaction runs: every expiry write is a
// transaction that checks Rev, so a run that another run overtook can no
// longer mark entries.
type Compaction struct {
	Pool string `json:"pool"`
	// Floor is the floor the last run computed.
	Floor int64 `json:"floor"`
	// Marked is an upper bound of the journal entries that carry
	// expiresAt: no entry above Marked has one. It is raised before
	// entries are marked and lowered only after they were unmarked, so it
	// stays an upper bound even when a run is cut off.
	Marked int64 `json:"marked"`
	// HasTree says the pool keeps a base tree (TREE#… items, written by
	// compaction before it lets entries expire): the references the
	// journal's entries up to TreeSeq leave in the content tree. Marked
	// never exceeds TreeSeq once HasTree is set, so every entry above
	// TreeSeq is still in the journal.
	HasTree bool  `json:"hasTree,omitempty"`
	TreeSeq int64 `json:"treeSeq,omitempty"`
	// TreeKnown is false when entries had expired before the base tree was
	// kept (a pool compacted by an older volsd): the tree then cannot say
	// what the content holds until a sync of the root replaces it all.
	TreeKnown bool      `json:"treeKnown,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Rev increases with every write; 0 means no marker is stored yet.
	Rev int64 `json:"rev"`
}

// GetCompaction reads the pool's compaction marker; a pool that was never
// compacted gets the zero marker (Rev 0).
func (s *Store) GetCompaction(ctx context.Context, pool string) (Compaction, error) {
	c := Compaction{Pool: pool}
	err := s.get(ctx, poolPK(pool), skCompact, &c)
	if errors.Is(err, ErrNotFound) {
		return Compaction{Pool: pool}, nil
	}
	return c, err
}

// PutCompaction writes next if the stored marker still has next.Rev (0: if
// there is none). It returns the written marker (Rev+1) or ErrConflict.
func (s *Store) PutCompaction(ctx context.Context, next Compaction) (Compaction, error) {
	rev := next.Rev
	next.Rev, next.UpdatedAt = rev+1, s.now()
	item, err := marshal(next, poolPK(next.Pool), skCompact)
	if err != nil {
		return next, err
	}
	in := &dynamodb.PutItemInput{TableName: &s.table, Item: item}
	if rev == 0 {
		in.ConditionExpression = aws.String("attribute_not_exists(#pk)")
		in.ExpressionAttributeNames = map[string]string{"#pk": AttrPK}
	} else {
		in.ConditionExpression = aws.String("#rev = :rev")
		in.ExpressionAttributeNames = map[string]string{"#rev": "rev"}
		in.ExpressionAttributeValues = map[string]types.AttributeValue{":rev": num(rev)}
	}
	if _, err := s.db.PutItem(ctx, in); err != nil {
		return next, conditionErr(err, ErrConflict, fmt.Sprintf("compaction marker of %s@%d", next.Pool, rev))
	}
	return next, nil
}

// EntryExpiry is the expiry of one journal entry; ExpiresAt 0 means none.
type EntryExpiry struct {
	Seq       int64
	ExpiresAt int64
}

// EntryExpiries lists the stored journal entries in (after, upTo] with
// their expiresAt, in order (consistent). Entries DynamoDB already removed
// are absent.
func (s *Store) EntryExpiries(ctx context.Context, pool string, after, upTo int64) ([]EntryExpiry, error) {
	var out []EntryExpiry
	err := s.queryEntryKeys(ctx, pool, after, upTo, "", func(seq int64, item map[string]types.AttributeValue) error {
		e := EntryExpiry{Seq: seq}
		if n, ok := item[AttrTTL].(*types.AttributeValueMemberN); ok {
			v, err := strconv.ParseInt(n.Value, 10, 64)
			if err != nil {
				return fmt.Errorf("journal entry %d of %s: %s is %q, not a number", seq, pool, AttrTTL, n.Value)
			}
			e.ExpiresAt = v
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// queryEntryKeys walks the journal entries in (after, upTo] that pass
// filter (a condition on #ttl, or ""), reading only keys and expiresAt.
func (s *Store) queryEntryKeys(ctx context.Context, pool string, after, upTo int64, filter string, fn func(seq int64, item map[string]types.AttributeValue) error) error {
	if upTo <= after {
		return nil
	}
	in := &dynamodb.QueryInput{
		KeyConditionExpression:   aws.String("#pk = :pk AND #sk BETWEEN :lo AND :hi"),
		ProjectionExpression:     aws.String("#pk, #sk, #ttl"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK, "#sk": AttrSK, "#ttl": AttrTTL},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": str(journalPK(pool)), ":lo": str(SeqKey(after + 1)), ":hi": str(SeqKey(upTo)),
		},
		ConsistentRead: aws.Bool(true),
	}
	if filter != "" {
		in.FilterExpression = aws.String(filter)
	}
	return s.queryAll(ctx, in, func(item map[string]types.AttributeValue) error {
		sk, _ := item[AttrSK].(*types.AttributeValueMemberS)
		if sk == nil {
			return fmt.Errorf("journal item of %s without sort key", pool)
		}
		seq, err := strconv.ParseInt(sk.Value, 10, 64)
		if err != nil {
			return fmt.Errorf("journal item of %s: sort key %q is not a sequence number", pool, sk.Value)
		}
		return fn(seq, item)
	})
}

// maxExpireBatch is how many entries one fenced transaction marks (plus the
// marker's condition check: 99 items, within DynamoDB's 100).
const maxExpireBatch = 98

// expireBackoff spaces out retries of a batch that hit a transaction
// conflict or throttling.
var expireBackoff = awserr.Backoff{Initial: 20 * time.Millisecond, Factor: 2, Max: time.Second}

// maxExpireTries bounds the retries of one batch.
const maxExpireTries = 20

// ExpireEntries sets expiresAt (epoch seconds of at) on every stored journal
// entry of pool with seq <= upTo that has none yet, so DynamoDB's TTL
// removes it after at. Entries that already carry an expiry keep it.
//
// Every write is a transaction that also checks that the compaction marker
// is still at fence.Rev: when another run has claimed the marker since,
// ExpireEntries stops with ErrConflict and marks nothing more. It returns
// how many entries it marked.
func (s *Store) ExpireEntries(ctx context.Context, pool string, upTo int64, at time.Time, fence Compaction) (int, error) {
	if fence.Rev == 0 {
		return 0, fmt.Errorf("expire entries of %s: the compaction marker must be claimed first (rev 0)", pool)
	}
	var seqs []int64
	err := s.queryEntryKeys(ctx, pool, 0, upTo, "attribute_not_exists(#ttl)", func(seq int64, _ map[string]types.AttributeValue) error {
		seqs = append(seqs, seq)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire entries of %s up to %d: %w", pool, upTo, err)
	}
	marked := 0
	for len(seqs) > 0 {
		n := min(len(seqs), maxExpireBatch)
		done, err := s.expireBatch(ctx, pool, seqs[:n], at.Unix(), fence)
		marked += done
		if err != nil {
			return marked, err
		}
		seqs = seqs[n:]
	}
	return marked, nil
}

// expireBatch marks seqs in fenced transactions, dropping entries that
// vanished meanwhile (TTL), and retrying conflicts.
func (s *Store) expireBatch(ctx context.Context, pool string, seqs []int64, at int64, fence Compaction) (int, error) {
	for try := 0; len(seqs) > 0; try++ {
		items := []types.TransactWriteItem{{ConditionCheck: &types.ConditionCheck{
			TableName:                 &s.table,
			Key:                       key(poolPK(pool), skCompact),
			ConditionExpression:       aws.String("#rev = :rev"),
			ExpressionAttributeNames:  map[string]string{"#rev": "rev"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":rev": num(fence.Rev)},
		}}}
		for _, seq := range seqs {
			items = append(items, types.TransactWriteItem{Update: &types.Update{
				TableName:                 &s.table,
				Key:                       key(journalPK(pool), SeqKey(seq)),
				UpdateExpression:          aws.String("SET #ttl = if_not_exists(#ttl, :at)"),
				ConditionExpression:       aws.String("attribute_exists(#pk)"),
				ExpressionAttributeNames:  map[string]string{"#ttl": AttrTTL, "#pk": AttrPK},
				ExpressionAttributeValues: map[string]types.AttributeValue{":at": num(at)},
			}})
		}
		_, err := s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		if err == nil {
			return len(seqs), nil
		}
		if awserr.IsItemConditionFailed(err, 0) {
			return 0, fmt.Errorf("expire entries of %s: compaction marker is no longer at rev %d: %w", pool, fence.Rev, ErrConflict)
		}
		if awserr.IsConditionFailed(err) {
			// Entries DynamoDB removed since the query: nothing to mark.
			var keep []int64
			for i, seq := range seqs {
				if !awserr.IsItemConditionFailed(err, i+1) {
					keep = append(keep, seq)
				}
			}
			seqs = keep
			continue
		}
		if !awserr.IsRetryable(err) || try+1 >= maxExpireTries {
			return 0, fmt.Errorf("expire entries %d..%d of %s: %w", seqs[0], seqs[len(seqs)-1], pool, err)
		}
		if err := awserr.Sleep(ctx, expireBackoff.Delay(try)); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// KeepEntries removes expiresAt from every stored journal entry of pool in
// (after, upTo], so entries that a lower floor needs again are not removed
// by TTL (if DynamoDB has not removed them already). It returns how many
// entries it changed.
func (s *Store) KeepEntries(ctx context.Context, pool string, after, upTo int64) (int, error) {
	var seqs []int64
	err := s.queryEntryKeys(ctx, pool, after, upTo, "attribute_exists(#ttl)", func(seq int64, _ map[string]types.AttributeValue) error {
		seqs = append(seqs, seq)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("keep entries of %s in (%d, %d]: %w", pool, after, upTo, err)
	}
	kept := 0
	for _, seq := range seqs {
		err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
			_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
				TableName:                &s.table,
				Key:                      key(journalPK(pool), SeqKey(seq)),
				UpdateExpression:         aws.String("REMOVE #ttl"),
				ConditionExpression:      aws.String("attribute_exists(#pk)"),
				ExpressionAttributeNames: map[string]string{"#ttl": AttrTTL, "#pk": AttrPK},
			})
			return err
		})
		switch {
		case err == nil:
			kept++
		case awserr.IsConditionFailed(err):
			// removed by TTL already; nothing to keep
		default:
			return kept, fmt.Errorf("keep journal entry %d of %s: %w", seq, pool, err)
		}
	}
	return kept, nil
}
