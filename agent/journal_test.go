package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/volsd/volsd/events"
)

// racingJournal answers Head with head and the first Entries query with
// entries up to visible, as if appends landed between the two reads; later
// queries see everything up to total.
type racingJournal struct {
	mu              sync.Mutex
	head            int64
	visible, total  int64
	headErr, entErr error
	queries         []string
}

func (j *racingJournal) Head(context.Context, string) (int64, error) { return j.head, j.headErr }

func (j *racingJournal) Entries(_ context.Context, _ string, after, upTo int64) ([]events.JournalEntry, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.queries = append(j.queries, fmt.Sprintf("%d..%d", after+1, upTo))
	if j.entErr != nil {
		return nil, j.entErr
	}
	last := j.total
	if len(j.queries) == 1 {
		last = j.visible
	}
	if upTo > 0 {
		last = min(last, upTo)
	}
	var out []events.JournalEntry
	for s := after + 1; s <= last; s++ {
		out = append(out, events.JournalEntry{Seq: s, Op: events.OpDelete, Path: "x"})
	}
	return out, nil
}

// TestReadJournalAcrossAppends: the head and the entries are read at
// once, so an append can fall between them either way; the result is
// always the entries after the watermark up to the head (or upTo),
// contiguous.
func TestReadJournalAcrossAppends(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		head, visible, total int64
		seq, upTo            int64
		wantHead, wantFirst  int64
		wantLast             int64
		wantQueries          string
	}{
		{"head read first, entries saw more", 5, 9, 9, 2, 0, 5, 3, 5, "3..0"},
		{"entries read first, head saw more", 7, 4, 7, 2, 0, 7, 3, 7, "3..0 5..7"},
		{"bounded by upTo", 9, 9, 9, 2, 6, 9, 3, 6, "3..6"},
		{"up to date", 4, 4, 4, 4, 0, 4, 0, 0, "5..0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := &racingJournal{head: tc.head, visible: tc.visible, total: tc.total}
			a := New(Config{Pool: "web"}, Deps{Journal: j})
			head, entries, err := a.readJournal(context.Background(), tc.seq, tc.upTo)
			if err != nil {
				t.Fatal(err)
			}
			var first, last int64
			for i, e := range entries {
				if e.Seq != tc.seq+int64(i)+1 {
					t.Fatalf("entry %d has seq %d: not contiguous after %d", i, e.Seq, tc.seq)
				}
				if i == 0 {
					first = e.Seq
				}
				last = e.Seq
			}
			if head != tc.wantHead || first != tc.wantFirst || last != tc.wantLast {
				t.Fatalf("head %d, entries %d..%d; want head %d, entries %d..%d", head, first, last, tc.wantHead, tc.wantFirst, tc.wantLast)
			}
			if got := strings.Join(j.queries, " "); got != tc.wantQueries {
				t.Fatalf("queries %q, want %q", got, tc.wantQueries)
			}
		})
	}

	// Errors are retryable and say which read failed.
	boom := errors.New("throttled")
	for _, j := range []*racingJournal{{head: 3, headErr: boom}, {head: 3, entErr: boom}} {
		a := New(Config{Pool: "web"}, Deps{Journal: j})
		_, _, err := a.readJournal(context.Background(), 0, 0)
		want := "journal head"
		if j.entErr != nil {
			want = "journal entries 1..3"
		}
		if KindOf(err) != KindRetryable || !errors.Is(err, boom) || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v (kind %v); want a retryable error about the %s", err, KindOf(err), want)
		}
	}
	// Entries missing below the head even after a second query.
	j := &racingJournal{head: 6, visible: 3, total: 4}
	a := New(Config{Pool: "web"}, Deps{Journal: j})
	if _, _, err := a.readJournal(context.Background(), 0, 0); err == nil || !strings.Contains(err.Error(), "returned 4 entries for 1..6") {
		t.Fatalf("journal short of its head: %v", err)
	}
}
