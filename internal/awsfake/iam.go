package awsfake

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/volsd/volsd/infra/assembly"
)

// IAMRoles is the part of the IAM API whose roles IAMSimulator evaluates
// (moto's IAM has them; it has no policy simulator).
type IAMRoles interface {
	GetInstanceProfile(ctx context.Context, in *iam.GetInstanceProfileInput, optFns ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error)
	GetRole(ctx context.Context, in *iam.GetRoleInput, optFns ...func(*iam.Options)) (*iam.GetRoleOutput, error)
	ListRolePolicies(ctx context.Context, in *iam.ListRolePoliciesInput, optFns ...func(*iam.Options)) (*iam.ListRolePoliciesOutput, error)
	GetRolePolicy(ctx context.Context, in *iam.GetRolePolicyInput, optFns ...func(*iam.Options)) (*iam.GetRolePolicyOutput, error)
	ListAttachedRolePolicies(ctx context.Context, in *iam.ListAttachedRolePoliciesInput, optFns ...func(*iam.Options)) (*iam.ListAttachedRolePoliciesOutput, error)
	GetPolicy(ctx context.Context, in *iam.GetPolicyInput, optFns ...func(*iam.Options)) (*iam.GetPolicyOutput, error)
	GetPolicyVersion(ctx context.Context, in *iam.GetPolicyVersionInput, optFns ...func(*iam.Options)) (*iam.GetPolicyVersionOutput, error)
}

// IAMSimulator adds IAM's policy simulator (SimulatePrincipalPolicy) to an
// IAM whose roles and policies it reads (moto's): the role's inline and
// attached managed policies (their default versions) are evaluated for
// each action and resource with the request's context keys, by the
// evaluator the infra tests use (infra/assembly): an explicit Deny wins,
// else an Allow allows, else the decision is implicitDeny. Identity
// policies only (no permissions boundary, SCP or resource policy), as
// SimulatePrincipalPolicy without PermissionsBoundaryPolicyInputList.
// Other calls go to the wrapped IAM.
type IAMSimulator struct {
	IAMRoles
}

var iamRoleARN = regexp.MustCompile(`^arn:[a-z-]+:iam::[0-9]{12}:role/(?:.*/)?([\w+=,.@-]{1,64})$`)

func iamInvalidInput(format string, args ...any) error {
	return &types.InvalidInputException{Message: aws.String(fmt.Sprintf(format, args...))}
}

// SimulatePrincipalPolicy evaluates the policies of the role
// PolicySourceArn names. ActionNames is required; ResourceArns defaults to
// "*"; one result per action and resource, EvalResourceName set. A source
// that is not a role ARN is InvalidInput; an unknown role NoSuchEntity.
func (s IAMSimulator) SimulatePrincipalPolicy(ctx context.Context, in *iam.SimulatePrincipalPolicyInput, _ ...func(*iam.Options)) (*iam.SimulatePrincipalPolicyOutput, error) {
	src := aws.ToString(in.PolicySourceArn)
	m := iamRoleARN.FindStringSubmatch(src)
	if m == nil {
		return nil, iamInvalidInput("Invalid ARN %q: this simulator takes role ARNs", src)
	}
	if len(in.ActionNames) == 0 {
		return nil, iamInvalidInput("1 validation error detected: Value null at 'actionNames' failed to satisfy constraint: Member must not be null")
	}
	statements, err := s.roleStatements(ctx, m[1])
	if err != nil {
		return nil, err
	}
	ctxKeys := map[string][]string{}
	for _, e := range in.ContextEntries {
		ctxKeys[aws.ToString(e.ContextKeyName)] = e.ContextKeyValues
	}
	resources := in.ResourceArns
	if len(resources) == 0 {
		resources = []string{"*"}
	}
	out := &iam.SimulatePrincipalPolicyOutput{}
	for _, action := range in.ActionNames {
		for _, res := range resources {
			decision := types.PolicyEvaluationDecisionTypeImplicitDeny
			var matched []types.Statement
			for _, st := range statements {
				ok, err := st.Matches(assembly.Request{Action: action, Resource: res, Context: ctxKeys})
				if err != nil {
					return nil, iamInvalidInput("policy %s: %v", st.Policy, err)
				}
				if !ok {
					continue
				}
				matched = append(matched, types.Statement{SourcePolicyId: aws.String(st.Policy), SourcePolicyType: types.PolicySourceTypeRole})
				switch {
				case st.Effect == "Deny":
					decision = types.PolicyEvaluationDecisionTypeExplicitDeny
				case st.Effect == "Allow" && decision != types.PolicyEvaluationDecisionTypeExplicitDeny:
					decision = types.PolicyEvaluationDecisionTypeAllowed
				}
			}
			out.EvaluationResults = append(out.EvaluationResults, types.EvaluationResult{
				EvalActionName: aws.String(action), EvalResourceName: aws.String(res), EvalDecision: decision, MatchedStatements: matched,
			})
		}
	}
	return out, nil
}

// roleStatements reads every identity-policy statement of role.
func (s IAMSimulator) roleStatements(ctx context.Context, role string) ([]assembly.Statement, error) {
	if _, err := s.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(role)}); err != nil {
		return nil, err
	}
	var out []assembly.Statement
	add := func(id, doc string) error {
		if strings.HasPrefix(doc, "%") {
			// IAM returns policy documents URL-encoded (RFC 3986).
			d, err := url.QueryUnescape(doc)
			if err != nil {
				return fmt.Errorf("policy %s: %w", id, err)
			}
			doc = d
		}
		st, err := assembly.ParsePolicy(id, []byte(doc))
		if err != nil {
			return err
		}
		out = append(out, st...)
		return nil
	}
	inline := iam.NewListRolePoliciesPaginator(s, &iam.ListRolePoliciesInput{RoleName: aws.String(role)})
	for inline.HasMorePages() {
		page, err := inline.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, name := range page.PolicyNames {
			p, err := s.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(name)})
			if err != nil {
				return nil, err
			}
			if err := add(name, aws.ToString(p.PolicyDocument)); err != nil {
				return nil, err
			}
		}
	}
	attached := iam.NewListAttachedRolePoliciesPaginator(s, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(role)})
	for attached.HasMorePages() {
		page, err := attached.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, ap := range page.AttachedPolicies {
			pol, err := s.GetPolicy(ctx, &iam.GetPolicyInput{PolicyArn: ap.PolicyArn})
			if err != nil {
				return nil, err
			}
			v, err := s.GetPolicyVersion(ctx, &iam.GetPolicyVersionInput{PolicyArn: ap.PolicyArn, VersionId: pol.Policy.DefaultVersionId})
			if err != nil {
				return nil, err
			}
			if err := add(aws.ToString(ap.PolicyName), aws.ToString(v.PolicyVersion.Document)); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
