package assembly

import "testing"

func TestWildcardMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, v string
		fold, want bool
	}{
		{"*", "arn:aws:ec2:eu-west-1:1:volume/vol-1", false, true},
		{"arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:eu-west-1:1:volume/vol-1", false, true},
		{"arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:eu-west-1:1:instance/i-1", false, false},
		{"ec2:Describe*", "ec2:describevolumes", true, true},
		{"ec2:Describe*", "ec2:AttachVolume", true, false},
		{"ec2:AttachVolume", "ec2:AttachVolume2", true, false},
		{"a?c", "abc", false, true},
		{"a?c", "ac", false, false},
		{"[x]", "[x]", false, true},
	} {
		if got := wildcardMatch(c.pattern, c.v, c.fold); got != c.want {
			t.Errorf("wildcardMatch(%q, %q) = %v, want %v", c.pattern, c.v, got, c.want)
		}
	}
}

func TestConditions(t *testing.T) {
	tagged := Statement{Sid: "s", Effect: "Allow", Actions: []string{"ec2:AttachVolume"}, Resources: []string{"*"},
		Conditions: map[string]map[string][]string{"StringEquals": {"aws:ResourceTag/volsd:pool": {"web"}}}}
	leading := Statement{Sid: "l", Effect: "Allow", Actions: []string{"dynamodb:Query"}, Resources: []string{"*"},
		Conditions: map[string]map[string][]string{"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": {"JOURNAL#web"}}}}
	deny := Statement{Sid: "d", Effect: "Deny", Actions: []string{"ec2:*"}, Resources: []string{"*"}}
	small := Statement{Sid: "n", Effect: "Allow", Actions: []string{"ec2:CreateVolume"}, Resources: []string{"*"},
		Conditions: map[string]map[string][]string{"NumericLessThanEquals": {"ec2:VolumeSize": {"20"}}, "Bool": {"ec2:Encrypted": {"true"}}}}
	for _, c := range []struct {
		name string
		sts  []Statement
		req  Request
		want bool
	}{
		{"size at the bound", []Statement{small}, Request{"ec2:CreateVolume", "v", map[string][]string{"ec2:VolumeSize": {"20"}, "ec2:Encrypted": {"true"}}}, true},
		{"size above the bound", []Statement{small}, Request{"ec2:CreateVolume", "v", map[string][]string{"ec2:VolumeSize": {"21"}, "ec2:Encrypted": {"true"}}}, false},
		{"size not a number", []Statement{small}, Request{"ec2:CreateVolume", "v", map[string][]string{"ec2:VolumeSize": {"big"}, "ec2:Encrypted": {"true"}}}, false},
		{"unencrypted", []Statement{small}, Request{"ec2:CreateVolume", "v", map[string][]string{"ec2:VolumeSize": {"8"}, "ec2:Encrypted": {"false"}}}, false},
		{"tag matches", []Statement{tagged}, Request{"ec2:AttachVolume", "v", map[string][]string{"aws:ResourceTag/volsd:pool": {"web"}}}, true},
		{"key is case-insensitive", []Statement{tagged}, Request{"ec2:AttachVolume", "v", map[string][]string{"AWS:ResourceTag/volsd:pool": {"web"}}}, true},
		{"other pool", []Statement{tagged}, Request{"ec2:AttachVolume", "v", map[string][]string{"aws:ResourceTag/volsd:pool": {"media"}}}, false},
		{"untagged", []Statement{tagged}, Request{"ec2:AttachVolume", "v", nil}, false},
		{"other action", []Statement{tagged}, Request{"ec2:DeleteVolume", "v", map[string][]string{"aws:ResourceTag/volsd:pool": {"web"}}}, false},
		{"leading key allowed", []Statement{leading}, Request{"dynamodb:Query", "t", map[string][]string{"dynamodb:LeadingKeys": {"JOURNAL#web"}}}, true},
		{"leading key other partition", []Statement{leading}, Request{"dynamodb:Query", "t", map[string][]string{"dynamodb:LeadingKeys": {"POOL#other"}}}, false},
		{"explicit deny wins", []Statement{tagged, deny}, Request{"ec2:AttachVolume", "v", map[string][]string{"aws:ResourceTag/volsd:pool": {"web"}}}, false},
		{"nothing allows", nil, Request{"s3:GetObject", "o", nil}, false},
	} {
		got, err := Allows(c.sts, c.req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: Allows = %v, want %v", c.name, got, c.want)
		}
	}
	bad := Statement{Sid: "b", Effect: "Allow", Actions: []string{"*"}, Resources: []string{"*"},
		Conditions: map[string]map[string][]string{"DateLessThan": {"x": {"1"}}}}
	if _, err := Allows([]Statement{bad}, Request{"a", "r", map[string][]string{"x": {"0"}}}); err == nil {
		t.Error("an unsupported condition operator was not an error")
	}
}

func TestResolve(t *testing.T) {
	v := map[string]any{"Fn::Join": []any{"", []any{"arn:", map[string]any{"Ref": "AWS::Partition"}, ":ec2:",
		map[string]any{"Ref": "AWS::Region"}, ":", map[string]any{"Ref": "AWS::AccountId"}, ":volume/*"}}}
	got, err := Resolve(v)
	if err != nil || got != "arn:aws:ec2:eu-west-1:123456789012:volume/*" {
		t.Errorf("Resolve(join) = %q, %v", got, err)
	}
	got, err = Resolve(map[string]any{"Fn::Join": []any{"", []any{map[string]any{"Fn::GetAtt": []any{"Table", "Arn"}}, "/index/gsi1"}}})
	if err != nil || got != "<Table.Arn>/index/gsi1" {
		t.Errorf("Resolve(getatt) = %q, %v", got, err)
	}
	got, err = Resolve(map[string]any{"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket.Arn}"})
	if err != nil || got != "arn:aws:s3:::<Bucket.Arn>" {
		t.Errorf("Resolve(sub) = %q, %v", got, err)
	}
	if _, err := Resolve(map[string]any{"Fn::If": []any{}}); err == nil {
		t.Error("Fn::If resolved without error")
	}
}
