package report_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

// reportedLags returns the ReportedLagSeconds values in out, checking each
// line's namespace and dimensions against what the dashboard reads.
func reportedLags(t *testing.T, out string) []float64 {
	t.Helper()
	for _, l := range metrics.ParseLines([]byte(out)) {
		if l.Name != metrics.ReportedLagSeconds {
			continue
		}
		if l.Namespace != metrics.Namespace || !slices.Equal(l.Dimensions, metrics.Read[metrics.ReportedLagSeconds]) || l.Values["Pool"] != "web" {
			t.Fatalf("ReportedLagSeconds line %+v, want namespace %s, dimensions %v, Pool web", l, metrics.Namespace, metrics.Read[metrics.ReportedLagSeconds])
		}
	}
	return metrics.Values([]byte(out), metrics.ReportedLagSeconds)
}

func appendEntries(t *testing.T, st *store.Store, n int) []events.JournalEntry {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if _, _, err := st.Append(ctx, "web", events.JournalEntry{Op: events.OpDelete, Path: fmt.Sprintf("lag/%d", i), RequestID: fmt.Sprintf("lag-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	es, err := st.Entries(ctx, "web", 0, 0)
	if err != nil || len(es) != n {
		t.Fatalf("entries %v %v", es, err)
	}
	return es
}

// applyEvent runs an apply on instance that reports seq and returns its
// final status event, timed at.
func (rr *reportRig) applyEvent(t *testing.T, instance string, seq int64, at time.Time) json.RawMessage {
	t.Helper()
	b, _ := json.Marshal(events.AgentReport{Command: "apply", Instance: instance, Seq: seq, Head: seq})
	raw := rr.run(t, "volsd-Apply", instance, ssmtypes.CommandInvocationStatusSuccess, "applied\n"+string(b)+"\n", "")
	return withTime(t, raw, at)
}

// TestReportedLagSecondsWhenTheLastInstanceReports: the second stage of
// push lag (appended → every in-service instance reported) is emitted by
// the report that brings the last ready instance to an entry, once, as the
// event's time minus the append time of the oldest entry it brought in;
// reports while another instance still lags, a repeated report and a
// launching instance's report emit nothing.
func TestReportedLagSecondsWhenTheLastInstanceReports(t *testing.T) {
	a, b, c := "i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb1", "i-0ccccccccccccccc1"
	rr := newReportRig(t, a, b)
	ctx := context.Background()
	if _, err := rr.st.PutInstance(ctx, store.Instance{Pool: "web", InstanceID: c, AZ: "eu-west-1a", State: store.InstanceLaunching}); err != nil {
		t.Fatal(err)
	}
	rr.ssm.AddInstance(c, map[string]string{"volsd:pool": "web"})
	out := &testenv.Buffer{}
	rr.r = report.NewReporter(report.Config{Pool: "web", Documents: []string{"volsd-Apply"}, InvocationWait: 5 * time.Second}, rr.st, rr.ssm, nil, metrics.New(out))
	es := appendEntries(t, rr.st, 3)
	handle := func(ev json.RawMessage) {
		t.Helper()
		if err := rr.r.HandleEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}

	handle(rr.applyEvent(t, a, 2, es[1].CreatedAt.Add(5*time.Second)))
	if got := reportedLags(t, out.String()); len(got) != 0 {
		t.Fatalf("emitted %v while %s has reported nothing", got, b)
	}
	// b is the last ready instance at seq 2 (c is launching: not counted).
	atB := es[1].CreatedAt.Add(42 * time.Second)
	evB := rr.applyEvent(t, b, 2, atB)
	handle(evB)
	got := reportedLags(t, out.String())
	// No watermark before: the newest entry both reported (2) is measured.
	if len(got) != 1 || got[0] != 42 {
		t.Fatalf("ReportedLagSeconds %v, want [42] (entry 2 appended %v, b reported at %v)", got, es[1].CreatedAt, atB)
	}
	handle(evB) // redelivered
	handle(rr.applyEvent(t, c, 3, es[2].CreatedAt.Add(time.Second)))
	if got := reportedLags(t, out.String()); len(got) != 1 {
		t.Fatalf("a repeated report or a launching instance's report emitted %v", got[1:])
	}
	// Entry 3: a then b; b's report is the last: lag from entry 3's append.
	handle(rr.applyEvent(t, a, 3, es[2].CreatedAt.Add(time.Second)))
	handle(rr.applyEvent(t, b, 3, es[2].CreatedAt.Add(7*time.Second)))
	if got := reportedLags(t, out.String()); len(got) != 2 || got[1] != 7 {
		t.Fatalf("ReportedLagSeconds %v, want [42 7]", got)
	}
}

// TestReportedLagSecondsOnceUnderConcurrentReports: eight ready instances
// report the same entry at once, each event delivered twice concurrently:
// exactly one report is the last and emits ReportedLagSeconds.
func TestReportedLagSecondsOnceUnderConcurrentReports(t *testing.T) {
	var ids []string
	for i := range 8 {
		ids = append(ids, fmt.Sprintf("i-0%015d", i+1))
	}
	rr := newReportRig(t, ids...)
	out := &testenv.Buffer{}
	rr.r = report.NewReporter(report.Config{Pool: "web", Documents: []string{"volsd-Apply"}, InvocationWait: 5 * time.Second}, rr.st, rr.ssm, nil, metrics.New(out))
	es := appendEntries(t, rr.st, 1)
	var evs []json.RawMessage
	for _, id := range ids {
		ev := rr.applyEvent(t, id, 1, es[0].CreatedAt.Add(3*time.Second))
		evs = append(evs, ev, ev)
	}
	var wg sync.WaitGroup
	for _, ev := range evs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rr.r.HandleEvent(context.Background(), ev); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := reportedLags(t, out.String()); len(got) != 1 || got[0] != 3 {
		t.Fatalf("ReportedLagSeconds %v, want exactly one value 3", got)
	}
}
