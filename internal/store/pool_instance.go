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
