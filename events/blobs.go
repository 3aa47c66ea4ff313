package events

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"
	"unsafe"
)

// BlobSet maps blob sha256 → size.
type BlobSet map[string]int64

// Blobs returns the distinct blobs the manifest's file entries name.
func (m Manifest) Blobs() BlobSet {
	s := make(BlobSet, len(m.Entries))
	for _, e := range m.Entries {
		if e.Kind() == TypeFile {
			s[e.SHA256] = e.Size
		}
	}
	return s
}

// BlobsToCheck is the one rule for which blobs of a sync's manifest must be
// checked in the origin (the CLI before it uploads, the push Lambda before
// it appends): the distinct blobs of next that verified does not hold with
// the same size. verified is the blob set of the previous manifest of the
// same target (nil: none, every blob is checked); its blobs were checked
// when its entry was appended and stay in the origin while that entry is
// in the journal. A blob that next lists with two sizes is an error (an
// entry whose size matches verified is not compared: the check of the
// other one finds the mismatch in the origin).
func BlobsToCheck(next Manifest, verified VerifiedBlobs) (BlobSet, error) {
	check := BlobSet{}
	for _, e := range next.Entries {
		if e.Kind() != TypeFile {
			continue // dirs and links have no blob
		}
		if verified != nil && verified.Holds(e.SHA256, e.Size) {
			continue
		}
		if n, ok := check[e.SHA256]; ok && n != e.Size {
			return nil, invalid("entries.size", fmt.Sprintf("blob %s is listed with sizes %d and %d", e.SHA256, n, e.Size), fmt.Sprint(e.Size))
		}
		check[e.SHA256] = e.Size
	}
	return check, nil
}

// VerifiedBlobs is the blob set of a previous manifest, as BlobsToCheck
// asks it: does it hold the blob sha (hex) with this size?
type VerifiedBlobs interface {
	Holds(sha string, size int64) bool
}

// Holds says the set has blob sha with size.
func (s BlobSet) Holds(sha string, size int64) bool {
	n, ok := s[sha]
	return ok && n == size
}

// CompactBlobs is a manifest's blob set in 40 bytes a blob (binary sha256
// and size, sorted), for a manifest of a million entries: some 40 MiB
// where a BlobSet of hex strings takes several times that.
type CompactBlobs []compactBlob

type compactBlob struct {
	sum  [32]byte
	size int64
}

func compareBlobs(a, b compactBlob) int {
	if c := bytes.Compare(a.sum[:], b.sum[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.size, b.size)
}

// Holds says the set has blob sha with size.
func (c CompactBlobs) Holds(sha string, size int64) bool {
	var b compactBlob
	if len(sha) != 2*len(b.sum) {
		return false
	}
	if _, err := hex.Decode(b.sum[:], []byte(sha)); err != nil {
		return false
	}
	b.size = size
	_, found := slices.BinarySearchFunc(c, b, compareBlobs)
	return found
}

// ManifestBlobs returns the distinct blobs of the manifest in data, read
// as ParseManifestBytes reads it, without keeping its entries: a canonical
// manifest is scanned in place (no copy of data, no entry list). It checks
// only what reading the blobs needs (the form, and each file's sha256) —
// use it for a manifest that was validated before, such as the previous
// sync's, which the push Lambda checked when it appended that entry.
func ManifestBlobs(data []byte) (CompactBlobs, error) {
	var (
		out CompactBlobs
		bad error
	)
	add := func(e ManifestEntry) {
		if e.Kind() != TypeFile || bad != nil {
			return
		}
		var b compactBlob
		if len(e.SHA256) != 2*len(b.sum) {
			bad = invalid("entries.sha256", "must be 64 lowercase hex characters", e.SHA256)
			return
		}
		if _, err := hex.Decode(b.sum[:], []byte(e.SHA256)); err != nil {
			bad = invalid("entries.sha256", "must be 64 lowercase hex characters", e.SHA256)
			return
		}
		b.size = e.Size
		out = append(out, b)
	}
	// The entries' strings do not outlive the scan: they may share data.
	if _, ok := eachCanonical(data, unsafe.String(unsafe.SliceData(data), len(data)), add); !ok {
		out, bad = nil, nil
		m, err := ParseManifestBytes(data)
		if err != nil {
			return nil, err
		}
		for _, e := range m.Entries {
			add(e)
		}
	}
	if bad != nil {
		return nil, bad
	}
	slices.SortFunc(out, compareBlobs)
	return slices.CompactFunc(out, func(a, b compactBlob) bool { return a == b }), nil
}
