package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// prefixRejected is the sort-key prefix of the rejection index: one item
// REJ#<createdAt>#<requestId> per rejected request, in the pool's partition,
// beside its REQ#<requestId> record. `volsd status` lists the newest
// rejections with one descending begins_with query, without reading the
// (many) appended request records and without a scan. Both items carry the
// same expiresAt, so they leave the table together.
const prefixRejected = "REJ#"

// Bounds on what a rejection record keeps of hostile input: DynamoDB strings
// must be valid UTF-8, and a record is for reading, not for storing bodies.
const (
	maxRejectedPath   = events.MaxPathBytes
	maxRejectedReason = 2048
)

// Rejection is what RejectRequest records about a refused push request.
type Rejection struct {
	RequestID string    // the request's own ID, or a stand-in (see push.RecordID)
	Op        events.Op // as sent, may be empty or invalid
	Path      string    // as sent, may be hostile; stored sanitized
	Reason    string    // what was wrong, in words
}

func rejectedSK(at time.Time, id string) string {
	return prefixRejected + at.UTC().Format(sortTime) + "#" + id
}

// RejectRequest records that a push request was refused: REQ#<requestId>
// with state rejected, the reason and expiresAt, plus its entry in the
// rejection index, in one transaction, only if the request has no record
// yet. It returns the request's record and whether this call wrote it. When
// the request already has a record (appended earlier, or rejected by an
// earlier delivery), that record is returned unchanged: a rejection never
// overwrites an append, and a repeated rejection changes nothing.
func (s *Store) RejectRequest(ctx context.Context, pool string, rej Rejection) (Request, bool, error) {
	if err := events.ValidateRequestID("requestId", rej.RequestID); err != nil {
		return Request{}, false, fmt.Errorf("reject request: %w", err)
	}
	now := s.now()
	r := Request{
		Pool: pool, RequestID: rej.RequestID, State: RequestRejected,
		Op:        events.Op(sanitizeRecorded(string(rej.Op), 32)),
		Path:      sanitizeRecorded(rej.Path, maxRejectedPath),
		Reason:    sanitizeRecorded(rej.Reason, maxRejectedReason),
		CreatedAt: now, ExpiresAt: now.Add(RequestTTL).Unix(),
	}
	if r.Reason == "" {
		r.Reason = "rejected (no reason given)"
	}
	req, err := marshal(r, poolPK(pool), requestSK(r.RequestID))
	if err != nil {
		return r, false, err
	}
	idx, err := marshal(r, poolPK(pool), rejectedSK(now, r.RequestID))
	if err != nil {
		return r, false, err
	}
	notExists := aws.String("attribute_not_exists(#pk)")
	pkName := map[string]string{"#pk": AttrPK}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Put: &types.Put{TableName: &s.table, Item: req, ConditionExpression: notExists, ExpressionAttributeNames: pkName}},
		{Put: &types.Put{TableName: &s.table, Item: idx, ConditionExpression: notExists, ExpressionAttributeNames: pkName}},
	}})
	if err == nil {
		return r, true, nil
	}
	if !awserr.IsConditionFailed(err) {
		return r, false, fmt.Errorf("reject request %s: %w", r.RequestID, err)
	}
	prev, gerr := s.GetRequest(ctx, pool, r.RequestID)
	if gerr != nil {
		if errors.Is(gerr, ErrNotFound) {
			// The record vanished between the write and the read (TTL):
			// report the conflict rather than guess.
			return r, false, fmt.Errorf("reject request %s: %w", r.RequestID, ErrConflict)
		}
		return r, false, gerr
	}
	return prev, false, nil
}

// ListRejected returns the newest rejected requests of a pool, newest first,
// at most limit (limit <= 0 means all that have not expired).
func (s *Store) ListRejected(ctx context.Context, pool string, limit int) ([]Request, error) {
	in := &dynamodb.QueryInput{
		TableName:                aws.String(s.table),
		KeyConditionExpression:   aws.String("#pk = :pk AND begins_with(#sk, :prefix)"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK, "#sk": AttrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": str(poolPK(pool)), ":prefix": str(prefixRejected),
		},
		ScanIndexForward: aws.Bool(false),
		ConsistentRead:   aws.Bool(true),
	}
	if limit > 0 {
		in.Limit = aws.Int32(int32(min(limit, 1000)))
	}
	var out []Request
	p := dynamodb.NewQueryPaginator(s.db, in)
	for p.HasMorePages() && (limit <= 0 || len(out) < limit) {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list rejected requests of %s: %w", pool, err)
		}
		for _, item := range page.Items {
			var r Request
			if err := unmarshal(item, &r); err != nil {
				return nil, err
			}
			out = append(out, r)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// sanitizeRecorded makes s storable and readable: valid UTF-8 and at most max bytes
// (cut on a rune boundary, marked with "…").
func sanitizeRecorded(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// RequestTTL is how long a request record answers retries (docs/design.md §2).
const RequestTTL = 7 * 24 * time.Hour

// RequestState says what became of a push request.
type RequestState string

// Request states.
const (
	RequestAppended RequestState = "appended"
	RequestRejected RequestState = "rejected"
)

// Request is the idempotency record of one push request.
type Request struct {
	Pool      string       `json:"pool"`
	RequestID string       `json:"requestId"`
	State     RequestState `json:"state"`
	Seq       int64        `json:"seq,omitempty"`
	Op        events.Op    `json:"op,omitempty"`
	Path      string       `json:"path,omitempty"`
	Reason    string       `json:"reason,omitempty"`
	CreatedAt time.Time    `json:"createdAt"`
	ExpiresAt int64        `json:"expiresAt"`
}

func requestSK(id string) string { return prefixRequest + id }

// GetRequest reads the record of one request.
func (s *Store) GetRequest(ctx context.Context, pool, requestID string) (Request, error) {
	var r Request
	err := s.get(ctx, poolPK(pool), requestSK(requestID), &r)
	return r, err
}
