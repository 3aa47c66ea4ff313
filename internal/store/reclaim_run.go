package store

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// skReclaim is the sort key of the last reclaim run (RECLAIM; tree.go
// lists the reclaim items).
const skReclaim = "RECLAIM"

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
