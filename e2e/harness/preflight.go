package harness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/volsd/volsd/agent"
)

// HostPrograms are the programs the harness itself runs on this machine
// (loop devices, mounts, thaws at cleanup), beside the agents' own.
var HostPrograms = []agent.Program{
	{Name: "losetup", Package: "util-linux"},
	{Name: "mount", Package: "util-linux"},
	{Name: "umount", Package: "util-linux"},
	{Name: "fsfreeze", Package: "util-linux"},
}

// Preflight checks, before anything starts, that every program the local
// run will exec on this machine is installed: the agents' (for the ext4
// volumes the harness gives them) and the harness's own. Its error lists
// each missing program with the package to install (`make deps` installs
// them all).
func Preflight() error {
	var need []agent.Program
	seen := map[string]bool{}
	for _, p := range append(agent.Programs("ext4"), HostPrograms...) {
		if !seen[p.Name] {
			seen[p.Name] = true
			need = append(need, p)
		}
	}
	if missing := agent.MissingPrograms(need); len(missing) > 0 {
		return fmt.Errorf("this machine cannot run the local system: %s; or run `sudo make deps`", agent.DescribeMissing(missing))
	}
	return nil
}

// ProgramDir fills dir with links to every program the agents and the
// harness run, found on this machine, except those named in without, and
// returns dir: a PATH for agents of a machine that lacks those programs.
func ProgramDir(dir string, without ...string) (string, error) {
	for _, p := range append(agent.Programs("ext4"), HostPrograms...) {
		if slices.Contains(without, p.Name) {
			continue
		}
		real, err := exec.LookPath(p.Name)
		if err != nil {
			return "", fmt.Errorf("%s: %w", p.Name, err)
		}
		if err := os.Symlink(real, filepath.Join(dir, p.Name)); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return dir, nil
}
