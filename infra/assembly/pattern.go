package assembly

import (
	"encoding/json"
	"fmt"
	"strings"
)

// MatchPattern reports whether event (JSON) matches an EventBridge event
// pattern as it stands in a template (AWS::Events::Rule EventPattern), the
// way EventBridge matches it: every key of the pattern must match, a list
// matches when the event's value (or any element of an event list) equals
// one of its entries; objects nest. Of the content filters it knows
// prefix, anything-but (values or prefix), exists and numeric equality;
// any other operator is an error, so a rule using one is never matched by
// accident.
func MatchPattern(pattern map[string]any, event []byte) (bool, error) {
	var ev map[string]any
	if err := json.Unmarshal(event, &ev); err != nil {
		return false, fmt.Errorf("event: %w", err)
	}
	return matchObject(pattern, ev, "")
}

func matchObject(pattern, ev map[string]any, at string) (bool, error) {
	for k, want := range pattern {
		got, present := ev[k]
		switch w := want.(type) {
		case map[string]any:
			sub, _ := got.(map[string]any)
			ok, err := matchObject(w, sub, at+k+".")
			if err != nil || !ok {
				return false, err
			}
		case []any:
			ok, err := matchValues(w, got, present, at+k)
			if err != nil || !ok {
				return false, err
			}
		default:
			return false, fmt.Errorf("pattern %s%s: %T is neither an object nor a list", at, k, want)
		}
	}
	return true, nil
}

// matchValues matches one event field against the pattern's list.
func matchValues(want []any, got any, present bool, at string) (bool, error) {
	values := []any{got}
	if list, ok := got.([]any); ok {
		values = list
	}
	for _, w := range want {
		for _, v := range values {
			ok, err := matchOne(w, v, present, at)
			if err != nil || ok {
				return ok, err
			}
		}
	}
	return false, nil
}

func matchOne(want, got any, present bool, at string) (bool, error) {
	op, isOp := want.(map[string]any)
	if !isOp {
		return present && equalScalar(want, got), nil
	}
	if len(op) != 1 {
		return false, fmt.Errorf("pattern %s: a content filter has one operator, not %v", at, op)
	}
	for name, arg := range op {
		switch name {
		case "exists":
			b, ok := arg.(bool)
			if !ok {
				return false, fmt.Errorf("pattern %s: exists takes true or false", at)
			}
			return present == b, nil
		case "prefix":
			p, ok := arg.(string)
			s, isStr := got.(string)
			if !ok {
				return false, fmt.Errorf("pattern %s: prefix takes a string", at)
			}
			return present && isStr && strings.HasPrefix(s, p), nil
		case "anything-but":
			if !present {
				return false, nil
			}
			switch a := arg.(type) {
			case []any:
				for _, x := range a {
					if equalScalar(x, got) {
						return false, nil
					}
				}
				return true, nil
			case map[string]any:
				ok, err := matchOne(a, got, present, at)
				return !ok, err
			default:
				return !equalScalar(a, got), nil
			}
		case "numeric":
			a, ok := arg.([]any)
			if !ok || len(a) != 2 || a[0] != "=" {
				return false, fmt.Errorf("pattern %s: only numeric [\"=\", n] is known here, not %v", at, arg)
			}
			return present && equalScalar(a[1], got), nil
		default:
			return false, fmt.Errorf("pattern %s: operator %q is not known to this matcher", at, name)
		}
	}
	return false, nil
}

func equalScalar(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case nil:
		return b == nil
	default:
		return a == b
	}
}
