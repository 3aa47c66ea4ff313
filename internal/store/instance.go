package store

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
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
