package agent

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/volsd/volsd/internal/buildinfo"
)

// runNoConfig runs Main with no configuration file and a connector that
// fails the test: help and version need neither.
func runNoConfig(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, &stdout, &stderr,
		func(k string) string { return map[string]string{"VOLSD_CONFIG": "/nonexistent/agent.json"}[k] },
		func(context.Context, Config, *slog.Logger) (Deps, error) {
			t.Errorf("%v connected to AWS", args)
			return Deps{}, nil
		})
	return code, stdout.String(), stderr.String()
}

// TestHelpPrintsUsageAndExitsZero: volsd-agent --help/-h/help and
// volsd-agent COMMAND --help/-h print usage on stdout and exit 0, without
// a configuration; a mistaken flag still exits 2 with the usage on stderr.
func TestHelpPrintsUsageAndExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, errs := runNoConfig(t, args...)
		if code != ExitOK || out != Usage {
			t.Errorf("volsd-agent %v: exit %d, stdout %q, stderr %q; want 0 and the usage", args, code, out, errs)
		}
	}
	for _, args := range [][]string{{"apply", "--help"}, {"apply", "-h"}, {"help", "apply"}} {
		code, out, errs := runNoConfig(t, args...)
		if code != ExitOK || !strings.HasPrefix(out, "usage: volsd-agent apply [--upto int] [--periodic]\n") || !strings.Contains(out, "--periodic\n") {
			t.Errorf("volsd-agent %v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	for cmd := range commandSummary {
		code, out, errs := runNoConfig(t, cmd, "--help")
		if code != ExitOK || !strings.HasPrefix(out, "usage: volsd-agent "+cmd) || !strings.Contains(out, commandSummary[cmd]) {
			t.Errorf("volsd-agent %s --help: exit %d, stdout %q, stderr %q", cmd, code, out, errs)
		}
	}
	code, out, errs := runNoConfig(t, "freeze", "--bogus")
	if code != ExitBadInput || !strings.Contains(errs, "usage: volsd-agent freeze [--max-seconds int]") || !strings.Contains(out, `"errorKind":"bad-input"`) {
		t.Errorf("freeze --bogus: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestVersionPrintsVersionAndCommit: --version (and `version`) print the
// build's version and commit and exit 0.
func TestVersionPrintsVersionAndCommit(t *testing.T) {
	for _, arg := range []string{"--version", "-version", "version"} {
		code, out, errs := runNoConfig(t, arg)
		if want := buildinfo.String("volsd-agent") + "\n"; code != ExitOK || out != want {
			t.Errorf("volsd-agent %s: exit %d, stdout %q, stderr %q; want 0 and %q", arg, code, out, errs, want)
		}
	}
}
