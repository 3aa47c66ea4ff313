// Package report is the logic of the report Lambda: it reads the result of
// every volsd SSM command (its final status events) and folds the agents'
// reports into the instance records (docs/push.md, "functions/report").
package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"golang.org/x/sync/errgroup"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/lambdamain"
	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/ssmcmd"
	"github.com/volsd/volsd/internal/store"
)

// InvocationReader is the part of the SSM API the report Lambda uses:
// ListCommandInvocations reads a command's results in pages of 50 (one
// call per 50 instances); GetCommandInvocation reads one invocation whose
// page entry does not carry a usable report (failed, truncated, late).
type InvocationReader interface {
	GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error)
	ListCommandInvocations(ctx context.Context, in *ssm.ListCommandInvocationsInput, optFns ...func(*ssm.Options)) (*ssm.ListCommandInvocationsOutput, error)
}

// Recorder is the part of the store the report Lambda uses: it folds
// a report into the instance record, then reads the pool's instances, raises
// the pool's reported watermark and reads the append time of the entry it
// measures (ReportedLagSeconds).
type Recorder interface {
	RecordReport(ctx context.Context, pool, instanceID string, rep store.InstanceReport) (store.Instance, bool, error)
	ListInstances(ctx context.Context, pool string) ([]store.Instance, error)
	RaiseReported(ctx context.Context, pool string, seq int64) (int64, bool, error)
	Entries(ctx context.Context, pool string, after, upTo int64) ([]events.JournalEntry, error)
}

// Reporter handles SSM command status-change events.
type Reporter struct {
	cfg     Config
	docs    map[string]bool
	store   Recorder
	ssm     InvocationReader
	log     *slog.Logger
	metrics *metrics.Emitter
	now     func() time.Time
}

// NewReporter returns a Reporter; log and m may be nil (discard).
func NewReporter(cfg Config, st Recorder, ssm InvocationReader, log *slog.Logger, m *metrics.Emitter) *Reporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.InvocationWait <= 0 {
		cfg.InvocationWait = 20 * time.Second
	}
	docs := map[string]bool{}
	for _, d := range cfg.Documents {
		docs[d] = true
	}
	return &Reporter{cfg: cfg, docs: docs, store: st, ssm: ssm, log: log.With("pool", cfg.Pool), metrics: m,
		now: func() time.Time { return time.Now().UTC() }}
}

// invocationBackoff paces reads of an invocation that is not readable or
// not finished yet (GetCommandInvocation lags the status event).
var invocationBackoff = awserr.Backoff{Initial: 250 * time.Millisecond, Factor: 2, Max: 3 * time.Second}

// maxErrorText bounds what of an agent's output goes into lastError.
const maxErrorText = 1000

// HandleEvent records one "EC2 Command Invocation Status-change
// Notification". Events of other documents and non-final statuses are
// ignored. For a final status it reads the invocation's output and folds
// the agent's report (its last JSON line) into the instance record:
// seq only rises; status, error and command follow the newest event
// (store.RecordReport). Events may come late, twice or out of order.
//
// A malformed event, or an invocation that stays unreadable, is an error:
// Lambda retries the asynchronous invocation and then hands the event to
// the function's on-failure destination, so nothing is lost. An event of
// another kind, or for an instance the pool does not know, is logged and
// dropped (nil): retrying cannot help.
func (r *Reporter) HandleEvent(ctx context.Context, raw json.RawMessage) error {
	ctx, cancel := lambdamain.WithDeadlineMargin(ctx, r.cfg.Margin)
	defer cancel()
	var cs events.CommandStatus
	env, err := events.DecodeDetail(raw, events.DetailTypeSSMStatus, &cs)
	if errors.Is(err, events.ErrWrongDetailType) && env.DetailType == events.DetailTypeSSMCommand {
		return r.handleCommand(ctx, raw)
	}
	if errors.Is(err, events.ErrWrongDetailType) {
		r.log.Warn("ignoring an event of another kind", "detailType", env.DetailType, "source", env.Source)
		return nil
	}
	if err == nil {
		err = cs.Validate()
	}
	if err != nil {
		r.log.Error("malformed SSM status event", "error", err)
		return fmt.Errorf("malformed SSM status event: %w", err)
	}
	log := r.log.With("instance", cs.InstanceID, "commandId", cs.CommandID, "document", cs.DocumentName, "status", cs.Status)
	if !r.docs[cs.DocumentName] {
		log.Debug("ignoring a command of another document")
		return nil
	}
	if !cs.Terminal() {
		log.Debug("ignoring a status that is not final")
		return nil
	}
	inv, err := r.readInvocation(ctx, cs)
	if err != nil {
		log.Error("cannot read the invocation", "error", err)
		return err
	}
	at := env.Time.UTC()
	if at.IsZero() {
		at = r.now()
	}
	rep := interpret(cs, inv)
	rep.At = at
	stored, changed, err := r.store.RecordReport(ctx, r.cfg.Pool, cs.InstanceID, rep)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Warn("report for an instance the pool has no record of; dropped", "seq", rep.Seq, "lastError", rep.Error)
		return nil
	case err != nil:
		log.Error("record report failed", "error", err)
		return fmt.Errorf("record report of %s: %w", cs.InstanceID, err)
	}
	if changed {
		r.emitReportedLag(ctx, at)
	}
	dims := map[string]string{"Pool": r.cfg.Pool}
	r.metrics.Put("ReportsRecorded", 1, metrics.Count, dims)
	if rep.Error != "" {
		r.metrics.Put("AgentErrors", 1, metrics.Count, dims)
		if _, stalled := events.StalledBy(rep.Error); stalled {
			// An entry every agent refuses: the pool is stalled (alarm).
			r.metrics.Put(metrics.StalledReports, 1, metrics.Count, dims)
			log.Error("agent refused a journal entry; the pool is stalled until it is repaired (volsd repair)", "seq", rep.Seq, "stalledAt", rep.Seq+1, "lastError", rep.Error)
			return nil
		}
		log.Warn("agent reported an error", "seq", rep.Seq, "storedSeq", stored.Seq, "lastError", rep.Error, "changed", changed)
		return nil
	}
	log.Info("agent report recorded", "seq", rep.Seq, "storedSeq", stored.Seq, "changed", changed)
	return nil
}

// reportConcurrency bounds the instance records written at once for one
// command.
const reportConcurrency = 16

// pluginErrorMark separates stdout from stderr in the output of an
// aws:runShellScript plugin (ListCommandInvocations with Details).
const pluginErrorMark = "\n----------ERROR-------"

// handleCommand records the results of a whole command ("EC2 Command
// Status-change Notification", final status): its invocations are read in
// pages of 50 with ListCommandInvocations and Details, so a push to N
// instances costs ceil(N/50) SSM reads instead of N GetCommandInvocation
// calls. An invocation whose page entry is not a successful run with a
// complete agent report (a failure, output cut at 2,500 characters, an
// entry not final yet) is read with GetCommandInvocation. Each report is
// folded in with store.RecordReport, as for an invocation's event.
func (r *Reporter) handleCommand(ctx context.Context, raw json.RawMessage) error {
	var cs events.CommandSummary
	env, err := events.DecodeDetail(raw, events.DetailTypeSSMCommand, &cs)
	if err == nil {
		err = cs.Validate()
	}
	if err != nil {
		r.log.Error("malformed SSM command event", "error", err)
		return fmt.Errorf("malformed SSM command event: %w", err)
	}
	log := r.log.With("commandId", cs.CommandID, "document", cs.DocumentName, "status", cs.Status)
	if !r.docs[cs.DocumentName] {
		log.Debug("ignoring a command of another document")
		return nil
	}
	if !cs.Terminal() {
		log.Debug("ignoring a command status that is not final")
		return nil
	}
	at := env.Time.UTC()
	if at.IsZero() {
		at = r.now()
	}
	var invs []ssmtypes.CommandInvocation
	pages := ssm.NewListCommandInvocationsPaginator(r.ssm, &ssm.ListCommandInvocationsInput{
		CommandId: aws.String(cs.CommandID), Details: true, MaxResults: aws.Int32(50),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			log.Error("cannot list the invocations", "error", err)
			return fmt.Errorf("list the invocations of %s: %w", cs.CommandID, err)
		}
		invs = append(invs, page.CommandInvocations...)
	}
	var (
		records errgroup.Group // no shared context: one failed record does not stop the others
		changed atomic.Bool
	)
	records.SetLimit(reportConcurrency)
	for _, inv := range invs {
		records.Go(func() error {
			wrote, err := r.recordListed(ctx, cs, inv, at)
			if wrote {
				changed.Store(true)
			}
			return err
		})
	}
	first := records.Wait()
	if changed.Load() {
		r.emitReportedLag(ctx, at)
	}
	log.Info("command results recorded", "invocations", len(invs), "error", first)
	return first
}

// recordListed records one invocation of a listed command; it says whether
// the instance record changed.
func (r *Reporter) recordListed(ctx context.Context, cmd events.CommandSummary, inv ssmtypes.CommandInvocation, at time.Time) (bool, error) {
	cs := events.CommandStatus{CommandID: cmd.CommandID, DocumentName: cmd.DocumentName, InstanceID: aws.ToString(inv.InstanceId), Status: string(inv.Status)}
	var rep store.InstanceReport
	stdout, complete := "", false
	if len(inv.CommandPlugins) == 1 {
		stdout, _, _ = strings.Cut(aws.ToString(inv.CommandPlugins[0].Output), pluginErrorMark)
		if inv.Status == ssmtypes.CommandInvocationStatusSuccess {
			_, perr := events.ParseAgentReport(stdout)
			complete = perr == nil
		}
	}
	if complete {
		rep = interpret(cs, &ssm.GetCommandInvocationOutput{Status: inv.Status, StandardOutputContent: aws.String(stdout)})
	} else {
		full, err := r.readInvocation(ctx, cs)
		if err != nil {
			return false, err
		}
		rep = interpret(cs, full)
	}
	rep.At = at
	_, changed, err := r.store.RecordReport(ctx, r.cfg.Pool, cs.InstanceID, rep)
	switch {
	case errors.Is(err, store.ErrNotFound):
		r.log.Warn("report for an instance the pool has no record of; dropped", "instance", cs.InstanceID, "seq", rep.Seq)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("record report of %s: %w", cs.InstanceID, err)
	}
	r.metrics.Put("ReportsRecorded", 1, metrics.Count, map[string]string{"Pool": r.cfg.Pool})
	if rep.Error != "" {
		r.metrics.Put("AgentErrors", 1, metrics.Count, map[string]string{"Pool": r.cfg.Pool})
	}
	return changed, nil
}

// emitReportedLag measures the second stage of push lag after reports
// were recorded at (the status event's time): when every in-service
// (ready) instance has now reported a seq above the pool's reported
// watermark, the watermark is raised to their lowest seq and the report
// that did it — exactly one of concurrent or repeated ones — emits
// ReportedLagSeconds for the oldest entry it brought in: at minus that
// entry's append time. With no watermark recorded yet it measures the
// newest such entry (older ones may predate the metric). A read or write
// that fails costs one data point, never the report: it is logged.
func (r *Reporter) emitReportedLag(ctx context.Context, at time.Time) {
	instances, err := r.store.ListInstances(ctx, r.cfg.Pool)
	if err != nil {
		r.log.Warn("reported lag not measured: cannot list the instances", "error", err)
		return
	}
	low, ready := int64(0), 0
	for _, in := range instances {
		if in.State != store.InstanceReady {
			continue
		}
		if ready == 0 || in.Seq < low {
			low = in.Seq
		}
		ready++
	}
	if ready == 0 || low <= 0 {
		return
	}
	prev, raised, err := r.store.RaiseReported(ctx, r.cfg.Pool, low)
	if err != nil || !raised {
		if err != nil {
			r.log.Warn("reported lag not measured", "error", err)
		}
		return
	}
	oldest := prev + 1
	if prev == 0 {
		oldest = low
	}
	es, err := r.store.Entries(ctx, r.cfg.Pool, oldest-1, oldest)
	if err != nil || len(es) != 1 {
		r.log.Warn("reported lag not measured: cannot read the entry", "seq", oldest, "error", err)
		return
	}
	lag := max(at.Sub(es[0].CreatedAt), 0)
	r.metrics.Put(metrics.ReportedLagSeconds, lag.Seconds(), metrics.Seconds, map[string]string{"Pool": r.cfg.Pool})
	r.log.Info("every in-service instance reported", "seq", low, "instances", ready, "oldestNewSeq", oldest, "lagSeconds", lag.Seconds())
}

// readInvocation waits (ssmcmd.Waiter, at most InvocationWait) until the
// invocation exists and is final: the status event can overtake
// GetCommandInvocation.
func (r *Reporter) readInvocation(ctx context.Context, cs events.CommandStatus) (*ssm.GetCommandInvocationOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.InvocationWait)
	defer cancel()
	w := ssmcmd.Waiter{SSM: r.ssm, Delay: func(n int) time.Duration { return invocationBackoff.Delay(min(n, 8)) }}
	return w.Wait(ctx, cs.CommandID, cs.InstanceID)
}

// interpret turns an invocation into a report: the agent's own report
// when its last line is one (and names this instance), else what SSM says.
func interpret(cs events.CommandStatus, inv *ssm.GetCommandInvocationOutput) store.InstanceReport {
	rep := store.InstanceReport{CommandID: cs.CommandID, Status: string(inv.Status)}
	ar, perr := events.ParseAgentReport(aws.ToString(inv.StandardOutputContent))
	if perr == nil && ar.Instance != "" && ar.Instance != cs.InstanceID {
		perr = fmt.Errorf("the report names instance %s", ar.Instance)
	}
	failed := inv.Status != ssmtypes.CommandInvocationStatusSuccess
	switch {
	case perr == nil:
		rep.Seq = ar.Seq
		if ar.SizeBytes > 0 {
			rep.Space = &store.Space{SizeBytes: ar.SizeBytes, UsedBytes: ar.UsedBytes, FreeBytes: ar.FreeBytes}
		}
		switch {
		case ar.Error != "":
			rep.Error = ar.RecordedError()
		case failed:
			rep.Error = fmt.Sprintf("command %s (exit %d) without an error in the report", inv.Status, inv.ResponseCode)
		}
	case failed:
		rep.Error = fmt.Sprintf("command %s (exit %d); no agent report (%v)", inv.Status, inv.ResponseCode, perr)
		if tail := lastLine(aws.ToString(inv.StandardErrorContent)); tail != "" {
			rep.Error += "; stderr: " + tail
		}
	default:
		rep.Error = fmt.Sprintf("command succeeded without an agent report (%v)", perr)
	}
	if len(rep.Error) > maxErrorText {
		rep.Error = rep.Error[:maxErrorText] + "…"
	}
	return rep
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
