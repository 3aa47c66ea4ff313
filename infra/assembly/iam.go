package assembly

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// A small evaluator of the identity policies in a template, enough to prove
// what a role may and may not do: Allow and Deny statements with Action,
// Resource and the condition operators volsd uses. Anything it does not
// understand (NotAction, NotResource, other operators, intrinsics) is an
// error, never a silent allow.

// Placeholder values of pseudo parameters when the template does not fix them.
const (
	PlaceholderPartition = "aws"
	PlaceholderRegion    = "eu-west-1"
	PlaceholderAccount   = "123456789012"
)

// Statement is one resolved policy statement.
type Statement struct {
	Sid        string
	Effect     string
	Actions    []string
	Resources  []string
	Conditions map[string]map[string][]string // operator -> key -> values
	Policy     string                         // logical ID of the policy
}

// Request is one API call to authorize: an action on one resource with the
// request's condition keys (multi-valued keys list all values).
type Request struct {
	Action   string
	Resource string
	Context  map[string][]string
}

// Resolve turns an intrinsic value into a string: pseudo parameters become
// the placeholders, Ref X becomes "<X>" and Fn::GetAtt X.A becomes "<X.A>".
func Resolve(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case map[string]any:
		if len(x) != 1 {
			return "", fmt.Errorf("intrinsic with %d keys: %v", len(x), x)
		}
		for fn, arg := range x {
			switch fn {
			case "Ref":
				name, _ := arg.(string)
				return pseudo(name), nil
			case "Fn::GetAtt":
				parts, _ := arg.([]any)
				if len(parts) != 2 {
					return "", fmt.Errorf("Fn::GetAtt %v", arg)
				}
				return fmt.Sprintf("<%v.%v>", parts[0], parts[1]), nil
			case "Fn::Join":
				parts, _ := arg.([]any)
				if len(parts) != 2 {
					return "", fmt.Errorf("Fn::Join %v", arg)
				}
				sep, _ := parts[0].(string)
				items, _ := parts[1].([]any)
				var out []string
				for _, it := range items {
					s, err := Resolve(it)
					if err != nil {
						return "", err
					}
					out = append(out, s)
				}
				return strings.Join(out, sep), nil
			case "Fn::Sub":
				s, ok := arg.(string)
				if !ok {
					return "", fmt.Errorf("Fn::Sub with variables: %v", arg)
				}
				return subPattern.ReplaceAllStringFunc(s, func(m string) string {
					name := m[2 : len(m)-1]
					if strings.Contains(name, ".") {
						return "<" + name + ">"
					}
					return pseudo(name)
				}), nil
			}
			return "", fmt.Errorf("unsupported intrinsic %s", fn)
		}
	}
	return "", fmt.Errorf("unsupported value %T %v", v, v)
}

var subPattern = regexp.MustCompile(`\$\{[^}]+\}`)

func pseudo(name string) string {
	switch name {
	case "AWS::Partition":
		return PlaceholderPartition
	case "AWS::Region":
		return PlaceholderRegion
	case "AWS::AccountId":
		return PlaceholderAccount
	case "AWS::URLSuffix":
		return "amazonaws.com"
	}
	return "<" + name + ">"
}

func strs(v any) ([]string, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		var out []string
		for _, it := range x {
			s, err := Resolve(it)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	default:
		s, err := Resolve(x)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
}

func parseStatements(policyID string, doc any) ([]Statement, error) {
	d, _ := doc.(map[string]any)
	raw, _ := d["Statement"].([]any)
	var out []Statement
	for _, r := range raw {
		m, _ := r.(map[string]any)
		for _, unsupported := range []string{"NotAction", "NotResource", "NotPrincipal"} {
			if _, ok := m[unsupported]; ok {
				return nil, fmt.Errorf("policy %s: %s is not supported by this evaluator", policyID, unsupported)
			}
		}
		s := Statement{Policy: policyID, Conditions: map[string]map[string][]string{}}
		s.Sid, _ = m["Sid"].(string)
		s.Effect, _ = m["Effect"].(string)
		var err error
		if s.Actions, err = strs(m["Action"]); err != nil {
			return nil, fmt.Errorf("policy %s %s: %w", policyID, s.Sid, err)
		}
		if s.Resources, err = strs(m["Resource"]); err != nil {
			return nil, fmt.Errorf("policy %s %s: %w", policyID, s.Sid, err)
		}
		conds, _ := m["Condition"].(map[string]any)
		for op, kv := range conds {
			keys, _ := kv.(map[string]any)
			s.Conditions[op] = map[string][]string{}
			for k, v := range keys {
				vals, err := strs(v)
				if err != nil {
					return nil, fmt.Errorf("policy %s %s: condition %s: %w", policyID, s.Sid, k, err)
				}
				s.Conditions[op][k] = vals
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// RoleStatements returns every identity-policy statement attached to the
// role with logical ID roleID: AWS::IAM::Policy resources naming it and the
// role's inline policies. A managed policy on the role is an error (its
// statements are not in the template).
func (t *Template) RoleStatements(roleID string) ([]Statement, error) {
	role, ok := t.Resources[roleID]
	if !ok || role.Type != "AWS::IAM::Role" {
		return nil, fmt.Errorf("%s: no role %s", t.Name, roleID)
	}
	if m, ok := role.Properties["ManagedPolicyArns"]; ok {
		return nil, fmt.Errorf("%s: role %s has managed policies %v", t.Name, roleID, m)
	}
	var out []Statement
	inline, _ := role.Properties["Policies"].([]any)
	for _, p := range inline {
		pm, _ := p.(map[string]any)
		st, err := parseStatements(roleID, pm["PolicyDocument"])
		if err != nil {
			return nil, err
		}
		out = append(out, st...)
	}
	for _, p := range t.OfType("AWS::IAM::Policy") {
		roles, _ := p.Properties["Roles"].([]any)
		for _, r := range roles {
			if ref, _ := r.(map[string]any); ref != nil && ref["Ref"] == roleID {
				st, err := parseStatements(p.ID, p.Properties["PolicyDocument"])
				if err != nil {
					return nil, err
				}
				out = append(out, st...)
			}
		}
	}
	return out, nil
}

// AllStatements returns the statements of every identity policy in the template.
func (t *Template) AllStatements() ([]Statement, error) {
	var out []Statement
	ids := make([]string, 0)
	for _, r := range t.OfType("AWS::IAM::Role") {
		ids = append(ids, r.ID)
	}
	sort.Strings(ids)
	for _, p := range t.OfType("AWS::IAM::Policy") {
		st, err := parseStatements(p.ID, p.Properties["PolicyDocument"])
		if err != nil {
			return nil, err
		}
		out = append(out, st...)
	}
	for _, id := range ids {
		inline, _ := t.Resources[id].Properties["Policies"].([]any)
		for _, p := range inline {
			pm, _ := p.(map[string]any)
			st, err := parseStatements(id, pm["PolicyDocument"])
			if err != nil {
				return nil, err
			}
			out = append(out, st...)
		}
	}
	return out, nil
}

// Allows reports whether the statements allow req: some Allow statement
// matches and no Deny statement does.
func Allows(statements []Statement, req Request) (bool, error) {
	allowed := false
	for _, s := range statements {
		ok, err := s.Matches(req)
		if err != nil {
			return false, err
		}
		if !ok {
			continue
		}
		switch s.Effect {
		case "Deny":
			return false, nil
		case "Allow":
			allowed = true
		default:
			return false, fmt.Errorf("statement %s: effect %q", s.Sid, s.Effect)
		}
	}
	return allowed, nil
}

// Matches reports whether s applies to req.
func (s Statement) Matches(req Request) (bool, error) {
	if !anyMatch(s.Actions, req.Action, true) || !anyMatch(s.Resources, req.Resource, false) {
		return false, nil
	}
	ctx := map[string][]string{}
	for k, v := range req.Context {
		ctx[strings.ToLower(k)] = v
	}
	for op, keys := range s.Conditions {
		for key, want := range keys {
			got, present := ctx[strings.ToLower(key)]
			ok, err := condition(op, want, got, present)
			if err != nil {
				return false, fmt.Errorf("statement %s: %w", s.Sid, err)
			}
			if !ok {
				return false, nil
			}
		}
	}
	return true, nil
}

func condition(op string, want, got []string, present bool) (bool, error) {
	eq := func(a, b string) bool { return a == b }
	like := func(pattern, v string) bool { return wildcardMatch(pattern, v, false) }
	var cmp func(string, string) bool
	base := strings.TrimPrefix(strings.TrimPrefix(op, "ForAllValues:"), "ForAnyValue:")
	switch base {
	case "StringEquals", "ArnEquals":
		cmp = eq
	case "StringLike", "ArnLike":
		cmp = like
	case "Bool":
		cmp = func(a, b string) bool { return strings.EqualFold(a, b) }
	case "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals":
		cmp = func(w, v string) bool { return numeric(base, w, v) }
	default:
		return false, fmt.Errorf("condition operator %s not supported by this evaluator", op)
	}
	matchesOne := func(v string) bool {
		for _, w := range want {
			if cmp(w, v) {
				return true
			}
		}
		return false
	}
	switch {
	case strings.HasPrefix(op, "ForAllValues:"):
		for _, v := range got {
			if !matchesOne(v) {
				return false, nil
			}
		}
		return true, nil // also true when the key is absent, as in IAM
	default: // single-valued and ForAnyValue: some value matches
		if !present {
			return false, nil
		}
		for _, v := range got {
			if matchesOne(v) {
				return true, nil
			}
		}
		return false, nil
	}
}

// numeric compares the request's value v with the policy's w as IAM's
// numeric operators do (a value that is not a number matches nothing).
func numeric(op, w, v string) bool {
	a, err1 := strconv.ParseFloat(v, 64)
	b, err2 := strconv.ParseFloat(w, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	switch op {
	case "NumericEquals":
		return a == b
	case "NumericNotEquals":
		return a != b
	case "NumericLessThan":
		return a < b
	case "NumericLessThanEquals":
		return a <= b
	case "NumericGreaterThan":
		return a > b
	}
	return a >= b
}

func anyMatch(patterns []string, v string, fold bool) bool {
	for _, p := range patterns {
		if wildcardMatch(p, v, fold) {
			return true
		}
	}
	return false
}

// wildcardMatch matches IAM patterns: '*' any run of characters (slashes
// and colons included), '?' exactly one; everything else literally.
func wildcardMatch(pattern, v string, fold bool) bool {
	if fold {
		pattern, v = strings.ToLower(pattern), strings.ToLower(v)
	}
	return glob(pattern, v)
}

func glob(p, s string) bool {
	for p != "" {
		switch p[0] {
		case '*':
			for i := 0; i <= len(s); i++ {
				if glob(p[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
		}
		p, s = p[1:], s[1:]
	}
	return s == ""
}

// RoleStatementsOfPolicy returns the statements of the AWS::IAM::Policy policyID.
func (t *Template) RoleStatementsOfPolicy(policyID string) ([]Statement, error) {
	p, ok := t.Resources[policyID]
	if !ok || p.Type != "AWS::IAM::Policy" {
		return nil, fmt.Errorf("%s: no policy %s", t.Name, policyID)
	}
	return parseStatements(policyID, p.Properties["PolicyDocument"])
}

// ParsePolicy parses an IAM policy document as IAM stores it (JSON; a
// single statement object or a list) into statements of policy id.
func ParsePolicy(id string, doc []byte) ([]Statement, error) {
	var d map[string]any
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("policy %s: %w", id, err)
	}
	if one, ok := d["Statement"].(map[string]any); ok {
		d["Statement"] = []any{one}
	}
	return parseStatements(id, d)
}
