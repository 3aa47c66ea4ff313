package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volsd/volsd/agent/systemd"
	"github.com/volsd/volsd/internal/testenv"
)

// The programs these tests need besides root; make deps installs them
// (scripts/deps.sh TEST_PROGRAMS).
var needed = []string{"dpkg", "dpkg-deb", "dpkg-query", "systemctl", "rpm"}

func requireTools(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "installing the package with dpkg")
	for _, p := range needed {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: this test needs %v (make deps installs them)", p, needed)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The version and commit the test build of volsd-agent reports.
const (
	testVersion = "9.8.7+test.1"
	testCommit  = "0123456789abcdef"
)

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// buildAgent builds the real volsd-agent for amd64 once, with the version
// and commit set the way the Makefile sets them.
func buildAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "volsd-package-test-")
		if err != nil {
			agentErr = err
			return
		}
		agentBin = filepath.Join(dir, "volsd-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-o", agentBin, "-ldflags",
			"-s -w -X github.com/volsd/volsd/internal/buildinfo.version="+testVersion+
				" -X github.com/volsd/volsd/internal/buildinfo.commit="+testCommit, "../cmd/volsd-agent")
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build volsd-agent: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin != "" {
		os.RemoveAll(filepath.Dir(agentBin))
	}
	os.Exit(code)
}

func build(t *testing.T, format, version, bin, dir string) string {
	t.Helper()
	path, err := Build(Spec{Format: format, Arch: "amd64", Version: version, Binary: bin, MTime: time.Unix(1700000000, 0)}, dir)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// lockMachine serialises the tests of concurrent `go test` runs on this
// machine: they install into the same /usr and /etc.
func lockMachine(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/run/lock/volsd-agent-package-test.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

// enablementLinks are the symlinks `systemctl enable` made for the units.
func enablementLinks(t *testing.T) []string {
	t.Helper()
	var links []string
	for _, pattern := range []string{"/etc/systemd/system/*.wants/volsd-*", "/etc/systemd/system/*.requires/volsd-*"} {
		m, _ := filepath.Glob(pattern)
		links = append(links, m...)
	}
	return links
}

// TestDebInstallUpgradeRemove installs the amd64 .deb on this machine with
// dpkg (no systemd running here, as in a container or an image build),
// checks the files, units, conffile and dependencies, that nothing is
// enabled or started, that an upgrade keeps the operator's configuration
// and enablement, and that removal stops nothing it cannot and leaves no
// program, unit or enablement link behind (purge: no configuration).
func TestDebInstallUpgradeRemove(t *testing.T) {
	requireTools(t)
	lockMachine(t)
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", Name).Output(); err == nil && len(out) > 0 && !strings.Contains(string(out), "not-installed") {
		t.Logf("purging %s left by an earlier run (%s)", Name, out)
		run(t, "dpkg", "--purge", Name)
	}
	for _, p := range []string{BinaryPath, "/etc/volsd"} {
		if exists(p) {
			t.Fatalf("%s exists and no package owns it: not overwriting it (remove it to run this test)", p)
		}
	}
	for _, link := range enablementLinks(t) {
		if _, err := os.Stat(link); err == nil {
			t.Fatalf("%s is enabled from another installation: not touching it (disable it to run this test)", link)
		}
		t.Logf("removing %s, dangling (left by an earlier run)", link)
		if err := os.Remove(link); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = exec.Command("dpkg", "--purge", Name).Run() })

	dir := t.TempDir()
	bin := buildAgent(t)
	v1 := build(t, "deb", testVersion, bin, dir)
	v2 := build(t, "deb", "9.8.8", bin, dir)
	if filepath.Base(v1) != "volsd-agent_9.8.7+test.1_amd64.deb" {
		t.Errorf("package file name %s", filepath.Base(v1))
	}

	out := run(t, "dpkg", "-i", v1)
	if !strings.Contains(out, "Fill in /etc/volsd/agent.json") {
		t.Errorf("postinstall did not say how to configure:\n%s", out)
	}
	if got := run(t, "dpkg-query", "-W", "-f=${Version} ${Architecture} ${Depends}", Name); got != testVersion+" amd64 rsync, util-linux, e2fsprogs, xfsprogs" {
		t.Errorf("installed package: %q", got)
	}
	if got := run(t, "dpkg-query", "-W", "-f=${Conffiles}", Name); !strings.Contains(got, " "+ConfigPath+" ") {
		t.Errorf("%s is not a conffile: %q", ConfigPath, got)
	}
	listed := strings.Fields(run(t, "dpkg", "-L", Name))
	for _, p := range []string{BinaryPath, ConfigPath, UnitDir + "/volsd-agent.service", UnitDir + "/volsd-apply.service", UnitDir + "/volsd-apply.timer"} {
		if !slices.Contains(listed, p) {
			t.Errorf("dpkg -L does not list %s: %v", p, listed)
		}
	}
	if fi, err := os.Stat(BinaryPath); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v %v", BinaryPath, fi, err)
	}
	for name, want := range systemd.Units() {
		got, err := os.ReadFile(filepath.Join(UnitDir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s/%s differs from agent/systemd (%v)", UnitDir, name, err)
		}
		if !strings.Contains(want, "ExecStart="+BinaryPath+" ") && strings.Contains(want, "ExecStart=") {
			t.Errorf("%s does not run %s", name, BinaryPath)
		}
	}
	if got := run(t, BinaryPath, "--version"); got != "volsd-agent "+testVersion+" (commit "+testCommit+", "+strings.TrimSpace(run(t, "go", "env", "GOVERSION"))+" linux/amd64)\n" {
		t.Errorf("%s --version: %q", BinaryPath, got)
	}
	if got := run(t, BinaryPath, "--help"); !strings.HasPrefix(got, "usage: volsd-agent COMMAND") {
		t.Errorf("%s --help: %q", BinaryPath, got)
	}
	if links := enablementLinks(t); len(links) != 0 {
		t.Errorf("installing enabled units: %v", links)
	}
	// The shipped configuration is a template: the agent refuses it and
	// says what to fill in.
	if out, err := exec.Command(BinaryPath, "status").CombinedOutput(); err == nil || !strings.Contains(string(out), "bucket (VOLSD_BUCKET) is required") {
		t.Errorf("status with the shipped %s: %v\n%s", ConfigPath, err, out)
	}

	// The operator configures and enables (offline: no systemd running).
	conf := `{"pool":"web","table":"volsd-web","bucket":"origin-bucket"}` + "\n"
	if err := os.WriteFile(ConfigPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "systemctl", "enable", "volsd-agent.service", "volsd-apply.timer")
	if links := enablementLinks(t); len(links) != 2 {
		t.Fatalf("systemctl enable made %v", links)
	}

	run(t, "dpkg", "-i", v2)
	if got := run(t, "dpkg-query", "-W", "-f=${Version}", Name); got != "9.8.8" {
		t.Errorf("after the upgrade: version %q", got)
	}
	if got, _ := os.ReadFile(ConfigPath); string(got) != conf {
		t.Errorf("the upgrade replaced the configuration: %q", got)
	}
	if links := enablementLinks(t); len(links) != 2 {
		t.Errorf("the upgrade changed the enablement: %v", links)
	}

	run(t, "dpkg", "-r", Name)
	for _, p := range append([]string{BinaryPath}, unitPaths()...) {
		if exists(p) {
			t.Errorf("%s left after dpkg -r", p)
		}
	}
	if links := enablementLinks(t); len(links) != 0 {
		t.Errorf("dpkg -r left enablement links: %v", links)
	}
	if got, _ := os.ReadFile(ConfigPath); string(got) != conf {
		t.Errorf("dpkg -r (not purge) removed the configuration: %q", got)
	}
	run(t, "dpkg", "--purge", Name)
	if exists("/etc/volsd") {
		t.Errorf("/etc/volsd left after dpkg --purge")
	}
}

func unitPaths() []string {
	var ps []string
	for _, name := range sortedUnits() {
		ps = append(ps, UnitDir+"/"+name)
	}
	return ps
}

// TestRPM inspects the amd64 .rpm with rpm: files, modes, the configuration
// flagged %config(noreplace), the dependencies and the scripts, then
// installs and erases it in a scratch root.
func TestRPM(t *testing.T) {
	requireTools(t)
	dir := t.TempDir()
	rpmFile := build(t, "rpm", testVersion, buildAgent(t), dir)
	if filepath.Base(rpmFile) != "volsd-agent-9.8.7+test.1-1.x86_64.rpm" {
		t.Errorf("package file name %s", filepath.Base(rpmFile))
	}
	checkRPM(t, rpmFile, "x86_64")

	root := t.TempDir()
	run(t, "rpm", "--root", root, "--nodeps", "--noscripts", "-i", rpmFile)
	for _, p := range append([]string{BinaryPath, ConfigPath}, unitPaths()...) {
		if !exists(filepath.Join(root, p)) {
			t.Errorf("rpm -i did not install %s", p)
		}
	}
	run(t, "rpm", "--root", root, "--nodeps", "--noscripts", "-e", Name)
	if exists(filepath.Join(root, BinaryPath)) {
		t.Errorf("rpm -e left %s", BinaryPath)
	}
}

func checkRPM(t *testing.T, rpmFile, arch string) {
	t.Helper()
	files := run(t, "rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]", rpmFile)
	for _, want := range []string{
		"-rwxr-xr-x root  " + BinaryPath,
		"-rw-r--r-- root cn " + ConfigPath,
		"-rw-r--r-- root  " + UnitDir + "/volsd-agent.service",
		"-rw-r--r-- root  " + UnitDir + "/volsd-apply.service",
		"-rw-r--r-- root  " + UnitDir + "/volsd-apply.timer",
	} {
		if !strings.Contains(files, want+"\n") {
			t.Errorf("%s: no %q in\n%s", filepath.Base(rpmFile), want, files)
		}
	}
	if got := run(t, "rpm", "-qlp", rpmFile); len(strings.Fields(got)) != 5 {
		t.Errorf("rpm -qlp %s lists more than the program, the configuration and the units:\n%s", filepath.Base(rpmFile), got)
	}
	if got := run(t, "rpm", "-qp", "--qf", "%{ARCH}", rpmFile); got != arch {
		t.Errorf("%s: arch %q, want %q", filepath.Base(rpmFile), got, arch)
	}
	requires := strings.Fields(run(t, "rpm", "-qpR", rpmFile))
	for _, d := range Depends() {
		if !slices.Contains(requires, d) {
			t.Errorf("%s does not require %s: %v", filepath.Base(rpmFile), d, requires)
		}
	}
	scripts := run(t, "rpm", "-qp", "--scripts", rpmFile)
	for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "systemctl disable volsd-agent.service volsd-apply.timer", "postuninstall scriptlet"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("%s scripts: no %q", filepath.Base(rpmFile), want)
		}
	}
}

// TestMakePackage checks what `make package` built (bash .ci/run passes
// its directory as VOLSD_PACKAGES): the four packages, each for its arch.
func TestMakePackage(t *testing.T) {
	dir := os.Getenv("VOLSD_PACKAGES")
	if dir == "" {
		t.Skip("VOLSD_PACKAGES not set: bash .ci/run sets it after make package")
	}
	requireTools(t)
	debs, _ := filepath.Glob(filepath.Join(dir, "volsd-agent_*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dir, "volsd-agent-*.rpm"))
	if len(debs) != 2 || len(rpms) != 2 {
		t.Fatalf("%s holds %v and %v; want a .deb and an .rpm for amd64 and arm64", dir, debs, rpms)
	}
	var debArches []string
	for _, deb := range debs {
		debArches = append(debArches, strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Architecture")))
		if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Depends")); got != strings.Join(Depends(), ", ") {
			t.Errorf("%s depends on %q", filepath.Base(deb), got)
		}
	}
	slices.Sort(debArches)
	if !slices.Equal(debArches, []string{"amd64", "arm64"}) {
		t.Errorf(".deb arches %v", debArches)
	}
	for _, rpmFile := range rpms {
		arch := "x86_64"
		if strings.HasSuffix(rpmFile, ".aarch64.rpm") {
			arch = "aarch64"
		}
		checkRPM(t, rpmFile, arch)
	}
}

// TestBuildRefusesBadSpecs: a program for the wrong architecture, a version
// dpkg and rpm would misorder, an unknown format each get a clear error
// and no package.
func TestBuildRefusesBadSpecs(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	other, known := map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH]
	if !known {
		t.Skipf("the packages are for amd64 and arm64, this test binary for %s", runtime.GOARCH)
	}
	ok := Spec{Format: "deb", Arch: runtime.GOARCH, Version: "1.2.3", Binary: self, MTime: time.Unix(1700000000, 0)}
	if _, err := Build(ok, dir); err != nil {
		t.Fatalf("the valid spec: %v", err)
	}
	os.RemoveAll(dir)
	os.Mkdir(dir, 0o755)
	for _, tc := range []struct {
		mutate func(*Spec)
		says   string
	}{
		{func(s *Spec) { s.Arch = other }, ", not " + other + " (GOARCH=" + other},
		{func(s *Spec) { s.Arch = "386" }, `arch "386"`},
		{func(s *Spec) { s.Version = "v1.2" }, `version "v1.2"`},
		{func(s *Spec) { s.Format = "apk" }, `format "apk"`},
		{func(s *Spec) { s.Binary = filepath.Join(dir, "missing") }, "not a Linux program"},
	} {
		s := ok
		tc.mutate(&s)
		if _, err := Build(s, dir); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%+v: %v; want an error saying %q", s, err, tc.says)
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("refused builds left %v", left)
	}
}
