package pool_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
)

var bg = context.Background()

var testAZs = []string{"us-east-1a", "us-east-1b", "us-east-1c"}

// fastTiming is the production timing with every wait shrunk a
// thousandfold (sleeps) or to a few milliseconds (bounds).
func fastTiming() *pool.Timing {
	t := pool.DefaultTiming()
	t.Sleep = func(ctx context.Context, d time.Duration) error { return awserr.Sleep(ctx, d/1000) }
	t.API = awserr.Backoff{Initial: 100 * time.Millisecond, Factor: 2, Max: 5 * time.Second, Attempts: 8}
	t.InstanceVisible = 50 * time.Millisecond
	t.AttachStuck = 150 * time.Millisecond
	t.DetachWait = 2 * time.Second
	t.CreateWait = 2 * time.Second
	t.ReleaseCommand = 200 * time.Millisecond
	t.StuckAfter = time.Hour // tests that heal set it low
	t.GoneGrace = 0
	t.OrphanGrace = time.Hour
	t.InstanceRetention = time.Hour
	t.MaxActions = 500
	return &t
}

// logBuffer collects JSON log lines safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log records whose msg contains sub.
func (l *logBuffer) lines(sub string) []map[string]any {
	var out []map[string]any
	for _, line := range bytes.Split([]byte(l.String()), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			if msg, _ := m["msg"].(string); bytes.Contains([]byte(msg), []byte(sub)) {
				out = append(out, m)
			}
		}
	}
	return out
}

// env is one pool over a fresh DynamoDB Local table and fakes.
type env struct {
	t       testing.TB
	cfg     pool.Config
	store   *store.Store
	db      *dynamodb.Client
	ec2     *awsfake.EC2
	asg     *awsfake.AutoScaling
	ssm     *releaseSSM
	timing  *pool.Timing
	logs    *logBuffer
	metrics *logBuffer
	pool    *pool.Pool
}

type envOpt func(*env)

func withConfig(f func(*pool.Config)) envOpt { return func(e *env) { f(&e.cfg) } }
func withTiming(f func(*pool.Timing)) envOpt { return func(e *env) { f(e.timing) } }

func newEnv(t testing.TB, ec2cfg awsfake.EC2Config, opts ...envOpt) *env {
	t.Helper()
	st, db := storetest.NewWithClient(t)
	ec2cfg.AZs = testAZs
	fe := awsfake.NewEC2(ec2cfg)
	e := &env{
		t: t, db: db, store: st, ec2: fe,
		asg:    awsfake.NewAutoScaling(awsfake.AutoScalingConfig{EC2: fe, Now: ec2cfg.Now}),
		ssm:    &releaseSSM{},
		timing: fastTiming(), logs: &logBuffer{}, metrics: &logBuffer{},
		cfg: pool.Config{
			Pool: "web", Table: st.Table(), Group: "web-asg", IdlePerAZ: 2, SizeGiB: 10, VolumeType: "gp3",
			ReleasePolicy: pool.PolicyRecycle, DocRelease: "volsd-Release", DocStatus: "volsd-Status",
			RefreshBehind: 500, RefreshAge: 168 * time.Hour, RefreshMax: 2,
		},
	}
	for _, o := range opts {
		o(e)
	}
	e.asg.AddGroup(awsfake.GroupSpec{
		Name: e.cfg.Group, AZs: testAZs, MaxSize: 40, Tags: map[string]string{events.TagPool: e.cfg.Pool},
		Hooks: []awsfake.HookSpec{
			{Name: "volsd-launch", Transition: events.TransitionLaunching, HeartbeatTimeout: time.Hour, DefaultResult: "ABANDON"},
			{Name: "volsd-terminate", Transition: events.TransitionTerminating, HeartbeatTimeout: time.Hour, DefaultResult: "CONTINUE"},
		},
	})
	e.rebuild()
	return e
}

// rebuild makes a new Pool from e's current config and clients.
func (e *env) rebuild() {
	e.pool = pool.New(e.cfg, pool.Deps{
		Store: e.store, EC2: e.ec2, AutoScaling: e.asg, SSM: e.ssm,
		Log:     e.logger(slog.LevelDebug),
		Metrics: metrics.New(e.metrics), Timing: e.timing,
	})
}

// logger logs JSON into e.logs.
func (e *env) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: level}))
}

// launch starts an instance in az and returns its ID and launch event.
func (e *env) launch(az string) (string, json.RawMessage) {
	e.t.Helper()
	id, raw, err := e.asg.Launch(e.cfg.Group, az)
	if err != nil {
		e.t.Fatal(err)
	}
	return id, raw
}

func (e *env) handle(raw json.RawMessage) error { return e.pool.HandleLifecycle(bg, raw) }

func (e *env) mustHandle(raw json.RawMessage) {
	e.t.Helper()
	if err := e.handle(raw); err != nil {
		e.t.Fatalf("handle: %v\nlogs:\n%s", err, e.logs.String())
	}
}

func (e *env) reconcile() pool.Report {
	e.t.Helper()
	rep, err := e.pool.Reconcile(bg)
	if err != nil {
		e.t.Fatalf("reconcile: %v", err)
	}
	return rep
}

func (e *env) volumes() []store.Volume {
	e.t.Helper()
	vs, err := e.store.ListVolumes(bg, e.cfg.Pool)
	if err != nil {
		e.t.Fatal(err)
	}
	return vs
}

func (e *env) instance(id string) store.Instance {
	e.t.Helper()
	in, err := e.store.GetInstance(bg, e.cfg.Pool, id)
	if err != nil {
		e.t.Fatalf("instance %s: %v", id, err)
	}
	return in
}

// idle counts idle records per zone.
func (e *env) idle() map[string]int {
	out := map[string]int{}
	for _, v := range e.volumes() {
		if v.State == store.VolumeIdle {
			out[v.AZ]++
		}
	}
	return out
}

// held returns the volume records bound to instance id in a held state.
func (e *env) held(id string) []store.Volume {
	var out []store.Volume
	for _, v := range e.volumes() {
		if v.InstanceID == id && v.State.Held() {
			out = append(out, v)
		}
	}
	return out
}

// action returns the lifecycle action of an event.
func (e *env) action(raw json.RawMessage) awsfake.ActionView {
	e.t.Helper()
	var env events.Envelope
	var a events.LifecycleAction
	if err := json.Unmarshal(raw, &env); err != nil {
		e.t.Fatal(err)
	}
	if err := json.Unmarshal(env.Detail, &a); err != nil {
		e.t.Fatal(err)
	}
	v, ok := e.asg.Action(a.LifecycleActionToken)
	if !ok {
		e.t.Fatalf("no action %s", a.LifecycleActionToken)
	}
	return v
}

// agentUp does what the agent does once the content is current: report
// its seq (as the report Lambda records it) and complete the launch hook.
func (e *env) agentUp(raw json.RawMessage, seq int64) {
	e.t.Helper()
	act := e.action(raw)
	in := e.instance(act.Instance)
	in.Seq, in.LastReportAt, in.State = seq, time.Now().UTC(), store.InstanceReady
	if _, err := e.store.UpdateInstance(bg, in); err != nil {
		e.t.Fatal(err)
	}
	if err := completeHook(e.asg, act, "CONTINUE"); err != nil {
		e.t.Fatal(err)
	}
}

// seedIdle runs reconcile until every zone has its target of idle volumes.
func (e *env) seedIdle() {
	e.t.Helper()
	for i := 0; i < 5; i++ {
		e.reconcile()
		ok := true
		for _, az := range testAZs {
			if e.idle()[az] != e.cfg.IdlePerAZ {
				ok = false
			}
		}
		if ok {
			return
		}
	}
	e.t.Fatalf("idle pool not seeded: %v", e.idle())
}

// releaseSSM is a small SSM fake for volsd-Release: SendCommand records
// the command; GetCommandInvocation answers per its settings.
type releaseSSM struct {
	mu sync.Mutex
	// Seq, when set, is what the agent reports after releasing; Status is
	// the invocation's final status (default Success); Hang keeps it
	// InProgress; Before are the statuses read before the final one;
	// SendErr fails SendCommand.
	Seq      map[string]int64 // instance → seq
	Volume   map[string]string
	Status   ssmtypes.CommandInvocationStatus
	Before   []ssmtypes.CommandInvocationStatus
	Hang     bool
	SendErr  error
	sent     []string
	docs     []string          // document of each sent command
	commands map[string]string // command → instance
	reads    map[string]int
}

func (s *releaseSSM) SendCommand(ctx context.Context, in *ssm.SendCommandInput, _ ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.SendErr != nil {
		return nil, s.SendErr
	}
	if doc := aws.ToString(in.DocumentName); doc != "volsd-Release" && doc != "volsd-Status" || len(in.InstanceIds) != 1 {
		return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: fmt.Sprintf("unexpected command %s to %v", aws.ToString(in.DocumentName), in.InstanceIds)}
	}
	if s.commands == nil {
		s.commands, s.reads = map[string]string{}, map[string]int{}
	}
	id := fmt.Sprintf("cmd-%04d", len(s.commands)+1)
	s.commands[id] = in.InstanceIds[0]
	s.sent = append(s.sent, in.InstanceIds[0])
	s.docs = append(s.docs, aws.ToString(in.DocumentName))
	return &ssm.SendCommandOutput{Command: &ssmtypes.Command{CommandId: aws.String(id), DocumentName: in.DocumentName}}, nil
}

func (s *releaseSSM) GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, _ ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cmd := aws.ToString(in.CommandId)
	inst, ok := s.commands[cmd]
	if !ok || inst != aws.ToString(in.InstanceId) {
		return nil, invocationMissing()
	}
	s.reads[cmd]++
	if s.reads[cmd] == 1 {
		return nil, invocationMissing() // not visible yet, as in SSM
	}
	out := &ssm.GetCommandInvocationOutput{CommandId: in.CommandId, InstanceId: in.InstanceId, Status: ssmtypes.CommandInvocationStatusInProgress}
	if s.Hang {
		return out, nil
	}
	if n := s.reads[cmd] - 2; n < len(s.Before) {
		out.Status = s.Before[n]
		return out, nil
	}
	out.Status = ssmtypes.CommandInvocationStatusSuccess
	if s.Status != "" {
		out.Status = s.Status
	}
	if seq, ok := s.Seq[inst]; ok {
		rep, _ := json.Marshal(events.AgentReport{Command: "release", Instance: inst, Volume: s.Volume[inst], Seq: seq})
		out.StandardOutputContent = aws.String("unmounted /srv/volsd\n" + string(rep) + "\n")
	}
	return out, nil
}

// setReport makes the agent of inst report seq for vol on release.
func (s *releaseSSM) setReport(inst, vol string, seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Seq == nil {
		s.Seq, s.Volume = map[string]int64{}, map[string]string{}
	}
	s.Seq[inst], s.Volume[inst] = seq, vol
}

func (s *releaseSSM) sentTo() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}

// sentDocs returns the document of each command sent, in order.
func (s *releaseSSM) sentDocs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.docs...)
}

func invocationMissing() error {
	return &smithy.GenericAPIError{Code: "InvocationDoesNotExist", Message: "", Fault: smithy.FaultClient}
}
