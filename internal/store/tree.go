package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Items of the origin's reclaim (docs/design.md §5b), all in POOL#<pool>:
//
//	TREE#<seq>#<part>   the base tree at seq, gzip'd JSON in parts (attribute data; this file)
//	UNREF#<object key>  an origin object found unreferenced: since, size (unreferenced.go)
//	RECLAIM             the last reclaim run's summary and running totals (reclaim_run.go)
const prefixTree = "TREE#"

// MaxTreePart bounds one TREE# item's data (DynamoDB items are at most
// 400 KB).
const MaxTreePart = 300 << 10

func treeSK(seq int64, part int) string {
	return fmt.Sprintf("%s%s#%04d", prefixTree, SeqKey(seq), part)
}

// PutTree stores the base tree at seq as parts of at most MaxTreePart
// bytes. The same tree at the same seq may be put again (same items).
func (s *Store) PutTree(ctx context.Context, pool string, seq int64, data []byte) error {
	for part := 0; part == 0 || len(data) > 0; part++ {
		n := min(len(data), MaxTreePart)
		item := key(poolPK(pool), treeSK(seq, part))
		item["data"] = &types.AttributeValueMemberB{Value: data[:n]}
		item["last"] = &types.AttributeValueMemberBOOL{Value: n == len(data)}
		data = data[n:]
		if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.table, Item: item}); err != nil {
			return fmt.Errorf("put base tree of %s at %d part %d: %w", pool, seq, part, err)
		}
	}
	return nil
}

// GetTree reads the base tree at seq back; ErrNotFound when its parts are
// missing or incomplete.
func (s *Store) GetTree(ctx context.Context, pool string, seq int64) ([]byte, error) {
	var data []byte
	parts, last := 0, false
	err := s.queryAll(ctx, &dynamodb.QueryInput{
		KeyConditionExpression:    aws.String("#pk = :pk AND begins_with(#sk, :prefix)"),
		ExpressionAttributeNames:  map[string]string{"#pk": AttrPK, "#sk": AttrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(poolPK(pool)), ":prefix": str(prefixTree + SeqKey(seq) + "#")},
		ConsistentRead:            aws.Bool(true),
	}, func(item map[string]types.AttributeValue) error {
		b, _ := item["data"].(*types.AttributeValueMemberB)
		l, _ := item["last"].(*types.AttributeValueMemberBOOL)
		if b == nil || l == nil {
			return fmt.Errorf("base tree of %s at %d: part %d is malformed", pool, seq, parts)
		}
		data, parts, last = append(data, b.Value...), parts+1, l.Value
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !last {
		return nil, fmt.Errorf("base tree of %s at %d (%d parts, last missing): %w", pool, seq, parts, ErrNotFound)
	}
	return data, nil
}

// DeleteTreesBelow removes the parts of every base tree older than seq.
func (s *Store) DeleteTreesBelow(ctx context.Context, pool string, seq int64) error {
	var old []string
	err := s.queryAll(ctx, &dynamodb.QueryInput{
		KeyConditionExpression:    aws.String("#pk = :pk AND #sk BETWEEN :lo AND :hi"),
		ProjectionExpression:      aws.String("#sk"),
		ExpressionAttributeNames:  map[string]string{"#pk": AttrPK, "#sk": AttrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(poolPK(pool)), ":lo": str(prefixTree), ":hi": str(prefixTree + SeqKey(seq))},
	}, func(item map[string]types.AttributeValue) error {
		if sk, ok := item[AttrSK].(*types.AttributeValueMemberS); ok && !strings.HasPrefix(sk.Value, prefixTree+SeqKey(seq)) {
			old = append(old, sk.Value)
		}
		return nil
	})
	for _, sk := range old {
		if err != nil {
			break
		}
		_, err = s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.table, Key: key(poolPK(pool), sk)})
	}
	if err != nil {
		return fmt.Errorf("delete old base trees of %s: %w", pool, err)
	}
	return nil
}
