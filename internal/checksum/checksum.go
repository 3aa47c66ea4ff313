// Package checksum is how volsd proves that an object of the S3 origin
// holds exactly the bytes its name says (docs/design.md §5 "Content safety"):
// blobs are uploaded with S3's SHA-256 checksum of the bytes sent, so S3
// itself refuses a body that does not match, and presence is judged by the
// stored checksum (HeadObject with ChecksumMode ENABLED), never by size.
// The CLI (before it skips an upload) and the push Lambda (before it
// appends a request) both decide with Verify.
package checksum

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// MetadataKey is the user metadata key (x-amz-meta-sha256) under which the
// CLI records the full-object SHA-256 (hex) of a multipart upload, which it
// computed over the bytes it sent: S3's checksum of a multipart object is a
// checksum of its part checksums, not of the object.
const MetadataKey = "sha256"

// FromHex returns S3's form (base64) of a SHA-256 written in hex.
func FromHex(sum string) (string, error) {
	raw, err := hex.DecodeString(sum)
	if err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("checksum: %q is not a hex SHA-256", sum)
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

// Of returns S3's form of the SHA-256 of b (a part's checksum).
func Of(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// ErrMismatch marks an object that exists but is not proven to hold the
// bytes of its name: no checksum, another checksum, another size.
var ErrMismatch = errors.New("checksum mismatch")

// Verify says whether a HeadObject answer (asked with ChecksumMode
// ENABLED) proves the object holds size bytes whose SHA-256 is sum (hex):
// a single-part object's ChecksumSHA256 equals sum; a multipart object
// carries an S3 SHA-256 checksum (of its parts) and MetadataKey equals sum. The error wraps ErrMismatch and says what differs.
func Verify(out *s3.HeadObjectOutput, sum string, size int64) error {
	want, err := FromHex(sum)
	if err != nil {
		return err
	}
	if n := aws.ToInt64(out.ContentLength); n != size {
		return fmt.Errorf("%w: %d bytes, not %d", ErrMismatch, n, size)
	}
	got := aws.ToString(out.ChecksumSHA256)
	switch {
	case got == want:
		return nil
	case got == "":
		return fmt.Errorf("%w: no SHA-256 checksum stored (uploaded without one)", ErrMismatch)
	case out.Metadata[MetadataKey] == sum:
		// Multipart: S3 checked each part against its SHA-256; the CLI
		// hashed the whole stream and completed the upload only if it
		// matched. (The composite is "…-N" on AWS; moto's HEAD omits -N.)
		return nil
	case strings.Contains(got, "-") || out.ChecksumType == s3types.ChecksumTypeComposite:
		return fmt.Errorf("%w: a multipart object whose metadata %s is %q, not its name", ErrMismatch, MetadataKey, out.Metadata[MetadataKey])
	default:
		return fmt.Errorf("%w: its SHA-256 is %s", ErrMismatch, got)
	}
}
