package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

func TestRejectRequestRecordsOnceAndNeverOverwritesAnAppend(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()

	r, created, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "bad-1", Op: "put", Path: "../etc", Reason: `path: must not contain ".." components`})
	if err != nil || !created {
		t.Fatalf("first reject: created=%v err=%v", created, err)
	}
	if r.State != store.RequestRejected || r.ExpiresAt < time.Now().Add(6*24*time.Hour).Unix() {
		t.Fatalf("record %+v", r)
	}
	again, created, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "bad-1", Reason: "another reason"})
	if err != nil || created || again.Reason != r.Reason {
		t.Fatalf("second reject: %+v created=%v err=%v; want the first record unchanged", again, created, err)
	}
	got, err := s.GetRequest(ctx, "web", "bad-1")
	if err != nil || got.State != store.RequestRejected || got.Reason != r.Reason || got.Path != "../etc" {
		t.Fatalf("stored %+v %v", got, err)
	}
	// A rejected request never enters the journal.
	if _, _, err := s.Append(ctx, "web", delEntry("bad-1", "a")); !errors.Is(err, store.ErrRejected) {
		t.Fatalf("append after reject: %v, want ErrRejected", err)
	}
	if head, _ := s.Head(ctx, "web"); head != 0 {
		t.Fatalf("head %d after a rejected request", head)
	}

	// An appended request is never turned into a rejected one.
	seq, _, err := s.Append(ctx, "web", delEntry("good-1", "b"))
	if err != nil {
		t.Fatal(err)
	}
	prev, created, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "good-1", Reason: "late"})
	if err != nil || created || prev.State != store.RequestAppended || prev.Seq != seq {
		t.Fatalf("reject of appended: %+v created=%v err=%v", prev, created, err)
	}
	rej, err := s.ListRejected(ctx, "web", 0)
	if err != nil || len(rej) != 1 || rej[0].RequestID != "bad-1" {
		t.Fatalf("ListRejected = %+v %v", rej, err)
	}
}

func TestRejectRequestRefusesAnInvalidID(t *testing.T) {
	s, _ := newStore(t)
	if _, _, err := s.RejectRequest(context.Background(), "web", store.Rejection{RequestID: "a/b", Reason: "x"}); err == nil {
		t.Fatal("a request ID that cannot be a key was accepted")
	}
}

func TestRejectRequestSanitizesHostileInput(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	path := "a\xff\xfe/" + strings.Repeat("é", 2000)
	r, _, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "h", Op: "put\x00", Path: path, Reason: strings.Repeat("why ", 1000)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRequest(ctx, "web", "h")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{got.Path, got.Reason, string(got.Op)} {
		if !utf8.ValidString(v) {
			t.Errorf("stored invalid UTF-8 %q", v)
		}
	}
	if len(got.Path) > events.MaxPathBytes || !strings.HasSuffix(got.Path, "…") || !strings.HasPrefix(got.Path, "a\uFFFD") {
		t.Errorf("path kept as %q (%d bytes)", got.Path[:20], len(got.Path))
	}
	if len(got.Reason) > 2048 || got.Reason != r.Reason {
		t.Errorf("reason %d bytes", len(got.Reason))
	}
}

func TestListRejectedNewestFirstWithLimit(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, _, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: fmt.Sprintf("r%d", i), Reason: "bad"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, _, err := s.RejectRequest(ctx, "other", store.Rejection{RequestID: "x", Reason: "bad"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListRejected(ctx, "web", 3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.RequestID)
	}
	if strings.Join(ids, ",") != "r4,r3,r2" {
		t.Fatalf("ListRejected(3) = %v, want r4,r3,r2", ids)
	}
	all, _ := s.ListRejected(ctx, "web", 0)
	if len(all) != 5 {
		t.Fatalf("ListRejected(0) = %d items, want 5", len(all))
	}
	// The rejection index does not leak into the other listings.
	if vols, _ := s.ListVolumes(ctx, "web"); len(vols) != 0 {
		t.Fatalf("volumes %+v", vols)
	}
}

// TestConcurrentRejectionsWriteOnce: 20 goroutines reject the same request;
// exactly one writes, every one sees the same record, the index holds one.
func TestConcurrentRejectionsWriteOnce(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	reasons := map[string]bool{}
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r, c, err := s.RejectRequest(ctx, "web", store.Rejection{RequestID: "same", Reason: fmt.Sprintf("reason %d", g)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if c {
				created++
			}
			reasons[r.Reason] = true
		}(g)
	}
	wg.Wait()
	if created != 1 || len(reasons) != 1 {
		t.Fatalf("created %d times, %d distinct reasons seen; want 1 and 1", created, len(reasons))
	}
	if all, _ := s.ListRejected(ctx, "web", 0); len(all) != 1 {
		t.Fatalf("index holds %d rejections", len(all))
	}
}
