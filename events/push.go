package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// PushVersion is the only push request schema version this build accepts.
const PushVersion = 1

// Op is a content operation.
type Op string

// The content operations.
const (
	OpPut    Op = "put"    // one file from a blob
	OpSync   Op = "sync"   // a whole tree from a manifest; files not in it are deleted
	OpDelete Op = "delete" // a file or a tree
)

// Blob names a content-addressed object in the origin (blobs/<sha256>).
//
// Mtime (whole seconds since the epoch) is the file's modification time,
// placed on every server; 0 means not given (a request of an older CLI):
// the agent then uses the entry's creation time.
type Blob struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
	Mtime  int64  `json:"mtime,omitempty"`
}

// ManifestRef names a manifest in the origin (manifests/<sha256>.json).
type ManifestRef struct {
	SHA256 string `json:"sha256"`
}

// PushRequest is version 1 of the SQS message body that asks volsd to change
// the content of a pool.
type PushRequest struct {
	Version   int          `json:"version"`
	RequestID string       `json:"requestId"`
	Op        Op           `json:"op"`
	Path      string       `json:"path"`
	Blob      *Blob        `json:"blob,omitempty"`
	Manifest  *ManifestRef `json:"manifest,omitempty"`
}

// MaxPushRequestBytes bounds a push request body (an SQS message is at most
// 256 KiB; a valid request is far smaller).
const MaxPushRequestBytes = 16 << 10

// ParsePushRequest decodes and validates one SQS body strictly: unknown
// fields, trailing data, wrong types and every rule of Validate are errors.
func ParsePushRequest(body []byte) (PushRequest, error) {
	var r PushRequest
	if len(body) > MaxPushRequestBytes {
		return r, invalid("body", fmt.Sprintf("must be at most %d bytes, is %d", MaxPushRequestBytes, len(body)), "")
	}
	if !utf8.Valid(body) {
		// encoding/json would silently turn bad bytes into U+FFFD and so
		// change a path; refuse instead.
		return r, invalid("body", "must be valid UTF-8", "")
	}
	if err := decodeStrict(body, &r); err != nil {
		return r, err
	}
	return r, r.Validate()
}

// Validate checks the request against the v1 schema and docs/design.md §4.
func (r PushRequest) Validate() error {
	if r.Version != PushVersion {
		return invalid("version", fmt.Sprintf("must be %d (unsupported schema version)", PushVersion), fmt.Sprint(r.Version))
	}
	if err := ValidateRequestID("requestId", r.RequestID); err != nil {
		return err
	}
	switch r.Op {
	case OpPut:
		if err := ValidatePath("path", r.Path); err != nil {
			return err
		}
		if r.Blob == nil {
			return invalid("blob", "is required for op put", "")
		}
		if r.Manifest != nil {
			return invalid("manifest", "must be absent for op put", "")
		}
		return r.Blob.Validate("blob")
	case OpSync:
		if r.Path != RootPath {
			if err := ValidatePath("path", r.Path); err != nil {
				return err
			}
		}
		if r.Manifest == nil {
			return invalid("manifest", "is required for op sync", "")
		}
		if r.Blob != nil {
			return invalid("blob", "must be absent for op sync", "")
		}
		return ValidateSHA256("manifest.sha256", r.Manifest.SHA256)
	case OpDelete:
		if err := ValidatePath("path", r.Path); err != nil {
			return err
		}
		if r.Blob != nil || r.Manifest != nil {
			return invalid("op", "delete takes neither blob nor manifest", "")
		}
		return nil
	case "":
		return invalid("op", "is required (put, sync or delete)", "")
	default:
		return invalid("op", "must be put, sync or delete", string(r.Op))
	}
}

// Validate checks a blob reference.
func (b Blob) Validate(field string) error {
	if err := ValidateSHA256(field+".sha256", b.SHA256); err != nil {
		return err
	}
	if err := ValidateSize(field+".size", b.Size); err != nil {
		return err
	}
	if err := ValidateMtime(field+".mtime", b.Mtime); err != nil {
		return err
	}
	return ValidateMode(field+".mode", b.Mode)
}

// BlobKey is the origin object key of a blob.
func BlobKey(sha256 string) string { return "blobs/" + sha256 }

// ManifestKey is the origin object key of a manifest.
func ManifestKey(sha256 string) string { return "manifests/" + sha256 + ".json" }

// JournalEntry is one appended content change; Seq starts at 1 and has no gaps.
type JournalEntry struct {
	Seq       int64        `json:"seq"`
	Op        Op           `json:"op"`
	Path      string       `json:"path"`
	Blob      *Blob        `json:"blob,omitempty"`
	Manifest  *ManifestRef `json:"manifest,omitempty"`
	RequestID string       `json:"requestId"`
	CreatedAt time.Time    `json:"createdAt"`
}

// Validate checks an entry read back from the journal as strictly as the
// request it came from: the agent never trusts the table blindly.
func (e JournalEntry) Validate() error {
	if e.Seq < 1 {
		return invalid("seq", "must be >= 1", fmt.Sprint(e.Seq))
	}
	return PushRequest{Version: PushVersion, RequestID: e.RequestID, Op: e.Op, Path: e.Path, Blob: e.Blob, Manifest: e.Manifest}.Validate()
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data, and turns decoder errors into ValidationErrors
// that name the field.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case asError(err, &te):
			return invalid(te.Field, "has the wrong type: "+te.Value+" where "+te.Type.String()+" is expected", "")
		case asError(err, &se):
			return invalid("body", fmt.Sprintf("is not valid JSON at byte %d: %v", se.Offset, se), "")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return invalid(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), "is not a known field", "")
		case err == io.EOF:
			return invalid("body", "is empty", "")
		default:
			return invalid("body", "is not valid JSON: "+err.Error(), "")
		}
	}
	if dec.More() {
		return invalid("body", "has data after the JSON object", "")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("body", "has data after the JSON object", "")
	}
	return nil
}
