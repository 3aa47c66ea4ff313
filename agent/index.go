package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
)

// The tree index, <mount>/.volsd/index, remembers what the agent knows of
// the files it placed: for each path (relative to the mount) the file's
// inode number, size, mtime, ctime and mode when it was last seen holding
// a known content, and that content's sha256. A sync's walk then needs one
// lstat per live file, like rsync's quick check, instead of an lstat and a
// read of the file's content record (a getxattr that resolves the whole
// path: two thirds of the walk).
//
// A record is trusted only while the file's lstat matches it in all five
// fields. Nothing can change a file's content without changing its ctime,
// and ctime cannot be set from user space, so a match means the file is
// the one recorded, untouched since. Two guards keep that true:
//
//   - Racy records never vouch. A change in the same clock tick as the
//     lstat that captured a record could leave ctime as it was. A record
//     vouches only when its ctime is older than the coarse clock read
//     before the capture (minus one second on a filesystem whose
//     timestamps are not nanosecond-grained), so any later change gets a
//     newer ctime. This is Git's "racily clean" problem, solved the same
//     way. The walk checks a file whose record does not vouch by its
//     content record, and its next record vouches.
//   - The index describes only what is durable: it is written after the
//     checkpoint's syncfs, never fsynced itself, and checked with a CRC on
//     load. A lost, old or torn index is only slower (the walk falls back
//     to content records), never wrong: stale records do not match.
//
// Each record is derived from a check as strong as the content record's
// own (a trusted xattr of the same lstat, or a previous record), so the
// index never trusts more than the xattrs did.
const indexFile = "index"

// indexMagic starts the file; the format is its version.
const indexMagic = "volsd-index 1\n"

// indexRecord is what the index knows of one file.
type indexRecord struct {
	path  string // relative to the mount
	ino   uint64
	size  int64
	mtime int64 // ns
	ctime int64 // ns
	mode  uint32
	sha   string // hex sha256
	// vouch: the record was not racy when captured, so a match proves the
	// file untouched. A record that does not vouch still tells what the
	// file held (prefetch predicts from it); the walk checks such a file
	// by its content record.
	vouch bool
}

// indexRecordLen is the fixed part of a record on disk after its
// NUL-terminated path: ino, size, mtime, ctime, mode, vouch (0 or 1),
// sha256 in hex.
const indexRecordLen = 8 + 8 + 8 + 8 + 4 + 1 + 64

func recordOf(path string, st *unix.Stat_t, sha string, vouch bool) indexRecord {
	return indexRecord{path: path, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(), mode: st.Mode, sha: sha, vouch: vouch}
}

// matches says whether the file whose lstat is st is the one recorded.
func (r *indexRecord) matches(st *unix.Stat_t) bool {
	return r.ino == st.Ino && r.size == st.Size && r.mtime == st.Mtim.Nano() && r.ctime == st.Ctim.Nano() && r.mode == st.Mode
}

// treeIndex is the index in memory: a list of records (one per path) and,
// built when a walk needs it, a map from path to record.
type treeIndex struct {
	recs   []indexRecord
	byPath map[string]int32 // index into recs; nil until ready
	dirty  bool             // changed since loaded
}

// loadIndex reads the index at path. A missing, unreadable or damaged
// index is an empty one (the walk then reads content records); the error
// says why it was not used, for the log.
func loadIndex(path string) (*treeIndex, error) {
	x := &treeIndex{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return x, nil
	}
	if err != nil {
		return x, err
	}
	if x.recs, err = decodeIndex(data); err != nil {
		x.dirty = true // rewrite it
		return x, fmt.Errorf("tree index %s ignored: %w", path, err)
	}
	return x, nil
}

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// encodeIndex returns the file's bytes: magic, records, CRC-32C of all
// before it.
func encodeIndex(recs []indexRecord) []byte {
	n := len(indexMagic) + 4
	for i := range recs {
		n += len(recs[i].path) + 1 + indexRecordLen
	}
	buf := make([]byte, 0, n)
	buf = append(buf, indexMagic...)
	for i := range recs {
		r := &recs[i]
		buf = append(buf, r.path...)
		buf = append(buf, 0)
		buf = binary.LittleEndian.AppendUint64(buf, r.ino)
		buf = binary.LittleEndian.AppendUint64(buf, uint64(r.size))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(r.mtime))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(r.ctime))
		buf = binary.LittleEndian.AppendUint32(buf, r.mode)
		if r.vouch {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		buf = append(buf, r.sha...)
	}
	return binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf, crc32c))
}

// decodeIndex parses the file's bytes. Paths and hashes are substrings of
// one copy of data. The CRC is the integrity check: the file is the
// agent's own, in its 0700 directory, and a record is only ever looked up
// by the path of a file the walk met.
func decodeIndex(data []byte) ([]indexRecord, error) {
	if len(data) < len(indexMagic)+4 || string(data[:len(indexMagic)]) != indexMagic {
		return nil, errors.New("not a version 1 index")
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, crc32c) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, errors.New("checksum mismatch (torn or damaged)")
	}
	s := string(body)
	recs := make([]indexRecord, 0, len(s)/(40+indexRecordLen))
	for i := len(indexMagic); i < len(s); {
		j := strings.IndexByte(s[i:], 0)
		if j <= 0 || i+j+1+indexRecordLen > len(s) {
			return nil, fmt.Errorf("record at byte %d is cut short", i)
		}
		r := indexRecord{path: s[i : i+j]}
		f := body[i+j+1:]
		r.ino = binary.LittleEndian.Uint64(f)
		r.size = int64(binary.LittleEndian.Uint64(f[8:]))
		r.mtime = int64(binary.LittleEndian.Uint64(f[16:]))
		r.ctime = int64(binary.LittleEndian.Uint64(f[24:]))
		r.mode = binary.LittleEndian.Uint32(f[32:])
		r.vouch = f[36] == 1
		k := i + j + 1 + 37
		r.sha = s[k : k+64]
		recs = append(recs, r)
		i = k + 64
	}
	return recs, nil
}

// ready builds the map lookups use; call it before walkers share x.
func (x *treeIndex) ready() {
	if x == nil || x.byPath != nil {
		return
	}
	x.byPath = make(map[string]int32, len(x.recs))
	for i := range x.recs {
		x.byPath[x.recs[i].path] = int32(i)
	}
}

// replaceUnder drops every record at or under dir (events.RootPath: all)
// and adds recs (whose paths must be under dir).
func (x *treeIndex) replaceUnder(dir string, recs []indexRecord) {
	if dir == events.RootPath {
		x.recs, x.byPath, x.dirty = recs, nil, true
		return
	}
	x.removeUnder(dir)
	x.add(recs)
}

// add records recs, for paths without a record.
func (x *treeIndex) add(recs []indexRecord) {
	if len(recs) > 0 {
		x.recs, x.byPath, x.dirty = append(x.recs, recs...), nil, true
	}
}

// removeUnder drops the records of path and of everything under it.
func (x *treeIndex) removeUnder(path string) {
	if path == events.RootPath {
		x.replaceUnder(path, nil)
		return
	}
	kept := x.recs[:0]
	for _, r := range x.recs {
		if !underPath(r.path, path) {
			kept = append(kept, r)
		}
	}
	if len(kept) < len(x.recs) {
		clear(x.recs[len(kept):])
		x.recs, x.byPath, x.dirty = kept, nil, true
	}
}

// encode returns a func that returns the file's bytes, encoded meanwhile
// (the caller makes the volume durable first); nil when unchanged.
func (x *treeIndex) encode() func() []byte {
	if x == nil || !x.dirty {
		return nil
	}
	done := make(chan []byte, 1)
	recs := x.recs
	go func() { done <- encodeIndex(recs) }()
	return func() []byte { return <-done }
}

// write replaces the index file at path with data (temp file and rename,
// no fsync: see indexFile).
func (x *treeIndex) write(path string, data []byte) error {
	tmp, err := writeTemp(path, data, 0o600, false)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	x.dirty = false
	return nil
}

// racyBefore returns the ctime (ns) a record captured from now on must be
// older than: the coarse clock the kernel stamps ctime with, minus the
// filesystem's timestamp granularity when it is coarser than a
// nanosecond.
func racyBefore(fine bool) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		return 0 // no record vouches
	}
	t := ts.Nano()
	if !fine {
		t -= int64(time.Second)
	}
	return t
}

// fineTimestamps reports whether the filesystem of dir keeps nanosecond
// timestamps (ext4 with 256-byte inodes, XFS): it sets a probe file's
// mtime to an odd nanosecond and reads it back. Any doubt says no.
func fineTimestamps(dir string) bool {
	p := filepath.Join(dir, ".timestamp-probe")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return false
	}
	defer os.Remove(p)
	defer f.Close()
	const odd = 123456789
	ts := []unix.Timespec{{Sec: 1 << 30, Nsec: odd}, {Sec: 1 << 30, Nsec: odd}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Mtim.Nsec == odd
}

// captureRecords lstats the placed files of want (relative to the mount
// open at root) and returns the records of those holding the content
// they were placed with, by their content record; a record captured in
// its file's clock tick does not vouch.
func captureRecords(root int, mount string, want map[string]events.Blob, fine bool) []indexRecord {
	before := racyBefore(fine)
	recs := make([]indexRecord, 0, len(want))
	for p, b := range want {
		var st unix.Stat_t
		if err := unix.Fstatat(root, p, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		if c, ok := readContent(filepath.Join(mount, p), &st); ok && c.SHA256 == b.SHA256 {
			recs = append(recs, recordOf(p, &st, b.SHA256, st.Ctim.Nano() < before))
		}
	}
	return recs
}
