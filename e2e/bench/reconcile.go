package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"golang.org/x/sync/errgroup"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

// ReconcileOptions size the reconcile benchmark.
type ReconcileOptions struct {
	Records []int // volume records per case
	// Journal is how many journal entries (with their request records)
	// the table holds besides the pool's volumes and instances.
	Journal     int
	Runs        int
	DynamoDBURL string
	Log         func(format string, args ...any)
}

// ReconcileCase is one pool size.
type ReconcileCase struct {
	Records   int `json:"records"`
	InUse     int `json:"inUse"`
	Idle      int `json:"idle"`
	Instances int `json:"instanceRecords"`
	// Per run.
	DynamoDBReads  Sample `json:"dynamodbReads"`  // GetItem + Query pages
	DynamoDBWrites Sample `json:"dynamodbWrites"` // steady state: 0
	ItemsRead      Sample `json:"itemsRead"`
	ReadUnits      Sample `json:"readCapacityUnits"`
	EC2Calls       Sample `json:"ec2Calls"`
	AutoScaling    Sample `json:"autoScalingCalls"`
	Seconds        Sample `json:"seconds"`
	// EC2Seconds is the time spent inside the in-memory EC2 (small: an
	// indexed fake); the rest is volsd's own code and DynamoDB Local.
	EC2Seconds Sample `json:"ec2FakeSeconds"`
	// Calls is the median count of each operation per run.
	Calls map[string]Num `json:"calls"`
	// Scans counts DynamoDB Scan requests (none: the store cannot scan).
	Scans int `json:"scans"`
	// The baseline: one full Scan of the same table (what a controller
	// that lists "all volumes" by scanning reads), strongly consistent like
	// the store's queries, per run.
	ScanReads   Sample `json:"scanBaselineReads"`
	ScanItems   Sample `json:"scanBaselineItems"`
	ScanUnits   Sample `json:"scanBaselineReadUnits"`
	ScanSeconds Sample `json:"scanBaselineSeconds"`
}

// ReconcileResult is the reconcile benchmark.
type ReconcileResult struct {
	Cases          []ReconcileCase `json:"cases"`
	Runs           int             `json:"runs"`
	Setup          string          `json:"setup"`
	JournalEntries int             `json:"journalEntries"`
}

const reconcileIdlePerAZ = 2

var benchAZs = []string{region + "a", region + "b"}

// RunReconcile measures reconcile runs on pools in a steady state: for N
// volume records, 2 idle volumes in each of 2 AZs (the target) and N-4
// in use by running instances, each with its instance record; EC2 (an
// indexed in-memory fleet, fleetEC2) agrees with the table, so a run reads
// everything and changes nothing (checked). DynamoDB is DynamoDB Local
// behind a counting wrapper of the store's interface; EC2 and Auto Scaling
// (awsfake) calls are counted by wrappers of the control plane's
// interfaces.
func RunReconcile(ctx context.Context, o ReconcileOptions) (*ReconcileResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Runs <= 0 {
		o.Runs = 5
	}
	res := &ReconcileResult{Runs: o.Runs, JournalEntries: o.Journal, Setup: fmt.Sprintf("steady pool: %d idle volumes per AZ in %d AZs, the rest in use by running instances; EC2 agrees with the table", reconcileIdlePerAZ, len(benchAZs))}
	raw, err := ddbClient(ctx, o.DynamoDBURL)
	if err != nil {
		return nil, err
	}
	for _, n := range o.Records {
		c, err := reconcileCase(ctx, raw, n, o)
		if err != nil {
			return nil, fmt.Errorf("%d records: %w", n, err)
		}
		res.Cases = append(res.Cases, *c)
		o.Log("%6d records: %3.0f DynamoDB reads (%5.0f items, %6.1f RCU), %3.0f EC2 calls, %6.3f s per run (%6.3f s in the EC2 fake); a Scan: %3.0f reads, %5.0f items, %6.1f RCU",
			n, float64(c.DynamoDBReads.Median), float64(c.ItemsRead.Median), float64(c.ReadUnits.Median), float64(c.EC2Calls.Median),
			float64(c.Seconds.Median), float64(c.EC2Seconds.Median), float64(c.ScanReads.Median), float64(c.ScanItems.Median), float64(c.ScanUnits.Median))
	}
	return res, nil
}

func reconcileCase(ctx context.Context, raw *dynamodb.Client, n int, o ReconcileOptions) (*ReconcileCase, error) {
	const poolName = "bench"
	idle := reconcileIdlePerAZ * len(benchAZs)
	if n < idle {
		return nil, fmt.Errorf("need at least %d records", idle)
	}
	table := "volsd-bench-reconcile-" + randomName()
	if err := store.CreateTable(ctx, raw, table); err != nil {
		return nil, err
	}
	plain := store.New(raw, table)
	use := &DynamoDBUse{}
	counted := store.New(CountingDynamoDB{Inner: raw, Use: use}, table)

	fleet := newFleetEC2()
	fakeASG := awsfake.NewAutoScaling(awsfake.AutoScalingConfig{Region: region, Account: "123456789012"})
	group := "volsd-bench-web"
	fakeASG.AddGroup(awsfake.GroupSpec{Name: group, AZs: benchAZs, MinSize: 0, MaxSize: int32(n + 10), Desired: int32(n - idle)})
	tags := map[string]string{events.TagPool: poolName, events.TagName: "volsd-" + poolName}

	// EC2 first, then the records, many at once.
	type rec struct {
		v  store.Volume
		in *store.Instance
	}
	recs := make([]rec, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		az := benchAZs[i%len(benchAZs)]
		vol, inst := fleet.add(az, 8, tags, i >= idle)
		v := store.Volume{Pool: poolName, VolumeID: vol, State: store.VolumeIdle, AZ: az, Seq: 0, SizeGiB: 8, CreatedAt: time.Now().Add(-time.Hour).UTC()}
		if inst == "" {
			recs = append(recs, rec{v: v})
			continue
		}
		v.State, v.InstanceID, v.Device, v.Seq = store.VolumeInUse, inst, "/dev/sdf", 42
		recs = append(recs, rec{v: v, in: &store.Instance{Pool: poolName, InstanceID: inst, VolumeID: vol, AZ: az, State: store.InstanceReady, Seq: 42}})
	}
	var seed errgroup.Group
	seed.SetLimit(16)
	for _, r := range recs {
		seed.Go(func() error {
			_, err := plain.PutVolume(ctx, r.v)
			if err == nil && r.in != nil {
				_, err = plain.PutInstance(ctx, *r.in)
			}
			return err
		})
	}
	if err := seed.Wait(); err != nil {
		return nil, fmt.Errorf("seed the table: %w", err)
	}
	// A journal, as a pool that has been pushed to has: entries and their
	// request records (in the pool's partition, beside the volumes).
	var journal []events.JournalEntry
	for i := 0; i < o.Journal; i++ {
		journal = append(journal, events.JournalEntry{Op: events.OpPut, Path: fmt.Sprintf("site/page-%04d.html", i), RequestID: fmt.Sprintf("bench-%s-%d", table, i),
			Blob: &events.Blob{SHA256: fmt.Sprintf("%064x", i+1), Size: 1000, Mode: 0o644}})
	}
	if _, err := plain.AppendBatch(ctx, poolName, journal); len(journal) > 0 && err != nil {
		return nil, fmt.Errorf("seed the journal: %w", err)
	}
	o.Log("%d volume records, %d instance records and %d journal entries seeded in %s", n, n-idle, o.Journal, time.Since(start).Round(100*time.Millisecond))

	ec2Calls, asgCalls := &Calls{}, &Calls{}
	t := pool.DefaultTiming()
	p := pool.New(pool.Config{
		Pool: poolName, Table: table, Group: group, IdlePerAZ: reconcileIdlePerAZ, SizeGiB: 8, VolumeType: "gp3",
		ReleasePolicy: pool.PolicyRecycle, DocRelease: events.DefaultDocumentName(events.DocRelease),
		RefreshBehind: 500, RefreshAge: 168 * time.Hour, RefreshMax: 2,
	}, pool.Deps{
		Store: counted, EC2: CountingEC2{Inner: fleet, Calls: ec2Calls}, AutoScaling: CountingAutoScaling{Inner: fakeASG, Calls: asgCalls},
		Timing: &t,
	})
	c := &ReconcileCase{Records: n, InUse: n - idle, Idle: idle, Instances: n - idle, Calls: map[string]Num{}}
	var reads, writes, items, asg, ec2n []int
	var rcu []float64
	var secs, ec2Secs []time.Duration
	perOp := map[string][]float64{}
	for run := 0; run < o.Runs; run++ {
		use.Reset()
		ec2Calls.Reset()
		asgCalls.Reset()
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		rep, err := p.Reconcile(rctx)
		cancel()
		d := time.Since(start)
		if err != nil {
			return nil, fmt.Errorf("reconcile run %d: %w", run+1, err)
		}
		if rep.Changed() || rep.Errors > 0 || !rep.Complete {
			return nil, fmt.Errorf("reconcile run %d did not find the pool steady: %+v", run+1, rep)
		}
		for az, k := range rep.Idle {
			if k != reconcileIdlePerAZ {
				return nil, fmt.Errorf("reconcile run %d: %d idle volumes in %s, want %d", run+1, k, az, reconcileIdlePerAZ)
			}
		}
		ir, _, ru, _ := use.Snapshot()
		reads, writes, items, rcu = append(reads, use.Reads()), append(writes, use.Writes()), append(items, ir), append(rcu, ru)
		ec2n, asg = append(ec2n, ec2Calls.Total(nil)), append(asg, asgCalls.Total(nil))
		secs, ec2Secs = append(secs, d), append(ec2Secs, ec2Calls.Elapsed())
		c.Scans += use.Calls.Get("DynamoDB.Scan")
		all := map[string]int{}
		for _, calls := range []*Calls{&use.Calls, ec2Calls, asgCalls} {
			for k, v := range calls.Snapshot() {
				all[k] += v
			}
		}
		for k := range all {
			if _, ok := perOp[k]; !ok {
				perOp[k] = make([]float64, run) // zero in earlier runs
			}
		}
		for k := range perOp {
			perOp[k] = append(perOp[k], float64(all[k]))
		}
	}
	// The baseline: scan the whole table, as often.
	var scanReads, scanItems []int
	var scanRCU []float64
	var scanSecs []time.Duration
	for run := 0; run < o.Runs; run++ {
		start := time.Now()
		in := &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true), ReturnConsumedCapacity: ddbtypes.ReturnConsumedCapacityTotal}
		pages, items, units := 0, 0, 0.0
		for {
			out, err := raw.Scan(ctx, in)
			if err != nil {
				return nil, fmt.Errorf("scan baseline: %w", err)
			}
			pages++
			items += int(out.Count)
			if out.ConsumedCapacity != nil && out.ConsumedCapacity.CapacityUnits != nil {
				units += *out.ConsumedCapacity.CapacityUnits
			}
			if len(out.LastEvaluatedKey) == 0 {
				break
			}
			in.ExclusiveStartKey = out.LastEvaluatedKey
		}
		scanSecs, scanReads, scanItems, scanRCU = append(scanSecs, time.Since(start)), append(scanReads, pages), append(scanItems, items), append(scanRCU, units)
	}
	c.ScanReads, c.ScanItems, c.ScanUnits, c.ScanSeconds = Counts(scanReads), Counts(scanItems), NewSample("RCU", scanRCU), Seconds(scanSecs)

	c.DynamoDBReads, c.DynamoDBWrites, c.ItemsRead = Counts(reads), Counts(writes), Counts(items)
	c.ReadUnits = NewSample("RCU", rcu)
	c.EC2Calls, c.AutoScaling = Counts(ec2n), Counts(asg)
	c.Seconds, c.EC2Seconds = Seconds(secs), Seconds(ec2Secs)
	ops := make([]string, 0, len(perOp))
	for k := range perOp {
		ops = append(ops, k)
	}
	sort.Strings(ops)
	for _, k := range ops {
		c.Calls[k] = Num(Median(perOp[k]))
	}
	if math.IsNaN(float64(c.DynamoDBReads.Median)) {
		return nil, fmt.Errorf("no runs")
	}
	return c, nil
}
