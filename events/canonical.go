package events

import (
	"bytes"
	"math"
	"unicode/utf8"
)

// parseCanonical parses data when it is exactly in the form Canonical
// writes (no spaces, keys in order, no escapes in strings, integers without
// leading zeros): the common case, parsed in one pass without reflection.
// ok is false for anything else, and the general decoder then parses the
// manifest or says what is wrong with it; for data parseCanonical accepts,
// both give the same Manifest (FuzzParseCanonical checks this).
func parseCanonical(data []byte) (m Manifest, ok bool) {
	// One copy of the input: paths and hashes are substrings of it.
	return parseCanonicalOf(data, string(data))
}

// parseCanonicalOf is parseCanonical with s, the string the entries' paths
// and hashes are cut from, given (data as a string).
func parseCanonicalOf(data []byte, s string) (m Manifest, ok bool) {
	m.Entries = make([]ManifestEntry, 0, bytes.Count(data, []byte(`{"path":`)))
	m.Version, ok = eachCanonical(data, s, func(e ManifestEntry) { m.Entries = append(m.Entries, e) })
	return m, ok
}

// eachCanonical reads data in the form Canonical writes and calls fn with
// each entry, in order (their strings are cut from s, data as a string);
// it returns the manifest's version, and ok false as parseCanonical does.
func eachCanonical(data []byte, s string, fn func(ManifestEntry)) (version int, ok bool) {
	p := canonParser{data: data, s: s}
	if !p.lit(`{"version":`) {
		return 0, false
	}
	v, ok := p.uint(math.MaxInt32)
	if !ok || !p.lit(`,"entries":[`) {
		return 0, false
	}
	for first := true; !p.lit("]"); first = false {
		if !first && !p.lit(",") {
			return 0, false
		}
		e, ok := p.entry()
		if !ok {
			return 0, false
		}
		fn(e)
	}
	if !p.lit("}") {
		return 0, false
	}
	p.lit("\n")
	return int(v), p.i == len(p.data)
}

// entry parses one entry in either canonical form: version 1
// {"path","sha256","size","mode"}, or version 2 {"path","type",...} with
// the type's own fields in the order Canonical writes them.
func (p *canonParser) entry() (e ManifestEntry, ok bool) {
	var size, mode, mtime uint64
	if !p.lit(`{"path":`) {
		return e, false
	}
	if e.Path, ok = p.str(); !ok {
		return e, false
	}
	switch {
	case p.lit(`,"type":"dir","mode":`):
		e.Type = TypeDir
		if mode, ok = p.uint(math.MaxUint32); !ok {
			return e, false
		}
		e.Mode = uint32(mode)
		return e, p.lit("}")
	case p.lit(`,"type":"link","target":`):
		e.Type = TypeLink
		if e.Target, ok = p.str(); !ok {
			return e, false
		}
		return e, p.lit("}")
	case p.lit(`,"type":"file","sha256":`):
		e.Type = TypeFile
	case p.lit(`,"sha256":`):
	default:
		return e, false
	}
	if e.SHA256, ok = p.str(); !ok || !p.lit(`,"size":`) {
		return e, false
	}
	if size, ok = p.uint(math.MaxInt64); !ok || !p.lit(`,"mode":`) {
		return e, false
	}
	if mode, ok = p.uint(math.MaxUint32); !ok {
		return e, false
	}
	e.Size, e.Mode = int64(size), uint32(mode)
	if e.Type == TypeFile {
		if !p.lit(`,"mtime":`) {
			return e, false
		}
		if mtime, ok = p.uint(math.MaxInt64); !ok {
			return e, false
		}
		e.Mtime = int64(mtime)
	}
	return e, p.lit("}")
}

type canonParser struct {
	data []byte
	s    string // data, as a string
	i    int
}

// lit consumes s if the input continues with it.
func (p *canonParser) lit(s string) bool {
	if len(p.data)-p.i < len(s) || string(p.data[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str consumes a string of valid UTF-8 without escapes or control
// characters (the decoder would replace invalid bytes).
func (p *canonParser) str() (string, bool) {
	if !p.lit(`"`) {
		return "", false
	}
	start, ascii := p.i, true
	for ; p.i < len(p.data); p.i++ {
		switch c := p.data[p.i]; {
		case c == '"':
			str := p.s[start:p.i]
			p.i++
			return str, ascii || utf8.ValidString(str)
		case c == '\\' || c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", false
}

// uint consumes a non-negative integer without leading zeros, at most max.
func (p *canonParser) uint(max uint64) (uint64, bool) {
	start := p.i
	var n uint64
	for ; p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9'; p.i++ {
		d := uint64(p.data[p.i] - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	digits := p.i - start
	if digits == 0 || digits > 1 && p.data[start] == '0' {
		return 0, false
	}
	return n, true
}
