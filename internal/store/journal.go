package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// Head is the journal head of a pool.
type Head struct {
	Seq       int64     `json:"seq"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func journalPK(pool string) string { return prefixJournal + pool }

// SeqKey is the sort key of journal entry seq: zero-padded to 20 digits so
// that string order is numeric order.
func SeqKey(seq int64) string { return fmt.Sprintf("%020d", seq) }

// Head returns the last assigned sequence number (0 for an empty journal).
func (s *Store) Head(ctx context.Context, pool string) (int64, error) {
	var h Head
	err := s.get(ctx, poolPK(pool), skHead, &h)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return h.Seq, err
}

// appendBackoff spaces out appenders that lost the race for the head.
var appendBackoff = awserr.Backoff{Initial: 5 * time.Millisecond, Factor: 2, Max: 200 * time.Millisecond}

// maxAppendTries bounds one Append under contention.
const maxAppendTries = 200

// MaxAppendBatch is the most entries one transaction appends (DynamoDB
// allows 100 items per transaction: the head plus two items per entry).
const MaxAppendBatch = 49

// Appended is the outcome of appending one request.
type Appended struct {
	RequestID string
	Seq       int64 // the request's seq, now or from its first append
	Dup       bool  // the request was appended before
	Err       error // ErrRejected when the request was rejected earlier
}

// Append adds e (its Seq is ignored) to the pool's journal; see AppendBatch.
func (s *Store) Append(ctx context.Context, pool string, e events.JournalEntry) (seq int64, dup bool, err error) {
	res, err := s.AppendBatch(ctx, pool, []events.JournalEntry{e})
	if err != nil {
		return 0, false, err
	}
	return res[0].Seq, res[0].Dup, res[0].Err
}

// AppendBatch appends entries, in order, to the pool's journal with one
// TransactWriteItems per at most MaxAppendBatch entries: the head moves
// from n to n+k only if it is still n, each entry n+i is put only if absent,
// and each request record is put only if absent. So sequence numbers have no
// gaps and a retried request never appends twice: its result carries the
// seq it got the first time and Dup. A request rejected earlier gets
// ErrRejected in its result. Concurrent appenders retry on conflict with
// jittered backoff. Results are in the order of entries.
func (s *Store) AppendBatch(ctx context.Context, pool string, entries []events.JournalEntry) ([]Appended, error) {
	res := make([]Appended, len(entries))
	index := map[string][]int{} // requestId → positions (a batch may repeat one)
	var order []string
	for i, e := range entries {
		res[i].RequestID = e.RequestID
		if _, seen := index[e.RequestID]; !seen {
			order = append(order, e.RequestID)
		}
		index[e.RequestID] = append(index[e.RequestID], i)
	}
	check := order // requests whose record must be read before appending
	done := make(map[string]bool, len(order))
	var pending []string
	for try := 0; ; try++ {
		for _, id := range check {
			r, err := s.GetRequest(ctx, pool, id)
			switch {
			case errors.Is(err, ErrNotFound):
				continue
			case err != nil:
				return nil, err
			}
			done[id] = true
			for _, i := range index[id] {
				res[i].Seq, res[i].Dup = r.Seq, true
				if r.State == RequestRejected {
					res[i].Seq, res[i].Err = 0, fmt.Errorf("request %s: %w: %s", id, ErrRejected, r.Reason)
				}
			}
		}
		pending = pending[:0]
		for _, id := range order {
			if !done[id] {
				pending = append(pending, id)
			}
		}
		if len(pending) == 0 {
			return res, nil
		}
		if len(pending) > MaxAppendBatch {
			pending = pending[:MaxAppendBatch]
		}
		head, err := s.Head(ctx, pool)
		if err != nil {
			return nil, err
		}
		batch := make([]events.JournalEntry, len(pending))
		for k, id := range pending {
			batch[k] = entries[index[id][0]]
		}
		err = s.appendAt(ctx, pool, head, batch)
		if err == nil {
			for k, id := range pending {
				done[id] = true
				for j, i := range index[id] {
					res[i].Seq, res[i].Dup = head+1+int64(k), j > 0
				}
			}
			check = nil
			continue // more than MaxAppendBatch: the next chunk
		}
		check = nil
		for k, id := range pending {
			if awserr.IsItemConditionFailed(err, 2+2*k) {
				check = append(check, id) // the request got in meanwhile
			}
		}
		switch {
		case len(check) > 0:
			continue
		case awserr.Classify(err) == awserr.Conflict, awserr.IsRetryable(err):
			// another appender moved the head, or a transaction conflict
		default:
			return nil, fmt.Errorf("append %d entries to %s: %w", len(batch), pool, err)
		}
		if try+1 >= maxAppendTries {
			return nil, fmt.Errorf("append to %s: gave up after %d tries: %w", pool, maxAppendTries, ErrConflict)
		}
		if err := awserr.Sleep(ctx, appendBackoff.Delay(min(try, 10))); err != nil {
			return nil, err
		}
	}
}

// appendAt writes batch as entries head+1.. in one transaction.
func (s *Store) appendAt(ctx context.Context, pool string, head int64, batch []events.JournalEntry) error {
	now := s.now()
	next := head + int64(len(batch))
	headCond := "#seq = :head"
	if head == 0 {
		headCond = "attribute_not_exists(#seq) OR #seq = :head"
	}
	items := []types.TransactWriteItem{{Update: &types.Update{
		TableName: &s.table, Key: key(poolPK(pool), skHead),
		UpdateExpression:         aws.String("SET #seq = :next, #at = :now"),
		ConditionExpression:      aws.String(headCond),
		ExpressionAttributeNames: map[string]string{"#seq": "seq", "#at": "updatedAt"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":head": num(head), ":next": num(next), ":now": str(now.Format(time.RFC3339Nano)),
		},
	}}}
	notExists := aws.String("attribute_not_exists(#pk)")
	pkName := map[string]string{"#pk": AttrPK}
	for k, e := range batch {
		seq := head + 1 + int64(k)
		e.Seq, e.CreatedAt = seq, now
		entry, err := marshal(e, journalPK(pool), SeqKey(seq))
		if err != nil {
			return err
		}
		req, err := marshal(Request{
			Pool: pool, RequestID: e.RequestID, State: RequestAppended, Seq: seq, Op: e.Op, Path: e.Path,
			CreatedAt: now, ExpiresAt: now.Add(RequestTTL).Unix(),
		}, poolPK(pool), requestSK(e.RequestID))
		if err != nil {
			return err
		}
		items = append(items,
			types.TransactWriteItem{Put: &types.Put{TableName: &s.table, Item: entry, ConditionExpression: notExists, ExpressionAttributeNames: pkName}},
			types.TransactWriteItem{Put: &types.Put{TableName: &s.table, Item: req, ConditionExpression: notExists, ExpressionAttributeNames: pkName}},
		)
	}
	_, err := s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	return err
}

// Entries returns the journal entries after seq `after` up to and including
// upTo (upTo <= 0 means to the end), in order, with consistent reads.
func (s *Store) Entries(ctx context.Context, pool string, after, upTo int64) ([]events.JournalEntry, error) {
	if upTo <= 0 {
		upTo = 1<<63 - 1
	}
	var out []events.JournalEntry
	err := s.queryEntries(ctx, pool, after, upTo, func(e events.JournalEntry) error {
		if want := after + int64(len(out)) + 1; e.Seq != want {
			return fmt.Errorf("journal of %s has a gap: want seq %d, found %d", pool, want, e.Seq)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// queryEntries reads the stored journal entries in (after, upTo] in order
// (consistent), calling fn for each.
func (s *Store) queryEntries(ctx context.Context, pool string, after, upTo int64, fn func(events.JournalEntry) error) error {
	if upTo <= after {
		return nil
	}
	return s.queryAll(ctx, &dynamodb.QueryInput{
		KeyConditionExpression:   aws.String("#pk = :pk AND #sk BETWEEN :lo AND :hi"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK, "#sk": AttrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": str(journalPK(pool)), ":lo": str(SeqKey(after + 1)), ":hi": str(SeqKey(upTo)),
		},
		ConsistentRead: aws.Bool(true),
	}, func(item map[string]types.AttributeValue) error {
		var e events.JournalEntry
		if err := unmarshal(item, &e); err != nil {
			return fmt.Errorf("journal entry %v: %w", item[AttrSK], err)
		}
		return fn(e)
	})
}

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

// errReadOnly is what a write through a JournalReader's client returns; no
// JournalReader method writes, so it is never seen.
var errReadOnly = errors.New("store: journal reader is read-only")
