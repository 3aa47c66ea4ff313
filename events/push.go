package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
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
type Blob struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
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

// Validate checks the request against the v1 schema and DESIGN.md §4.
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
	return ValidateMode(field+".mode", b.Mode)
}

// BlobKey is the origin object key of a blob.
func BlobKey(sha256 string) string { return "blobs/" + sha256 }

// ManifestKey is the origin object key of a manifest.
func ManifestKey(sha256 string) string { return "manifests/" + sha256 + ".json" }

// ManifestVersion is the manifest schema version.
const ManifestVersion = 1

// Manifest lists every file of a tree; directories are implied by the paths.
// Paths are relative to the sync's target directory.
type Manifest struct {
	Version int             `json:"version"`
	Entries []ManifestEntry `json:"entries"`
}

// ManifestEntry is one regular file of a manifest.
type ManifestEntry struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
}

func (e ManifestEntry) blob() Blob { return Blob{SHA256: e.SHA256, Size: e.Size, Mode: e.Mode} }

// MaxManifestBytes bounds a manifest download (about a million entries).
const MaxManifestBytes = 256 << 20

// ParseManifest decodes and validates a manifest strictly.
func ParseManifest(r io.Reader) (Manifest, error) {
	var m Manifest
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestBytes+1))
	if err != nil {
		return m, fmt.Errorf("read manifest: %w", err)
	}
	return ParseManifestBytes(data)
}

// ParseManifestBytes is ParseManifest of data already read; data is not
// kept.
func ParseManifestBytes(data []byte) (Manifest, error) {
	var m Manifest
	if len(data) > MaxManifestBytes {
		return m, invalid("manifest", fmt.Sprintf("must be at most %d bytes", MaxManifestBytes), "")
	}
	if !utf8.Valid(data) {
		return m, invalid("manifest", "must be valid UTF-8", "")
	}
	m, ok := parseCanonical(data)
	if !ok {
		m = Manifest{}
		if err := decodeStrict(data, &m); err != nil {
			return m, err
		}
	}
	return m, m.Validate()
}

// Validate checks every entry, that no path repeats, and that no file is
// also the parent directory of another file.
func (m Manifest) Validate() error {
	if m.Version != ManifestVersion {
		return invalid("version", fmt.Sprintf("must be %d (unsupported manifest version)", ManifestVersion), fmt.Sprint(m.Version))
	}
	sorted := true
	for i, e := range m.Entries {
		// Field names are built only for an error: a manifest may have a
		// million entries.
		if ValidatePath("", e.Path) != nil || e.blob().Validate("") != nil {
			f := fmt.Sprintf("entries[%d]", i)
			if err := ValidatePath(f+".path", e.Path); err != nil {
				return err
			}
			return e.blob().Validate(f)
		}
		sorted = sorted && (i == 0 || m.Entries[i-1].Path < e.Path)
	}
	if !sorted {
		return m.validateUnsorted()
	}
	// Sorted by path (every canonical manifest): no path repeats, and a
	// file that is also a directory is found by a binary search.
	return m.checkDirs(func(dir string) bool {
		_, found := sort.Find(len(m.Entries), func(k int) int { return strings.Compare(dir, m.Entries[k].Path) })
		return found
	})
}

// checkDirs returns the error for the first entry with a parent directory
// isFile says is a file. A directory that is the previous entry's parent
// was checked with it, and its parents too.
func (m Manifest) checkDirs(isFile func(dir string) bool) error {
	var last string
	for _, e := range m.Entries {
		for dir := e.Path; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 || dir[:i] == last {
				break
			}
			dir = dir[:i]
			if isFile(dir) {
				return invalid("entries.path", fmt.Sprintf("%q is a file and also the directory of %q", dir, e.Path), dir)
			}
		}
		if j := strings.LastIndexByte(e.Path, '/'); j >= 0 {
			last = e.Path[:j]
		}
	}
	return nil
}

// validateUnsorted checks repeats and file-directory clashes with a set.
func (m Manifest) validateUnsorted() error {
	files := make(map[string]struct{}, len(m.Entries))
	for i, e := range m.Entries {
		if _, dup := files[e.Path]; dup {
			return invalid(fmt.Sprintf("entries[%d].path", i), "appears twice in the manifest", e.Path)
		}
		files[e.Path] = struct{}{}
	}
	return m.checkDirs(func(dir string) bool {
		_, clash := files[dir]
		return clash
	})
}

// Canonical returns the manifest's canonical JSON: entries sorted by path,
// compact, newline-terminated. Its sha256 names the manifest in the origin.
func (m Manifest) Canonical() ([]byte, error) {
	c := Manifest{Version: m.Version, Entries: append([]ManifestEntry(nil), m.Entries...)}
	sort.Slice(c.Entries, func(i, j int) bool { return c.Entries[i].Path < c.Entries[j].Path })
	if c.Entries == nil {
		c.Entries = []ManifestEntry{}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

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
