package events

import "fmt"

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
func BlobsToCheck(next Manifest, verified BlobSet) (BlobSet, error) {
	check := BlobSet{}
	for _, e := range next.Entries {
		if e.Kind() != TypeFile {
			continue // dirs and links have no blob
		}
		if n, ok := verified[e.SHA256]; ok && n == e.Size {
			continue
		}
		if n, ok := check[e.SHA256]; ok && n != e.Size {
			return nil, invalid("entries.size", fmt.Sprintf("blob %s is listed with sizes %d and %d", e.SHA256, n, e.Size), fmt.Sprint(e.Size))
		}
		check[e.SHA256] = e.Size
	}
	return check, nil
}
