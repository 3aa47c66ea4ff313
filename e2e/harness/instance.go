package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/volsd/volsd/agent"
	"github.com/volsd/volsd/events"
)

// AgentSettings is what every simulated instance's agent gets: the
// /etc/volsd/agent.json fields of docs/contracts.md and the endpoints.
type AgentSettings struct {
	Binary        string // the built volsd-agent
	Pool          string
	Table         string
	Bucket        string
	ASG           string
	LaunchHook    string
	ProxyURL      string // AWS_ENDPOINT_URL
	DynamoDBURL   string // AWS_ENDPOINT_URL_DYNAMODB
	DeviceWait    time.Duration
	UpRestart     time.Duration // systemd RestartSec of volsd-agent.service
	ApplyInterval time.Duration // volsd-apply.timer period; 0 = off
	Path          string        // the agents' PATH; "" = agent.DefaultProgramPath
	Log           io.Writer     // agents' stderr (slog JSON), prefixed per instance
	LogMu         *sync.Mutex
}

// Instance is one simulated EC2 instance: its IMDS, its own run, mount,
// device and sysfs directories, the volsd-agent.service (`up` at boot,
// restarted on failure) and volsd-apply.timer, and the commands SSM runs.
type Instance struct {
	ID, AZ     string
	Dir        string
	Tree       DeviceTree
	RunDir     string
	Mount      string
	ConfigPath string

	imds *IMDS
	set  *AgentSettings
	env  []string
	log  *slog.Logger

	mu      sync.Mutex
	procs   map[*exec.Cmd]string // running agent processes → command
	runs    []AgentRun
	down    bool
	stop    chan struct{}
	wg      sync.WaitGroup
	upDone  chan struct{}
	upFinal *events.AgentReport
	stuck   chan struct{} // closed once `up` keeps failing in a way waiting cannot heal
	stuckAt error         // why, set before stuck is closed

	timerHeld atomic.Bool // the volsd-apply.timer skips its runs (HoldTimer)
}

// HoldTimer stops (true) or resumes (false) the instance's periodic
// apply, as `systemctl stop volsd-apply.timer` would: a fault story that
// must catch an apply started by a command holds it meanwhile.
func (in *Instance) HoldTimer(hold bool) { in.timerHeld.Store(hold) }

// AgentRun records one agent process the instance ran.
type AgentRun struct {
	Args     []string
	Start    time.Time
	Duration time.Duration
	ExitCode int
	Report   *events.AgentReport // parsed last stdout line, if any
	Stderr   string
}

// BootInstance starts the simulated instance id in az under dir: IMDS,
// directories, agent.json, then the agent service loop (and timer).
func BootInstance(id, az, region, account, dir string, set *AgentSettings, log *slog.Logger) (*Instance, error) {
	in := &Instance{
		ID: id, AZ: az, Dir: dir,
		Tree:       DeviceTree{DeviceRoot: filepath.Join(dir, "dev", "disk", "by-id"), SysfsRoot: filepath.Join(dir, "sys"), NodeDir: filepath.Join(dir, "dev")},
		RunDir:     filepath.Join(dir, "run", "volsd"),
		Mount:      filepath.Join(dir, "srv", "volsd"),
		ConfigPath: filepath.Join(dir, "etc", "volsd", "agent.json"),
		set:        set, log: log.With("instance", id),
		procs: map[*exec.Cmd]string{}, stop: make(chan struct{}), upDone: make(chan struct{}), stuck: make(chan struct{}),
	}
	for _, d := range []string{in.Tree.DeviceRoot, in.Tree.SysfsRoot, in.RunDir, filepath.Dir(in.ConfigPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	cfg := map[string]any{
		"pool": set.Pool, "table": set.Table, "bucket": set.Bucket, "asg": set.ASG,
		"lifecycleHook": set.LaunchHook, "mountPath": in.Mount, "fsType": "ext4",
		"deviceRoot": in.Tree.DeviceRoot, "sysfsRoot": in.Tree.SysfsRoot, "runDir": in.RunDir,
		"deviceWait": set.DeviceWait.String(),
	}
	if set.ApplyInterval > 0 {
		cfg["applyInterval"] = set.ApplyInterval.String()
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(in.ConfigPath, b, 0o644); err != nil {
		return nil, err
	}
	imds, err := StartIMDS(IdentityDocument{
		AccountID: account, Architecture: "arm64", AvailabilityZone: az, ImageID: "ami-0volsd0local0000",
		InstanceID: id, InstanceType: "m7g.large", PendingTime: time.Now().UTC().Truncate(time.Second),
		PrivateIP: "10.0.0.10", Region: region, Version: "2017-09-30",
	})
	if err != nil {
		return nil, err
	}
	in.imds = imds
	// The SSM agent's environment: no credentials and no region in it; the
	// agent gets both from IMDS like on EC2.
	path := set.Path
	if path == "" {
		path = agent.DefaultProgramPath
	}
	in.env = []string{
		"PATH=" + path,
		"HOME=" + dir,
		"LANG=C.UTF-8",
		"VOLSD_CONFIG=" + in.ConfigPath,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imds.URL(),
		"AWS_ENDPOINT_URL=" + set.ProxyURL,
		"AWS_ENDPOINT_URL_DYNAMODB=" + set.DynamoDBURL,
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-aws-credentials"),
	}
	in.wg.Add(1)
	go in.service()
	return in, nil
}

// Env returns the environment agent processes get.
func (in *Instance) Env() []string { return append([]string{}, in.env...) }

// IMDSURL is the instance's metadata endpoint.
func (in *Instance) IMDSURL() string { return in.imds.URL() }

// service plays volsd-agent.service (Type=oneshot, Restart=on-failure) and,
// once it has succeeded, volsd-apply.timer.
func (in *Instance) service() {
	defer in.wg.Done()
	var last string
	same := 0
	for {
		out := in.RunAgent(context.Background(), []string{"up"}, 0)
		if in.isDown() {
			return
		}
		if why := upFailure(out); why != "" {
			if why == last {
				same++
			} else {
				last, same = why, 1
			}
			if out.ExitCode == agent.ExitBadInput || same >= upStuckAfter {
				in.markStuck(fmt.Errorf("volsd-agent up on %s failed %d time(s) in a row with %s", in.ID, same, why))
			}
		}
		if out.ExitCode == 0 {
			if r, err := events.ParseAgentReport(out.Stdout); err == nil {
				in.mu.Lock()
				in.upFinal = &r
				in.mu.Unlock()
			}
			close(in.upDone)
			break
		}
		in.log.Warn("volsd-agent up failed; systemd restarts it", "exit", out.ExitCode, "stderr", lastLines(out.Stderr, 3))
		select {
		case <-in.stop:
			return
		case <-time.After(in.set.UpRestart):
		}
	}
	if in.set.ApplyInterval <= 0 {
		return
	}
	t := time.NewTicker(in.set.ApplyInterval)
	defer t.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-t.C:
			if !in.timerHeld.Load() {
				in.RunAgent(context.Background(), []string{"apply", "--upto", "0"}, time.Hour)
			}
		}
	}
}

// upStuckAfter is how many times in a row `up` may fail with the same
// not-ready error before the instance counts as stuck: each try takes a
// restart interval, so a stuck instance is named within seconds, not at
// the launch hook's timeout.
const upStuckAfter = 3

// upFailure describes a failed `up` that waiting cannot heal by itself
// (bad input, or not ready: a program or the configuration is missing),
// or "" for success and for failures that may heal (retryable).
func upFailure(out CommandOutput) string {
	if out.ExitCode != agent.ExitBadInput && out.ExitCode != agent.ExitNotReady {
		return ""
	}
	msg := lastLines(out.Stderr, 1)
	if r, err := events.ParseAgentReport(out.Stdout); err == nil && r.Error != "" {
		msg = r.Error
	}
	return fmt.Sprintf("exit %d: %s", out.ExitCode, msg)
}

func (in *Instance) markStuck(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	select {
	case <-in.stuck:
	default:
		in.stuckAt = err
		close(in.stuck)
	}
}

// Stuck is closed once the instance's `volsd-agent up` keeps failing in a
// way that waiting will not heal; StuckError says how.
func (in *Instance) Stuck() <-chan struct{} { return in.stuck }

// StuckError is the agent's error that made the instance stuck, or nil.
func (in *Instance) StuckError() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stuckAt
}

// UpDone is closed once `volsd-agent up` has succeeded.
func (in *Instance) UpDone() <-chan struct{} { return in.upDone }

// UpReport is the report of the successful `up`, if any.
func (in *Instance) UpReport() *events.AgentReport {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.upFinal
}

func (in *Instance) isDown() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.down
}

// RunAgent runs volsd-agent with args as root on the instance (its own
// process group, killed with the group after timeout; 0 = no limit). A
// process killed by a signal exits 128+signal, as the shell reports it.
func (in *Instance) RunAgent(ctx context.Context, args []string, timeout time.Duration) CommandOutput {
	if in.isDown() {
		return CommandOutput{ExitCode: -1, Stderr: "instance is shut down"}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.Command(in.set.Binary, args...)
	cmd.Env = in.env
	cmd.Dir = "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	errW := io.Writer(&stderr)
	if in.set.Log != nil {
		errW = io.MultiWriter(&stderr, NewPrefixWriter(in.set.Log, in.set.LogMu, in.ID+" "+args[0]))
	}
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return CommandOutput{ExitCode: 127, Stderr: err.Error()}
	}
	in.mu.Lock()
	in.procs[cmd] = strings.Join(args, " ")
	in.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	timedOut := false
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		timedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
	}
	in.mu.Lock()
	delete(in.procs, cmd)
	in.mu.Unlock()
	out := CommandOutput{Stdout: stdout.String(), Stderr: stderr.String(), TimedOut: timedOut}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			out.ExitCode = 128 + int(ws.Signal())
		} else {
			out.ExitCode = ee.ExitCode()
		}
	default:
		out.ExitCode = 1
	}
	run := AgentRun{Args: args, Start: start, Duration: time.Since(start), ExitCode: out.ExitCode, Stderr: lastLines(out.Stderr, 5)}
	if r, err := events.ParseAgentReport(out.Stdout); err == nil {
		run.Report = &r
	}
	in.mu.Lock()
	in.runs = append(in.runs, run)
	in.mu.Unlock()
	return out
}

// Runs returns the agent processes the instance ran so far.
func (in *Instance) Runs() []AgentRun {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]AgentRun{}, in.runs...)
}

// Running lists the agent commands running now.
func (in *Instance) Running() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for _, c := range in.procs {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// KillAgents SIGKILLs every running agent process whose command starts
// with prefix ("" = all) and returns how many it killed.
func (in *Instance) KillAgents(prefix string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for cmd, c := range in.procs {
		if strings.HasPrefix(c, prefix) {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			n++
		}
	}
	return n
}

// Shutdown powers the instance off: services stop, running agents are
// killed, the volume's filesystem goes away with the machine (lazily
// unmounted) and IMDS stops.
func (in *Instance) Shutdown() {
	in.mu.Lock()
	if in.down {
		in.mu.Unlock()
		return
	}
	in.down = true
	close(in.stop)
	for cmd := range in.procs {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	in.mu.Unlock()
	in.wg.Wait()
	for {
		mps, err := mountsUnder(in.Dir)
		if err != nil || len(mps) == 0 {
			break
		}
		for _, mp := range mps {
			_ = exec.Command("fsfreeze", "--unfreeze", mp).Run()
			if out, err := exec.Command("umount", "-l", mp).CombinedOutput(); err != nil {
				in.log.Warn("unmount at shutdown", "mount", mp, "err", err, "out", string(out))
				return
			}
		}
	}
	_ = in.imds.Close()
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Fleet is the set of simulated instances: the device trees the EBS
// simulation publishes into and the managed instances SSM runs commands on.
type Fleet struct {
	mu        sync.Mutex
	instances map[string]*Instance
}

// NewFleet makes an empty fleet.
func NewFleet() *Fleet { return &Fleet{instances: map[string]*Instance{}} }

// Add registers a booted instance.
func (f *Fleet) Add(in *Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances[in.ID] = in
}

// Remove forgets an instance.
func (f *Fleet) Remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.instances, id)
}

// Get returns an instance.
func (f *Fleet) Get(id string) (*Instance, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.instances[id]
	return in, ok
}

// All returns the instances, sorted by ID.
func (f *Fleet) All() []*Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*Instance, 0, len(f.instances))
	for _, in := range f.instances {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DeviceTree implements InstanceDevices.
func (f *Fleet) DeviceTree(id string) (DeviceTree, bool) {
	in, ok := f.Get(id)
	if !ok {
		return DeviceTree{}, false
	}
	return in.Tree, true
}

// Managed implements ManagedFleet: booted instances that are not shut down.
func (f *Fleet) Managed(id string) (ManagedInstance, bool) {
	in, ok := f.Get(id)
	if !ok || in.isDown() {
		return nil, false
	}
	return in, true
}

// ManagedIDs implements ManagedFleet.
func (f *Fleet) ManagedIDs() []string {
	var ids []string
	for _, in := range f.All() {
		if !in.isDown() {
			ids = append(ids, in.ID)
		}
	}
	return ids
}
