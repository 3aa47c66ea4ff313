package push_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/checksum"
	"github.com/volsd/volsd/internal/store"
)

// TestBlobsNeedAMatchingChecksum: the push Lambda appends a put or a sync
// only when every blob it names carries a SHA-256 checksum in the origin
// that proves its bytes (single part: equal to the name; multipart: S3's
// composite plus the CLI's full-object SHA-256 in the metadata). A blob
// uploaded without one, with other bytes, or in parts without the
// metadata is rejected at once, naming it.
func TestBlobsNeedAMatchingChecksum(t *testing.T) {
	origin := awsfake.NewS3()
	r := newRig(t, origin)
	ctx := context.Background()
	plain := func(key string, data []byte) {
		if _, err := origin.PutObject(ctx, &s3.PutObjectInput{Bucket: &r.bucket, Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
			t.Fatal(err)
		}
	}
	parts := func(key string, data []byte, meta map[string]string) {
		mp, err := origin.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &r.bucket, Key: aws.String(key), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256, Metadata: meta})
		if err != nil {
			t.Fatal(err)
		}
		out, err := origin.UploadPart(ctx, &s3.UploadPartInput{Bucket: &r.bucket, Key: aws.String(key), UploadId: mp.UploadId, PartNumber: aws.Int32(1), Body: bytes.NewReader(data)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := origin.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &r.bucket, Key: aws.String(key), UploadId: mp.UploadId,
			MultipartUpload: &s3types.CompletedMultipartUpload{Parts: []s3types.CompletedPart{{PartNumber: aws.Int32(1), ETag: out.ETag, ChecksumSHA256: out.ChecksumSHA256}}}}); err != nil {
			t.Fatal(err)
		}
	}
	blob := func(content []byte) *events.Blob {
		return &events.Blob{SHA256: sha(content), Size: int64(len(content)), Mode: 0o644}
	}
	noSum, evil, partsNoMeta, partsOK, good := []byte("no checksum"), []byte("right name"), []byte("parts, no metadata"), []byte("parts with metadata"), []byte("uploaded by volsd")
	plain(events.BlobKey(sha(noSum)), noSum)
	r.put(events.BlobKey(sha(evil)), []byte("wrong name")) // its own checksum, not its name's
	parts(events.BlobKey(sha(partsNoMeta)), partsNoMeta, nil)
	parts(events.BlobKey(sha(partsOK)), partsOK, map[string]string{checksum.MetadataKey: sha(partsOK)})
	r.put(events.BlobKey(sha(good)), good)
	inTree := r.manifest(map[string]string{"a.txt": "fine"})
	// a manifest whose only blob has no checksum
	plain(events.BlobKey(sha([]byte("tree blob"))), []byte("tree blob"))
	m := events.Manifest{Version: events.ManifestVersion, Entries: []events.ManifestEntry{{Path: "b.txt", Type: events.TypeFile, SHA256: sha([]byte("tree blob")), Size: 9, Mode: 0o644}}}
	raw, _ := m.Canonical()
	r.put(events.ManifestKey(sha(raw)), raw)

	put := func(id string, b *events.Blob) string {
		return body(t, events.PushRequest{RequestID: id, Op: events.OpPut, Path: id + ".txt", Blob: b})
	}
	sync := func(id, man string) string {
		return body(t, events.PushRequest{RequestID: id, Op: events.OpSync, Path: id, Manifest: &events.ManifestRef{SHA256: man}})
	}
	rejected := map[string]string{
		"nosum": put("nosum", blob(noSum)), "evil": put("evil", blob(evil)), "partsnometa": put("partsnometa", blob(partsNoMeta)),
		"badtree": sync("badtree", sha(raw)),
	}
	accepted := map[string]string{"good": put("good", blob(good)), "partsok": put("partsok", blob(partsOK)), "tree": sync("tree", inTree)}
	records := batch()
	for id, b := range rejected {
		records.Records = append(records.Records, sqsMessage("m-"+id, b, 1))
	}
	for id, b := range accepted {
		records.Records = append(records.Records, sqsMessage("m-"+id, b, 1))
	}
	failed := failedIDs(r.handle(records))
	for id := range rejected {
		rec, err := r.st.GetRequest(ctx, "web", id)
		if !failed["m-"+id] || err != nil || rec.State != store.RequestRejected || !strings.Contains(rec.Reason, "not proven to hold its bytes") {
			t.Errorf("%s: failed %v, record %+v %v", id, failed["m-"+id], rec, err)
		}
	}
	for id := range accepted {
		if rec, err := r.st.GetRequest(ctx, "web", id); failed["m-"+id] || err != nil || rec.State != store.RequestAppended {
			t.Errorf("%s: failed %v, record %+v %v", id, failed["m-"+id], rec, err)
		}
	}
	if j := r.journal(); len(j) != len(accepted) {
		t.Fatalf("journal holds %d entries, want %d", len(j), len(accepted))
	}
}
