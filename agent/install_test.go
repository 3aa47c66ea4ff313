package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/volsd/volsd/agent/systemd"
)

// TestInstallScriptUnitsMatchTheUnitFiles: install.sh carries the units
// inline (one file for user data); they must be the files of
// agent/systemd byte for byte.
func TestInstallScriptUnitsMatchTheUnitFiles(t *testing.T) {
	script, err := os.ReadFile("install.sh")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)cat > "\$root/etc/systemd/system/([^"]+)" <<'VOLSD_UNIT'\n(.*?)\nVOLSD_UNIT\n`)
	found := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(script), -1) {
		found[m[1]] = m[2] + "\n"
	}
	for name, want := range systemd.Units() {
		if found[name] != want {
			t.Errorf("install.sh's %s differs from agent/systemd/%s:\n--- install.sh\n%s--- file\n%s", name, name, found[name], want)
		}
	}
	if len(found) != len(systemd.Units()) {
		t.Errorf("install.sh writes %d units, agent/systemd has %d", len(found), len(systemd.Units()))
	}
}

// TestUnitsRunValidCommands: each ExecStart is the installed program with
// a command line the agent accepts (parsing passes; the run then stops at
// connecting to AWS).
func TestUnitsRunValidCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfg, []byte(`{"pool":"web","table":"volsd-web","bucket":"b"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	noAWS := errors.New("no AWS in this test")
	for name, unit := range systemd.Units() {
		for _, line := range strings.Split(unit, "\n") {
			cmdline, ok := strings.CutPrefix(line, "ExecStart=")
			if !ok {
				continue
			}
			args := strings.Fields(cmdline)
			if args[0] != "/usr/bin/volsd-agent" {
				t.Errorf("%s runs %s", name, args[0])
			}
			var stdout, stderr bytes.Buffer
			Main(context.Background(), args[1:], &stdout, &stderr, func(k string) string {
				return map[string]string{"VOLSD_CONFIG": cfg}[k]
			}, func(context.Context, Config, *slog.Logger) (Deps, error) { return Deps{}, noAWS })
			if !strings.Contains(stdout.String(), noAWS.Error()) {
				t.Errorf("%s: %q was refused: %s", name, cmdline, stdout.String())
			}
		}
	}
}

// TestInstallScriptInstallsIntoARoot runs install.sh against a directory
// tree (--root), twice, as user data may.
func TestInstallScriptInstallsIntoARoot(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "volsd-agent")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho fake agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(cfg, []byte(`{"pool":"web","table":"volsd-web","bucket":"b"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for i := 0; i < 2; i++ {
		out, err := exec.Command("sh", "install.sh", "--binary", bin, "--config", cfg, "--root", root).CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
	}
	fi, err := os.Stat(filepath.Join(root, "usr/bin/volsd-agent"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("program: %v %v", fi, err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "etc/volsd/agent.json")); !strings.Contains(string(data), `"pool":"web"`) {
		t.Fatalf("config not installed: %q", data)
	}
	for name, want := range systemd.Units() {
		if got, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system", name)); string(got) != want {
			t.Errorf("%s not installed as in agent/systemd", name)
		}
	}
	for _, bad := range [][]string{
		{"--url", "http://example.com/x", "--sha256", strings.Repeat("a", 64)},
		{"--url", "https://example.com/x"},
		{"--binary", bin, "--sha256", "abc"},
		{"--binary", bin, "--sha256", strings.Repeat("0", 64)},
		{},
	} {
		out, err := exec.Command("sh", append([]string{"install.sh", "--root", root}, bad...)...).CombinedOutput()
		if err == nil {
			t.Errorf("install.sh %v succeeded:\n%s", bad, out)
		}
	}
}
