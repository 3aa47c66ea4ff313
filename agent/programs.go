package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Program is a system program volsd-agent runs, with the package that
// ships it (the same name on Debian/Ubuntu and on Amazon Linux/RHEL).
type Program struct {
	Name    string
	Package string
}

// Programs returns every program the agent runs on a volume of filesystem
// type fsType ("ext4" or "xfs"): rsync places content, blkid probes the
// device, mkfs formats a blank volume, the grow tool (and e2fsck before an offline
// ext4 grow) grows the filesystem. It is the one list: the agent's preflight, the local
// harness's preflight and scripts/deps.sh (checked by a test) use it.
func Programs(fsType string) []Program {
	p := []Program{{"rsync", "rsync"}, {"blkid", "util-linux"}}
	switch fsType {
	case "xfs":
		return append(p, Program{"mkfs.xfs", "xfsprogs"}, Program{"xfs_growfs", "xfsprogs"})
	default:
		return append(p, Program{"mkfs.ext4", "e2fsprogs"}, Program{"resize2fs", "e2fsprogs"}, Program{"e2fsck", "e2fsprogs"})
	}
}

// DefaultProgramPath is where programs are looked up when the process has
// no PATH (systemd's default PATH for its units).
const DefaultProgramPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookProgram finds name in the process's PATH, as exec.Command does for
// every program the agent runs (DefaultProgramPath when PATH is empty).
func lookProgram(name string) (string, error) {
	if os.Getenv("PATH") == "" {
		for _, dir := range filepath.SplitList(DefaultProgramPath) {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				return p, nil
			}
		}
		return "", exec.ErrNotFound
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	return filepath.Clean(p), nil
}

// MissingPrograms returns the programs of progs that lookProgram does not
// find.
func MissingPrograms(progs []Program) []Program {
	var missing []Program
	for _, p := range progs {
		if _, err := lookProgram(p.Name); err != nil {
			missing = append(missing, p)
		}
	}
	return missing
}

// DescribeMissing says which programs are missing and the command that
// installs their packages, e.g. "rsync is not installed (install the
// rsync package: apt-get install -y rsync, or dnf install -y rsync)".
func DescribeMissing(missing []Program) string {
	var names, pkgs []string
	seen := map[string]bool{}
	for _, p := range missing {
		names = append(names, p.Name)
		if !seen[p.Package] {
			seen[p.Package] = true
			pkgs = append(pkgs, p.Package)
		}
	}
	verb, noun := "is", "package"
	if len(names) > 1 {
		verb = "are"
	}
	if len(pkgs) > 1 {
		noun = "packages"
	}
	list := strings.Join(pkgs, " ")
	return fmt.Sprintf("%s %s not installed (install the %s %s: apt-get install -y %s, or dnf install -y %s)",
		strings.Join(names, ", "), verb, strings.Join(pkgs, ", "), noun, list, list)
}

// checkPrograms is the agent's preflight: every program the configured
// filesystem needs must be installed. A missing program does not heal by
// waiting, but installing its package does, so it is not ready (the unit
// restarts `up`) and names the package.
func (a *Agent) checkPrograms() error {
	if missing := MissingPrograms(Programs(a.cfg.FSType)); len(missing) > 0 {
		return notReady("%s", DescribeMissing(missing))
	}
	return nil
}
