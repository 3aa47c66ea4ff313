// Package reclaim keeps the S3 origin from growing forever (docs/design.md §5b):
// a mark-and-sweep that deletes blobs and manifests nothing references any
// more, after a grace period measured from their last reference.
//
// What references an object:
//
//   - every journal entry still in the table (above the compaction floor,
//     and those below it that TTL has not removed yet): its blob, or its
//     manifest and every blob that manifest lists;
//   - the base tree (Tree): what the entries the journal has forgotten
//     left in the content, so every retained snapshot's tree is covered
//     (a retained snapshot is at or above the tree's seq: its content is
//     the base tree folded with entries that are still in the journal);
//   - a push in flight: its objects were uploaded (or found present)
//     moments before its request reached the queue, so the grace period
//     measured from the object's upload and from the time a run first saw
//     it unreferenced covers it (see Sweep).
//
// Compaction (internal/snapshot.Compact) folds entries into the base tree
// before it lets them expire, so the tree plus the journal always name
// everything the pool's content, retained snapshots included, can hold.
package reclaim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/volsd/volsd/events"
)

// RefKind says what a tree reference names.
type RefKind string

// The kinds of reference.
const (
	RefBlob     RefKind = "blob"     // blobs/<sha256>, placed at Path by a put
	RefManifest RefKind = "manifest" // manifests/<sha256>.json, synced to Path
)

// Ref is one object the content tree still holds at Path.
type Ref struct {
	Path   string  `json:"path"`
	Kind   RefKind `json:"kind"`
	SHA256 string  `json:"sha256"`
}

// Key is the object's key in the origin.
func (r Ref) Key() string {
	if r.Kind == RefManifest {
		return events.ManifestKey(r.SHA256)
	}
	return events.BlobKey(r.SHA256)
}

// Tree is the base tree at Seq: the references that journal entries 1..Seq
// leave in the content. It over-approximates (a reference is dropped only
// when a later entry surely replaced or deleted what it put there), which
// only ever keeps more. Known is false when entries were lost before the
// tree could fold them; a sync of the root makes it known again.
type Tree struct {
	Seq   int64 `json:"seq"`
	Known bool  `json:"known"`
	Refs  []Ref `json:"refs"`
}

// under reports whether path is at or below dir (the root "." holds all).
func under(path, dir string) bool {
	return dir == events.RootPath || path == dir || strings.HasPrefix(path, dir+"/")
}

// Fold applies entries, which must continue the tree's seq without a gap
// (a gap makes the tree unknown, as its references can no longer be
// trusted): a put of P replaces the blob reference at P (a manifest synced
// to P stays: it may still hold the rest of that tree); a sync of P
// replaces every reference at or below P with its manifest; a delete of P
// drops every reference at or below P.
func (t Tree) Fold(entries []events.JournalEntry) Tree {
	refs := map[Ref]bool{}
	for _, r := range t.Refs {
		refs[r] = true
	}
	for _, e := range entries {
		if e.Seq <= t.Seq {
			continue
		}
		if e.Seq != t.Seq+1 {
			t.Known = false
		}
		t.Seq = e.Seq
		switch e.Op {
		case events.OpPut:
			for r := range refs {
				if r.Kind == RefBlob && r.Path == e.Path {
					delete(refs, r)
				}
			}
			if e.Blob != nil {
				refs[Ref{Path: e.Path, Kind: RefBlob, SHA256: e.Blob.SHA256}] = true
			}
		case events.OpSync:
			for r := range refs {
				if under(r.Path, e.Path) {
					delete(refs, r)
				}
			}
			if e.Manifest != nil {
				refs[Ref{Path: e.Path, Kind: RefManifest, SHA256: e.Manifest.SHA256}] = true
			}
			if e.Path == events.RootPath {
				// The whole content is this manifest now.
				t.Known = true
			}
		case events.OpDelete:
			for r := range refs {
				if under(r.Path, e.Path) {
					delete(refs, r)
				}
			}
		}
	}
	t.Refs = make([]Ref, 0, len(refs))
	for r := range refs {
		t.Refs = append(t.Refs, r)
	}
	sort.Slice(t.Refs, func(i, j int) bool {
		a, b := t.Refs[i], t.Refs[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.SHA256 < b.SHA256
	})
	return t
}

// Encode writes the tree as gzip'd JSON (deterministic for one tree).
func (t Tree) Encode() ([]byte, error) {
	if t.Refs == nil {
		t.Refs = []Ref{}
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeTree reads a tree Encode wrote.
func DecodeTree(data []byte) (Tree, error) {
	var t Tree
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return t, fmt.Errorf("base tree: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return t, fmt.Errorf("base tree: %w", err)
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return t, fmt.Errorf("base tree: %w", err)
	}
	return t, nil
}
