package assembly

import (
	"encoding/json"
	"testing"
)

func TestMatchPattern(t *testing.T) {
	event := `{"source":"aws.autoscaling","detail-type":"EC2 Instance-launch Lifecycle Action",
		"resources":["arn:a","arn:b"],"detail":{"AutoScalingGroupName":"web","LifecycleHookName":"volsd-launch","n":3}}`
	for _, c := range []struct {
		pattern string
		want    bool
		err     bool
	}{
		{`{"source":["aws.autoscaling"]}`, true, false},
		{`{"source":["aws.ssm"]}`, false, false},
		{`{"source":["aws.ssm","aws.autoscaling"],"detail":{"AutoScalingGroupName":["web"]}}`, true, false},
		{`{"detail":{"AutoScalingGroupName":["other"]}}`, false, false},
		{`{"detail":{"LifecycleHookName":["volsd-launch","volsd-terminate"]}}`, true, false},
		{`{"detail":{"LifecycleHookName":["my-lifecycle-hook"]}}`, false, false},
		{`{"detail":{"missing":["x"]}}`, false, false},
		{`{"resources":["arn:b"]}`, true, false},
		{`{"detail":{"LifecycleHookName":[{"prefix":"volsd-"}]}}`, true, false},
		{`{"detail":{"LifecycleHookName":[{"anything-but":["volsd-launch"]}]}}`, false, false},
		{`{"detail":{"LifecycleHookName":[{"anything-but":{"prefix":"my-"}}]}}`, true, false},
		{`{"detail":{"missing":[{"exists":false}]}}`, true, false},
		{`{"detail":{"n":[{"exists":true}]}}`, true, false},
		{`{"detail":{"n":[3]}}`, true, false},
		{`{"detail":{"n":[{"numeric":["=",3]}]}}`, true, false},
		{`{"detail":{"n":[{"wildcard":"*"}]}}`, false, true},
		{`{"detail":"web"}`, false, true},
	} {
		var p map[string]any
		if err := json.Unmarshal([]byte(c.pattern), &p); err != nil {
			t.Fatal(err)
		}
		got, err := MatchPattern(p, []byte(event))
		if (err != nil) != c.err || got != c.want {
			t.Errorf("%s: got %v, %v; want %v (error %v)", c.pattern, got, err, c.want, c.err)
		}
	}
}
