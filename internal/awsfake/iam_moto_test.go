package awsfake_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/testenv"
)

// TestIAMSimulatorOnMotoRoles: SimulatePrincipalPolicy evaluates a moto
// role's inline and attached managed policies as IAM does: an Allow
// allows, an explicit Deny wins over it, anything else is an implicit
// deny; conditions read the request's context entries; a bad source ARN,
// no actions and an unknown role get IAM's errors.
func TestIAMSimulatorOnMotoRoles(t *testing.T) {
	ctx := context.Background()
	moto := iam.NewFromConfig(testenv.Moto(t))
	sim := awsfake.IAMSimulator{IAMRoles: moto}
	role := testenv.UniqueName(t, "role")
	out, err := moto.CreateRole(ctx, &iam.CreateRoleInput{RoleName: &role,
		AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := moto.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: &role, PolicyName: aws.String("inline"), PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::origin/*"},
		{"Effect":"Deny","Action":"s3:*","Resource":"arn:aws:s3:::origin/secret/*"},
		{"Effect":"Allow","Action":["dynamodb:Query"],"Resource":"*","Condition":{"ForAllValues:StringEquals":{"dynamodb:LeadingKeys":["JOURNAL#web"]}}}]}`)}); err != nil {
		t.Fatal(err)
	}
	managed, err := moto.CreatePolicy(ctx, &iam.CreatePolicyInput{PolicyName: aws.String(testenv.UniqueName(t, "managed")),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ssm:UpdateInstanceInformation","Resource":"*"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := moto.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: &role, PolicyArn: managed.Policy.Arn}); err != nil {
		t.Fatal(err)
	}
	arn := aws.ToString(out.Role.Arn)
	for _, c := range []struct {
		action, resource string
		leading          []string
		want             types.PolicyEvaluationDecisionType
	}{
		{"s3:GetObject", "arn:aws:s3:::origin/blobs/a", nil, types.PolicyEvaluationDecisionTypeAllowed},
		{"s3:getobject", "arn:aws:s3:::origin/blobs/a", nil, types.PolicyEvaluationDecisionTypeAllowed},
		{"s3:GetObject", "arn:aws:s3:::origin/secret/a", nil, types.PolicyEvaluationDecisionTypeExplicitDeny},
		{"s3:PutObject", "arn:aws:s3:::origin/blobs/a", nil, types.PolicyEvaluationDecisionTypeImplicitDeny},
		{"dynamodb:Query", "arn:aws:dynamodb:us-east-1:123456789012:table/t", []string{"JOURNAL#web"}, types.PolicyEvaluationDecisionTypeAllowed},
		{"dynamodb:Query", "arn:aws:dynamodb:us-east-1:123456789012:table/t", []string{"JOURNAL#media"}, types.PolicyEvaluationDecisionTypeImplicitDeny},
		{"ssm:UpdateInstanceInformation", "*", nil, types.PolicyEvaluationDecisionTypeAllowed},
	} {
		in := &iam.SimulatePrincipalPolicyInput{PolicySourceArn: &arn, ActionNames: []string{c.action}, ResourceArns: []string{c.resource}}
		if c.leading != nil {
			in.ContextEntries = []types.ContextEntry{{ContextKeyName: aws.String("dynamodb:LeadingKeys"), ContextKeyValues: c.leading, ContextKeyType: types.ContextKeyTypeEnumStringList}}
		}
		res, err := sim.SimulatePrincipalPolicy(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.EvaluationResults) != 1 || res.EvaluationResults[0].EvalDecision != c.want || aws.ToString(res.EvaluationResults[0].EvalResourceName) != c.resource {
			t.Errorf("%s on %s %v: %+v, want %s", c.action, c.resource, c.leading, res.EvaluationResults, c.want)
		}
	}
	for _, c := range []struct {
		in   *iam.SimulatePrincipalPolicyInput
		code string
	}{
		{&iam.SimulatePrincipalPolicyInput{PolicySourceArn: aws.String("arn:aws:s3:::origin"), ActionNames: []string{"s3:GetObject"}}, "InvalidInput"},
		{&iam.SimulatePrincipalPolicyInput{PolicySourceArn: &arn}, "InvalidInput"},
		{&iam.SimulatePrincipalPolicyInput{PolicySourceArn: aws.String("arn:aws:iam::123456789012:role/no-such-role-x"), ActionNames: []string{"s3:GetObject"}}, "NoSuchEntity"},
	} {
		if _, err := sim.SimulatePrincipalPolicy(ctx, c.in); awserr.Code(err) != c.code {
			t.Errorf("%+v: error %v, want %s", c.in, err, c.code)
		}
	}
}
