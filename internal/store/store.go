// Package store is volsd's state in one DynamoDB table (docs/design.md §2):
// volumes, instances, snapshots, the journal and request records, with the
// attribute names of schema.go so that the console view, the Lambdas, the
// agent and the CLI all agree.
//
// Every state change is a conditional write on the base item (state and
// rev), so concurrent handlers never both win; the loser gets ErrConflict
// and re-reads.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/volsd/volsd/internal/awserr"
)

// Errors the store returns, wrapped with what was asked for; test with
// errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict: the item changed since it was read")
	ErrExists   = errors.New("already exists")
	ErrNoIdle   = errors.New("no idle volume")
	ErrRejected = errors.New("request was rejected earlier")
)

// DynamoDB is the part of the DynamoDB API the store uses.
type DynamoDB interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, optFns ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
}

// Store reads and writes one volsd table.
type Store struct {
	db    DynamoDB
	table string
	now   func() time.Time
}

// New returns a Store over table.
func New(db DynamoDB, table string) *Store {
	return &Store{db: db, table: table, now: func() time.Time { return time.Now().UTC() }}
}

// Table returns the table name.
func (s *Store) Table() string { return s.table }

// Key prefixes (docs/design.md §2).
const (
	prefixPool     = "POOL#"
	prefixJournal  = "JOURNAL#"
	prefixVolume   = "VOL#"
	prefixInstance = "INST#"
	prefixSnapshot = "SNAP#"
	prefixRequest  = "REQ#"
	skHead         = "HEAD"
)

// sortTime is the fixed-width UTC layout used where times are sort keys.
const sortTime = "2006-01-02T15:04:05.000000000Z"

func poolPK(pool string) string { return prefixPool + pool }

func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: str(pk), AttrSK: str(sk)}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue { return &types.AttributeValueMemberN{Value: fmt.Sprint(n)} }

// marshal encodes v with its json tags (so items carry the same names as
// the wire types) and adds the keys.
func marshal(v any, pk, sk string) (map[string]types.AttributeValue, error) {
	item, err := attributevalue.MarshalMapWithOptions(v, func(o *attributevalue.EncoderOptions) { o.TagKey = "json" })
	if err != nil {
		return nil, err
	}
	item[AttrPK] = str(pk)
	item[AttrSK] = str(sk)
	return item, nil
}

func unmarshal(item map[string]types.AttributeValue, v any) error {
	return attributevalue.UnmarshalMapWithOptions(item, v, func(o *attributevalue.DecoderOptions) { o.TagKey = "json" })
}

// get reads one item with a consistent read; ErrNotFound when absent.
func (s *Store) get(ctx context.Context, pk, sk string, v any) error {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: &s.table, Key: key(pk, sk), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return fmt.Errorf("get %s %s: %w", pk, sk, err)
	}
	if out.Item == nil {
		return fmt.Errorf("%s %s: %w", pk, sk, ErrNotFound)
	}
	return unmarshal(out.Item, v)
}

// queryAll runs a query to the end, calling fn for each item.
func (s *Store) queryAll(ctx context.Context, in *dynamodb.QueryInput, fn func(map[string]types.AttributeValue) error) error {
	in.TableName = &s.table
	p := dynamodb.NewQueryPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("query %s: %w", aws.ToString(in.KeyConditionExpression), err)
		}
		for _, item := range page.Items {
			if err := fn(item); err != nil {
				return err
			}
		}
	}
	return nil
}

// queryPrefix lists the items of one partition whose sort key starts with
// prefix, decoding each into a new T.
func queryPrefix[T any](ctx context.Context, s *Store, pk, prefix string) ([]T, error) {
	var out []T
	err := s.queryAll(ctx, &dynamodb.QueryInput{
		KeyConditionExpression: aws.String("#pk = :pk AND begins_with(#sk, :prefix)"),
		ExpressionAttributeNames: map[string]string{
			"#pk": AttrPK, "#sk": AttrSK,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": str(pk), ":prefix": str(prefix),
		},
		ConsistentRead: aws.Bool(true),
	}, func(item map[string]types.AttributeValue) error {
		var v T
		if err := unmarshal(item, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// putNew writes a new item; ErrExists (wrapped with what) when its key is
// taken.
func (s *Store) putNew(ctx context.Context, item map[string]types.AttributeValue, what string) error {
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &s.table, Item: item,
		ConditionExpression:      aws.String("attribute_not_exists(#pk)"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK},
	})
	if err != nil {
		return conditionErr(err, ErrExists, what)
	}
	return nil
}

// putAtRev replaces an item if the stored one still has revision rev and
// meets extra (an additional condition, "" for none, whose names and
// values are in names and vals); ErrConflict (wrapped with what) otherwise.
func (s *Store) putAtRev(ctx context.Context, item map[string]types.AttributeValue, rev int64, extra string,
	names map[string]string, vals map[string]types.AttributeValue, what string) error {
	cond := "#rev = :rev"
	if extra != "" {
		cond += " AND " + extra
	}
	n := map[string]string{"#rev": "rev"}
	for k, v := range names {
		n[k] = v
	}
	v := map[string]types.AttributeValue{":rev": num(rev)}
	for k, x := range vals {
		v[k] = x
	}
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &s.table, Item: item, ConditionExpression: aws.String(cond),
		ExpressionAttributeNames: n, ExpressionAttributeValues: v,
	})
	if err != nil {
		return conditionErr(err, ErrConflict, what)
	}
	return nil
}

// deleteAtRev removes the item at pk/sk if it still has revision rev;
// ErrConflict (wrapped with what) otherwise.
func (s *Store) deleteAtRev(ctx context.Context, pk, sk string, rev int64, what string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: &s.table, Key: key(pk, sk),
		ConditionExpression:       aws.String("#rev = :rev"),
		ExpressionAttributeNames:  map[string]string{"#rev": "rev"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":rev": num(rev)},
	})
	if err != nil {
		return conditionErr(err, ErrConflict, what)
	}
	return nil
}

// conditionErr maps a lost conditional write to ErrConflict (or the given
// sentinel), keeping other errors as they are.
func conditionErr(err error, sentinel error, what string) error {
	if awserr.IsConditionFailed(err) {
		return fmt.Errorf("%s: %w", what, sentinel)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// TableAdmin is the part of the DynamoDB API CreateTable uses.
type TableAdmin interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	UpdateTimeToLive(ctx context.Context, in *dynamodb.UpdateTimeToLiveInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// CreateTable creates the volsd table named name from TableDefinition, waits
// until it is ACTIVE and turns on TTL. An existing table is fine (the call is
// idempotent). In AWS the CDK construct creates the table; this is for tests
// and the local run.
func CreateTable(ctx context.Context, db TableAdmin, name string) error {
	_, err := db.CreateTable(ctx, TableDefinition(name))
	if err != nil && !awserr.IsTableExists(err) {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	w := dynamodb.NewTableExistsWaiter(db, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 100 * time.Millisecond
		o.MaxDelay = time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: &name}, 2*time.Minute); err != nil {
		return fmt.Errorf("wait for table %s: %w", name, err)
	}
	_, err = db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: &name,
		TimeToLiveSpecification: &types.TimeToLiveSpecification{
			AttributeName: aws.String(AttrTTL), Enabled: aws.Bool(true),
		},
	})
	if err != nil && !awserr.IsTTLUnchanged(err) { // already enabled
		return fmt.Errorf("enable TTL on %s: %w", name, err)
	}
	return nil
}
