package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/volsd/volsd/internal/buildinfo"
	"github.com/volsd/volsd/internal/cli"
)

// runOffline runs the CLI with no configuration and a connector that
// fails the test: --version, --help and completion need neither.
func runOffline(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errs bytes.Buffer
	code := cli.Main(context.Background(), args, cli.IO{Out: &out, Err: &errs},
		func(string) (string, bool) { return "", false },
		func(context.Context, cli.Config) (cli.Clients, error) {
			t.Errorf("%v connected to AWS", args)
			return cli.Clients{}, nil
		})
	return code, out.String(), errs.String()
}

// TestVersionPrintsVersionAndCommit: --version and -v print the build's
// version and commit (set by the Makefile's -ldflags) and exit 0.
func TestVersionPrintsVersionAndCommit(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		code, out, errs := runOffline(t, flag)
		want := buildinfo.String("volsd") + "\n"
		if code != cli.ExitOK || out != want {
			t.Errorf("volsd %s: exit %d, stdout %q, stderr %q; want 0 and %q", flag, code, out, errs, want)
		}
	}
}

// TestHelpExitsZero: volsd --help and volsd COMMAND --help print usage on
// stdout and exit 0.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"push", "--help"}, {"status", "-h"}, {"help", "journal"}} {
		code, out, errs := runOffline(t, args...)
		if code != cli.ExitOK || !strings.Contains(out, "Usage:") {
			t.Errorf("volsd %v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}

// TestCompletionScripts: volsd completion SHELL prints a script that
// completes volsd's own commands (README "Shell completion").
func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{"bash": "__start_volsd", "zsh": "#compdef volsd", "fish": "complete -c volsd"} {
		code, out, errs := runOffline(t, "completion", shell)
		if code != cli.ExitOK || !strings.Contains(out, marker) {
			t.Errorf("volsd completion %s: exit %d, stderr %q, script without %q:\n%.300s", shell, code, errs, marker, out)
		}
	}
}
