package bench

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/volsd/volsd/agent"
	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// ApplyOptions size the apply-vs-rsync benchmark.
type ApplyOptions struct {
	WorkDir string
	Tree    harness.TreeSpec
	// DeltaFiles is how many files the delta changes: three quarters
	// rewritten with new content of the same size, one quarter new.
	DeltaFiles int
	Runs       int
	ImageGiB   int
	// DynamoDBURL is DynamoDB Local, where the journal lives.
	DynamoDBURL string
	// Root and GoBenchIterations: when both are set, the agent package's
	// own benchmarks run too (`go test ./agent -bench ^BenchmarkSync`).
	Root              string
	GoBenchIterations int
	Log               func(format string, args ...any)
}

// ApplyResult compares the agent applying a sync entry with plain
// `rsync -a` of the same tree onto the same kind of filesystem.
type ApplyResult struct {
	Files        int   `json:"files"`
	Bytes        int64 `json:"bytes"`
	BigFileBytes int64 `json:"bigFileBytes"`
	DeltaFiles   int   `json:"deltaFiles"`
	DeltaBytes   int64 `json:"deltaBytes"`
	Runs         int   `json:"runs"`

	// Agent: Apply until it returned (its watermark is written after a
	// syncfs, so the content is on the volume).
	AgentFull  Sample `json:"agentFullSeconds"`
	AgentDelta Sample `json:"agentDeltaSeconds"`
	// Rsync: `rsync -a` followed by syncfs, the same durability.
	RsyncFull  Sample `json:"rsyncFullSeconds"`
	RsyncDelta Sample `json:"rsyncDeltaSeconds"`
	// RsyncPlain: `rsync -a` alone (its writes may still be in the page
	// cache when it returns).
	RsyncPlainFull  Sample `json:"rsyncPlainFullSeconds"`
	RsyncPlainDelta Sample `json:"rsyncPlainDeltaSeconds"`
	// FullRatio and DeltaRatio are median(agent) / median(rsync + syncfs);
	// the Plain ratios divide by plain rsync's median instead.
	FullRatio       Num `json:"fullRatio"`
	DeltaRatio      Num `json:"deltaRatio"`
	FullRatioPlain  Num `json:"fullRatioPlain"`
	DeltaRatioPlain Num `json:"deltaRatioPlain"`
	// PairedFull/PairedDelta are each run's agent / (rsync + syncfs).
	PairedFull  []float64 `json:"pairedFullRatios"`
	PairedDelta []float64 `json:"pairedDeltaRatios"`
	// AgentFetched is what the agent read from the origin (bytes) in the
	// full and the delta apply.
	AgentFetchedFull  int64  `json:"agentFetchedFullBytes"`
	AgentFetchedDelta int64  `json:"agentFetchedDeltaBytes"`
	MkfsSeconds       Sample `json:"mkfsSeconds"`
	// AgentPackage is the agent package's own benchmarks (go test -bench),
	// run as a cross-check; AgentPackageError says why they are missing.
	AgentPackage        []GoBench `json:"agentPackageBench,omitempty"`
	AgentPackageCommand string    `json:"agentPackageCommand,omitempty"`
	AgentPackageError   string    `json:"agentPackageError,omitempty"`
}

// RunApply measures, per run and on a fresh loop-mounted ext4 each time:
//
//   - agent full: `volsd-agent apply` (the agent library's Apply) of a
//     sync entry of the whole tree onto an empty volume: journal read
//     from DynamoDB Local, manifest and blobs fetched from the origin and
//     verified (sha256), staged on the volume, put in place by its rsync
//     passes, checked, watermark written after syncfs;
//   - agent delta: then the sync entry of the changed tree (few paths:
//     placed by the agent itself, no rsync);
//   - rsync full: `rsync -a tree/ mnt/site/` onto an empty volume, then
//     syncfs;
//   - rsync delta: then `rsync -a tree2/ mnt/site/`, syncfs.
//
// The agent's origin is a local directory whose blobs are hard links to
// the tree's files: both sides read the same source bytes from the page
// cache and neither pays for a network. Each run makes both volumes, then
// times both full syncs, then both deltas, the two of a pair one right
// after the other (the shared machine's load moves within seconds); which
// side goes first alternates between runs. The first run checks that both volumes hold
// exactly the tree (sha256 of every file and its mode).
func RunApply(ctx context.Context, o ApplyOptions) (*ApplyResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.ImageGiB <= 0 {
		o.ImageGiB = int(max(2, 3*o.Tree.TotalBytes>>30+1))
	}
	res := &ApplyResult{Runs: o.Runs, BigFileBytes: o.Tree.BigFile}
	dir, err := os.MkdirTemp(o.WorkDir, "apply-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	// The trees: v1, and v2 = v1 with DeltaFiles changes (hard-link copy,
	// changed files replaced, so v1 stays as it was).
	v1, v2 := filepath.Join(dir, "tree-v1"), filepath.Join(dir, "tree-v2")
	start := time.Now()
	st, err := harness.GenerateTree(v1, o.Tree)
	if err != nil {
		return nil, fmt.Errorf("generate tree: %w", err)
	}
	res.Files, res.Bytes = st.Files, st.Bytes
	// The tree was made an hour ago: rsync's quick check (size and mtime)
	// must see the delta's rewrites as changes, as it would for an edit
	// made after the last copy.
	if err := backdate(v1, time.Now().Add(-time.Hour)); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-al", v1, v2).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cp -al: %v: %s", err, out)
	}
	res.DeltaFiles, res.DeltaBytes, err = changeTree(v2, o.DeltaFiles, o.Tree.Seed)
	if err != nil {
		return nil, err
	}
	m1, err := manifestOf(v1)
	if err != nil {
		return nil, err
	}
	m2, err := manifestOf(v2)
	if err != nil {
		return nil, err
	}
	origin := &dirOrigin{bucket: "volsd-bench-origin", dir: filepath.Join(dir, "origin")}
	if err := origin.publish(m1); err != nil {
		return nil, err
	}
	if err := origin.publish(m2); err != nil {
		return nil, err
	}
	originClient := agent.NewS3Getter(origin.start().Options()) // as volsd-agent builds it
	defer origin.close()
	settle()
	o.Log("tree: %d files, %s (one of %s); delta: %d files, %s; manifests hashed and published in %s",
		res.Files, mib(res.Bytes), mib(o.Tree.BigFile), res.DeltaFiles, mib(res.DeltaBytes), time.Since(start).Round(time.Second))

	// The journal: entry 1 syncs v1 to site/, entry 2 syncs v2.
	ddb, err := ddbClient(ctx, o.DynamoDBURL)
	if err != nil {
		return nil, err
	}
	table := "volsd-bench-apply-" + randomName()
	if err := store.CreateTable(ctx, ddb, table); err != nil {
		return nil, err
	}
	st1 := store.New(ddb, table)
	const pool, target = "bench", "site"
	if _, err := st1.AppendBatch(ctx, pool, []events.JournalEntry{
		{Op: events.OpSync, Path: target, Manifest: &events.ManifestRef{SHA256: m1.SHA256}, RequestID: "bench-apply-v1-" + randomName()},
		{Op: events.OpSync, Path: target, Manifest: &events.ManifestRef{SHA256: m2.SHA256}, RequestID: "bench-apply-v2-" + randomName()},
	}); err != nil {
		return nil, fmt.Errorf("append journal: %w", err)
	}
	journal := store.NewJournalReader(ddb, table)

	var agentFull, agentDelta, rsyncFull, rsyncDelta, plainFull, plainDelta, mkfs []time.Duration
	for run := 0; run < o.Runs; run++ {
		check := run == 0
		sides := []string{"agent", "rsync"}
		if run%2 == 1 {
			sides = []string{"rsync", "agent"}
		}
		// Both volumes first; then both full syncs, then both deltas, the
		// two of a pair one right after the other: the machine's load
		// (shared, noisy) is about the same for both sides of a ratio.
		vols := map[string]*volume{}
		closeAll := func() error {
			var err error
			for _, v := range vols {
				if cerr := v.close(); err == nil {
					err = cerr
				}
			}
			return err
		}
		for _, side := range sides {
			vol, mk, err := newVolume(ctx, dir, side, o.ImageGiB)
			if err != nil {
				closeAll()
				return nil, err
			}
			vols[side], mkfs = vol, append(mkfs, mk)
		}
		ag, err := newAgentSide(vols["agent"].mount, filepath.Join(dir, "run-agent"), pool, table, origin.bucket, originClient, journal)
		if err != nil {
			closeAll()
			return nil, err
		}
		var full, delta, plain [2]time.Duration // agent, rsync
		step := func(side string, i int) error {
			settle()
			var err error
			switch side {
			case "agent":
				var fetched int64
				if i == 0 {
					full[0], fetched, err = ag.apply(ctx, 1)
					res.AgentFetchedFull = fetched
					if err == nil && check {
						err = verifyTree(filepath.Join(vols[side].mount, target), v1)
					}
				} else {
					delta[0], fetched, err = ag.apply(ctx, 2)
					res.AgentFetchedDelta = fetched
				}
			case "rsync":
				dst := filepath.Join(vols[side].mount, target)
				src := v1
				if i == 1 {
					src = v2
				}
				var p, d time.Duration
				p, d, err = rsyncCopy(ctx, src, dst, vols[side].mount)
				if i == 0 {
					full[1], plain[0] = d, p
					if err == nil && check {
						err = verifyTree(dst, v1)
					}
				} else {
					delta[1], plain[1] = d, p
				}
			}
			if err == nil && check && i == 1 {
				err = verifyTree(filepath.Join(vols[side].mount, target), v2)
			}
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", side, run+1, err)
			}
			return nil
		}
		for i := range 2 {
			for _, side := range sides {
				if err := step(side, i); err != nil {
					ag.close()
					closeAll()
					return nil, err
				}
			}
		}
		ag.close()
		if err := closeAll(); err != nil {
			return nil, err
		}
		agentFull, agentDelta = append(agentFull, full[0]), append(agentDelta, delta[0])
		rsyncFull, rsyncDelta = append(rsyncFull, full[1]), append(rsyncDelta, delta[1])
		plainFull, plainDelta = append(plainFull, plain[0]), append(plainDelta, plain[1])
		o.Log("run %d/%d (%s first): full agent %6.2f s, rsync %6.2f s; delta agent %5.3f s, rsync %5.3f s; load %s", run+1, o.Runs, sides[0],
			full[0].Seconds(), full[1].Seconds(), delta[0].Seconds(), delta[1].Seconds(), loadNow())
		res.PairedFull = append(res.PairedFull, math.Round(agentFull[run].Seconds()/rsyncFull[run].Seconds()*1e4)/1e4)
		res.PairedDelta = append(res.PairedDelta, math.Round(agentDelta[run].Seconds()/rsyncDelta[run].Seconds()*1e4)/1e4)
	}
	res.AgentFull, res.AgentDelta = Seconds(agentFull), Seconds(agentDelta)
	res.RsyncFull, res.RsyncDelta = Seconds(rsyncFull), Seconds(rsyncDelta)
	res.RsyncPlainFull, res.RsyncPlainDelta = Seconds(plainFull), Seconds(plainDelta)
	res.MkfsSeconds = Seconds(mkfs)
	res.FullRatio = Num(Ratio(float64(res.AgentFull.Median), float64(res.RsyncFull.Median)))
	res.DeltaRatio = Num(Ratio(float64(res.AgentDelta.Median), float64(res.RsyncDelta.Median)))
	res.FullRatioPlain = Num(Ratio(float64(res.AgentFull.Median), float64(res.RsyncPlainFull.Median)))
	res.DeltaRatioPlain = Num(Ratio(float64(res.AgentDelta.Median), float64(res.RsyncPlainDelta.Median)))
	if o.Root != "" && o.GoBenchIterations > 0 {
		o.Log("the agent package's own benchmarks, %d iterations each", o.GoBenchIterations)
		var err error
		res.AgentPackage, res.AgentPackageCommand, err = RunAgentGoBench(ctx, o.Root, o.GoBenchIterations)
		if err != nil {
			res.AgentPackageError = err.Error()
			o.Log("agent package benchmarks: %v", err)
		}
		for _, b := range res.AgentPackage {
			o.Log("%s: agent/rsync+syncfs %s", b.Name, f(b.Metrics["agent/rsync+syncfs"], 2))
		}
	}
	return res, nil
}

// agentSide is the agent of one run's volume, initialised as `volsd-agent
// up` leaves a blank one (.volsd/ with the watermark at seq 0).
type agentSide struct {
	a      *agent.Agent
	runDir string
}

func newAgentSide(mount, runDir, pool, table, bucket string, origin agent.S3, journal agent.Journal) (*agentSide, error) {
	if err := os.MkdirAll(filepath.Join(mount, events.ReservedDir), 0o700); err != nil {
		return nil, err
	}
	state, _ := json.Marshal(agent.VolumeState{Version: 1, Pool: pool, Seq: 0, UpdatedAt: time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(mount, events.ReservedDir, "state.json"), append(state, '\n'), 0o600); err != nil {
		return nil, err
	}
	if err := syncFS(mount); err != nil {
		return nil, err
	}
	os.RemoveAll(runDir)
	a := agent.New(agent.Config{Pool: pool, Table: table, Bucket: bucket, MountPath: mount, FSType: "ext4", RunDir: runDir},
		agent.Deps{S3: origin, Journal: journal, Logger: agentLogger()})
	return &agentSide{a: a, runDir: runDir}, nil
}

func (s *agentSide) close() { os.RemoveAll(s.runDir) }

// apply times Apply up to upTo (one entry: 1 is the full sync, 2 the
// delta) and returns the bytes it fetched.
func (s *agentSide) apply(ctx context.Context, upTo int64) (time.Duration, int64, error) {
	var r agent.Report
	stopProfile := startProfile(upTo == 2)
	start := time.Now()
	err := s.a.Apply(ctx, upTo, false, &r)
	d := time.Since(start)
	stopProfile()
	if err != nil {
		return 0, 0, fmt.Errorf("apply up to %d: %w", upTo, err)
	}
	if r.Seq != upTo || r.Applied != 1 {
		return 0, 0, fmt.Errorf("apply up to %d: report says seq %d, applied %d", upTo, r.Seq, r.Applied)
	}
	return d, r.Bytes, nil
}

// loadNow is the 1-minute load average, for the log.
func loadNow() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// startProfile starts a CPU profile of the delta apply when
// VOLSD_BENCH_CPUPROFILE names a file: each run writes <file>.<n>, to be
// read together (go tool pprof <file>.*); the returned func stops it.
func startProfile(on bool) func() {
	path := os.Getenv("VOLSD_BENCH_CPUPROFILE")
	if !on || path == "" {
		return func() {}
	}
	profiles++
	f, err := os.Create(fmt.Sprintf("%s.%d", path, profiles))
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

var profiles int

// agentLogger discards the agent's log unless VOLSD_BENCH_DEBUG=1, which
// writes it to stderr at debug level (the phases of each entry).
func agentLogger() *slog.Logger {
	if os.Getenv("VOLSD_BENCH_DEBUG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

// backdate sets the mtime of every file under dir to t.
func backdate(dir string, t time.Time) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		return os.Chtimes(p, t, t)
	})
}

// verifyTree checks that got holds exactly the files of want, with the
// same content and modes.
func verifyTree(got, want string) error {
	g, err := harness.Digest(got)
	if err != nil {
		return err
	}
	w, err := harness.Digest(want)
	if err != nil {
		return err
	}
	if diffs := harness.DiffTrees(w, g); len(diffs) > 0 {
		if len(diffs) > 5 {
			diffs = append(diffs[:5], fmt.Sprintf("… %d more", len(diffs)-5))
		}
		return fmt.Errorf("%s differs from %s: %s", got, want, strings.Join(diffs, "; "))
	}
	return nil
}

// changeTree changes n files of the tree at dir: three quarters of them
// are replaced by new content of the same size (a new file renamed over
// the old name, so hard-linked copies keep the old content), one quarter
// are new files next to existing ones. It returns the files and bytes
// changed.
func changeTree(dir string, n int, seed uint64) (int, int64, error) {
	var files []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() < 64<<20 {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	sort.Strings(files)
	rng := rand.New(rand.NewPCG(seed, seed^0xde17a))
	rng.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	n = min(n, len(files))
	changed, added := n-n/4, n/4
	var bytes int64
	write := func(p string, size int64, mode os.FileMode) error {
		tmp := p + ".bench-tmp"
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if err != nil {
			return err
		}
		src := rand.NewChaCha8(sha256.Sum256(fmt.Appendf(nil, "delta/%d/%s", seed, p)))
		if _, err := io.CopyN(f, io.MultiReader(strings.NewReader(p), src), size); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		bytes += size
		return os.Rename(tmp, p)
	}
	for _, p := range files[:changed] {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, 0, err
		}
		if err := write(p, fi.Size(), fi.Mode().Perm()); err != nil {
			return 0, 0, err
		}
	}
	for i, p := range files[changed : changed+added] {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, 0, err
		}
		np := filepath.Join(filepath.Dir(p), fmt.Sprintf("added-%04d%s", i, filepath.Ext(p)))
		if err := write(np, fi.Size(), fi.Mode().Perm()); err != nil {
			return 0, 0, err
		}
	}
	return changed + added, bytes, nil
}

func mib(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// GoBench is one result line of `go test -bench`: the benchmark's name,
// its iterations and every metric by unit.
type GoBench struct {
	Name    string         `json:"name"`
	N       int            `json:"iterations"`
	Metrics map[string]Num `json:"metrics"`
}

// RunAgentGoBench runs the agent package's own apply-vs-rsync benchmarks
// (`go test ./agent -bench ^BenchmarkSync -benchtime <n>x`, their tree and
// their loop devices) and parses their result lines, as a cross-check of
// RunApply's figures with another tree and origin setup.
func RunAgentGoBench(ctx context.Context, root string, iterations int) ([]GoBench, string, error) {
	args := []string{"test", "./agent", "-run", "^$", "-bench", "^BenchmarkSync", "-benchtime", fmt.Sprintf("%dx", iterations), "-timeout", "30m"}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	command := "go " + strings.Join(args, " ")
	if err != nil {
		return nil, command, fmt.Errorf("%s: %v: %s", command, err, tail(string(out), 800))
	}
	res := ParseGoBench(string(out))
	if len(res) == 0 {
		return nil, command, fmt.Errorf("%s printed no benchmark results: %s", command, tail(string(out), 800))
	}
	return res, command, nil
}

// ParseGoBench reads the result lines of `go test -bench` output:
// "BenchmarkX-2  N  v1 unit1  v2 unit2 …".
func ParseGoBench(out string) []GoBench {
	var res []GoBench
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		b := GoBench{Name: fields[0], N: n, Metrics: map[string]Num{}}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				break
			}
			b.Metrics[fields[i+1]] = Num(v)
		}
		res = append(res, b)
	}
	return res
}
