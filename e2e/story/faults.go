package story

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// FaultSizes scale the fault scenario.
type FaultSizes struct {
	Tree     harness.TreeSpec
	Converge time.Duration
	// Rejection bounds the wait for the push with a missing blob to be
	// rejected (MissingReceives receives of the queue's visibility timeout).
	Rejection time.Duration
}

// TestFaultSizes is the fault scenario of the end-to-end tests.
func TestFaultSizes() FaultSizes {
	return FaultSizes{
		Tree:      harness.TreeSpec{Files: 40, TotalBytes: 24 << 20, BigFile: 16 << 20, Seed: 3},
		Converge:  2 * time.Minute,
		Rejection: 3 * time.Minute,
	}
}

// Faults runs the fault scenario: a push whose blob is missing (rejected
// and reported, nothing else harmed), duplicate lifecycle events and a
// throttled AttachVolume while instances launch (each still gets exactly
// one volume), an agent killed in the middle of an apply (the instance
// converges anyway, with no partial file). At the end every instance holds
// exactly the pushed content.
func Faults(ctx context.Context, c *harness.Cluster, n *Narrator, sz FaultSizes) error {
	op, err := NewOperator(c)
	if err != nil {
		return err
	}
	pool := c.Opts.Pool

	done := n.Step("reconcile fills the idle pool")
	if _, err := c.Schedule(ctx, "reconcile"); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	done("idle pool ready")

	// The bad push first: its rejection takes a few receives, and the rest
	// of the scenario runs meanwhile.
	done = n.Step("queue a push request whose blob is not in the origin")
	badID, badSHA, err := sendMissingBlob(ctx, c)
	if err != nil {
		return err
	}
	done("request %s names blob %s…, which was never uploaded", badID, badSHA[:12])

	done = n.Step("launch 2 instances with every lifecycle event delivered twice and AttachVolume throttled twice")
	c.Proxy.Faults.Throttle("ec2", "AttachVolume", 2)
	c.Group.DuplicateEvents = true
	launches, err := c.Group.ScaleOut(ctx, 2)
	if err != nil {
		return err
	}
	results, err := c.Group.WaitInService(ctx, launches)
	if err != nil {
		return err
	}
	for _, r := range results {
		if r.Result != "CONTINUE" {
			return fmt.Errorf("launch of %s ended %s (timed out: %v); see %s", r.InstanceID, r.Result, r.TimedOut, c.LogDir())
		}
	}
	// The request with the missing blob is still going round the queue.
	if err := c.SettleEvents(ctx); err != nil {
		return err
	}
	if hits := c.Proxy.Faults.Hits("ec2", "AttachVolume"); hits != 2 {
		return fmt.Errorf("AttachVolume was throttled %d times; the fault was set for 2", hits)
	}
	if err := checkHolders(ctx, c); err != nil {
		return err
	}
	if err := checkOneVolumePerInstance(ctx, c); err != nil {
		return err
	}
	if invs := c.Functions["lifecycle"].Stats().Invocations; invs < 4 {
		return fmt.Errorf("lifecycle Lambda ran %d times; 2 launches delivered twice make at least 4", invs)
	}
	done("both in service with exactly one volume each; %d AttachVolume calls throttled and retried", c.Proxy.Faults.Hits("ec2", "AttachVolume"))

	done = n.Step("push a tree with --wait (%d files, %s)", sz.Tree.Files, mib(sz.Tree.TotalBytes))
	src := filepath.Join(c.WorkDir(), "content", Remote)
	if _, err := harness.GenerateTree(src, sz.Tree); err != nil {
		return err
	}
	want, err := Pushed(c.WorkDir(), src, Remote)
	if err != nil {
		return err
	}
	if _, err := op.Push(ctx, src, Remote); err != nil {
		return err
	}
	if err := WaitConverged(ctx, c, want, sz.Converge); err != nil {
		return err
	}
	done("converged")

	victim := c.Group.InService()[0]
	done = n.Step("push an update and kill volsd-agent on %s in the middle of its apply (SIGKILL while staging)", victim)
	in, _ := c.Fleet.Get(victim)
	// Only a command may apply the update on the victim until it is
	// killed: its timer would otherwise race the command and could apply
	// the whole entry before the command ran.
	in.HoldTimer(true)
	killed := killDuringApply(c, in)
	big := filepath.Join(src, "media", "lecture-01.mp4")
	if err := rewriteRandom(big, sz.Tree.BigFile); err != nil {
		return err
	}
	if want, err = want.Replace(Remote, src); err != nil {
		return err
	}
	if _, err := op.PushNoWait(ctx, src, Remote); err != nil {
		return err
	}
	var k killRecord
	select {
	case k = <-killed:
	case <-time.After(sz.Converge):
		return fmt.Errorf("the apply on %s was never seen staging; nothing was killed", victim)
	}
	in.HoldTimer(false)
	n.Note("killed `volsd-agent %s` (command %s) after %.2f s with %s staged", k.args, k.command, k.after.Seconds(), mib(k.staged))
	if err := WaitFor(ctx, sz.Converge, "the killed invocation is reported failed", func() (bool, error) {
		return c.RunCommand.Invocations(k.command)[victim] == "Failed", nil
	}); err != nil {
		return err
	}
	if err := WaitConverged(ctx, c, want, sz.Converge); err != nil {
		return fmt.Errorf("after the kill: %w", err)
	}
	done("the killed apply failed (exit 137); the agent's timer re-applied and %s converged with no partial file", victim)

	done = n.Step("push once more with --wait: every instance reports the head")
	if err := os.WriteFile(filepath.Join(src, "final.html"), []byte("<p>after the faults</p>\n"), 0o644); err != nil {
		return err
	}
	if want, err = want.Replace(Remote, src); err != nil {
		return err
	}
	if _, err := op.Push(ctx, src, Remote); err != nil {
		return err
	}
	if err := WaitConverged(ctx, c, want, sz.Converge); err != nil {
		return err
	}
	head, err := c.Store.Head(ctx, pool)
	if err != nil {
		return err
	}
	insts, err := c.Store.ListInstances(ctx, pool)
	if err != nil {
		return err
	}
	for _, i := range insts {
		if contains(c.Group.InService(), i.InstanceID) && i.Seq != head {
			return fmt.Errorf("instance %s reported seq %d; the head is %d", i.InstanceID, i.Seq, head)
		}
	}
	done("head %d on every instance", head)

	done = n.Step("scale in by 1, the terminate event delivered twice")
	held := map[string]string{}
	for _, id := range c.Group.InService() {
		inst, err := c.Store.GetInstance(ctx, pool, id)
		if err != nil {
			return err
		}
		held[id] = inst.VolumeID
	}
	terms, err := c.Group.ScaleInResults(ctx, 1)
	if err != nil {
		return err
	}
	if t := terms[0]; t.Result != "CONTINUE" || t.TimedOut {
		return fmt.Errorf("terminate hook of %s: %s (timed out: %v)", t.InstanceID, t.Result, t.TimedOut)
	}
	if err := c.SettleEvents(ctx); err != nil {
		return err
	}
	v, err := c.Store.GetVolume(ctx, pool, held[terms[0].InstanceID])
	if err != nil {
		return err
	}
	if v.State != store.VolumeIdle || v.Seq != head {
		return fmt.Errorf("volume %s of terminated %s is %s at seq %d; want idle at %d", v.VolumeID, terms[0].InstanceID, v.State, v.Seq, head)
	}
	if err := checkOneVolumePerInstance(ctx, c); err != nil {
		return err
	}
	done("%s terminated; its volume %s idle at seq %d; %d lifecycle invocations in all", terms[0].InstanceID, v.VolumeID, v.Seq, c.Functions["lifecycle"].Stats().Invocations)

	done = n.Step("the push with the missing blob is rejected and reported")
	var rej store.Request
	if err := WaitFor(ctx, sz.Rejection, "request "+badID+" rejected", func() (bool, error) {
		rs, err := c.Store.ListRejected(ctx, pool, 50)
		if err != nil {
			return false, err
		}
		for _, r := range rs {
			if r.RequestID == badID {
				rej = r
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	if !strings.Contains(strings.ToLower(rej.Reason), "missing") && !strings.Contains(strings.ToLower(rej.Reason), "not found") && !strings.Contains(rej.Reason, badSHA[:12]) {
		return fmt.Errorf("rejection reason %q does not say the blob is missing", rej.Reason)
	}
	status, err := op.Status(ctx)
	if err != nil {
		return err
	}
	if !strings.Contains(status, badID) {
		return fmt.Errorf("volsd status does not report the rejected request %s:\n%s", badID, status)
	}
	if err := WaitFor(ctx, sz.Rejection, "the rejected message in the DLQ", func() (bool, error) {
		return inDLQ(ctx, c, badID)
	}); err != nil {
		return err
	}
	if err := VerifyAll(c, want); err != nil {
		return err
	}
	if errs := c.AsyncErrors(); len(errs) > 0 {
		return fmt.Errorf("asynchronous invocations failed after retries: %w", errors.Join(errs...))
	}
	done("rejected (%s), shown by volsd status, in the dead-letter queue; the journal and the fleet untouched", rej.Reason)
	return nil
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// sendMissingBlob queues a valid put request for a blob that is not in the
// origin, as a client that skipped the upload would.
func sendMissingBlob(ctx context.Context, c *harness.Cluster) (requestID, sha string, err error) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	sha = hex.EncodeToString(b[:])
	requestID = newRequestID()
	body, _ := json.Marshal(events.PushRequest{
		Version: events.PushVersion, RequestID: requestID, Op: events.OpPut, Path: "site/never-uploaded.bin",
		Blob: &events.Blob{SHA256: sha, Size: 1234, Mode: 0o644},
	})
	_, err = c.SQS.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &c.Names.QueueURL, MessageBody: aws.String(string(body))})
	return requestID, sha, err
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func inDLQ(ctx context.Context, c *harness.Cluster, requestID string) (bool, error) {
	out, err := c.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &c.Names.DLQURL, MaxNumberOfMessages: 10, VisibilityTimeout: 0})
	if err != nil {
		return false, err
	}
	for _, m := range out.Messages {
		if strings.Contains(aws.ToString(m.Body), requestID) {
			return true, nil
		}
	}
	return false, nil
}

// checkOneVolumePerInstance checks the table: every instance of the group
// holds one volume, and no volume is bound to an instance that holds
// another.
func checkOneVolumePerInstance(ctx context.Context, c *harness.Cluster) error {
	vols, err := c.Store.ListVolumes(ctx, c.Opts.Pool)
	if err != nil {
		return err
	}
	held := map[string][]string{}
	for _, v := range vols {
		if v.InstanceID != "" {
			held[v.InstanceID] = append(held[v.InstanceID], v.VolumeID+"("+string(v.State)+")")
		}
	}
	for _, id := range c.Group.InService() {
		if len(held[id]) != 1 {
			return fmt.Errorf("instance %s holds %v in the table; want exactly one volume", id, held[id])
		}
	}
	return nil
}

type killRecord struct {
	command string
	args    string
	after   time.Duration
	staged  int64
}

// killDuringApply arranges for a volsd-Apply on in to be SIGKILLed once
// it has staged content (after the fetch began, before the watermark
// moved). Every volsd-Apply on in is watched until one is killed: an
// earlier command (already up to date) may run first. A watch ends when its
// invocation ends.
func killDuringApply(c *harness.Cluster, in *harness.Instance) <-chan killRecord {
	out := make(chan killRecord, 1)
	var fired atomic.Bool
	prev := c.RunCommand.BeforeRun
	c.RunCommand.BeforeRun = func(ctx context.Context, commandID, instanceID, document string) context.Context {
		if prev != nil {
			ctx = prev(ctx, commandID, instanceID, document)
		}
		if instanceID != in.ID || document != events.DefaultDocumentName(events.DocApply) || fired.Load() {
			return ctx
		}
		ctx, cancel := context.WithCancel(ctx)
		start := time.Now()
		go func() {
			staging := filepath.Join(in.Mount, ".volsd", "staging")
			for time.Since(start) < 2*time.Minute && !fired.Load() {
				if n := stagedBytes(staging); n > 0 && fired.CompareAndSwap(false, true) {
					cancel()
					out <- killRecord{command: commandID, args: "apply", after: time.Since(start), staged: n}
					return
				}
				if st := c.RunCommand.Invocations(commandID)[in.ID]; st != "" && st != "Pending" && st != "InProgress" {
					return // this invocation ended without staging
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		return ctx
	}
	return out
}

func stagedBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func rewriteRandom(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for written := int64(0); written < size; {
		_, _ = rand.Read(buf)
		k := min(int64(len(buf)), size-written)
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		written += k
	}
	return f.Close()
}
