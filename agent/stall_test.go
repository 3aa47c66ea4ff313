package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// TestUpRetriesARefusedEntryUntilRepaired: a blob whose bytes differ from
// its name (same size) stalls up at that entry; up does not exit (its unit
// would not restart exit 2) and does not complete the hook, but retries
// with a backoff recorded in stall.json; once the right bytes are in the
// origin it converges, completes the hook and clears the stall. A periodic
// apply inside the backoff is skipped.
func TestUpRetriesARefusedEntryUntilRepaired(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("ok.txt", gen("ok", 10), 0o644)
	good := gen("poison", 64)
	key := events.BlobKey(sum(good))
	w.uploadKey(key, gen("wrong", 64))
	seq := w.appendEntry(events.JournalEntry{RequestID: "poison-1", Op: events.OpPut, Path: "p.bin", Blob: &events.Blob{SHA256: sum(good), Size: 64, Mode: 0o644}})
	in := newInstance(t, w, "")
	in.agent.stallRetry = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var r Report
	go func() { done <- in.agent.Up(ctx, &r) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, ok := in.agent.readStall()
		if ok && st.Failures >= 3 {
			if st.Seq != seq || !bytes.Contains([]byte(st.Error), []byte("sha256 mismatch")) || !st.Next.After(st.Since) {
				t.Fatalf("stall record %+v", st)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("up ended while the entry was refused: %v (%+v)", err, r)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no stall recorded")
		}
	}
	if n := len(in.asg.completed); n != 0 {
		t.Fatalf("the hook was completed %d times on a stalled volume", n)
	}
	w.uploadKey(key, good) // the repair
	select {
	case err := <-done:
		if err != nil || r.Seq != seq {
			t.Fatalf("up after the repair: %v %+v", err, r)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("up did not converge after the repair")
	}
	if got, _ := os.ReadFile(filepath.Join(in.cfg.MountPath, "p.bin")); !bytes.Equal(got, good) || len(in.asg.completed) != 1 {
		t.Fatalf("after the repair: content %q, %d completions", got, len(in.asg.completed))
	}
	if _, ok := in.agent.readStall(); ok {
		t.Fatal("stall.json left after the repair")
	}

	// The timer backs off a refused entry: inside the backoff it skips.
	in.agent.stallRetry = time.Hour
	bad := gen("second", 32)
	w.uploadKey(events.BlobKey(sum(bad)), gen("other", 32))
	next := w.appendEntry(events.JournalEntry{RequestID: "poison-2", Op: events.OpPut, Path: "q.bin", Blob: &events.Blob{SHA256: sum(bad), Size: 32, Mode: 0o644}})
	var a1, a2 Report
	if err := in.agent.Apply(context.Background(), 0, false, &a1); KindOf(err) != KindBadContent || a1.ErrorKind != "" && a1.ErrorKind != string(KindBadContent) {
		t.Fatalf("apply of a refused entry: %v", err)
	}
	w.uploadKey(events.BlobKey(sum(bad)), bad)
	if err := in.agent.Apply(context.Background(), 0, true, &a2); err != nil || a2.Seq != next-1 {
		t.Fatalf("periodic apply inside the backoff: %v %+v", err, a2)
	}
	if err := in.agent.Apply(context.Background(), 0, false, &a2); err != nil || a2.Seq != next {
		t.Fatalf("a command's apply does not wait: %v %+v", err, a2)
	}
}
