package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/agent"
	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

// ScaleOutOptions size the mass scale-out benchmark.
type ScaleOutOptions struct {
	WorkDir     string
	Instances   int           // launched at once
	AttachDelay time.Duration // EBS attaching → attached
	DynamoDBURL string
	// SkipLimited leaves out the runs under EC2's default Describe*
	// bucket (they are not solved: they failed after 14 min).
	SkipLimited bool
	Log         func(format string, args ...any)
}

// ScaleOutRun is one agent design and one lifecycle Lambda under one EC2
// request limit.
type ScaleOutRun struct {
	Design string `json:"design"` // agents: "device watch" or "2 s polling (before issue 17)"
	// Lambda is the Describe pacing of the lifecycle Lambda and of the
	// agents' throttled calls: lambdaNow (this commit's) or lambdaBefore
	// (the attach wait's looks after 1–2 s, 2–4 s, 4–8 s …, and Lambda
	// reads and agent waits that gave up after the API backoff's 8
	// throttled tries), by pool.Timing and agent.Deps.ThrottleWait.
	Lambda string `json:"lambda,omitempty"`
	// Limited: EC2's default Describe* bucket (100, 20/s) was in force.
	Limited bool `json:"limited"`
	// Describe* calls (DescribeVolumes, DescribeInstances), throttled
	// ones included.
	AgentCalls  int `json:"agentDescribeCalls"`
	LambdaCalls int `json:"lambdaDescribeCalls"`
	Throttled   int `json:"throttled"`
	// LambdaCallsPerLaunch is LambdaCalls over the launches.
	LambdaCallsPerLaunch Num `json:"lambdaDescribeCallsPerLaunch"`
	// Per boot: the agent's DescribeVolumes calls (booted instances).
	AgentCallsPerBoot Sample `json:"agentCallsPerBoot"`
	// Calls per second: the busiest one-second window and the mean over
	// the scale-out (first event → last agent with its device).
	PeakPerSecond Num `json:"peakDescribePerSecond"`
	MeanPerSecond Num `json:"meanDescribePerSecond"`
	AllReady      Num `json:"allReadySeconds"`
	// LambdaSeconds: event → the lifecycle Lambda recorded the volume
	// in use, median over the launches that did.
	LambdaSeconds Num `json:"lambdaAttachSecondsMedian"`
	// LambdaErrors: lifecycle invocations that failed (and were retried).
	LambdaErrors int `json:"lambdaErrors"`
	// FailedLaunches: launches whose every invocation failed (Lambda's two
	// asynchronous retries included): on AWS the hook times out, the
	// instance is abandoned. Their agents are stopped.
	FailedLaunches int `json:"failedLaunches"`
}

// ScaleOutResult is the mass scale-out benchmark.
type ScaleOutResult struct {
	Instances   int           `json:"instances"`
	AttachDelay Num           `json:"attachDelaySeconds"`
	Runs        []ScaleOutRun `json:"runs"`
	Setup       string        `json:"setup"`
}

// callLog records when each Describe* call was made, by whom.
type callLog struct {
	mu    sync.Mutex
	start time.Time
	at    map[string][]time.Duration // "agent", "lambda" → call times since start
}

func (c *callLog) add(who string) {
	c.mu.Lock()
	c.at[who] = append(c.at[who], time.Since(c.start))
	c.mu.Unlock()
}

// describeLog counts the Describe* calls of one side and passes every
// call on to the fake.
type describeLog struct {
	*awsfake.EC2
	log *callLog
	who string
}

func (d describeLog) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, o ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	d.log.add(d.who)
	return d.EC2.DescribeVolumes(ctx, in, o...)
}

func (d describeLog) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	d.log.add(d.who)
	return d.EC2.DescribeInstances(ctx, in, o...)
}

// RunScaleOut launches Instances instances at once into a pool of as many
// idle volumes and measures the EC2 Describe load: each launch runs the
// lifecycle Lambda's code (pool.Launch: claim on DynamoDB Local, attach
// and wait on the awsfake EC2, whose attachments take AttachDelay), and
// each instance's agent waits for its volume at the same time, by its
// device (the by-id link and serial a publisher makes when the fake's
// attachment completes; regular files, no loop devices). Two agent
// designs: the device watch of `volsd-agent up`
// (agent.WaitForVolume) and the 2 s DescribeVolumes polling it replaced
// (legacyAgentWait, the removed loop). Each without a request limit and
// with EC2's default Describe* bucket.
func RunScaleOut(ctx context.Context, o ScaleOutOptions) (*ScaleOutResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	res := &ScaleOutResult{Instances: o.Instances, AttachDelay: Num(o.AttachDelay.Seconds()), Setup: fmt.Sprintf(
		"%d instances launched at once into a pool of %d idle volumes in 2 AZs; every launch event goes at once to the lifecycle Lambda's code (`pool.Launch`: DynamoDB Local, the awsfake EC2 whose attachments take %s), and every instance's agent waits for its volume at the same time; "+
			"a publisher makes each instance's by-id link and sysfs serial when the fake's attachment completes (regular files, no loop devices). "+
			"Agents: the device watch of `volsd-agent up` (`agent.WaitForVolume`) or the 2 s DescribeVolumes polling it replaced; each with no request limit and with EC2's default bucket for Describe* actions (100, refilled 20/s; RequestLimitExceeded beyond).",
		o.Instances, o.Instances, o.AttachDelay)}
	raw, err := ddbClient(ctx, o.DynamoDBURL)
	if err != nil {
		return nil, err
	}
	for _, limited := range []bool{false, true} {
		if limited && o.SkipLimited {
			o.Log("runs under EC2's default Describe* bucket skipped (-scaleout-limited=false)")
			continue
		}
		// The device watch with the lifecycle Lambda before and now, side
		// by side; the polling agents (unlimited only: under the limit
		// they only throttle) with this Lambda.
		type row struct{ design, lambda string }
		rows := []row{{designWatch, lambdaBefore}, {designWatch, lambdaNow}}
		if !limited {
			rows = append(rows, row{designPolling, lambdaNow})
		}
		for _, rw := range rows {
			r, err := scaleOutRun(ctx, o, raw, rw.design, rw.lambda, limited)
			if err != nil {
				return nil, fmt.Errorf("%s, lambda %s (limited %v): %w", rw.design, rw.lambda, limited, err)
			}
			res.Runs = append(res.Runs, *r)
			o.Log("%-30s lambda %-6s limit=%-5v agents %5d Describe calls (%.1f per boot, max %.0f), lambda %5d (%.2f per launch, %d failed invocations, %d failed launches), throttled %5d; peak %4.0f/s, mean %5.1f/s; all ready after %.1f s, attached after %.1f s (median)",
				rw.design, rw.lambda, limited, r.AgentCalls, float64(r.AgentCallsPerBoot.Median), float64(r.AgentCallsPerBoot.Max), r.LambdaCalls, float64(r.LambdaCallsPerLaunch), r.LambdaErrors, r.FailedLaunches, r.Throttled,
				float64(r.PeakPerSecond), float64(r.MeanPerSecond), float64(r.AllReady), float64(r.LambdaSeconds))
		}
	}
	return res, nil
}

const (
	designWatch   = "device watch"
	designPolling = "2 s polling (before issue 17)"
	lambdaNow     = "now"
	lambdaBefore  = "before"
)

// lambdaTiming is the lifecycle Lambda's timing of a row and the agents'
// pacing of throttled calls: this commit's (pool.DefaultTiming,
// agent.DefaultThrottleWait) or the one before it (lambdaBefore): the
// attach wait looked first after 1–2 s, then 2 s × 2 up to 15 s, and a
// throttled read gave up after the API backoff's tries, in the Lambda and
// in the agent.
func lambdaTiming(lambda string) (pool.Timing, awserr.Backoff) {
	t := pool.DefaultTiming()
	if lambda == lambdaBefore {
		t.AttachPoll = awserr.Backoff{Initial: 2 * time.Second, Factor: 2, Max: 15 * time.Second}
		t.Throttled = t.API
		return t, awserr.DefaultBackoff
	}
	return t, agent.DefaultThrottleWait
}

func scaleOutRun(ctx context.Context, o ScaleOutOptions, raw *dynamodb.Client, design, lambda string, limited bool) (*ScaleOutRun, error) {
	const poolName = "scaleout"
	n := o.Instances
	table := "volsd-bench-scaleout-" + randomName()
	if err := store.CreateTable(ctx, raw, table); err != nil {
		return nil, err
	}
	st := store.New(raw, table)
	cfg := awsfake.EC2Config{Region: region, AZs: benchAZs, AttachDelay: o.AttachDelay}
	if limited {
		cfg.DescribeLimit = awsfake.DefaultDescribeLimit
	}
	fake := awsfake.NewEC2(cfg)
	fakeASG := awsfake.NewAutoScaling(awsfake.AutoScalingConfig{Region: region, Account: "123456789012"})
	group := "volsd-bench-scaleout"
	fakeASG.AddGroup(awsfake.GroupSpec{Name: group, AZs: benchAZs, MinSize: 0, MaxSize: int32(2 * n), Desired: int32(n)})

	// The pool: n idle volumes, n instances (half per AZ).
	tags := map[string]string{events.TagPool: poolName, events.TagName: "volsd-" + poolName}
	ids := make([]string, n)
	recs := make(chan store.Volume, n)
	for i := 0; i < n; i++ {
		az := benchAZs[i%len(benchAZs)]
		vol := fake.AddVolume(awsfake.VolumeSpec{AZ: az, SizeGiB: 8, Tags: tags})
		recs <- store.Volume{Pool: poolName, VolumeID: vol, State: store.VolumeIdle, AZ: az, SizeGiB: 8, CreatedAt: time.Now().Add(-time.Hour).UTC()}
		ids[i] = fake.AddInstance(awsfake.InstanceSpec{AZ: az, Tags: map[string]string{events.TagPool: poolName}})
	}
	close(recs)
	var seedErr error
	var seedMu sync.Mutex
	var seed sync.WaitGroup
	for w := 0; w < 16; w++ {
		seed.Add(1)
		go func() {
			defer seed.Done()
			for v := range recs {
				if _, err := st.PutVolume(ctx, v); err != nil {
					seedMu.Lock()
					seedErr = err
					seedMu.Unlock()
				}
			}
		}()
	}
	seed.Wait()
	if seedErr != nil {
		return nil, fmt.Errorf("seed the table: %w", seedErr)
	}
	dir, err := os.MkdirTemp(o.WorkDir, "scaleout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	trees := map[string]string{} // instance → its /dev
	for _, id := range ids {
		trees[id] = filepath.Join(dir, id, "dev")
		if err := os.MkdirAll(filepath.Join(trees[id], "disk", "by-id"), 0o755); err != nil {
			return nil, err
		}
	}

	calls := &callLog{start: time.Now(), at: map[string][]time.Duration{}}
	t, agentThrottle := lambdaTiming(lambda)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := pool.New(pool.Config{
		Pool: poolName, Table: table, Group: group, IdlePerAZ: 0, SizeGiB: 8, VolumeType: "gp3",
		ReleasePolicy: pool.PolicyRecycle, DocRelease: events.DefaultDocumentName(events.DocRelease), RefreshBehind: 500, RefreshAge: 168 * time.Hour, RefreshMax: 2,
	}, pool.Deps{Store: st, EC2: describeLog{fake, calls, "lambda"}, AutoScaling: fakeASG, Log: discard, Timing: &t})

	o.Log("%s, lambda %s (limited %v): %d volumes, records and instances ready; launching", design, lambda, limited, n)
	runCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	published := make(chan struct{})
	go func() { defer close(published); publishAttached(runCtx, fake, trees) }()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	perBoot := make([]float64, n)
	booted := make([]bool, n)
	lambdaErrors, failedLaunches := 0, 0
	var ready, attached []time.Duration
	for i, id := range ids {
		wg.Add(2)
		agentCtx, stopAgent := context.WithCancel(runCtx)
		launchFailed := false
		go func() {
			defer wg.Done()
			a := events.LifecycleAction{
				Origin: events.LocationEC2, Destination: events.LocationASG, LifecycleActionToken: randomName(), AutoScalingGroupName: group,
				LifecycleHookName: "volsd-launch", EC2InstanceID: id, LifecycleTransition: events.TransitionLaunching,
			}
			// A failed invocation is retried as Lambda retries an
			// asynchronous one (twice; after 5 s here instead of 1–2 min).
			// Each has the function's deadline, less the handler's margin.
			for try := 0; ; try++ {
				ictx, cancel := context.WithTimeout(runCtx, pool.FunctionTimeout-t.DeadlineMargin)
				err := p.Launch(ictx, a)
				cancel()
				if err == nil {
					break
				}
				mu.Lock()
				lambdaErrors++
				mu.Unlock()
				if runCtx.Err() != nil {
					fail(fmt.Errorf("launch %s: %w", id, err))
					return
				}
				if try == 2 || awserr.Sleep(runCtx, 5*time.Second) != nil {
					// Abandoned: its agent waits for nothing.
					mu.Lock()
					failedLaunches++
					launchFailed = true
					mu.Unlock()
					stopAgent()
					return
				}
			}
			mu.Lock()
			attached = append(attached, time.Since(calls.start))
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			defer stopAgent()
			agentEC2 := describeLog{fake, calls, "agent"}
			var got int
			var err error
			ag := agent.New(agent.Config{Pool: poolName, DeviceRoot: filepath.Join(trees[id], "disk", "by-id"), SysfsRoot: filepath.Join(filepath.Dir(trees[id]), "sys"),
				DeviceWait: agent.Duration(9 * time.Minute)}, agent.Deps{EC2: agentEC2, Logger: discard, ThrottleWait: agentThrottle})
			// A wait that gives up on throttling exits retryable; systemd
			// starts up again (RestartSec=10 in the unit).
			for {
				n := 0
				if design == designWatch {
					_, _, n, err = ag.WaitForVolume(agentCtx, id)
				} else {
					n, err = legacyAgentWait(agentCtx, agentEC2, poolName, id)
				}
				got += n
				if err == nil || !awserr.IsThrottle(err) || agentCtx.Err() != nil {
					break
				}
				if awserr.Sleep(agentCtx, 10*time.Second) != nil {
					break
				}
			}
			mu.Lock()
			stopped := launchFailed
			mu.Unlock()
			if err != nil && stopped {
				return // the launch was abandoned
			}
			if err != nil {
				fail(fmt.Errorf("agent of %s: %w", id, err))
				return
			}
			mu.Lock()
			booted[i] = true
			perBoot[i] = float64(got)
			ready = append(ready, time.Since(calls.start))
			mu.Unlock()
		}()
	}
	wg.Wait()
	end := time.Since(calls.start)
	cancel()
	<-published
	if firstErr != nil {
		return nil, firstErr
	}
	var bootCalls []float64
	for i, b := range booted {
		if b {
			bootCalls = append(bootCalls, perBoot[i])
		}
	}
	r := &ScaleOutRun{Design: design, Lambda: lambda, Limited: limited, AgentCalls: len(calls.at["agent"]), LambdaCalls: len(calls.at["lambda"]),
		Throttled: fake.Throttled("DescribeVolumes") + fake.Throttled("DescribeInstances"), AgentCallsPerBoot: Counts(intsOf(bootCalls)),
		LambdaErrors: lambdaErrors, FailedLaunches: failedLaunches}
	r.LambdaCallsPerLaunch = Num(float64(r.LambdaCalls) / float64(n))
	sort.Slice(ready, func(i, j int) bool { return ready[i] < ready[j] })
	sort.Slice(attached, func(i, j int) bool { return attached[i] < attached[j] })
	if len(ready) > 0 {
		end = ready[len(ready)-1]
		r.AllReady = Num(end.Seconds())
	} else {
		r.AllReady = Num(math.NaN())
	}
	r.LambdaSeconds = Num(math.NaN())
	if len(attached) > 0 {
		r.LambdaSeconds = Num(attached[len(attached)/2].Seconds())
	}
	perSecond := map[int]int{}
	for _, ts := range calls.at {
		for _, at := range ts {
			perSecond[int(at/time.Second)]++
		}
	}
	peak := 0
	for _, c := range perSecond {
		peak = max(peak, c)
	}
	r.PeakPerSecond = Num(peak)
	r.MeanPerSecond = Num(float64(r.AgentCalls+r.LambdaCalls) / end.Seconds())
	return r, nil
}

func intsOf(fs []float64) []int {
	out := make([]int, len(fs))
	for i, f := range fs {
		out[i] = int(f)
	}
	return out
}

// publishAttached plays the NVMe driver and udev of every instance: when
// the fake shows a volume attached to an instance, its by-id link (to a
// regular file standing for nvme1n1) and sysfs serial appear.
func publishAttached(ctx context.Context, fake *awsfake.EC2, trees map[string]string) {
	done := map[string]bool{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(done) < len(trees) {
		for _, v := range fake.Volumes() {
			devDir, ok := trees[v.Instance]
			if !ok || done[v.ID] || v.Attachment != ec2types.VolumeAttachmentStateAttached {
				continue
			}
			serial := "vol" + v.ID[len("vol-"):]
			sysDir := filepath.Join(filepath.Dir(devDir), "sys", "class", "block", "nvme1n1", "device")
			if os.MkdirAll(sysDir, 0o755) != nil || os.WriteFile(filepath.Join(sysDir, "serial"), []byte(serial+"\n"), 0o644) != nil ||
				os.WriteFile(filepath.Join(devDir, "nvme1n1"), nil, 0o600) != nil ||
				os.Symlink("../../nvme1n1", filepath.Join(devDir, "disk", "by-id", "nvme-Amazon_Elastic_Block_Store_"+serial)) != nil {
				continue
			}
			done[v.ID] = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// legacyAgentWait is the wait `volsd-agent up` made before issue 17,
// reproduced to measure its load: DescribeVolumes by attachment and pool
// tag (retried with awserr.DefaultBackoff on throttling), every 2 s until
// the pool volume shows attached; the device is then there. It returns
// the calls made.
func legacyAgentWait(ctx context.Context, c describeLog, poolName, instance string) (int, error) {
	in := &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{instance}},
		{Name: aws.String("tag:" + events.TagPool), Values: []string{poolName}},
	}}
	calls := 0
	for {
		var out *ec2.DescribeVolumesOutput
		err := awserr.Retry(ctx, awserr.DefaultBackoff, func(ctx context.Context) error {
			calls++
			var err error
			out, err = c.DescribeVolumes(ctx, in)
			return err
		})
		if err != nil {
			return calls, err
		}
		for _, v := range out.Volumes {
			for _, at := range v.Attachments {
				if aws.ToString(at.InstanceId) == instance && at.State == ec2types.VolumeAttachmentStateAttached {
					return calls, nil
				}
			}
		}
		if err := awserr.Sleep(ctx, 2*time.Second); err != nil {
			return calls, err
		}
	}
}
