package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/internal/awserr"
)

// claimPage is how many idle candidates one GSI query fetches.
const claimPage = 25

// maxClaimRounds bounds ClaimIdle's candidate queries under contention.
const maxClaimRounds = 50

// Held reports whether a volume in this state belongs to an instance.
func (st VolumeState) Held() bool {
	switch st {
	case VolumeCreating, VolumeClaimed, VolumeAttaching, VolumeInUse:
		return true
	}
	return false
}

// ClaimIdle gives instanceID one idle volume of pool in az, or ErrNoIdle.
//
// It is idempotent per instance: the binding lives on the instance item
// (volumeId), written in the same transaction as the volume's move from idle
// to claimed, so a second or concurrent call for the same instance returns
// the volume the first one got and never claims another. Candidates come
// from the GSI (eventually consistent); the conditional write on the base
// item decides, and a claimer that lost a candidate moves on to the next.
func (s *Store) ClaimIdle(ctx context.Context, pool, az, instanceID string) (Volume, error) {
rounds:
	for round := 0; round < maxClaimRounds; round++ {
		if round > 0 {
			if err := awserr.Sleep(ctx, time.Duration(rand.IntN(5)+1)*time.Millisecond); err != nil {
				return Volume{}, err
			}
		}
		held, prev, err := s.heldVolume(ctx, pool, instanceID)
		if err != nil || held != nil {
			return deref(held), err
		}
		out, err := s.db.Query(ctx, withTable(gsiQuery(pool, az, VolumeIdle, claimPage), s.table))
		if err != nil {
			return Volume{}, fmt.Errorf("find idle volumes in %s/%s: %w", pool, az, err)
		}
		if len(out.Items) == 0 {
			return Volume{}, fmt.Errorf("pool %s, %s: %w", pool, az, ErrNoIdle)
		}
		cands := make([]Volume, 0, len(out.Items))
		for _, item := range out.Items {
			var v Volume
			if err := unmarshal(item, &v); err != nil {
				return Volume{}, err
			}
			cands = append(cands, v)
		}
		// Spread concurrent claimers over the page instead of all
		// fighting for the oldest volume.
		rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
		for _, c := range cands {
			v, err := s.claim(ctx, c, instanceID, prev)
			if err == nil {
				return v, nil
			}
			switch {
			case len(awserr.CancellationReasons(err)) == 2 && awserr.IsItemConditionFailed(err, 1):
				// The instance's binding changed under us: re-read it.
				continue rounds
			case awserr.Classify(err) == awserr.Conflict, awserr.IsRetryable(err):
				continue // someone else took this candidate
			default:
				return Volume{}, fmt.Errorf("claim %s for %s: %w", c.VolumeID, instanceID, err)
			}
		}
	}
	return Volume{}, fmt.Errorf("claim in %s/%s for %s: gave up after %d rounds: %w", pool, az, instanceID, maxClaimRounds, ErrConflict)
}

// heldVolume returns the volume the instance already holds (nil if none),
// and the instance's current binding, possibly stale, for the next claim's
// condition.
func (s *Store) heldVolume(ctx context.Context, pool, instanceID string) (*Volume, string, error) {
	inst, err := s.GetInstance(ctx, pool, instanceID)
	if errors.Is(err, ErrNotFound) {
		return nil, "", nil
	}
	if err != nil || inst.VolumeID == "" {
		return nil, "", err
	}
	v, err := s.GetVolume(ctx, pool, inst.VolumeID)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, inst.VolumeID, nil
	case err != nil:
		return nil, "", err
	case v.InstanceID == instanceID && v.State.Held():
		return &v, inst.VolumeID, nil
	}
	return nil, inst.VolumeID, nil
}

// claim moves candidate c from idle to claimed for instanceID and binds the
// instance to it, in one transaction. prev is the instance's current
// (stale) binding, "" if none.
func (s *Store) claim(ctx context.Context, c Volume, instanceID, prev string) (Volume, error) {
	next := c
	next.State, next.InstanceID, next.Rev, next.UpdatedAt = VolumeClaimed, instanceID, c.Rev+1, s.now()
	next.LastError = ""
	item, err := s.volumeItem(next)
	if err != nil {
		return next, err
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
		TransactItems: []types.TransactWriteItem{
			{Put: &types.Put{
				TableName: &s.table, Item: item,
				ConditionExpression:      aws.String("#state = :idle AND #rev = :rev"),
				ExpressionAttributeNames: map[string]string{"#state": "state", "#rev": "rev"},
				ExpressionAttributeValues: map[string]types.AttributeValue{
					":idle": str(string(VolumeIdle)), ":rev": num(c.Rev),
				},
			}},
			{Update: s.bindInstance(c.Pool, instanceID, c.VolumeID, c.AZ, prev)},
		},
	})
	return next, err
}

// bindInstance is the transaction item that points instance at volume,
// creating the instance item (launching) if absent, on condition that its
// binding is still prev ("" = none).
func (s *Store) bindInstance(pool, instanceID, volumeID, az, prev string) *types.Update {
	now := str(s.now().Format(time.RFC3339Nano))
	cond := "attribute_not_exists(#vol)"
	vals := map[string]types.AttributeValue{
		":vol": str(volumeID), ":az": str(az), ":now": now, ":launching": str(string(InstanceLaunching)),
		":zero": num(0), ":one": num(1), ":pool": str(pool), ":iid": str(instanceID),
	}
	if prev != "" {
		cond = "#vol = :prev"
		vals[":prev"] = str(prev)
	}
	return &types.Update{
		TableName: &s.table, Key: key(poolPK(pool), instanceSK(instanceID)),
		UpdateExpression: aws.String("SET #vol = :vol, #az = :az, #upd = :now, #crt = if_not_exists(#crt, :now), " +
			"#state = if_not_exists(#state, :launching), #seq = if_not_exists(#seq, :zero), " +
			"#pool = :pool, #iid = :iid, #rev = if_not_exists(#rev, :zero) + :one"),
		ConditionExpression: aws.String(cond),
		ExpressionAttributeNames: map[string]string{
			"#vol": "volumeId", "#az": "az", "#upd": "updatedAt", "#crt": "createdAt", "#state": "state",
			"#seq": "seq", "#pool": "pool", "#iid": "instanceId", "#rev": "rev",
		},
		ExpressionAttributeValues: vals,
	}
}

// AssignNew records a volume created for one instance (v.InstanceID set,
// state usually creating) and binds the instance to it, in one transaction.
// It is idempotent: if the instance is already bound to v.VolumeID (a retry
// after EC2 returned the same volume for the same ClientToken), it returns
// the stored volume. If the instance holds another volume, that one is
// returned with ErrExists so the caller can delete its extra volume.
func (s *Store) AssignNew(ctx context.Context, v Volume) (Volume, error) {
	if v.InstanceID == "" {
		return v, fmt.Errorf("assign volume %s: no instance", v.VolumeID)
	}
	held, prev, err := s.heldVolume(ctx, v.Pool, v.InstanceID)
	if err != nil {
		return v, err
	}
	if held != nil {
		return answerHeld(*held, v)
	}
	item, err := s.newVolumeItem(&v)
	if err != nil {
		return v, err
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
		TransactItems: []types.TransactWriteItem{
			{Put: &types.Put{
				TableName: &s.table, Item: item,
				ConditionExpression:      aws.String("attribute_not_exists(#pk)"),
				ExpressionAttributeNames: map[string]string{"#pk": AttrPK},
			}},
			{Update: s.bindInstance(v.Pool, v.InstanceID, v.VolumeID, v.AZ, prev)},
		},
	})
	if err == nil {
		return v, nil
	}
	if awserr.Classify(err) == awserr.Conflict {
		// A concurrent call won; report what it left.
		held, _, herr := s.heldVolume(ctx, v.Pool, v.InstanceID)
		if herr == nil && held != nil {
			return answerHeld(*held, v)
		}
		return v, fmt.Errorf("assign volume %s to %s: %w", v.VolumeID, v.InstanceID, ErrConflict)
	}
	return v, fmt.Errorf("assign volume %s to %s: %w", v.VolumeID, v.InstanceID, err)
}

// answerHeld is AssignNew's answer when v's instance already holds held:
// held itself if it is v (a retry), else ErrExists naming both.
func answerHeld(held, v Volume) (Volume, error) {
	if held.VolumeID == v.VolumeID {
		return held, nil
	}
	return held, fmt.Errorf("instance %s holds %s, not %s: %w", v.InstanceID, held.VolumeID, v.VolumeID, ErrExists)
}

func withTable(in *dynamodb.QueryInput, table string) *dynamodb.QueryInput {
	in.TableName = aws.String(table)
	return in
}

func deref(v *Volume) Volume {
	if v == nil {
		return Volume{}
	}
	return *v
}
