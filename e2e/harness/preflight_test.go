package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/volsd/volsd/agent"
)

func TestPreflightNamesMissingPackages(t *testing.T) {
	if err := Preflight(); err != nil {
		t.Fatalf("preflight on this machine: %v", err)
	}
	dir, err := ProgramDir(t.TempDir(), "rsync", "losetup")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	err = Preflight()
	if err == nil {
		t.Fatal("preflight passed with a PATH that lacks rsync and losetup")
	}
	for _, want := range []string{"rsync, losetup are not installed", "the rsync, util-linux packages", "apt-get install -y rsync util-linux", "make deps"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("preflight error %q does not say %q", err, want)
		}
	}
}

// TestDepsScriptListsEveryProgram: scripts/deps.sh (`make deps`, .ci/run)
// installs exactly the packages of the programs the agents and the harness
// run, so a program added to agent.Programs cannot be missed by CI.
func TestDepsScriptListsEveryProgram(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "scripts", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var script []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PROGRAMS="); ok {
			script = strings.Fields(strings.Trim(v, `"`))
		}
	}
	var code []string
	for _, p := range slices.Concat(agent.Programs("ext4"), agent.Programs("xfs"), HostPrograms) {
		if s := p.Name + ":" + p.Package; !slices.Contains(code, s) {
			code = append(code, s)
		}
	}
	slices.Sort(script)
	slices.Sort(code)
	if !slices.Equal(script, code) {
		t.Errorf("scripts/deps.sh PROGRAMS = %q\nthe agents and harness run  %q", script, code)
	}
}

// TestDepsScriptStopsWithoutApt: on a machine that lacks rsync and has no
// apt-get, `make deps` stops at once and says what to install.
func TestDepsScriptStopsWithoutApt(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := ProgramDir(t.TempDir(), "rsync")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "scripts", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	tools := []string{"dirname", "id", "sort", "tr", "awk", "sed", "head"}
	for _, line := range strings.Split(string(script), "\n") {
		if v, ok := strings.CutPrefix(line, "TEST_PROGRAMS="); ok {
			for _, p := range strings.Fields(strings.Trim(v, `"`)) {
				tools = append(tools, strings.SplitN(p, ":", 2)[0]) // present: only rsync is missing
			}
		}
	}
	for _, tool := range tools {
		real, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("/bin/bash", filepath.Join(root, "scripts", "deps.sh"))
	cmd.Env = []string{"PATH=" + dir, "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("deps.sh passed on a machine without rsync and apt-get:\n%s", out)
	}
	says := "no apt-get" // root: it would install, but cannot
	if os.Geteuid() != 0 {
		says = "run as root"
	}
	for _, want := range []string{"missing packages: rsync", says, "install -y rsync"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("deps.sh said %q; want it to say %q", out, want)
		}
	}
}
