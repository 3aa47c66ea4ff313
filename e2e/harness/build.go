package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FunctionNames are volsd's Lambdas (functions/<name>).
var FunctionNames = []string{"lifecycle", "reconcile", "snapshot", "push", "report"}

// Binaries are the programs the local run starts: each Lambda's bootstrap,
// the agent and the operator CLI, built for this machine.
type Binaries struct {
	Bootstrap map[string]string // function name → bootstrap path
	Agent     string
	CLI       string
}

// RepoRoot finds the module root (the directory with go.mod) at or above
// the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/volsd/volsd\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod of github.com/volsd/volsd not found above the working directory")
		}
		dir = parent
	}
}

// Build compiles the Lambdas (with -tags lambda.norpc, as for
// provided.al2023, but for this machine's architecture so they can run
// here), the agent and the CLI into dir.
func Build(ctx context.Context, root, dir string) (*Binaries, error) {
	pkgs := []string{}
	for _, fn := range FunctionNames {
		pkgs = append(pkgs, "./functions/"+fn)
	}
	pkgs = append(pkgs, "./agent/cmd/volsd-agent", "./cmd/volsd")
	var missing []string
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(root, p, "main.go")); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cannot build the local run: no main package in %s", strings.Join(missing, ", "))
	}
	out := filepath.Join(dir, "bin")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	args := append([]string{"build", "-tags", "lambda.norpc", "-o", out + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, b)
	}
	bins := layout(dir)
	for _, fn := range FunctionNames {
		if err := os.MkdirAll(filepath.Dir(bins.Bootstrap[fn]), 0o755); err != nil {
			return nil, err
		}
		if err := os.Rename(filepath.Join(out, fn), bins.Bootstrap[fn]); err != nil {
			return nil, err
		}
	}
	return bins, nil
}

// layout is where Build puts each program under dir.
func layout(dir string) *Binaries {
	bins := &Binaries{Bootstrap: map[string]string{}, Agent: filepath.Join(dir, "bin", "volsd-agent"), CLI: filepath.Join(dir, "bin", "volsd")}
	for _, fn := range FunctionNames {
		bins.Bootstrap[fn] = filepath.Join(dir, "lambda", fn, "bootstrap")
	}
	return bins
}

// Built returns the programs an earlier Build put into dir, after checking
// that each is there.
func Built(dir string) (*Binaries, error) {
	bins := layout(dir)
	paths := []string{bins.Agent, bins.CLI}
	for _, fn := range FunctionNames {
		paths = append(paths, bins.Bootstrap[fn])
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			return nil, fmt.Errorf("%s has no %s: not a directory harness.Build wrote (build into it first)", dir, p)
		}
	}
	return bins, nil
}
