package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/volsd/volsd/events"
)

// The deletion guard's defaults: a sync that would delete more than
// DefaultMaxDelete files, or more than DefaultMaxDeletePercent of the
// target's files (once more than deleteFloor files would go), is refused
// unless --allow-delete is given.
const (
	DefaultMaxDelete        = 1000
	DefaultMaxDeletePercent = 10
	deleteFloor             = 10
)

// planPaths is how many paths of each kind a plan lists.
const planPaths = 10

// Plan is what a push would do on its target: entries (files and links;
// directories are not counted) added, changed and deleted, with the first
// paths of each, as the journal still in the table says the pool holds
// them.
type Plan struct {
	// Target is how many entries the target holds now.
	Target  int      `json:"target"`
	Add     int      `json:"add"`
	Change  int      `json:"change"`
	Delete  int      `json:"delete"`
	Adds    []string `json:"adds,omitempty"`
	Changes []string `json:"changes,omitempty"`
	Deletes []string `json:"deletes,omitempty"`
	// Since is the first seq read when older entries may have expired
	// (compaction) and no later sync covers the target: what only those
	// entries put there is not counted.
	Since int64 `json:"since,omitempty"`
}

// DeleteGuard is the deletion guard's setting (flags --max-delete,
// --max-delete-percent, --allow-delete).
type DeleteGuard struct {
	Max     int
	Percent int
	Allow   bool
}

// Check validates the setting (the one place it is checked).
func (g DeleteGuard) Check() error {
	switch {
	case g.Max < 0:
		return usageError{fmt.Errorf("--max-delete must be >= 0 (got %d)", g.Max)}
	case g.Percent < 0 || g.Percent > 100:
		return usageError{fmt.Errorf("--max-delete-percent must be 0 to 100 (got %d)", g.Percent)}
	}
	return nil
}

// refuse returns the guard's error for plan p, or nil.
func (g DeleteGuard) refuse(p Plan, dest string) error {
	if g.Allow || p.Delete == 0 {
		return nil
	}
	why := ""
	switch {
	case p.Delete > g.Max:
		why = fmt.Sprintf("more than --max-delete %d", g.Max)
	case p.Delete > deleteFloor && p.Delete*100 > g.Percent*p.Target:
		why = fmt.Sprintf("more than --max-delete-percent %d%% of the %d there", g.Percent, p.Target)
	default:
		return nil
	}
	return inputErr("this sync would delete %d files at %s (%s), e.g. %s: check LOCAL and DEST with --dry-run, then push again with --allow-delete if that is meant",
		p.Delete, dest, why, strings.Join(p.Deletes[:min(3, len(p.Deletes))], ", "))
}

// entryState is what a plan compares of an entry.
type entryState struct {
	kind   events.EntryType
	sha256 string
	size   int64
	mode   uint32
	target string
}

func stateOf(e events.ManifestEntry) entryState {
	return entryState{kind: e.Kind(), sha256: e.SHA256, size: e.Size, mode: e.Mode, target: e.Target}
}

// under says whether content path p is dir or inside it (RootPath: all).
func under(p, dir string) bool {
	return dir == events.RootPath || p == dir || strings.HasPrefix(p, dir+"/")
}

// joinPath is the content path of rel under dir.
func joinPath(dir, rel string) string {
	switch {
	case dir == events.RootPath:
		return rel
	case rel == events.RootPath:
		return dir
	}
	return dir + "/" + rel
}

// plan compares what the pool holds under dest (the journal replayed from
// the last entry that covers it) with the entries a push would leave there.
func (a *App) plan(ctx context.Context, dest string, want map[string]entryState) (Plan, error) {
	have, since, err := a.targetTree(ctx, dest)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Target: len(have), Since: since}
	for path, w := range want {
		switch h, ok := have[path]; {
		case !ok:
			p.Add++
			p.Adds = append(p.Adds, path)
		case h != w:
			p.Change++
			p.Changes = append(p.Changes, path)
		}
	}
	for path := range have {
		if _, ok := want[path]; !ok {
			p.Delete++
			p.Deletes = append(p.Deletes, path)
		}
	}
	for _, l := range []*[]string{&p.Adds, &p.Changes, &p.Deletes} {
		sort.Strings(*l)
		*l = (*l)[:min(planPaths, len(*l))]
	}
	return p, nil
}

// targetTree returns the entries (not directories) the journal puts under
// dest, by content path. It reads the entries above the compaction mark
// and replays them from the last sync or delete that covers dest; when none
// does and older entries may be gone, since is the first seq read.
func (a *App) targetTree(ctx context.Context, dest string) (map[string]entryState, int64, error) {
	c, err := a.State.GetCompaction(ctx, a.Cfg.Pool)
	if err != nil {
		return nil, 0, fmt.Errorf("read the journal's compaction mark: %w", err)
	}
	es, err := a.State.Entries(ctx, a.Cfg.Pool, c.Marked, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("read the journal: %w", err)
	}
	start, since := 0, int64(0)
	if len(es) == 0 && c.Marked > 0 {
		since = c.Marked + 1
	}
	for i := len(es) - 1; i >= 0; i-- {
		if e := es[i]; e.Op != events.OpPut && under(dest, e.Path) {
			start = i
			break
		}
		if i == 0 && c.Marked > 0 {
			since = c.Marked + 1
		}
	}
	tree := map[string]entryState{}
	drop := func(dir string) {
		for p := range tree {
			if under(p, dir) {
				delete(tree, p)
			}
		}
	}
	for _, e := range es[start:] {
		if !under(e.Path, dest) && !under(dest, e.Path) {
			continue
		}
		switch e.Op {
		case events.OpPut:
			drop(e.Path)
			if !under(e.Path, dest) {
				continue // a file now where an ancestor of dest was
			}
			tree[e.Path] = stateOf(events.ManifestEntry{Type: events.TypeFile, SHA256: e.Blob.SHA256, Size: e.Blob.Size, Mode: e.Blob.Mode})
		case events.OpDelete:
			drop(e.Path)
		case events.OpSync:
			drop(e.Path)
			m, err := a.readManifest(ctx, e.Manifest.SHA256)
			if err != nil {
				return nil, 0, fmt.Errorf("entry %d (sync %s): %w", e.Seq, e.Path, err)
			}
			for _, me := range m.Entries {
				if p := joinPath(e.Path, me.Path); me.Kind() != events.TypeDir && under(p, dest) {
					tree[p] = stateOf(me)
				}
			}
		}
	}
	return tree, since, nil
}
