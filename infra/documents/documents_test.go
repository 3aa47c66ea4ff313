package documents

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/volsd/volsd/events"
)

// The documents' parameters and commands as docs/contracts.md fixes them.
var contract = map[string]struct {
	command string
	params  map[string]string // name -> allowedPattern
}{
	"Apply":   {"/usr/bin/volsd-agent apply --upto {{upTo}}", map[string]string{"upTo": `^[0-9]{1,20}$`}},
	"Freeze":  {"/usr/bin/volsd-agent freeze --max-seconds {{maxSeconds}}", map[string]string{"maxSeconds": `^[0-9]{1,4}$`}},
	"Thaw":    {"/usr/bin/volsd-agent thaw", nil},
	"Release": {"/usr/bin/volsd-agent release", nil},
	"Status":  {"/usr/bin/volsd-agent status", nil},
}

func TestDocumentsFollowContract(t *testing.T) {
	if len(events.DocumentKinds) != len(contract) {
		t.Fatalf("%d kinds, contract has %d", len(events.DocumentKinds), len(contract))
	}
	for _, kind := range events.DocumentKinds {
		want, ok := contract[kind]
		if !ok {
			t.Fatalf("kind %s not in the contract", kind)
		}
		doc, err := Content(kind)
		if err != nil {
			t.Fatal(err)
		}
		if doc["schemaVersion"] != "2.2" {
			t.Errorf("%s: schemaVersion %v, want \"2.2\"", kind, doc["schemaVersion"])
		}
		params, _ := doc["parameters"].(map[string]any)
		if len(params) != len(want.params) {
			t.Errorf("%s: parameters %v, want %v", kind, params, want.params)
		}
		for name, pattern := range want.params {
			p, _ := params[name].(map[string]any)
			if p["allowedPattern"] != pattern {
				t.Errorf("%s: %s allowedPattern %v, want %s", kind, name, p["allowedPattern"], pattern)
			}
			if p["type"] != "String" {
				t.Errorf("%s: %s type %v", kind, name, p["type"])
			}
			if def, ok := p["default"].(string); ok && !regexp.MustCompile(pattern).MatchString(def) {
				t.Errorf("%s: %s default %q does not match its own pattern", kind, name, def)
			}
		}
		steps, _ := doc["mainSteps"].([]any)
		if len(steps) != 1 {
			t.Fatalf("%s: %d steps, want 1", kind, len(steps))
		}
		step := steps[0].(map[string]any)
		if step["action"] != "aws:runShellScript" {
			t.Errorf("%s: action %v", kind, step["action"])
		}
		cmds, _ := step["inputs"].(map[string]any)["runCommand"].([]any)
		if len(cmds) != 1 || cmds[0] != want.command {
			t.Errorf("%s: runCommand %v, want [%s]", kind, cmds, want.command)
		}
		// Every {{ref}} in the command is a declared parameter.
		for _, m := range regexp.MustCompile(`\{\{\s*([A-Za-z0-9]+)\s*\}\}`).FindAllStringSubmatch(fmt.Sprint(cmds), -1) {
			if _, ok := params[m[1]]; !ok {
				t.Errorf("%s: command uses undeclared parameter %s", kind, m[1])
			}
		}
	}
}

func TestAllowedPatternsRejectHostileInput(t *testing.T) {
	for _, kind := range events.DocumentKinds {
		doc, err := Content(kind)
		if err != nil {
			t.Fatal(err)
		}
		params, _ := doc["parameters"].(map[string]any)
		for name, v := range params {
			pattern := regexp.MustCompile(v.(map[string]any)["allowedPattern"].(string))
			for _, bad := range []string{"", "1; reboot", "$(id)", "`id`", "1\n2", "-1", "1 2", "../x", strings.Repeat("9", 21)} {
				if pattern.MatchString(bad) {
					t.Errorf("%s.%s accepts %q", kind, name, bad)
				}
			}
			if !pattern.MatchString("30") {
				t.Errorf("%s.%s rejects 30", kind, name)
			}
		}
	}
}

func TestUnknownKind(t *testing.T) {
	if _, err := Content("Reboot"); err == nil || !strings.Contains(err.Error(), "Reboot") {
		t.Errorf("Content(Reboot) error %v, want one naming the kind", err)
	}
}
