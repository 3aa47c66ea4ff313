package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/store"
)

// TTCContent is one content size of the time-to-content benchmark.
type TTCContent struct {
	Label string
	Tree  harness.TreeSpec
}

// TTCOptions size the time-to-content benchmark.
type TTCOptions struct {
	Root, WorkDir        string
	Contents             []TTCContent
	Entries              int // journal entries after the pool's snapshot
	Runs                 int
	DynamoDBURL, MotoURL string
	Log                  func(format string, args ...any)
}

// TTCCase is one content size.
type TTCCase struct {
	Label string `json:"label"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
	// Volsd: lifecycle event → launch hook completed, for an instance that
	// gets an idle volume made from the pool's snapshot.
	Volsd Sample `json:"volsdSeconds"`
	// Applied is how many journal entries its agent applied at start.
	Applied Sample `json:"entriesApplied"`
	// Copy: the whole content copied onto a fresh filesystem at boot:
	// `rsync -a` from the page cache + syncfs onto a freshly formatted
	// loop-mounted ext4 (mkfs timed apart, in CopyMkfs). A lower bound of
	// any boot-time copy: no download, no instance plumbing.
	Copy     Sample `json:"copyBaselineSeconds"`
	CopyMkfs Sample `json:"copyBaselineMkfsSeconds"`
	// Blank: lifecycle event → hook completed for an instance whose idle
	// volume is blank, so its agent downloads and applies everything from
	// the S3 origin (moto behind the local proxy) before the hook
	// completes: volsd without its snapshot, the "s3 sync at boot" design
	// played through the same plumbing.
	Blank        Sample `json:"blankVolumeSeconds"`
	BlankApplied Sample `json:"blankVolumeEntriesApplied"`
	// Setup times.
	PushSeconds Num `json:"contentPushSeconds"`
	// UpSteps: the agent's own timing of each step of `up` in the volsd
	// launches (its "up steps" log line): imds, device (waiting for the
	// volume and its device), mount, catchUp, hook, total, in seconds.
	UpSteps map[string]Sample `json:"upStepsSeconds"`
	// DescribeVolumes: the agent's DescribeVolumes calls per volsd boot.
	DescribeVolumes Sample `json:"describeVolumesPerBoot"`
	// WarmPool: lifecycle event → launch hook completed for an instance
	// started from the group's warm pool (Origin WarmPool): it was
	// launched into the pool on an idle volume made from the snapshot,
	// caught up and was stopped with its volume attached; Entries more
	// entries were pushed while it was stopped. Its `up` at start
	// remounts, applies them and completes the hook.
	WarmPool        Sample            `json:"warmPoolSeconds"`
	WarmPoolApplied Sample            `json:"warmPoolEntriesApplied"`
	WarmPoolUpSteps map[string]Sample `json:"warmPoolUpStepsSeconds,omitempty"`
}

// TTCResult is the time-to-content benchmark.
type TTCResult struct {
	Cases   []TTCCase `json:"cases"`
	Entries int       `json:"entriesSinceSnapshot"`
	Runs    int       `json:"runs"`
	Setup   string    `json:"setup"`
}

// RunTTC measures time-to-content in the local whole system (e2e/harness:
// the real Lambda bootstraps behind Runtime API servers, real agents on
// simulated instances with loop-device volumes, DynamoDB Local, moto behind
// the gap-filling proxy) for each content size:
//
//  1. reconcile fills the idle pool (blank volumes); the content is pushed
//     (`volsd push`, one sync entry) while no instance runs;
//  2. blank-volume baseline: Runs instances are launched one by one, each
//     on a blank idle volume (reconcile refills the pool before each): the
//     agent downloads the whole content before it completes the hook;
//  3. snapshot (the snapshot Lambda's schedule) of an in-service volume;
//  4. Entries more entries are pushed (one small file each) after it;
//  5. reconcile replaces the idle volumes by volumes made from the
//     snapshot; then Runs instances are launched one by one (reconcile
//     refills from the snapshot before each, so no launch creates a volume
//     itself): volsd's time-to-content, with Entries entries to apply;
//  6. the copy baseline: Runs times, the whole current content copied with
//     `rsync -a` onto a fresh filesystem.
//
// Each new instance's content is checked against the source tree (sha256
// and mode of every file) the moment its hook completed.
func RunTTC(ctx context.Context, o TTCOptions) (*TTCResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Runs <= 0 {
		o.Runs = 3
	}
	res := &TTCResult{Entries: o.Entries, Runs: o.Runs, Setup: fmt.Sprintf(
		"The local whole system (`e2e/harness`): the five Lambda bootstraps behind Runtime API servers, real `volsd-agent`s on simulated instances with loop-device EBS volumes and fake IMDS, DynamoDB Local, moto behind the gap-filling proxy, the real `volsd` CLI. "+
			"Per content size: the content is pushed (one `sync` entry), the snapshot Lambda snapshots an in-service volume, %d more entries are pushed (one small file each), reconcile replaces the idle volumes by volumes made from the snapshot; "+
			"then a new instance is launched, %d times (reconcile refills the idle pool before each launch). **volsd** is the time from the launch lifecycle event to the launch hook's completion by the agent, after it mounted the volume and applied the %d entries; the instance's files are checked against the source the moment the hook completes. "+
			"**Copy everything at boot** is `rsync -a` of the whole current content from the page cache onto a freshly formatted loop-mounted ext4, then syncfs (mkfs not counted): a lower bound of any boot-time copy, which would also download the content and boot. "+
			"**Blank volume** is the same launch as volsd's but on a blank idle volume (before any snapshot): the agent downloads everything from the S3 origin (moto, local) and applies it before completing the hook — volsd without its snapshot, i.e. the `s3 sync` at boot design through the same plumbing.",
		o.Entries, o.Runs, o.Entries)}
	if len(o.Contents) == 0 {
		return nil, errors.New("no content sizes")
	}
	dir, err := os.MkdirTemp(o.WorkDir, "ttc-")
	if err != nil {
		return nil, err
	}
	if os.Getenv("VOLSD_E2E_KEEP") == "" { // the harness's switch to keep images and logs
		defer os.RemoveAll(dir)
	}
	o.Log("building the Lambda bootstraps, volsd-agent and volsd for this machine")
	bins, err := harness.Build(ctx, o.Root, filepath.Join(dir, "build"))
	if err != nil {
		return nil, err
	}
	for _, content := range o.Contents {
		c, err := ttcCase(ctx, o, bins, dir, content)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", content.Label, err)
		}
		res.Cases = append(res.Cases, *c)
		o.Log("%s: volsd %.2f s (%.0f entries applied); copy at boot %.2f s; blank volume %.2f s",
			c.Label, float64(c.Volsd.Median), float64(c.Applied.Median), float64(c.Copy.Median), float64(c.Blank.Median))
	}
	return res, nil
}

func ttcCase(ctx context.Context, o TTCOptions, bins *harness.Binaries, dir string, content TTCContent) (*TTCCase, error) {
	res := &TTCCase{Label: content.Label}
	work := filepath.Join(dir, content.Label)
	if err := os.MkdirAll(filepath.Join(work, "cluster"), 0o755); err != nil {
		return nil, err
	}
	if os.Getenv("VOLSD_E2E_KEEP") == "" {
		defer os.RemoveAll(work)
	}
	// Volumes hold the content and, while a blank volume catches up, its
	// staged copy: twice the content, rounded up, at least 1 GiB (sparse).
	sizeGiB := int(max(1, (2*content.Tree.TotalBytes+(512<<20))>>30+1))
	hlog := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := harness.Start(ctx, harness.Options{
		DynamoDBURL: o.DynamoDBURL, MotoURL: o.MotoURL, Binaries: bins, WorkDir: filepath.Join(work, "cluster"),
		// A pool of its own: moto is shared, and the snapshot Lambda
		// adopts snapshots tagged with its pool.
		Pool:      "ttc-" + strings.ToLower(content.Label) + "-" + randomName()[:4],
		IdlePerAZ: 1, VolumeSizeGiB: sizeGiB, ReleasePolicy: "delete",
		// Replace idle volumes as soon as a newer snapshot exists (the
		// default waits for 500 entries) and all of them in one run.
		LambdaEnv:       map[string]string{"VOLSD_REFRESH_BEHIND": "1", "VOLSD_REFRESH_MAX": "4"},
		LaunchHeartbeat: 15 * time.Minute,
		// The push Lambda gets its deployed timeout (60 s): the harness's
		// default (the 20 s queue visibility) was too short for the
		// 2 GiB tree's first push under load (its 4000 origin checks on
		// moto took 15.6 s of the 20 at load 20; a retry starts over).
		QueueVisibility: 2 * time.Minute,
		Log:             hlog,
	})
	defer func() {
		if cerr := c.Close(); cerr != nil {
			o.Log("cleanup: %v", cerr)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("start the local system: %w", err)
	}
	outputs, err := c.OutputsFile()
	if err != nil {
		return nil, err
	}
	cli := func(args ...string) error {
		full := append([]string{args[0], "--outputs", outputs}, args[1:]...)
		_, err := c.CLI(ctx, full...)
		return err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf(format+" (logs: %s)", append(args, c.LogDir())...)
	}

	// 1. The idle pool and the content.
	if _, err := c.Schedule(ctx, "reconcile"); err != nil {
		return nil, fail("reconcile: %v", err)
	}
	src := filepath.Join(work, "content", "site")
	st, err := harness.GenerateTree(src, content.Tree)
	if err != nil {
		return nil, err
	}
	res.Files, res.Bytes = st.Files, st.Bytes
	start := time.Now()
	if err := cli("push", src, "site"); err != nil {
		return nil, fail("push the content: %v", err)
	}
	if err := waitHead(ctx, c, 1, 10*time.Minute); err != nil {
		return nil, fail("%v", err)
	}
	res.PushSeconds = Num(time.Since(start).Seconds())
	o.Log("%s: %d files, %s pushed in %.1f s (journal head 1)", content.Label, st.Files, mib(st.Bytes), float64(res.PushSeconds))
	want, err := harness.Digest(src)
	if err != nil {
		return nil, err
	}

	// 2. Blank volumes: everything downloaded at start.
	var blank []time.Duration
	var blankApplied []int
	for run := 0; run < o.Runs; run++ {
		took, applied, _, err := ttcLaunch(ctx, c, "", want)
		if err != nil {
			return nil, fail("blank-volume launch %d: %v", run+1, err)
		}
		blank, blankApplied = append(blank, took), append(blankApplied, applied)
		o.Log("%s: blank volume, run %d/%d: %.2f s (%d entries applied)", content.Label, run+1, o.Runs, took.Seconds(), applied)
	}
	res.Blank, res.BlankApplied = Seconds(blank), Counts(blankApplied)

	// 3. Snapshot (of an in-use volume: wait for the lifecycle Lambda's
	// record, which trails the agent's device).
	if err := waitInUse(ctx, c, time.Minute); err != nil {
		return nil, fail("%v", err)
	}
	if _, err := c.Schedule(ctx, "snapshot"); err != nil {
		return nil, fail("snapshot: %v", err)
	}
	snap, err := newestSnapshot(ctx, c)
	if err != nil {
		return nil, fail("%v", err)
	}
	o.Log("%s: snapshot %s at seq %d", content.Label, snap.SnapshotID, snap.Seq)

	// 4. Entries after the snapshot, one small file each.
	news := filepath.Join(src, "news")
	if err := os.MkdirAll(news, 0o755); err != nil {
		return nil, err
	}
	// pushNews pushes o.Entries one-file entries (the last with --wait).
	pushNews := func(when string) error {
		for i := 1; i <= o.Entries; i++ {
			name := fmt.Sprintf("item-%02d.html", i)
			if err := os.WriteFile(filepath.Join(news, name), []byte(fmt.Sprintf("<article>news %d, %s</article>\n", i, when)), 0o644); err != nil {
				return err
			}
			args := []string{"push", filepath.Join(news, name), "site/news/" + name}
			if i == o.Entries {
				args = []string{"push", "--wait", filepath.Join(news, name), "site/news/" + name}
			}
			if err := cli(args...); err != nil {
				return fail("push entry %d %s: %v", i, when, err)
			}
		}
		return nil
	}
	if err := pushNews("after the snapshot"); err != nil {
		return nil, err
	}
	head := snap.Seq + int64(o.Entries)
	if err := waitHead(ctx, c, head, 5*time.Minute); err != nil {
		return nil, fail("%v", err)
	}
	if want, err = harness.Digest(src); err != nil {
		return nil, err
	}

	// 5. volsd: idle volumes from the snapshot.
	took, applied, steps, err := ttcSeries(o, fail, content.Label, "volsd", "launch", "were due after snapshot "+snap.SnapshotID,
		func() (time.Duration, int, map[string]float64, error) {
			return ttcLaunch(ctx, c, snap.SnapshotID, want)
		})
	if err != nil {
		return nil, err
	}
	res.Volsd, res.Applied = Seconds(took), Counts(applied)
	if s, ok := steps[describeCallsStep]; ok {
		res.DescribeVolumes = s
		delete(steps, describeCallsStep)
	}
	res.UpSteps = steps

	// 6. Warm pool: Runs instances launched into the pool (each on an idle
	// volume from the snapshot), caught up and stopped; Entries entries
	// pushed meanwhile; then each started from the pool in turn.
	for run := 0; run < o.Runs; run++ {
		if err := refillIdle(ctx, c, snap.SnapshotID); err != nil {
			return nil, fail("warm pool %d: %v", run+1, err)
		}
		rs, err := c.WarmPool.Fill(ctx, 1)
		if err != nil {
			return nil, fail("launch into the warm pool %d: %v", run+1, err)
		}
		if rs[0].Result != "CONTINUE" {
			return nil, fail("launch into the warm pool %d: %+v", run+1, rs[0])
		}
	}
	if err := c.SettleEvents(ctx); err != nil {
		return nil, err
	}
	if err := pushNews("while the warm pool was stopped"); err != nil {
		return nil, err
	}
	if err := waitHead(ctx, c, head+int64(o.Entries), 5*time.Minute); err != nil {
		return nil, fail("%v", err)
	}
	if want, err = harness.Digest(src); err != nil {
		return nil, err
	}
	warmTook, warmApplied, warmSteps, err := ttcSeries(o, fail, content.Label, "warm pool", "scale out from the warm pool", "were pushed while it was stopped",
		func() (time.Duration, int, map[string]float64, error) {
			settle()
			ls, err := c.WarmPool.ScaleOut(ctx, 1)
			if err != nil {
				return 0, 0, nil, err
			}
			return ttcInService(ctx, c, ls, "", want)
		})
	if err != nil {
		return nil, err
	}
	res.WarmPool, res.WarmPoolApplied = Seconds(warmTook), Counts(warmApplied)
	delete(warmSteps, describeCallsStep)
	res.WarmPoolUpSteps = warmSteps

	// 7. Copy everything at boot.
	var copies, mkfs []time.Duration
	for run := 0; run < o.Runs; run++ {
		settle()
		vol, mk, err := newVolume(ctx, work, "copy", sizeGiB)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(vol.mount, "site")
		_, d, err := rsyncCopy(ctx, src, dst, vol.mount)
		if err == nil && run == 0 {
			err = verifyTree(dst, src)
		}
		if cerr := vol.close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("copy baseline: %w", err)
		}
		copies, mkfs = append(copies, d), append(mkfs, mk)
		o.Log("%s: copy at boot, run %d/%d: %.2f s (+ mkfs %.2f s)", content.Label, run+1, o.Runs, d.Seconds(), mk.Seconds())
	}
	res.Copy, res.CopyMkfs = Seconds(copies), Seconds(mkfs)
	if errs := c.AsyncErrors(); len(errs) > 0 {
		return nil, fail("asynchronous invocations failed: %v", errors.Join(errs...))
	}
	return res, nil
}

// describeCallsStep is the up step that counts DescribeVolumes calls (the
// others are seconds).
const describeCallsStep = "describeVolumesCalls"

// ttcSeries measures o.Runs launches (launch makes one and returns its
// time-to-content, the entries its agent applied at start and its up
// steps); each must have applied o.Entries entries (due says which). It
// returns the times, the entries applied and a sample of each up step.
// what names the series in the log, failAs a launch in errors.
func ttcSeries(o TTCOptions, fail func(format string, args ...any) error, label, what, failAs, due string,
	launch func() (time.Duration, int, map[string]float64, error)) ([]time.Duration, []int, map[string]Sample, error) {
	var took []time.Duration
	var applied []int
	steps := map[string][]float64{}
	for run := 0; run < o.Runs; run++ {
		d, n, st, err := launch()
		if err != nil {
			return nil, nil, nil, fail("%s %d: %v", failAs, run+1, err)
		}
		if n != o.Entries {
			return nil, nil, nil, fail("%s %d: the agent applied %d entries at start; %d %s", failAs, run+1, n, o.Entries, due)
		}
		took, applied = append(took, d), append(applied, n)
		for k, v := range st {
			steps[k] = append(steps[k], v)
		}
		o.Log("%s: %s, run %d/%d: %.2f s (%d entries applied); up steps %v", label, what, run+1, o.Runs, d.Seconds(), n, st)
	}
	samples := map[string]Sample{}
	for k, v := range steps {
		unit := "s"
		if k == describeCallsStep {
			unit = "calls"
		}
		samples[k] = NewSample(unit, v)
	}
	return took, applied, samples, nil
}

// ttcLaunch refills the idle pool (reconcile), checks that every idle
// volume was made from fromSnapshot ("" = blank), launches one instance and
// waits for its launch hook. It returns the time from the lifecycle event
// to the hook's completion and the entries the agent applied at start,
// after checking the instance's content against want.
func ttcLaunch(ctx context.Context, c *harness.Cluster, fromSnapshot string, want map[string]harness.FileDigest) (time.Duration, int, map[string]float64, error) {
	if err := refillIdle(ctx, c, fromSnapshot); err != nil {
		return 0, 0, nil, err
	}
	settle()
	ls, err := c.Group.ScaleOut(ctx, 1)
	if err != nil {
		return 0, 0, nil, err
	}
	return ttcInService(ctx, c, ls, fromSnapshot, want)
}

// refillIdle runs reconcile until every AZ has its idle volumes, all made
// from fromSnapshot ("" = blank).
func refillIdle(ctx context.Context, c *harness.Cluster, fromSnapshot string) error {
	for try := 0; ; try++ {
		if _, err := c.Schedule(ctx, "reconcile"); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		vols, err := c.Store.ListVolumes(ctx, c.Opts.Pool)
		if err != nil {
			return err
		}
		perAZ := map[string]int{}
		var wrong []string
		for _, v := range vols {
			if v.State != store.VolumeIdle {
				continue
			}
			perAZ[v.AZ]++
			if v.SnapshotID != fromSnapshot {
				wrong = append(wrong, v.VolumeID+" from "+orBlank(v.SnapshotID))
			}
		}
		ready := len(wrong) == 0
		for _, az := range c.Opts.AZs {
			ready = ready && perAZ[az] >= c.Opts.IdlePerAZ
		}
		if ready {
			return nil
		}
		if try == 5 {
			return fmt.Errorf("after %d reconcile runs the idle pool is not ready: %v idle per AZ, want %d from %s; other idle volumes: %s",
				try+1, perAZ, c.Opts.IdlePerAZ, orBlank(fromSnapshot), strings.Join(wrong, ", "))
		}
	}
}

// ttcInService waits for one launch's hook and returns the time from its
// lifecycle event to the hook's completion and the entries the agent
// applied at start, after checking the instance's content against want
// (and, with fromSnapshot, that its volume was made from it).
func ttcInService(ctx context.Context, c *harness.Cluster, ls []*harness.Launch, fromSnapshot string, want map[string]harness.FileDigest) (time.Duration, int, map[string]float64, error) {
	results, err := c.Group.WaitInService(ctx, ls)
	if err != nil {
		return 0, 0, nil, err
	}
	if len(results) != 1 || results[0].Result != "CONTINUE" {
		return 0, 0, nil, fmt.Errorf("launch ended %+v", results)
	}
	r := results[0]
	in, ok := c.Fleet.Get(r.InstanceID)
	if !ok {
		return 0, 0, nil, fmt.Errorf("instance %s is gone", r.InstanceID)
	}
	got, err := harness.Digest(filepath.Join(in.Mount, "site"))
	if err != nil {
		return 0, 0, nil, err
	}
	if diffs := harness.DiffTrees(want, got); len(diffs) > 0 {
		if len(diffs) > 5 {
			diffs = append(diffs[:5], fmt.Sprintf("… %d more", len(diffs)-5))
		}
		return 0, 0, nil, fmt.Errorf("instance %s entered service without the current content: %s", r.InstanceID, strings.Join(diffs, "; "))
	}
	rep := in.UpReport()
	if rep == nil {
		// The hook completed; the up process may still be writing its
		// report.
		select {
		case <-in.UpDone():
			rep = in.UpReport()
		case <-time.After(10 * time.Second):
		}
	}
	if rep == nil {
		return 0, 0, nil, fmt.Errorf("instance %s has no report from `volsd-agent up`", r.InstanceID)
	}
	if fromSnapshot != "" {
		inst, err := c.Store.GetInstance(ctx, c.Opts.Pool, r.InstanceID)
		if err != nil {
			return 0, 0, nil, err
		}
		v, err := c.Store.GetVolume(ctx, c.Opts.Pool, inst.VolumeID)
		if err != nil {
			return 0, 0, nil, err
		}
		if v.SnapshotID != fromSnapshot {
			return 0, 0, nil, fmt.Errorf("instance %s got volume %s made from %q, want %s", r.InstanceID, v.VolumeID, v.SnapshotID, fromSnapshot)
		}
	}
	return r.Took, rep.Applied, upSteps(in), nil
}

// upStepsLine matches the values of the agent's "up steps" log line.
var upStepsLine = regexp.MustCompile(`\b(imds|device|mount|catchUp|hook|total|describeVolumesCalls)=([0-9.e+-]+)`)

// upSteps reads the step timings of the instance's successful `up` from
// its log (nil when there is none).
func upSteps(in *harness.Instance) map[string]float64 {
	runs := in.Runs()
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		if len(r.Args) == 0 || r.Args[0] != "up" || r.ExitCode != 0 {
			continue
		}
		for _, line := range strings.Split(r.Stderr, "\n") {
			if !strings.Contains(line, `msg="up steps"`) {
				continue
			}
			out := map[string]float64{}
			for _, m := range upStepsLine.FindAllStringSubmatch(line, -1) {
				if v, err := strconv.ParseFloat(m[2], 64); err == nil {
					out[m[1]] = v
				}
			}
			return out
		}
	}
	return nil
}

func orBlank(s string) string {
	if s == "" {
		return "blank"
	}
	return s
}

// waitHead waits until the journal head reaches seq.
func waitHead(ctx context.Context, c *harness.Cluster, seq int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := c.Settle(ctx); err != nil {
			return err
		}
		head, err := c.Store.Head(ctx, c.Opts.Pool)
		if err != nil {
			return err
		}
		if head >= seq {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("journal head %d after %s; want %d", head, timeout, seq)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitInUse waits until the lifecycle Lambda has recorded the volume of
// every in-service instance in use. Its one look at the attachment comes
// 5–10 s after AttachVolume (pool.Timing.AttachPoll), while the agent
// learns of it from its device at once, so a launch is in service before
// its record says in-use; the snapshot Lambda takes only in-use volumes.
func waitInUse(ctx context.Context, c *harness.Cluster, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		vols, err := c.Store.ListVolumes(ctx, c.Opts.Pool)
		if err != nil {
			return err
		}
		inService := map[string]bool{}
		for _, id := range c.Group.InService() {
			inService[id] = true
		}
		var pending []string
		for _, v := range vols {
			if inService[v.InstanceID] && v.State != store.VolumeInUse {
				pending = append(pending, fmt.Sprintf("%s of %s (%s)", v.VolumeID, v.InstanceID, v.State))
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("volumes of in-service instances not recorded in use after %s: %s", within, strings.Join(pending, ", "))
		}
		if err := awserr.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// newestSnapshot is the pool's newest completed snapshot record.
func newestSnapshot(ctx context.Context, c *harness.Cluster) (store.Snapshot, error) {
	snaps, err := c.Store.ListSnapshots(ctx, c.Opts.Pool)
	if err != nil {
		return store.Snapshot{}, err
	}
	var best store.Snapshot
	for _, s := range snaps {
		if s.State == store.SnapshotCompleted && (best.SnapshotID == "" || s.Seq > best.Seq) {
			best = s
		}
	}
	if best.SnapshotID == "" {
		return best, fmt.Errorf("no completed snapshot in the table (records: %+v)", snaps)
	}
	return best, nil
}
