package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/volsd/volsd/events"
)

// Repaired is one blob `volsd repair` put back into the origin.
type Repaired struct {
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Key    string `json:"key"`
	// Was says what the origin held before: "missing or other bytes" (or
	// no checksum), or "verified" (uploaded again anyway).
	Was string `json:"was"`
}

// Repair re-uploads the right bytes of blobs from local copies: every
// regular file of each LOCAL (a file or a tree) is hashed and put over
// blobs/<its sha256> with its SHA-256 checksum, whatever the origin holds
// there, then verified. It is the fix for a pool stalled at an entry
// whose blob is missing or holds other bytes (`volsd status` names the
// blob): the agents retry the entry by themselves (backoff, at most
// 15 minutes) or at the next push.
func (a *App) Repair(ctx context.Context, locals []string) ([]Repaired, error) {
	var out []Repaired
	for _, local := range locals {
		_, files, _, err := scan(local, false)
		if err != nil {
			return out, err
		}
		// Always hashed from the bytes: a repair trusts no index.
		if _, err := hashFiles(ctx, files, &hashIndex{records: map[string]hashRecord{}}); err != nil {
			return out, err
		}
		for _, f := range files {
			key := events.BlobKey(f.sha256)
			was := "missing or other bytes"
			if ok, err := a.verified(ctx, key, f.sha256, f.size); err != nil {
				return out, err
			} else if ok {
				was = "verified"
			}
			if err := a.uploadFile(ctx, f, nil); err != nil {
				return out, err
			}
			if ok, err := a.verified(ctx, key, f.sha256, f.size); err != nil || !ok {
				return out, fmt.Errorf("s3://%s/%s is still not verified after the upload (%v)", a.Cfg.Bucket, key, err)
			}
			out = append(out, Repaired{File: f.abs, SHA256: f.sha256, Size: f.size, Key: key, Was: was})
		}
	}
	return out, nil
}

// RenderRepaired writes what repair did.
func RenderRepaired(w io.Writer, rs []Repaired) {
	for _, r := range rs {
		fmt.Fprintf(w, "repaired s3://…/%s (%s, %s; was %s)\n", r.Key, r.File, bytesText(r.Size), r.Was)
	}
	fmt.Fprintf(w, "%d blobs verified in the origin; stalled agents retry by themselves (within 15 minutes) or at the next push\n", len(rs))
}
