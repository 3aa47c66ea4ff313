package volsd

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/internal/store"
)

// newTable builds the pool's table from store.TableDefinition, the single
// source of truth of the layout, plus TTL on store.AttrTTL, point-in-time
// recovery and encryption.
func newTable(scope *Pool, p PoolProps) awsdynamodb.Table {
	def := store.TableDefinition("volsd")
	if def.BillingMode != ddbtypes.BillingModePayPerRequest {
		panic(fmt.Sprintf("volsd: store.TableDefinition billing mode %q: the construct supports only PAY_PER_REQUEST", def.BillingMode))
	}
	types := map[string]awsdynamodb.AttributeType{}
	for _, a := range def.AttributeDefinitions {
		types[*a.AttributeName] = attributeType(a.AttributeType)
	}
	pk, sk := keys(def.KeySchema, types)
	table := awsdynamodb.NewTable(scope.Construct, jsii.String("Table"), &awsdynamodb.TableProps{
		PartitionKey:        pk,
		SortKey:             sk,
		BillingMode:         awsdynamodb.BillingMode_PAY_PER_REQUEST,
		TimeToLiveAttribute: jsii.String(store.AttrTTL),
		PointInTimeRecoverySpecification: &awsdynamodb.PointInTimeRecoverySpecification{
			PointInTimeRecoveryEnabled: jsii.Bool(true),
		},
		Encryption:         awsdynamodb.TableEncryption_AWS_MANAGED,
		RemovalPolicy:      p.RemovalPolicy,
		DeletionProtection: jsii.Bool(p.RemovalPolicy == awscdk.RemovalPolicy_RETAIN),
	})
	for _, g := range def.GlobalSecondaryIndexes {
		gpk, gsk := keys(g.KeySchema, types)
		props := &awsdynamodb.GlobalSecondaryIndexProps{
			IndexName:    g.IndexName,
			PartitionKey: gpk,
			SortKey:      gsk,
		}
		switch g.Projection.ProjectionType {
		case ddbtypes.ProjectionTypeAll:
			props.ProjectionType = awsdynamodb.ProjectionType_ALL
		case ddbtypes.ProjectionTypeKeysOnly:
			props.ProjectionType = awsdynamodb.ProjectionType_KEYS_ONLY
		case ddbtypes.ProjectionTypeInclude:
			props.ProjectionType = awsdynamodb.ProjectionType_INCLUDE
			props.NonKeyAttributes = jsii.Strings(g.Projection.NonKeyAttributes...)
		default:
			panic(fmt.Sprintf("volsd: index %s: unknown projection %q", *g.IndexName, g.Projection.ProjectionType))
		}
		table.AddGlobalSecondaryIndex(props)
	}
	if len(def.LocalSecondaryIndexes) > 0 {
		panic("volsd: store.TableDefinition has local secondary indexes; the construct does not build them yet")
	}
	return table
}

func attributeType(t ddbtypes.ScalarAttributeType) awsdynamodb.AttributeType {
	switch t {
	case ddbtypes.ScalarAttributeTypeS:
		return awsdynamodb.AttributeType_STRING
	case ddbtypes.ScalarAttributeTypeN:
		return awsdynamodb.AttributeType_NUMBER
	case ddbtypes.ScalarAttributeTypeB:
		return awsdynamodb.AttributeType_BINARY
	}
	panic(fmt.Sprintf("volsd: unknown attribute type %q in store.TableDefinition", t))
}

func keys(schema []ddbtypes.KeySchemaElement, types map[string]awsdynamodb.AttributeType) (pk, sk *awsdynamodb.Attribute) {
	for _, k := range schema {
		t, ok := types[*k.AttributeName]
		if !ok {
			panic(fmt.Sprintf("volsd: key %s has no attribute definition in store.TableDefinition", *k.AttributeName))
		}
		a := &awsdynamodb.Attribute{Name: k.AttributeName, Type: t}
		switch k.KeyType {
		case ddbtypes.KeyTypeHash:
			pk = a
		case ddbtypes.KeyTypeRange:
			sk = a
		}
	}
	if pk == nil {
		panic("volsd: store.TableDefinition: a key schema without a HASH key")
	}
	return pk, sk
}
