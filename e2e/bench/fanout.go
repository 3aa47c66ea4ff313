package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"golang.org/x/sync/errgroup"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/store"
)

// FanoutOptions size the push fan-out benchmark.
type FanoutOptions struct {
	Pools       []int // instances per case
	Runs        int   // pushes per case
	DynamoDBURL string
	Log         func(format string, args ...any)
}

// FanoutCase is one pool size; every figure is per push.
type FanoutCase struct {
	Instances int `json:"instances"`
	// The push Lambda's handler (one SQS batch of one request).
	SendCommand    Sample         `json:"sendCommandCalls"`
	PushAWSCalls   Sample         `json:"pushAwsCalls"` // S3 + SSM
	PushDynamoDB   Sample         `json:"pushDynamodbOps"`
	PushMs         Sample         `json:"pushHandlerMs"`
	PushCalls      map[string]Num `json:"pushCalls"`
	ReportEvents   Sample         `json:"reportEvents"` // status-change events (InProgress + final)
	ReportAWSCalls Sample         `json:"reportAwsCalls"`
	ReportDynamoDB Sample         `json:"reportDynamodbOps"`
	// ReportMs is the summed handler time of every report invocation;
	// ReportMsPerInstance divides it by the pool size.
	ReportMs            Sample         `json:"reportHandlerMsTotal"`
	ReportMsPerInstance Sample         `json:"reportHandlerMsPerInstance"`
	ReportCalls         map[string]Num `json:"reportCalls"`
	// Converged is the wall time from the push handler's start until every
	// instance record holds the new seq.
	ConvergedMs Sample `json:"convergedMs"`
	// The baseline: targeting the same command instance by instance, as a
	// design without tag targets must: list the pool's instances (a Query
	// of the table) and SendCommand with at most 50 InstanceIds per call.
	BaselineSendCommand Sample `json:"baselineSendCommandCalls"`
	BaselineDynamoDB    Sample `json:"baselineDynamodbReads"`
	BaselineMs          Sample `json:"baselineMs"`
	// ReportSSMReads are the report side's SSM reads per push when every
	// invocation's status event is read (GetCommandInvocation each, the
	// design before issue 23); ReportSSMReadsPaged when the command's one
	// final event is read in pages (ListCommandInvocations with Details,
	// 50 per call; GetCommandInvocation only for entries without a usable
	// report).
	ReportSSMReads      Sample `json:"reportSsmReads"`
	ReportSSMReadsPaged Sample `json:"reportSsmReadsPaged"`
}

// FanoutResult is the push fan-out benchmark.
type FanoutResult struct {
	Cases []FanoutCase `json:"cases"`
	Runs  int          `json:"runs"`
	Setup string       `json:"setup"`
}

// reportConcurrency is how many report invocations run at once (Lambda
// would scale out further; the per-invocation time is what is measured).
const reportConcurrency = 8

// RunFanout pushes one file at a time to pools of different sizes through
// the push Lambda's handler (push.Pusher.HandleSQS, one SQS message per
// batch) and handles every resulting status event with the report
// Lambda's handler (report.Reporter.HandleEvent). The store is over DynamoDB
// Local; S3 (the origin holding the blob) and SSM Run Command are the
// awsfake fakes; each instance's agent is stubbed: its invocation ends at
// once with the agent's JSON report of the new seq. Every call is counted
// by wrappers of the handlers' interfaces, and after each push every
// instance record must hold the new seq.
func RunFanout(ctx context.Context, o FanoutOptions) (*FanoutResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Runs <= 0 {
		o.Runs = 5
	}
	raw, err := ddbClient(ctx, o.DynamoDBURL)
	if err != nil {
		return nil, err
	}
	res := &FanoutResult{Runs: o.Runs, Setup: "push handler (SQS batch of 1 request) + report handler per status event; DynamoDB Local; awsfake S3 and SSM; agents stubbed to report"}
	for _, n := range o.Pools {
		c, err := fanoutCase(ctx, raw, n, o)
		if err != nil {
			return nil, fmt.Errorf("%d instances: %w", n, err)
		}
		res.Cases = append(res.Cases, *c)
		o.Log("%5d instances: %.0f SendCommand, %.0f AWS + %.0f DynamoDB calls in the push handler (%.1f ms); reports: %.0f AWS + %.0f DynamoDB calls, %.2f ms per instance; converged in %.0f ms",
			n, float64(c.SendCommand.Median), float64(c.PushAWSCalls.Median), float64(c.PushDynamoDB.Median), float64(c.PushMs.Median),
			float64(c.ReportAWSCalls.Median), float64(c.ReportDynamoDB.Median), float64(c.ReportMsPerInstance.Median), float64(c.ConvergedMs.Median))
	}
	return res, nil
}

func fanoutCase(ctx context.Context, raw *dynamodb.Client, n int, o FanoutOptions) (*FanoutCase, error) {
	const poolName, bucket = "bench", "volsd-bench-origin"
	doc := events.DefaultDocumentName(events.DocApply)
	table := "volsd-bench-fanout-" + randomName()
	if err := store.CreateTable(ctx, raw, table); err != nil {
		return nil, err
	}
	plain := store.New(raw, table)
	pushUse, reportUse := &DynamoDBUse{}, &DynamoDBUse{}
	pushStore := store.New(CountingDynamoDB{Inner: raw, Use: pushUse}, table)
	reportStore := store.New(CountingDynamoDB{Inner: raw, Use: reportUse}, table)

	// The pool's instances: records in the table, managed and tagged in SSM.
	fakeSSM := awsfake.NewSSM()
	fakeSSM.InvisibleReads = 0 // the event is handled after the invocation finished
	fakeSSM.AddDocument(doc, map[string]string{"upTo": `^[0-9]{1,20}$`})
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("i-%017x", 0xbe0000+i)
		fakeSSM.AddInstance(ids[i], map[string]string{events.TagPool: poolName})
	}
	if err := parallel(ctx, 16, len(ids), func(i int) error {
		_, err := plain.PutInstance(ctx, store.Instance{Pool: poolName, InstanceID: ids[i], AZ: benchAZs[i%2], State: store.InstanceReady})
		return err
	}); err != nil {
		return nil, fmt.Errorf("seed instances: %w", err)
	}
	// Stubbed agents: the invocation succeeds with the agent's report.
	fakeSSM.Runner = func(_ context.Context, inv awsfake.SSMInvocation) awsfake.SSMResult {
		upTo, _ := strconv.ParseInt(first(inv.Parameters["upTo"]), 10, 64)
		rep, _ := json.Marshal(events.AgentReport{Command: "apply", Instance: inv.InstanceID, Seq: upTo, Head: upTo, Applied: 1, Bytes: 13, Duration: 0.01})
		return awsfake.SSMResult{Status: ssmtypes.CommandInvocationStatusSuccess, Stdout: "applied\n" + string(rep) + "\n"}
	}
	pushSSM, reportSSM := &Calls{}, &Calls{}
	origin := awsfake.NewS3(bucket)
	pushS3 := &Calls{}

	pusher := push.NewPusher(push.Config{Pool: poolName, Bucket: bucket, DocApply: doc, MaxConcurrency: "50%", MaxErrors: "25%", MissingReceives: events.PushMaxReceiveCount},
		pushStore, CountingS3{Inner: origin, Calls: pushS3}, CountingSSM{Inner: fakeSSM, Calls: pushSSM}, nil, nil)
	reporter := report.NewReporter(report.Config{Pool: poolName, Documents: []string{doc}, InvocationWait: 20 * time.Second},
		reportStore, CountingSSM{Inner: fakeSSM, Calls: reportSSM}, nil, nil)

	// Report invocations: a pool of workers fed by SSM's status events.
	evs := make(chan []byte, 4*n+16)
	fakeSSM.OnEvent = func(raw []byte) { evs <- raw }
	// The paged design reads the command's final event (its own counter).
	cmdEvs := make(chan []byte, 16)
	fakeSSM.OnCommandEvent = func(raw []byte) { cmdEvs <- raw }
	pagedSSM := &Calls{}
	paged := report.NewReporter(report.Config{Pool: poolName, Documents: []string{doc}, InvocationWait: 20 * time.Second},
		reportStore, CountingSSM{Inner: fakeSSM, Calls: pagedSSM}, nil, nil)
	var ssmReads, ssmReadsPaged []int
	var repMu sync.Mutex
	var repTime time.Duration
	var repCount int
	var repErr error
	var wg sync.WaitGroup
	for w := 0; w < reportConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range evs {
				start := time.Now()
				err := reporter.HandleEvent(ctx, ev)
				d := time.Since(start)
				repMu.Lock()
				repTime += d
				repCount++
				if err != nil && repErr == nil {
					repErr = err
				}
				repMu.Unlock()
			}
		}()
	}
	defer func() {
		close(evs)
		wg.Wait()
	}()

	// The baseline's SSM: the same instances and document, no agents (its
	// invocations are only counted, never run).
	baseSSM := awsfake.NewSSM()
	baseSSM.AddDocument(doc, map[string]string{"upTo": `^[0-9]{1,20}$`})
	for _, id := range ids {
		baseSSM.AddInstance(id, map[string]string{events.TagPool: poolName})
	}
	baseUse := &DynamoDBUse{}
	baseStore := store.New(CountingDynamoDB{Inner: raw, Use: baseUse}, table)
	baseCalls := &Calls{}
	var baseSend, baseDDB []int
	var baseMs []time.Duration

	c := &FanoutCase{Instances: n, PushCalls: map[string]Num{}, ReportCalls: map[string]Num{}}
	var send, pushAWS, pushDDB, repEvents, repAWS, repDDB []int
	var pushMs, repMs, repPer, conv []time.Duration
	pushOps, repOps := map[string][]float64{}, map[string][]float64{}
	for run := 0; run < o.Runs; run++ {
		content := []byte(fmt.Sprintf("<p>push %d to %d instances</p>\n", run, n))
		sum := sha256.Sum256(content)
		sha := hex.EncodeToString(sum[:])
		if _, err := origin.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(events.BlobKey(sha)), Body: bytes.NewReader(content), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256}); err != nil {
			return nil, err
		}
		req := events.PushRequest{Version: events.PushVersion, RequestID: fmt.Sprintf("bench-%d-%d-%s", n, run, randomName()), Op: events.OpPut,
			Path: fmt.Sprintf("bench/push-%d.html", run), Blob: &events.Blob{SHA256: sha, Size: int64(len(content)), Mode: 0o644}}
		body, _ := json.Marshal(req)
		batch := lambdaevents.SQSEvent{Records: []lambdaevents.SQSMessage{{
			MessageId: fmt.Sprintf("msg-%d-%d", n, run), Body: string(body), EventSource: "aws:sqs",
			Attributes: map[string]string{"ApproximateReceiveCount": "1"},
		}}}
		pushUse.Reset()
		reportUse.Reset()
		pushSSM.Reset()
		pushS3.Reset()
		reportSSM.Reset()
		repMu.Lock()
		repTime, repCount = 0, 0
		repMu.Unlock()

		start := time.Now()
		resp, err := pusher.HandleSQS(ctx, batch)
		pd := time.Since(start)
		if err != nil || len(resp.BatchItemFailures) > 0 {
			return nil, fmt.Errorf("push %d: %v %+v", run+1, err, resp.BatchItemFailures)
		}
		head, err := plain.Head(ctx, poolName)
		if err != nil {
			return nil, err
		}
		// Every invocation emits InProgress and then Success: wait until
		// the report handler has taken all of them.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			repMu.Lock()
			done := repCount >= 2*n
			repMu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("push %d: %d of %d status events handled", run+1, repCount, 2*n)
			}
			time.Sleep(2 * time.Millisecond)
		}
		convergedAt := time.Since(start)
		fakeSSM.Wait()
		select {
		case ev := <-cmdEvs:
			pagedSSM.Reset()
			if err := paged.HandleEvent(ctx, ev); err != nil {
				return nil, fmt.Errorf("push %d: paged report: %w", run+1, err)
			}
			ssmReadsPaged = append(ssmReadsPaged, pagedSSM.Total(nil))
		case <-time.After(time.Minute):
			return nil, fmt.Errorf("push %d: no command status event", run+1)
		}
		if err := checkReported(ctx, plain, poolName, len(ids), head); err != nil {
			return nil, fmt.Errorf("push %d: %w", run+1, err)
		}
		repMu.Lock()
		if repErr != nil {
			repMu.Unlock()
			return nil, fmt.Errorf("report: %w", repErr)
		}
		rt, rc := repTime, repCount
		repMu.Unlock()

		send = append(send, pushSSM.Get("SSM.SendCommand"))
		pushAWS = append(pushAWS, pushSSM.Total(nil)+pushS3.Total(nil))
		pushDDB = append(pushDDB, pushUse.Calls.Total(nil))
		pushMs = append(pushMs, pd)
		repEvents = append(repEvents, rc)
		repAWS = append(repAWS, reportSSM.Total(nil))
		ssmReads = append(ssmReads, reportSSM.Get("SSM.GetCommandInvocation")+reportSSM.Get("SSM.ListCommandInvocations"))
		repDDB = append(repDDB, reportUse.Calls.Total(nil))
		repMs = append(repMs, rt)
		repPer = append(repPer, rt/time.Duration(n))
		conv = append(conv, convergedAt)
		collectOps(pushOps, run, &pushUse.Calls, pushSSM, pushS3)
		collectOps(repOps, run, &reportUse.Calls, reportSSM)

		baseUse.Reset()
		baseCalls.Reset()
		start = time.Now()
		if err := sendByInstanceIDs(ctx, baseStore, CountingSSM{Inner: baseSSM, Calls: baseCalls}, poolName, doc, head); err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		baseMs = append(baseMs, time.Since(start))
		baseSend, baseDDB = append(baseSend, baseCalls.Get("SSM.SendCommand")), append(baseDDB, baseUse.Reads())
	}
	c.BaselineSendCommand, c.BaselineDynamoDB, c.BaselineMs = Counts(baseSend), Counts(baseDDB), Millis(baseMs)
	c.SendCommand, c.PushAWSCalls, c.PushDynamoDB, c.PushMs = Counts(send), Counts(pushAWS), Counts(pushDDB), Millis(pushMs)
	c.ReportEvents, c.ReportAWSCalls, c.ReportDynamoDB = Counts(repEvents), Counts(repAWS), Counts(repDDB)
	c.ReportMs, c.ReportMsPerInstance, c.ConvergedMs = Millis(repMs), Millis(repPer), Millis(conv)
	c.ReportSSMReads, c.ReportSSMReadsPaged = Counts(ssmReads), Counts(ssmReadsPaged)
	for k, v := range pushOps {
		c.PushCalls[k] = Num(Median(v))
	}
	for k, v := range repOps {
		c.ReportCalls[k] = Num(Median(v))
	}
	return c, nil
}

// sendByInstanceIDs is the baseline fan-out: list the pool's instances and
// send the command to them by ID, at most 50 per SendCommand (the API's
// limit for InstanceIds).
func sendByInstanceIDs(ctx context.Context, st *store.Store, sender CountingSSM, poolName, doc string, upTo int64) error {
	insts, err := st.ListInstances(ctx, poolName)
	if err != nil {
		return err
	}
	var ids []string
	for _, in := range insts {
		if in.State == store.InstanceReady {
			ids = append(ids, in.InstanceID)
		}
	}
	for len(ids) > 0 {
		k := min(len(ids), 50)
		if _, err := sender.SendCommand(ctx, &ssm.SendCommandInput{
			DocumentName: aws.String(doc), InstanceIds: ids[:k],
			Parameters: map[string][]string{"upTo": {strconv.FormatInt(upTo, 10)}},
		}); err != nil {
			return err
		}
		ids = ids[k:]
	}
	return nil
}

// collectOps appends this run's count of every operation to per (zero
// for earlier runs where it did not appear).
func collectOps(per map[string][]float64, run int, calls ...*Calls) {
	all := map[string]int{}
	for _, c := range calls {
		for k, v := range c.Snapshot() {
			all[k] += v
		}
	}
	for k := range all {
		if _, ok := per[k]; !ok {
			per[k] = make([]float64, run)
		}
	}
	keys := make([]string, 0, len(per))
	for k := range per {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		per[k] = append(per[k], float64(all[k]))
	}
}

// checkReported checks that the pool's n instance records hold seq.
func checkReported(ctx context.Context, st *store.Store, poolName string, n int, seq int64) error {
	insts, err := st.ListInstances(ctx, poolName)
	if err != nil {
		return err
	}
	behind := 0
	for _, in := range insts {
		if in.Seq != seq || in.LastStatus != string(ssmtypes.CommandInvocationStatusSuccess) || in.LastError != "" {
			behind++
		}
	}
	if len(insts) != n || behind > 0 {
		return fmt.Errorf("%d of %d instance records do not hold seq %d with a successful report (%d records)", behind, n, seq, len(insts))
	}
	return nil
}

// parallel runs fn(0..n-1), workers at a time; the first error wins.
func parallel(ctx context.Context, workers, n int, fn func(i int) error) error {
	var g errgroup.Group
	g.SetLimit(workers)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		g.Go(func() error { return fn(i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}
