package report_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
)

const inst = "i-0b1c2d3e4f5a6b7c8"

type reportRig struct {
	st  *store.Store
	ssm *awsfake.SSM
	r   *report.Reporter
}

func newReportRig(t *testing.T, instances ...string) *reportRig {
	t.Helper()
	rr := &reportRig{st: storetest.New(t), ssm: awsfake.NewSSM()}
	for _, d := range []string{"volsd-Apply", "volsd-Status", "Other-Doc"} {
		rr.ssm.AddDocument(d, map[string]string{"upTo": ""})
	}
	for _, id := range instances {
		rr.ssm.AddInstance(id, map[string]string{"volsd:pool": "web"})
		if _, err := rr.st.PutInstance(context.Background(), store.Instance{Pool: "web", InstanceID: id, AZ: "eu-west-1a", State: store.InstanceReady}); err != nil {
			t.Fatal(err)
		}
	}
	rr.r = report.NewReporter(report.Config{Pool: "web", Documents: []string{"volsd-Apply", "volsd-Status"}, InvocationWait: 5 * time.Second}, rr.st, rr.ssm, nil, nil)
	return rr
}

// run sends doc to the instance and completes it with stdout; it returns
// the final status event the fake emitted.
func (rr *reportRig) run(t *testing.T, doc, instance string, status ssmtypes.CommandInvocationStatus, stdout, stderr string) []byte {
	t.Helper()
	var mu sync.Mutex
	var final []byte
	rr.ssm.OnEvent = func(raw []byte) {
		if strings.Contains(string(raw), `"status":"`+string(status)+`"`) {
			mu.Lock()
			final = raw
			mu.Unlock()
		}
	}
	out, err := rr.ssm.SendCommand(context.Background(), &ssm.SendCommandInput{DocumentName: aws.String(doc), InstanceIds: []string{instance}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rr.ssm.Complete(aws.ToString(out.Command.CommandId), instance, awsfake.SSMResult{Status: status, Stdout: stdout, Stderr: stderr}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return final
}

func agentReport(seq int64, errText, kind string) string {
	b, _ := json.Marshal(events.AgentReport{Command: "apply", Instance: inst, Seq: seq, Head: seq, Error: errText, ErrorKind: kind})
	return "applying 3 entries\nrsync ok\n" + string(b) + "\n"
}

// withTime rewrites an event's time.
func withTime(t *testing.T, raw []byte, at time.Time) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["time"] = at.Format(time.RFC3339Nano)
	out, _ := json.Marshal(m)
	return out
}

// TestReportsOutOfOrderNeverLowerSeq: ten apply results (seq 1..10, at
// increasing times) delivered shuffled, each twice, some concurrently: the
// instance ends at seq 10 with the status of the newest event.
func TestReportsOutOfOrderNeverLowerSeq(t *testing.T) {
	rr := newReportRig(t, inst)
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	var evs []json.RawMessage
	for seq := int64(1); seq <= 10; seq++ {
		status, stdout := ssmtypes.CommandInvocationStatusSuccess, agentReport(seq, "", "")
		if seq == 4 {
			status, stdout = ssmtypes.CommandInvocationStatusFailed, agentReport(3, "entry 4: blob abc…: sha256 mismatch", "bad-input")
		}
		raw := rr.run(t, "volsd-Apply", inst, status, stdout, "")
		ev := withTime(t, raw, t0.Add(time.Duration(seq)*time.Second))
		evs = append(evs, ev, ev)
	}
	rand.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	ctx := context.Background()
	var maxSeen int64
	for i := 0; i < len(evs); i += 4 {
		var wg sync.WaitGroup
		for _, ev := range evs[i:min(i+4, len(evs))] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := rr.r.HandleEvent(ctx, ev); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got, _ := rr.st.GetInstance(ctx, "web", inst)
		if got.Seq < maxSeen {
			t.Fatalf("seq went down from %d to %d", maxSeen, got.Seq)
		}
		maxSeen = got.Seq
	}
	got, err := rr.st.GetInstance(ctx, "web", inst)
	if err != nil || got.Seq != 10 || got.LastStatus != "Success" || got.LastError != "" || !got.LastReportAt.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("final instance %+v %v", got, err)
	}
}

func TestReportRecordsErrorsAndIgnoresWhatIsNotOurs(t *testing.T) {
	ctx := context.Background()
	rr := newReportRig(t, inst)

	// An agent error: seq as reported, lastError with its kind.
	raw := rr.run(t, "volsd-Apply", inst, ssmtypes.CommandInvocationStatusFailed, agentReport(7, "rsync: exit 23", "retryable"), "")
	if err := rr.r.HandleEvent(ctx, raw); err != nil {
		t.Fatal(err)
	}
	got, _ := rr.st.GetInstance(ctx, "web", inst)
	if got.Seq != 7 || got.LastStatus != "Failed" || got.LastError != "retryable: rsync: exit 23" || got.LastCommandID == "" {
		t.Fatalf("after an agent error: %+v", got)
	}

	// A failure without a report (the agent crashed): seq stays, the error says so with stderr's last line.
	raw = rr.run(t, "volsd-Apply", inst, ssmtypes.CommandInvocationStatusFailed, "", "panic: runtime error\ngoroutine 1 [running]: main.apply")
	if err := rr.r.HandleEvent(ctx, raw); err != nil {
		t.Fatal(err)
	}
	got, _ = rr.st.GetInstance(ctx, "web", inst)
	if got.Seq != 7 || !strings.Contains(got.LastError, "no agent report") || !strings.Contains(got.LastError, "main.apply") {
		t.Fatalf("after a crash: %+v", got)
	}

	// A report that names another instance is not trusted for seq.
	b, _ := json.Marshal(events.AgentReport{Command: "apply", Instance: "i-0fffffffffffffff0", Seq: 99})
	raw = rr.run(t, "volsd-Status", inst, ssmtypes.CommandInvocationStatusSuccess, string(b), "")
	if err := rr.r.HandleEvent(ctx, raw); err != nil {
		t.Fatal(err)
	}
	got, _ = rr.st.GetInstance(ctx, "web", inst)
	if got.Seq != 7 || !strings.Contains(got.LastError, "names instance") {
		t.Fatalf("after a foreign report: %+v", got)
	}

	// Another document, a status that is not final, another event kind: ignored without reading SSM.
	reads := rr.ssm.Calls("GetCommandInvocation")
	other := rr.run(t, "Other-Doc", inst, ssmtypes.CommandInvocationStatusSuccess, agentReport(50, "", ""), "")
	inProgress := strings.Replace(string(raw), `"status":"Success"`, `"status":"InProgress"`, 1)
	launch := `{"version":"0","id":"x","detail-type":"EC2 Instance-launch Lifecycle Action","source":"aws.autoscaling","time":"2026-11-21T10:00:00Z","detail":{}}`
	for _, ev := range []string{string(other), inProgress, launch} {
		if err := rr.r.HandleEvent(ctx, json.RawMessage(ev)); err != nil {
			t.Fatalf("ignored event returned %v", err)
		}
	}
	if n := rr.ssm.Calls("GetCommandInvocation"); n != reads {
		t.Fatalf("ignored events read SSM %d times", n-reads)
	}
	if after, _ := rr.st.GetInstance(ctx, "web", inst); after.Seq != 7 || after.Rev != got.Rev {
		t.Fatalf("ignored events changed the instance: %+v", after)
	}

	// A malformed event is an error (Lambda retries it, then the on-failure destination keeps it).
	for _, bad := range []string{`{`, `{"detail-type":"EC2 Command Invocation Status-change Notification","detail":{"command-id":"c","document-name":"volsd-Apply","instance-id":"../etc","status":"Success"}}`} {
		if err := rr.r.HandleEvent(ctx, json.RawMessage(bad)); err == nil {
			t.Errorf("malformed event %q accepted", bad)
		}
	}

	// An instance the pool does not know: dropped without error.
	rr.ssm.AddInstance("i-0aaaaaaaaaaaaaaa0", nil)
	raw = rr.run(t, "volsd-Apply", "i-0aaaaaaaaaaaaaaa0", ssmtypes.CommandInvocationStatusSuccess, agentReport(3, "", ""), "")
	if err := rr.r.HandleEvent(ctx, raw); err != nil {
		t.Fatalf("unknown instance: %v", err)
	}
}

// TestReportWaitsForTheInvocation: GetCommandInvocation lags the event
// (InvocationDoesNotExist, throttling, then readable): the report waits;
// one that never becomes readable is an error.
func TestReportWaitsForTheInvocation(t *testing.T) {
	ctx := context.Background()
	rr := newReportRig(t, inst)
	rr.ssm.InvisibleReads = 2
	raw := rr.run(t, "volsd-Apply", inst, ssmtypes.CommandInvocationStatusSuccess, agentReport(5, "", ""), "")
	rr.ssm.FailNext("GetCommandInvocation", 1, &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"})
	if err := rr.r.HandleEvent(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if n := rr.ssm.Calls("GetCommandInvocation"); n != 4 {
		t.Fatalf("GetCommandInvocation called %d times, want 4 (throttled, 2 × not yet, read)", n)
	}
	if got, _ := rr.st.GetInstance(ctx, "web", inst); got.Seq != 5 {
		t.Fatalf("seq %d", got.Seq)
	}

	short := report.NewReporter(report.Config{Pool: "web", Documents: []string{"volsd-Apply"}, InvocationWait: 600 * time.Millisecond}, rr.st, rr.ssm, nil, nil)
	ghost := strings.Replace(string(raw), `"command-id":"`, `"command-id":"0`, 1)
	if err := short.HandleEvent(ctx, json.RawMessage(ghost)); err == nil || !strings.Contains(err.Error(), "not readable") {
		t.Fatalf("never readable: %v", err)
	}
}

func TestLoadEnv(t *testing.T) {
	env, err := report.LoadEnv(envconfig.FromMap(map[string]string{"VOLSD_POOL": "web", "VOLSD_TABLE": "t", "VOLSD_DOC_APPLY": "web-Apply"}))
	if err != nil || fmt.Sprint(env.Documents) != "[web-Apply volsd-Freeze volsd-Thaw volsd-Release volsd-Status]" {
		t.Fatalf("report env %+v %v", env.Config, err)
	}
}
