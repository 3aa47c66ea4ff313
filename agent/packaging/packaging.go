// Package packaging defines the volsd-agent .deb and .rpm — what they
// install, what they depend on, their maintainer scripts — and builds them
// with nfpm (`make package`; docs/agent.md "Packages").
package packaging

import (
	"debug/elf"
	"embed"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager

	"github.com/volsd/volsd/agent"
	"github.com/volsd/volsd/agent/systemd"
)

// Name is the package name in both formats.
const Name = "volsd-agent"

// What the packages install (docs/contracts.md).
const (
	BinaryPath = "/usr/bin/volsd-agent"
	UnitDir    = "/usr/lib/systemd/system"
	ConfigPath = agent.DefaultConfigPath
)

// Formats and Arches are what `make package` builds: every pair.
var (
	Formats = []string{"deb", "rpm"}
	Arches  = []string{"amd64", "arm64"}
)

// Depends are the packages of every program volsd-agent runs on ext4 and
// on xfs (agent.Programs: rsync, util-linux, e2fsprogs, xfsprogs), whose
// names are the same in Debian, Ubuntu, Fedora, RHEL and Amazon Linux.
func Depends() []string {
	var pkgs []string
	for _, p := range slices.Concat(agent.Programs("ext4"), agent.Programs("xfs")) {
		if !slices.Contains(pkgs, p.Package) {
			pkgs = append(pkgs, p.Package)
		}
	}
	return pkgs
}

//go:embed files
var embedded embed.FS

// elfMachine is the ELF machine of a volsd-agent built for each arch.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// versionPattern is what scripts/version.sh prints: X.Y.Z with optional
// semver pre-release and build metadata, which nfpm maps onto dpkg and rpm
// version ordering.
var versionPattern = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?(\+[0-9A-Za-z.]+)?$`)

// Spec is one package to build.
type Spec struct {
	Format  string    // deb or rpm
	Arch    string    // amd64 or arm64 (GOARCH names)
	Version string    // X.Y.Z[-pre][+meta] (scripts/version.sh)
	Binary  string    // volsd-agent built for Arch
	MTime   time.Time // of every file (reproducible builds: the commit time)
}

func (s Spec) check() error {
	var errs []error
	if !slices.Contains(Formats, s.Format) {
		errs = append(errs, fmt.Errorf("format %q: want one of %v", s.Format, Formats))
	}
	want, ok := elfMachine[s.Arch]
	if !ok {
		errs = append(errs, fmt.Errorf("arch %q: want one of %v", s.Arch, Arches))
	}
	if !versionPattern.MatchString(s.Version) {
		errs = append(errs, fmt.Errorf("version %q: want X.Y.Z[-pre][+meta] as scripts/version.sh prints", s.Version))
	}
	if f, err := elf.Open(s.Binary); err != nil {
		errs = append(errs, fmt.Errorf("binary %s: not a Linux program: %v (run `make agent`)", s.Binary, err))
	} else {
		if ok && f.Machine != want {
			errs = append(errs, fmt.Errorf("binary %s is for %v, not %s (GOARCH=%s make agent)", s.Binary, f.Machine, s.Arch, s.Arch))
		}
		f.Close()
	}
	if s.MTime.IsZero() {
		errs = append(errs, errors.New("mtime is not set"))
	}
	return errors.Join(errs...)
}

// info is the nfpm description of the package; staged holds the embedded
// files written out (nfpm reads sources from disk).
func (s Spec) info(staged string) *nfpm.Info {
	file := func(src, dst string, mode os.FileMode, typ string) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: s.MTime}}
	}
	contents := files.Contents{
		file(s.Binary, BinaryPath, 0o755, ""),
		// Not replaced on upgrade once changed (dpkg conffile, rpm
		// %config(noreplace)).
		file(filepath.Join(staged, "agent.json"), ConfigPath, 0o644, files.TypeConfigNoReplace),
	}
	for _, name := range sortedUnits() {
		contents = append(contents, file(filepath.Join(staged, name), UnitDir+"/"+name, 0o644, ""))
	}
	return nfpm.WithDefaults(&nfpm.Info{
		Name:        Name,
		Arch:        s.Arch,
		Platform:    "linux",
		Version:     s.Version,
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  "volsd developers <https://github.com/volsd/volsd>",
		Homepage:    "https://github.com/volsd/volsd",
		Description: "volsd agent: keeps the web content of an EC2 Auto Scaling group on local EBS volumes\nIt mounts the pool volume at boot, catches up with the pool's journal and applies\npushed content with rsync, driven by SSM commands and a systemd timer.",
		MTime:       s.MTime,
		Overridables: nfpm.Overridables{
			Depends:  Depends(),
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(staged, "postinstall.sh"),
				PreRemove:   filepath.Join(staged, "preremove.sh"),
				PostRemove:  filepath.Join(staged, "postremove.sh"),
			},
			RPM: nfpm.RPM{Summary: "volsd agent: web content on local EBS volumes of an Auto Scaling group", Group: "System Environment/Daemons"},
		},
	})
}

// sortedUnits are the names of agent/systemd's units in a fixed order.
func sortedUnits() []string {
	return slices.Sorted(maps.Keys(systemd.Units()))
}

// Build writes the package of s into dir and returns its path, named as
// the format expects (volsd-agent_V_amd64.deb, volsd-agent-V-1.x86_64.rpm).
func Build(s Spec, dir string) (string, error) {
	if err := s.check(); err != nil {
		return "", fmt.Errorf("volsd-agent %s package: %w", s.Format, err)
	}
	staged, err := os.MkdirTemp("", "volsd-package-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staged)
	if err := stage(staged); err != nil {
		return "", err
	}
	info := s.info(staged)
	packager, err := nfpm.Get(s.Format)
	if err != nil {
		return "", err
	}
	if err := nfpm.PrepareForPackager(info, s.Format); err != nil {
		return "", fmt.Errorf("volsd-agent %s package: %w", s.Format, err)
	}
	path := filepath.Join(dir, packager.ConventionalFileName(info))
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path))
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := packager.Package(info, tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("volsd-agent %s package: %w", s.Format, err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

// stage writes the units (agent/systemd), the default configuration and
// the maintainer scripts into dir.
func stage(dir string) error {
	for name, content := range systemd.Units() {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, name := range []string{"agent.json", "postinstall.sh", "preremove.sh", "postremove.sh"} {
		b, err := embedded.ReadFile("files/" + name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}
