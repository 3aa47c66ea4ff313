// Package documents holds volsd's SSM Command documents as reviewable YAML
// files (schema 2.2, aws:runShellScript calling /usr/bin/volsd-agent with
// allowedPattern on every parameter) and parses them for the CDK construct.
// The kinds are events.DocumentKinds; each kind's file is <kind>.yaml, its
// default SSM name events.DefaultDocumentName(kind) (docs/contracts.md).
package documents

import (
	"embed"
	"fmt"

	"gopkg.in/yaml.v3"
)

//go:embed *.yaml
var files embed.FS

// Source returns the YAML text of the document of kind.
func Source(kind string) ([]byte, error) {
	b, err := files.ReadFile(kind + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("ssm document %q: no file %s.yaml embedded: %w", kind, kind, err)
	}
	return b, nil
}

// Content returns the document of kind parsed into the JSON-compatible map
// that AWS::SSM::Document's Content takes.
func Content(kind string) (map[string]any, error) {
	b, err := Source(kind)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("ssm document %s.yaml: %w", kind, err)
	}
	if len(doc) == 0 {
		return nil, fmt.Errorf("ssm document %s.yaml: empty", kind)
	}
	return doc, nil
}
