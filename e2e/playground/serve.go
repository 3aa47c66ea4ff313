// Package playground keeps the whole local volsd system running for a
// user's own content (`make local`, `volsd-demo serve`): the same cluster
// as `make demo` (e2e/harness), a filled idle pool and two instances, a web
// server per instance on its mount, the stack outputs and an env file for
// the real `volsd` CLI, and a control socket for `volsd-demo ctl`. It stays
// up until Ctrl-C or SIGTERM and then removes everything it started.
package playground

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/cli"
	"github.com/volsd/volsd/internal/envconfig"
)

// Options configure a playground.
type Options struct {
	// StateDir holds the env and outputs files, the control socket and the
	// record for crash cleanup (DefaultStateDir when empty).
	StateDir string
	// Emulator endpoints (scripts/with-emulators.sh).
	DynamoDBURL, MotoURL string
	// Emulators are the emulator processes to record for a later run's
	// cleanup, and EmulatorLogDir their log directory.
	Emulators      []Process
	EmulatorLogDir string
	// Root is the repository (for the build); Binaries, when set, is a
	// directory an earlier harness.Build wrote, used instead of building.
	Root, Binaries string
	// Self is this program (copied next to the CLI so users can run
	// `volsd-demo ctl` from the env file's PATH).
	Self string

	Pool           string // "local" when empty
	Instances      int
	IdlePerAZ      int
	VolumeSizeGiB  int
	ReconcileEvery time.Duration // the stack's reconcile schedule, shortened; 0 = only `ctl reconcile`

	Out io.Writer    // the instructions
	Log *slog.Logger // the harness's own log
}

// Playground is a running local system.
type Playground struct {
	opts    Options
	c       *harness.Cluster
	workDir string
	binDir  string
	outputs string
	env     string
	socket  string

	webMu sync.Mutex
	web   map[string]*harness.WebServer // instance → its web server

	ctlMu sync.Mutex // one control command at a time
}

// Instance is one in-service instance as the user sees it.
type Instance struct {
	ID    string `json:"id"`
	AZ    string `json:"az"`
	URL   string `json:"url"`
	Mount string `json:"mount"`
}

// Serve starts the playground, prints how to use it and runs until ctx
// ends; then it removes everything it started. An error before the system
// is up is returned after the cleanup.
func Serve(ctx context.Context, opts Options) (err error) {
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Pool == "" {
		opts.Pool = "local"
	}
	if !envconfig.PoolName.MatchString(opts.Pool) {
		return fmt.Errorf("pool %q: letters, digits, - and _, at most 64", opts.Pool)
	}
	if opts.Instances < 1 || opts.IdlePerAZ < 0 || opts.VolumeSizeGiB < 1 {
		return fmt.Errorf("instances %d, idle volumes per AZ %d, volume size %d GiB: want at least 1 instance, 0 idle volumes and 1 GiB", opts.Instances, opts.IdlePerAZ, opts.VolumeSizeGiB)
	}
	lock, err := openStateDir(opts.StateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := sweepLeftovers(opts.StateDir, opts.Log); err != nil {
		return fmt.Errorf("clean up after an earlier run in %s: %w", opts.StateDir, err)
	}
	p := &Playground{
		opts: opts, web: map[string]*harness.WebServer{},
		outputs: filepath.Join(opts.StateDir, outputsFile),
		env:     filepath.Join(opts.StateDir, envFile),
		socket:  filepath.Join(opts.StateDir, socketFile),
	}
	defer func() {
		if cerr := p.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
	}()
	if err := p.start(ctx); err != nil {
		return err
	}
	stopCtl, err := p.serveControl(ctx)
	if err != nil {
		return err
	}
	defer stopCtl()
	p.printUsage()

	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	nextReconcile := time.Now().Add(opts.ReconcileEvery)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(opts.Out, "\nvolsd playground: stopping; removing agents, Lambdas, mounts, loop devices and the work directory")
			return nil
		case <-tick.C:
			p.syncWebServers()
			if opts.ReconcileEvery > 0 && time.Now().After(nextReconcile) {
				if _, err := p.c.Schedule(ctx, "reconcile"); err != nil && ctx.Err() == nil {
					opts.Log.Warn("scheduled reconcile failed", "err", err)
				}
				nextReconcile = time.Now().Add(opts.ReconcileEvery)
			}
		}
	}
}

// start records the run, builds (or finds) the programs, starts the
// cluster, fills the idle pool and launches the first instances.
func (p *Playground) start(ctx context.Context) error {
	o := p.opts
	work, err := os.MkdirTemp("", "volsd-e2e-local-")
	if err != nil {
		return err
	}
	p.workDir = work
	// Users read the mounts, logs and binaries under it; the harness's
	// sweep after a crash knows it by this pid file.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	self, _ := processOf(os.Getpid())
	if err := writeRecord(o.StateDir, record{
		Server: self, WorkDir: work, Emulators: o.Emulators, EmulatorLogDir: o.EmulatorLogDir, StartedAt: time.Now().UTC(),
	}); err != nil {
		return err
	}

	var bins *harness.Binaries
	if o.Binaries != "" {
		bins, err = harness.Built(o.Binaries)
	} else {
		fmt.Fprintln(o.Out, "volsd playground: building the Lambda bootstraps, volsd-agent and volsd …")
		bins, err = harness.Build(ctx, o.Root, filepath.Join(work, "build"))
	}
	if err != nil {
		return err
	}
	if err := p.installTools(bins); err != nil {
		return err
	}

	fmt.Fprintln(o.Out, "volsd playground: starting DynamoDB Local's table, moto's resources, the proxy, the five Lambdas …")
	p.c, err = harness.Start(ctx, harness.Options{
		DynamoDBURL: o.DynamoDBURL, MotoURL: o.MotoURL, Binaries: bins, WorkDir: work, Pool: o.Pool,
		IdlePerAZ: o.IdlePerAZ, VolumeSizeGiB: o.VolumeSizeGiB, ReleasePolicy: "recycle",
		QueueVisibility: 20 * time.Second, ApplyInterval: time.Minute, Log: o.Log,
	})
	if err != nil {
		return fmt.Errorf("start the local system: %w (logs in %s)", err, filepath.Join(work, "logs"))
	}
	if err := p.writeClientFiles(); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "volsd playground: reconcile fills the idle pool (%d per AZ) …\n", o.IdlePerAZ)
	if _, err := p.c.Schedule(ctx, "reconcile"); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	fmt.Fprintf(o.Out, "volsd playground: launching %d instances …\n", o.Instances)
	if _, err := p.scaleOut(ctx, o.Instances); err != nil {
		return err
	}
	return nil
}

// installTools puts the CLI and this program into one directory for the
// env file's PATH.
func (p *Playground) installTools(bins *harness.Binaries) error {
	p.binDir = filepath.Join(p.workDir, "bin")
	if err := os.MkdirAll(p.binDir, 0o755); err != nil {
		return err
	}
	if err := os.Symlink(bins.CLI, filepath.Join(p.binDir, "volsd")); err != nil {
		return err
	}
	if p.opts.Self == "" {
		return nil
	}
	b, err := os.ReadFile(p.opts.Self)
	if err != nil {
		return fmt.Errorf("copy volsd-demo for the control commands: %w", err)
	}
	return os.WriteFile(filepath.Join(p.binDir, "volsd-demo"), b, 0o755)
}

// writeClientFiles writes the stack outputs (cdk deploy --outputs-file
// shape) and the env file the CLI needs, into the state directory.
func (p *Playground) writeClientFiles() error {
	src, err := p.c.OutputsFile()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.outputs, b, 0o644); err != nil {
		return err
	}
	return writeFileAtomic(p.env, []byte(p.envText()), 0o644)
}

// envText is the env file: a POSIX shell fragment to source. It sets what
// the CLI reads from its environment (the SDK's endpoint variables, local
// credentials, the region, VOLSD_OUTPUTS) and unsets what would send it
// elsewhere: a profile or session of a real account, per-service
// endpoints, and the VOLSD_* settings that override the outputs file.
func (p *Playground) envText() string {
	var b strings.Builder
	b.WriteString("# volsd playground: . this file, then run volsd as usual (written by volsd-demo serve)\n")
	fmt.Fprintf(&b, "export PATH=%s:\"$PATH\"\n", shellQuote(p.binDir))
	for _, kv := range p.c.CLIEnv() {
		k, v, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "HOME" {
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	fmt.Fprintf(&b, "export %s=%s\n", cli.EnvOutputs, shellQuote(p.outputs))
	unset := []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS",
		"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", cli.EnvPool, cli.EnvTable, cli.EnvBucket, cli.EnvQueueURL, cli.EnvStack}
	fmt.Fprintf(&b, "unset %s\n", strings.Join(unset, " "))
	return b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// scaleOut launches n instances and waits until each is in service with
// the current content; a launch the lifecycle abandoned is an error.
func (p *Playground) scaleOut(ctx context.Context, n int) ([]Instance, error) {
	ls, err := p.c.Group.ScaleOut(ctx, n)
	if err != nil {
		return nil, err
	}
	return p.waitInService(ctx, ls)
}

func (p *Playground) waitInService(ctx context.Context, ls []*harness.Launch) ([]Instance, error) {
	results, err := p.c.Group.WaitInService(ctx, ls)
	p.syncWebServers()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range results {
		if r.Result != "CONTINUE" {
			return nil, fmt.Errorf("launch of %s in %s ended %s (hook timed out: %v); see the logs in %s", r.InstanceID, r.AZ, r.Result, r.TimedOut, p.c.LogDir())
		}
		ids = append(ids, r.InstanceID)
	}
	return p.instances(ids...), nil
}

// syncWebServers gives every in-service instance a web server and stops
// the servers of instances that left service.
func (p *Playground) syncWebServers() {
	if p.c == nil || p.c.Group == nil {
		return
	}
	in := map[string]bool{}
	for _, id := range p.c.Group.InService() {
		in[id] = true
	}
	p.webMu.Lock()
	defer p.webMu.Unlock()
	for id, w := range p.web {
		if !in[id] {
			_ = w.Close()
			delete(p.web, id)
		}
	}
	for id := range in {
		if _, ok := p.web[id]; ok {
			continue
		}
		inst, ok := p.c.Fleet.Get(id)
		if !ok {
			continue
		}
		w, err := harness.StartWebServer(inst.Mount)
		if err != nil {
			p.opts.Log.Warn("web server", "instance", id, "err", err)
			continue
		}
		p.web[id] = w
	}
}

// instances describes the given in-service instances (all when none are
// given), sorted by ID.
func (p *Playground) instances(ids ...string) []Instance {
	if len(ids) == 0 {
		ids = p.c.Group.InService()
	}
	p.webMu.Lock()
	defer p.webMu.Unlock()
	var out []Instance
	for _, id := range ids {
		inst, ok := p.c.Fleet.Get(id)
		if !ok {
			continue
		}
		i := Instance{ID: id, AZ: inst.AZ, Mount: inst.Mount}
		if w, ok := p.web[id]; ok {
			i.URL = w.URL()
		}
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// close removes everything: web servers, the cluster (pollers, Lambdas,
// agents, mounts, loop devices, proxy), the work directory, the state
// files.
func (p *Playground) close() error {
	var errs []error
	p.webMu.Lock()
	for id, w := range p.web {
		_ = w.Close()
		delete(p.web, id)
	}
	p.webMu.Unlock()
	if p.c != nil {
		if err := p.c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if p.workDir != "" && os.Getenv("VOLSD_E2E_KEEP") == "" {
		if err := os.RemoveAll(p.workDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeStateFiles(p.opts.StateDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
