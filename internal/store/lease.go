package store

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/internal/awserr"
)

// prefixLease is the sort-key prefix of lease items (POOL#<pool>, LEASE#<name>).
const prefixLease = "LEASE#"

// leaseTTL is how long after its end an abandoned lease item lingers before
// DynamoDB's TTL removes it (only for tidiness: an expired lease is free).
const leaseTTL = time.Hour

// Lease is a named, time-bounded lock of one pool, held by Owner until Until.
// The snapshot Lambda holds "snapshot" while it freezes, snapshots and thaws,
// so two runs never freeze the same pool at once.
type Lease struct {
	Pool      string    `json:"pool"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner"`
	Until     string    `json:"until"` // fixed-width UTC time, so it compares as a string
	ExpiresAt int64     `json:"expiresAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func leaseSK(name string) string { return prefixLease + name }

// AcquireLease takes lease name of pool for owner until the given time. It
// succeeds when nobody holds it, when the holder's time has run out, or when
// owner holds it already (then it extends it). Otherwise it returns
// ErrConflict naming the holder.
func (s *Store) AcquireLease(ctx context.Context, pool, name, owner string, until time.Time) (Lease, error) {
	now := s.now()
	if owner == "" {
		return Lease{}, fmt.Errorf("acquire lease %s of %s: owner is empty", name, pool)
	}
	l := Lease{
		Pool: pool, Name: name, Owner: owner,
		Until:     until.UTC().Format(sortTime),
		ExpiresAt: until.Add(leaseTTL).Unix(),
		UpdatedAt: now,
	}
	item, err := marshal(l, poolPK(pool), leaseSK(name))
	if err != nil {
		return l, err
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                &s.table,
		Item:                     item,
		ConditionExpression:      aws.String("attribute_not_exists(#pk) OR #until < :now OR #owner = :owner"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK, "#until": "until", "#owner": "owner"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":now": str(now.UTC().Format(sortTime)), ":owner": str(owner),
		},
	})
	if err != nil {
		what := fmt.Sprintf("acquire lease %s of %s for %s", name, pool, owner)
		if held, gerr := s.getLease(ctx, pool, name); gerr == nil {
			what += fmt.Sprintf(" (held by %s until %s)", held.Owner, held.Until)
		}
		return l, conditionErr(err, ErrConflict, what)
	}
	return l, nil
}

// ReleaseLease gives up lease name of pool if owner still holds it. A lease
// that someone else took over (after it ran out) or that is gone is fine.
func (s *Store) ReleaseLease(ctx context.Context, pool, name, owner string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 &s.table,
		Key:                       key(poolPK(pool), leaseSK(name)),
		ConditionExpression:       aws.String("#owner = :owner"),
		ExpressionAttributeNames:  map[string]string{"#owner": "owner"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":owner": str(owner)},
	})
	if err != nil && !awserr.IsConditionFailed(err) {
		return fmt.Errorf("release lease %s of %s for %s: %w", name, pool, owner, err)
	}
	return nil
}

func (s *Store) getLease(ctx context.Context, pool, name string) (Lease, error) {
	var l Lease
	err := s.get(ctx, poolPK(pool), leaseSK(name), &l)
	return l, err
}
