// Package assembly reads a synthesized CDK cloud assembly (cdk.out): the
// CloudFormation templates, the cdk-nag findings recorded as stack metadata,
// and runs cfn-lint on the templates. The infra tests use it; it does not
// import the CDK, so reading is plain Go and fast.
package assembly

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Assembly is a synthesized cloud assembly.
type Assembly struct {
	Dir    string
	Stacks map[string]*Template // by artifact ID (the stack name)
	// Findings are the cdk-nag errors and warnings (AwsSolutions-…) left
	// after suppressions, in stack and path order.
	Findings []Finding
}

// Finding is one cdk-nag annotation.
type Finding struct {
	Stack, Path, Level, Message string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s %s %s: %s", f.Stack, f.Level, f.Path, f.Message)
}

type manifest struct {
	Artifacts map[string]struct {
		Type                   string                     `json:"type"`
		AdditionalMetadataFile string                     `json:"additionalMetadataFile"`
		Metadata               map[string][]metadataEntry `json:"metadata"`
		Properties             struct {
			TemplateFile string `json:"templateFile"`
		} `json:"properties"`
	} `json:"artifacts"`
}

type metadataEntry struct {
	Type string `json:"type"`
	Data any    `json:"data"`
}

// Read loads the assembly in dir.
func Read(dir string) (*Assembly, error) {
	var m manifest
	if err := readJSON(filepath.Join(dir, "manifest.json"), &m); err != nil {
		return nil, err
	}
	a := &Assembly{Dir: dir, Stacks: map[string]*Template{}}
	ids := make([]string, 0, len(m.Artifacts))
	for id := range m.Artifacts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		art := m.Artifacts[id]
		if art.Type != "aws:cloudformation:stack" {
			continue
		}
		t, err := ReadTemplate(filepath.Join(dir, art.Properties.TemplateFile))
		if err != nil {
			return nil, err
		}
		t.Name = id
		a.Stacks[id] = t
		meta := art.Metadata
		if art.AdditionalMetadataFile != "" {
			if err := readJSON(filepath.Join(dir, art.AdditionalMetadataFile), &meta); err != nil {
				return nil, err
			}
		}
		paths := make([]string, 0, len(meta))
		for p := range meta {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			for _, e := range meta[p] {
				msg, _ := e.Data.(string)
				if (e.Type == "aws:cdk:error" || e.Type == "aws:cdk:warning") && strings.HasPrefix(msg, "AwsSolutions-") {
					a.Findings = append(a.Findings, Finding{Stack: id, Path: p, Level: strings.TrimPrefix(e.Type, "aws:cdk:"), Message: msg})
				}
			}
		}
	}
	if len(a.Stacks) == 0 {
		return nil, fmt.Errorf("cloud assembly %s: no stacks", dir)
	}
	return a, nil
}

// TemplateFiles returns the paths of the stacks' templates.
func (a *Assembly) TemplateFiles() []string {
	var files []string
	for _, t := range a.Stacks {
		files = append(files, t.File)
	}
	sort.Strings(files)
	return files
}

// Lint runs cfn-lint on every template of the assembly and returns its
// findings as the error, or nil when it reports none.
func (a *Assembly) Lint(ctx context.Context) error {
	files := a.TemplateFiles()
	// W3005 (DependsOn already implied by a GetAtt) is ignored: the CDK
	// adds an explicit DependsOn from each Lambda to its role's policy and
	// role, which is redundant but harmless.
	cmd := exec.CommandContext(ctx, "cfn-lint", append([]string{"--format", "parseable", "--ignore-checks", "W3005", "--"}, files...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cfn-lint %s: %w\n%s", strings.Join(files, " "), err, out.String())
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
