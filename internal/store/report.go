package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/internal/awserr"
)

// InstanceReport is one agent result as the report Lambda saw it.
type InstanceReport struct {
	// Seq is the watermark the agent reported; 0 when the command produced
	// no report (it then raises nothing).
	Seq       int64
	CommandID string
	Status    string // SSM invocation status: Success, Failed, TimedOut, …
	Error     string // empty on success
	// At orders reports of one instance: a report older than the stored
	// lastReportAt never replaces status, error or command.
	At time.Time
	// Space is the mounted filesystem's size, used and free bytes from the
	// agent's report; nil when the report has none (not mounted, no
	// report). Its At is set from the report's At.
	Space *Space
}

// maxReportTries bounds RecordReport under concurrent writers.
const maxReportTries = 20

// RecordReport folds an agent report into the instance item with a
// conditional write on its rev: seq becomes max(stored, reported), so a
// late, repeated or out-of-order report never lowers it; lastStatus,
// lastError, lastCommandId and lastReportAt take the report's values only
// when it is at least as new as the stored one; a successful report of an
// instance still launching with its volume moves it to ready (a terminating
// instance is never moved back). A report that changes
// nothing writes nothing. The in-use volume the instance holds then carries
// the instance's seq too (RaiseVolumeSeq), and the newest reported space
// (the volume record keeps it, so an idle volume still shows how full it
// was). It returns the item as stored
// afterwards and whether this call changed it; ErrNotFound when the pool
// has no such instance.
func (s *Store) RecordReport(ctx context.Context, pool, instanceID string, rep InstanceReport) (Instance, bool, error) {
	in, changed, err := s.recordReport(ctx, pool, instanceID, rep)
	if err == nil && in.VolumeID != "" && (in.Seq > 0 || in.Space != nil) {
		err = s.RaiseVolumeSeq(ctx, pool, in.VolumeID, instanceID, in.Seq, in.Space)
	}
	return in, changed, err
}

func (s *Store) recordReport(ctx context.Context, pool, instanceID string, rep InstanceReport) (Instance, bool, error) {
	for try := 0; ; try++ {
		cur, err := s.GetInstance(ctx, pool, instanceID)
		if err != nil {
			return cur, false, err
		}
		next := cur
		if rep.Seq > next.Seq {
			next.Seq = rep.Seq
		}
		if !rep.At.Before(cur.LastReportAt) {
			next.LastStatus, next.LastError, next.LastCommandID = rep.Status, sanitizeRecorded(rep.Error, maxRejectedReason), rep.CommandID
			next.LastReportAt = rep.At.UTC()
			if rep.Space != nil {
				sp := *rep.Space
				sp.At = rep.At.UTC()
				next.Space = &sp
			}
		}
		if cur.State == InstanceLaunching && cur.VolumeID != "" && rep.Status == "Success" && rep.Error == "" && rep.Seq > 0 {
			// The agent answered with its volume mounted: in service.
			next.State = InstanceReady
		}
		if next.State == cur.State && next.Seq == cur.Seq && next.LastStatus == cur.LastStatus && next.LastError == cur.LastError &&
			next.LastCommandID == cur.LastCommandID && next.LastReportAt.Equal(cur.LastReportAt) && sameSpace(next.Space, cur.Space) {
			return cur, false, nil
		}
		written, err := s.UpdateInstance(ctx, next)
		if err == nil {
			return written, true, nil
		}
		if !errors.Is(err, ErrConflict) {
			return cur, false, err
		}
		if try+1 >= maxReportTries {
			return cur, false, fmt.Errorf("record report of %s: gave up after %d tries: %w", instanceID, maxReportTries, err)
		}
		if err := awserr.Sleep(ctx, time.Duration(rand.IntN(10)+1)*time.Millisecond); err != nil {
			return cur, false, err
		}
	}
}

func sameSpace(a, b *Space) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.SizeBytes == b.SizeBytes && a.UsedBytes == b.UsedBytes && a.FreeBytes == b.FreeBytes && a.At.Equal(b.At)
}

// skReported is the sort key, in the pool partition, of the pool's
// reported watermark: the highest seq that every in-service instance has
// reported (RaiseReported).
const skReported = "REPORTED"

// RaiseReported raises the pool's reported watermark to seq when it is
// below seq (or not recorded yet), in one conditional write, and returns
// the watermark it replaced (0 when there was none) and true. When the
// stored watermark is already at or above seq it writes nothing and
// returns false: of concurrent or repeated reports that bring the last
// instance to seq, exactly one raises it.
func (s *Store) RaiseReported(ctx context.Context, pool string, seq int64) (prev int64, raised bool, err error) {
	item := key(poolPK(pool), skReported)
	item["seq"] = num(seq)
	item["updatedAt"] = str(s.now().Format(time.RFC3339Nano))
	out, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &s.table, Item: item,
		ConditionExpression:       aws.String("attribute_not_exists(#pk) OR #seq < :seq"),
		ExpressionAttributeNames:  map[string]string{"#pk": AttrPK, "#seq": "seq"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":seq": num(seq)},
		ReturnValues:              types.ReturnValueAllOld,
	})
	if awserr.IsConditionFailed(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("raise the reported watermark of %s to %d: %w", pool, seq, err)
	}
	if n, ok := out.Attributes["seq"].(*types.AttributeValueMemberN); ok {
		if prev, err = strconv.ParseInt(n.Value, 10, 64); err != nil {
			return 0, true, fmt.Errorf("reported watermark of %s: %w", pool, err)
		}
	}
	return prev, true, nil
}
