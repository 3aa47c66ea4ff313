package events

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Manifest versions. The CLI writes ManifestVersion; agents and the push
// Lambda still read ManifestV1, which journals may hold (docs/design.md §5a).
const (
	ManifestV1      = 1 // regular files only; directories implied by the paths
	ManifestVersion = 2 // files with mtimes, directories with modes, relative symlinks
)

// EntryType says what a version 2 manifest entry is.
type EntryType string

// The entry types of manifest version 2.
const (
	TypeFile EntryType = "file" // a regular file: sha256, size, mode, mtime
	TypeDir  EntryType = "dir"  // a directory, empty or not: mode
	TypeLink EntryType = "link" // a symlink: target, relative, resolving inside the tree
)

// Manifest lists the tree a sync makes its target equal to. Paths are
// relative to the sync's target directory; in version 2 the entry of path
// "." (a dir) is the target directory itself.
type Manifest struct {
	Version int             `json:"version"`
	Entries []ManifestEntry `json:"entries"`
}

// ManifestEntry is one entry of a manifest. In version 1 every entry is a
// regular file and Type, Mtime and Target are absent. In version 2 Type is
// required and only its own fields may be set: a file has SHA256, Size,
// Mode and Mtime (whole seconds; 0: not given, the entry's time is used),
// a dir has Mode, a link has Target.
type ManifestEntry struct {
	Path   string    `json:"path"`
	Type   EntryType `json:"type,omitempty"`
	SHA256 string    `json:"sha256,omitempty"`
	Size   int64     `json:"size,omitempty"`
	Mode   uint32    `json:"mode,omitempty"`
	Mtime  int64     `json:"mtime,omitempty"`
	Target string    `json:"target,omitempty"`
}

// Kind is the entry's type; a version 1 entry (no type) is a file.
func (e ManifestEntry) Kind() EntryType {
	if e.Type == "" {
		return TypeFile
	}
	return e.Type
}

// Blob is the content of a file entry.
func (e ManifestEntry) Blob() Blob {
	return Blob{SHA256: e.SHA256, Size: e.Size, Mode: e.Mode, Mtime: e.Mtime}
}

// MaxManifestBytes bounds a manifest download (about a million entries).
const MaxManifestBytes = 256 << 20

// MaxLinkHops is how many symlinks a resolution follows before it gives
// up, as Linux does (MAXSYMLINKS, then ELOOP).
const MaxLinkHops = 40

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
	return parseManifest(data, false)
}

// ParseManifestOwned is ParseManifestBytes of data the caller hands over:
// the paths and hashes of a canonical manifest share data's bytes instead
// of a copy of them (a million entries: some 150 MiB less), so data must
// not change while the manifest is in use.
func ParseManifestOwned(data []byte) (Manifest, error) {
	return parseManifest(data, true)
}

func parseManifest(data []byte, owned bool) (Manifest, error) {
	var m Manifest
	if len(data) > MaxManifestBytes {
		return m, invalid("manifest", fmt.Sprintf("must be at most %d bytes", MaxManifestBytes), "")
	}
	if !utf8.Valid(data) {
		return m, invalid("manifest", "must be valid UTF-8", "")
	}
	var ok bool
	if owned {
		m, ok = parseCanonicalOf(data, unsafe.String(unsafe.SliceData(data), len(data)))
	} else {
		m, ok = parseCanonical(data)
	}
	if !ok {
		m = Manifest{}
		if err := decodeStrict(data, &m); err != nil {
			return m, err
		}
	}
	return m, m.Validate()
}

// Validate checks every entry, that no path repeats, that nothing but a
// directory is the parent of another entry, and that every link resolves
// inside the tree.
func (m Manifest) Validate() error {
	if m.Version != ManifestV1 && m.Version != ManifestVersion {
		return invalid("version", fmt.Sprintf("must be %d or %d (unsupported manifest version)", ManifestV1, ManifestVersion), fmt.Sprint(m.Version))
	}
	sorted, links := true, 0
	for i := range m.Entries {
		e := &m.Entries[i]
		// Field names are built only for an error: a manifest may have a
		// million entries.
		if e.check("", m.Version) != nil {
			return e.check(fmt.Sprintf("entries[%d]", i), m.Version)
		}
		sorted = sorted && (i == 0 || m.Entries[i-1].Path < e.Path)
		if e.Type == TypeLink {
			links++
		}
	}
	var err error
	if !sorted {
		err = m.validateUnsorted()
	} else {
		// Sorted by path (every canonical manifest): no path repeats, and
		// an entry under a non-directory is found by a binary search.
		err = m.checkDirs(func(dir string) EntryType {
			k, found := sort.Find(len(m.Entries), func(k int) int { return strings.Compare(dir, m.Entries[k].Path) })
			if !found {
				return ""
			}
			return m.Entries[k].Kind()
		})
	}
	if err != nil || links == 0 {
		return err
	}
	return m.checkLinks(links)
}

// check validates one entry of a manifest of version v; field prefixes
// the field names of the error.
func (e *ManifestEntry) check(field string, v int) error {
	f := func(name string) string {
		if field == "" {
			return name
		}
		return field + "." + name
	}
	if v == ManifestV1 {
		if e.Type != "" || e.Mtime != 0 || e.Target != "" {
			return invalid(f("type"), fmt.Sprintf("type, mtime and target are fields of manifest version %d, not %d", ManifestVersion, ManifestV1), string(e.Type))
		}
		if err := ValidatePath(f("path"), e.Path); err != nil {
			return err
		}
		return e.Blob().Validate(field)
	}
	if e.Path != RootPath || e.Type != TypeDir {
		if err := ValidatePath(f("path"), e.Path); err != nil {
			return err
		}
	}
	switch e.Type {
	case TypeFile:
		if e.Target != "" {
			return invalid(f("target"), "must be absent for a file", e.Target)
		}
		return e.Blob().Validate(field)
	case TypeDir:
		if e.SHA256 != "" || e.Size != 0 || e.Mtime != 0 || e.Target != "" {
			return invalid(field, "a dir has only path, type and mode", e.Path)
		}
		return ValidateMode(f("mode"), e.Mode)
	case TypeLink:
		if e.SHA256 != "" || e.Size != 0 || e.Mode != 0 || e.Mtime != 0 {
			return invalid(field, "a link has only path, type and target", e.Path)
		}
		return ValidateLinkTarget(f("target"), e.Target)
	case "":
		return invalid(f("type"), "is required in manifest version 2 (file, dir or link)", "")
	default:
		return invalid(f("type"), "must be file, dir or link", string(e.Type))
	}
}

// ValidateLinkTarget checks a symlink's target as written: relative, not
// empty, valid UTF-8, at most MaxPathBytes bytes, no NUL or control bytes.
// Where it leads is Manifest.Validate's check (it needs the whole tree).
func ValidateLinkTarget(field, t string) error {
	switch {
	case t == "":
		return invalid(field, "must not be empty", "")
	case len(t) > MaxPathBytes:
		return invalid(field, fmt.Sprintf("must be at most %d bytes, is %d", MaxPathBytes, len(t)), t)
	case !utf8.ValidString(t):
		return invalid(field, "must be valid UTF-8", t)
	case strings.HasPrefix(t, "/"):
		return invalid(field, "must be relative: an absolute symlink leads outside the pushed tree (push with --copy-links to send the file it points to)", t)
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < 0x20 || c == 0x7f {
			return invalid(field, fmt.Sprintf("must not contain NUL or control bytes (byte 0x%02x at %d)", c, i), t)
		}
	}
	return nil
}

// checkDirs returns the error for the first entry with a parent that
// kindOf says is an entry but not a directory ("" when it is no entry). A
// directory that is the previous entry's parent was checked with it, and
// its parents too.
func (m Manifest) checkDirs(kindOf func(dir string) EntryType) error {
	var last string
	for _, e := range m.Entries {
		for dir := e.Path; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 || dir[:i] == last {
				break
			}
			dir = dir[:i]
			if k := kindOf(dir); k != "" && k != TypeDir {
				return invalid("entries.path", fmt.Sprintf("%q is a %s and also the directory of %q", dir, k, e.Path), dir)
			}
		}
		if j := strings.LastIndexByte(e.Path, '/'); j >= 0 {
			last = e.Path[:j]
		}
	}
	return nil
}

// validateUnsorted checks repeats and parent clashes with a map.
func (m Manifest) validateUnsorted() error {
	kinds := make(map[string]EntryType, len(m.Entries))
	for i, e := range m.Entries {
		if _, dup := kinds[e.Path]; dup {
			return invalid(fmt.Sprintf("entries[%d].path", i), "appears twice in the manifest", e.Path)
		}
		kinds[e.Path] = e.Kind()
	}
	return m.checkDirs(func(dir string) EntryType { return kinds[dir] })
}

// checkLinks checks that every link resolves inside the tree.
func (m Manifest) checkLinks(n int) error {
	links := make(map[string]string, n)
	for _, e := range m.Entries {
		if e.Type == TypeLink {
			links[e.Path] = e.Target
		}
	}
	for i, e := range m.Entries {
		if e.Type != TypeLink {
			continue
		}
		if why := LinkEscapes(e.Path, e.Target, links); why != "" {
			return invalid(fmt.Sprintf("entries[%d].target", i), fmt.Sprintf("of %s %s (push with --copy-links to send what it points to instead)", e.Path, why), e.Target)
		}
	}
	return nil
}

// LinkEscapes says why the symlink at path (relative to the tree's root)
// with target leads outside the tree, or "" when it stays inside. It
// resolves the target as the kernel would, following the tree's own links
// (links: path → target) up to MaxLinkHops; a loop never resolves, so it
// never leads out (the kernel answers ELOOP), and a dangling link stays
// inside. Leading into volsd's reserved directory counts as outside.
func LinkEscapes(path, target string, links map[string]string) string {
	var stack []string // the resolved directory, by component
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		stack = strings.Split(path[:i], "/")
	}
	queue := strings.Split(target, "/")
	for hops := 0; len(queue) > 0; {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return "leads outside the pushed tree"
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		if t, ok := links[strings.Join(stack, "/")]; ok {
			if hops++; hops > MaxLinkHops {
				return "" // a loop: never resolves
			}
			stack = stack[:len(stack)-1]
			if strings.HasPrefix(t, "/") {
				return "leads through the absolute link " + strings.Join(append(stack, c), "/")
			}
			queue = append(strings.Split(t, "/"), queue...)
		}
	}
	if len(stack) > 0 && stack[0] == ReservedDir {
		return "leads into " + ReservedDir + " (reserved for volsd)"
	}
	return ""
}

// Canonical returns the manifest's canonical JSON: entries sorted by path,
// compact, each entry's fields in a fixed order (version 2: path, type,
// then the type's own fields), newline-terminated. Its sha256 names the
// manifest in the origin.
func (m Manifest) Canonical() ([]byte, error) {
	entries := append([]ManifestEntry(nil), m.Entries...)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	b := make([]byte, 0, 64+len(entries)*160)
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, int64(m.Version), 10)
	b = append(b, `,"entries":[`...)
	for i := range entries {
		e := &entries[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"path":`...)
		b = appendJSONString(b, e.Path)
		field := func(name string, v int64) {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = strconv.AppendInt(b, v, 10)
		}
		switch {
		case m.Version == ManifestV1 || e.Type == TypeFile:
			if m.Version != ManifestV1 {
				b = append(b, `,"type":"file"`...)
			}
			b = append(b, `,"sha256":`...)
			b = appendJSONString(b, e.SHA256)
			field("size", e.Size)
			field("mode", int64(e.Mode))
			if m.Version != ManifestV1 {
				field("mtime", e.Mtime)
			}
		case e.Type == TypeDir:
			b = append(b, `,"type":"dir"`...)
			field("mode", int64(e.Mode))
		case e.Type == TypeLink:
			b = append(b, `,"type":"link","target":`...)
			b = appendJSONString(b, e.Target)
		default:
			return nil, fmt.Errorf("manifest entry %q: unknown type %q", e.Path, e.Type)
		}
		b = append(b, '}')
	}
	return append(b, "]}\n"...), nil
}

// appendJSONString appends s as a JSON string: as it is when it needs no
// escape (the common case, which parseCanonical reads back), else as
// encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	plain := utf8.ValidString(s)
	for i := 0; plain && i < len(s); i++ {
		c := s[i]
		plain = c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	if plain && !strings.ContainsAny(s, "\u2028\u2029") {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
