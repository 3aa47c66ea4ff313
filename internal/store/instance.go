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

// InstanceState is where an instance of the group is, as volsd sees it.
type InstanceState string

// Instance states: launching → ready → terminating → gone. An instance of
// a warm pool waits warmed (stopped, its volume attached) between a launch
// into the pool and the launch out of it (warmed → launching); --wait and
// status count only launching and ready instances.
const (
	InstanceLaunching   InstanceState = "launching"
	InstanceReady       InstanceState = "ready"
	InstanceWarmed      InstanceState = "warmed"
	InstanceTerminating InstanceState = "terminating"
	InstanceGone        InstanceState = "gone"
)

// Instance is one EC2 instance of the pool's group.
type Instance struct {
	Pool       string        `json:"pool"`
	InstanceID string        `json:"instanceId"`
	VolumeID   string        `json:"volumeId,omitempty"`
	AZ         string        `json:"az"`
	State      InstanceState `json:"state"`
	// Seq is the watermark the agent last reported; it only increases.
	Seq           int64     `json:"seq"`
	LastCommandID string    `json:"lastCommandId,omitempty"`
	LastStatus    string    `json:"lastStatus,omitempty"`
	LastReportAt  time.Time `json:"lastReportAt,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
	// Space is the mounted filesystem's size, used and free bytes the
	// agent reported last (nil before the first report that carries it).
	Space     *Space    `json:"space,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Rev       int64     `json:"rev"`
}

func instanceSK(id string) string { return prefixInstance + id }

// PutInstance records a new instance at Rev 1; ErrExists if it is known.
func (s *Store) PutInstance(ctx context.Context, in Instance) (Instance, error) {
	now := s.now()
	if in.CreatedAt.IsZero() {
		in.CreatedAt = now
	}
	in.UpdatedAt, in.Rev = now, 1
	item, err := marshal(in, poolPK(in.Pool), instanceSK(in.InstanceID))
	if err != nil {
		return in, err
	}
	return in, s.putNew(ctx, item, "put instance "+in.InstanceID)
}

// GetInstance reads one instance (consistent).
func (s *Store) GetInstance(ctx context.Context, pool, instanceID string) (Instance, error) {
	var in Instance
	err := s.get(ctx, poolPK(pool), instanceSK(instanceID), &in)
	return in, err
}

// UpdateInstance writes next in place of the stored instance if that still
// has revision next.Rev; it returns the written item (Rev+1) or ErrConflict.
// The reported Seq never goes down: a next.Seq below the stored one is a
// conflict too.
func (s *Store) UpdateInstance(ctx context.Context, next Instance) (Instance, error) {
	rev := next.Rev
	next.Rev, next.UpdatedAt = rev+1, s.now()
	item, err := marshal(next, poolPK(next.Pool), instanceSK(next.InstanceID))
	if err != nil {
		return next, err
	}
	return next, s.putAtRev(ctx, item, rev, "#seq <= :seq", map[string]string{"#seq": "seq"},
		map[string]types.AttributeValue{":seq": num(next.Seq)}, fmt.Sprintf("instance %s@%d", next.InstanceID, rev))
}

// ListInstances lists every instance record of a pool (consistent).
func (s *Store) ListInstances(ctx context.Context, pool string) ([]Instance, error) {
	return queryPrefix[Instance](ctx, s, poolPK(pool), prefixInstance)
}

// UnbindInstance clears the instance's binding to volumeID without touching
// its state (unlike ReleaseInstance), so a launch that gives a volume back
// never overwrites a concurrent "terminating". It is a no-op when the
// binding is already elsewhere, gone, or the instance item does not exist.
func (s *Store) UnbindInstance(ctx context.Context, pool, instanceID, volumeID string) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.table, Key: key(poolPK(pool), instanceSK(instanceID)),
		UpdateExpression:         aws.String("REMOVE #vol SET #upd = :now, #rev = #rev + :one"),
		ConditionExpression:      aws.String("#vol = :vol"),
		ExpressionAttributeNames: map[string]string{"#vol": "volumeId", "#upd": "updatedAt", "#rev": "rev"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":vol": str(volumeID), ":now": str(s.now().Format(time.RFC3339Nano)), ":one": num(1),
		},
	})
	if awserr.IsConditionFailed(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unbind instance %s from %s: %w", instanceID, volumeID, err)
	}
	return nil
}

// DeleteInstance drops an instance record if it still has revision rev and
// holds no volume; ErrConflict otherwise.
func (s *Store) DeleteInstance(ctx context.Context, pool, instanceID string, rev int64) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: &s.table, Key: key(poolPK(pool), instanceSK(instanceID)),
		ConditionExpression:       aws.String("#rev = :rev AND attribute_not_exists(#vol)"),
		ExpressionAttributeNames:  map[string]string{"#rev": "rev", "#vol": "volumeId"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":rev": num(rev)},
	})
	if err != nil {
		return conditionErr(err, ErrConflict, fmt.Sprintf("delete instance %s@%d", instanceID, rev))
	}
	return nil
}
