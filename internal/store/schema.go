package store

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Attribute and index names of the volsd table. They are the single source of
// truth for the table layout (docs/design.md §2): the store, tests, the local run
// and the CDK construct all read them from here.
const (
	AttrPK     = "pk"        // partition key, string
	AttrSK     = "sk"        // sort key, string
	AttrGSI1PK = "gsi1pk"    // GSI partition key: POOL#<pool>#<az>#<state>
	AttrGSI1SK = "gsi1sk"    // GSI sort key: createdAt (ISO-8601)
	AttrTTL    = "expiresAt" // TTL attribute, epoch seconds

	IndexGSI1 = "gsi1" // finds volumes of one pool, AZ and state without a scan
)

// TableDefinition returns the CreateTable input for a volsd table named name:
// string keys pk/sk, one GSI gsi1 (gsi1pk/gsi1sk, all attributes projected),
// on-demand billing. TTL on AttrTTL and point-in-time recovery are separate
// API calls (see CreateTable) and are set by the CDK construct in AWS.
func TableDefinition(name string) *dynamodb.CreateTableInput {
	str := func(n string) types.AttributeDefinition {
		return types.AttributeDefinition{AttributeName: aws.String(n), AttributeType: types.ScalarAttributeTypeS}
	}
	return &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			str(AttrPK), str(AttrSK), str(AttrGSI1PK), str(AttrGSI1SK),
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(AttrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(AttrSK), KeyType: types.KeyTypeRange},
		},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName: aws.String(IndexGSI1),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(AttrGSI1PK), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(AttrGSI1SK), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}},
	}
}
