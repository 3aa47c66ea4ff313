package events

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxPathBytes is the longest content path volsd accepts (docs/design.md §4).
const MaxPathBytes = 1024

// maxNameBytes is the longest single path component (Linux NAME_MAX).
const maxNameBytes = 255

// ReservedDir is volsd's own directory at the root of every volume; no
// content path may name it or anything under it.
const ReservedDir = ".volsd"

// rsyncHoldingDir is where rsync --delay-updates stages files in each
// directory; content there would be clobbered or leak half-written files.
const rsyncHoldingDir = ".~tmp~"

// RootPath names the root of the content tree. Only a sync may target it.
const RootPath = "."

// ValidationError says which field broke which rule. Its message names both,
// and the offending value when that helps, e.g.
// `path: must not contain ".." components (got "a/../b")`.
type ValidationError struct {
	Field string // JSON field, e.g. "path", "blob.sha256", "entries[3].mode"
	Rule  string // the rule that was broken, in words
	Value string // the offending value, quoted in the message; may be empty
}

func (e *ValidationError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Rule)
	}
	v := e.Value
	if len(v) > 80 {
		v = v[:80] + "…"
	}
	return fmt.Sprintf("%s: %s (got %q)", e.Field, e.Rule, v)
}

func invalid(field, rule, value string) error {
	return &ValidationError{Field: field, Rule: rule, Value: value}
}

// ValidatePath checks a content path against docs/design.md §4: relative, clean,
// valid UTF-8, at most MaxPathBytes bytes, components at most 255 bytes, no
// "..", NUL or control bytes, and not ".volsd" or under it. The root "." is
// refused here; callers that accept the root (sync) check for RootPath first.
func ValidatePath(field, p string) error {
	switch {
	case p == "":
		return invalid(field, "must not be empty", "")
	case len(p) > MaxPathBytes:
		return invalid(field, fmt.Sprintf("must be at most %d bytes, is %d", MaxPathBytes, len(p)), p)
	case !utf8.ValidString(p):
		return invalid(field, "must be valid UTF-8", p)
	case p == RootPath:
		return invalid(field, `must name a file or directory, not the root "."`, p)
	case strings.HasPrefix(p, "/"):
		return invalid(field, "must be relative (no leading /)", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f {
			return invalid(field, fmt.Sprintf("must not contain NUL or control bytes (byte 0x%02x at %d)", c, i), p)
		}
	}
	for part := range strings.SplitSeq(p, "/") {
		switch {
		case part == "":
			return invalid(field, "must be clean (no empty components, no trailing /)", p)
		case part == "..":
			return invalid(field, `must not contain ".." components`, p)
		case part == ".":
			return invalid(field, `must be clean (no "." components)`, p)
		case len(part) > maxNameBytes:
			return invalid(field, fmt.Sprintf("components must be at most %d bytes", maxNameBytes), p)
		case part == rsyncHoldingDir:
			return invalid(field, "must not contain "+rsyncHoldingDir+" components (reserved for rsync's --delay-updates)", p)
		}
	}
	if first, _, _ := strings.Cut(p, "/"); first == ReservedDir {
		return invalid(field, "must not be "+ReservedDir+" or under it (reserved for volsd)", p)
	}
	return nil
}

// ValidateSHA256 checks a digest written as 64 lowercase hex characters.
func ValidateSHA256(field, s string) error {
	if len(s) != 64 {
		return invalid(field, fmt.Sprintf("must be a sha256 of 64 lowercase hex characters, has %d characters", len(s)), s)
	}
	for i := 0; i < len(s); i++ {
		if !lowerHex[s[i]] {
			return invalid(field, "must be a sha256 of 64 lowercase hex characters", s)
		}
	}
	return nil
}

// lowerHex marks the bytes 0-9 and a-f.
var lowerHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdef" {
		t[c] = true
	}
	return t
}()

// PermMask is the only mode bits volsd writes: plain rwx permissions.
// setuid, setgid and sticky are refused.
const PermMask = 0o777

// ValidateMode checks a file mode is plain permission bits.
func ValidateMode(field string, m uint32) error {
	if m&^PermMask != 0 {
		return invalid(field, "must be plain permission bits 0..0777 (no setuid, setgid, sticky or type bits)", fmt.Sprintf("%#o", m))
	}
	return nil
}

// ValidateSize checks a byte size.
func ValidateSize(field string, n int64) error {
	if n < 0 {
		return invalid(field, "must be >= 0", fmt.Sprint(n))
	}
	return nil
}

// ValidateRequestID checks an idempotency key: 1..128 characters from
// [A-Za-z0-9._:-]. It ends up in DynamoDB keys and logs.
func ValidateRequestID(field, s string) error {
	if s == "" || len(s) > 128 {
		return invalid(field, "must be 1 to 128 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':'
		if !ok {
			return invalid(field, "may contain only letters, digits and . _ : -", s)
		}
	}
	return nil
}

// MaxMtime bounds a modification time in whole seconds since the epoch:
// 2^33 s (the year 2242) still fits the agent's nanosecond clocks.
const MaxMtime = 1 << 33

// ValidateMtime checks a modification time in whole seconds since the
// epoch: 0 (the epoch; for a put, "not given") up to MaxMtime.
func ValidateMtime(field string, s int64) error {
	if s < 0 || s >= MaxMtime {
		return invalid(field, fmt.Sprintf("must be whole seconds since 1970 below %d (the year 2242)", int64(MaxMtime)), fmt.Sprint(s))
	}
	return nil
}
