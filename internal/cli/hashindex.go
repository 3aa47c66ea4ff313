package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The hash index is the CLI's local cache of what it hashed: per pushed
// root, each file's (device, inode, size, mtime, ctime) → sha256, so an
// unchanged file is not read again. It is only a cache: a lost, torn or
// foreign index file is ignored and every file is hashed (correct, slower).
//
// A record is trusted only when every stat field matches and it is not
// racily clean (Git's rule): a file whose mtime or ctime is within
// racyWindow of the moment hashing started may change again within the
// same timestamp tick without any stat field changing, so it is not
// recorded and is hashed again by the next push. ctime cannot be set by
// users (touch -d, rsync -t and tar set mtime only), so a change that
// restores the old size and mtime is still seen.

// hashIndexVersion is the first line of an index file.
const hashIndexVersion = "volsd-hash-index 1"

// racyWindow covers the coarsest timestamp granularity of the filesystems
// the CLI reads (2 s on FAT; ext4 with 128-byte inodes: 1 s) and coarse
// kernel clocks.
var racyWindow = 2 * time.Second

// fileStat is what the index compares: the file's identity and times.
type fileStat struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // Unix nanoseconds
}

func statOf(fi os.FileInfo) fileStat {
	s := fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
		s.ctime = st.Ctim.Sec*1e9 + st.Ctim.Nsec
	}
	return s
}

// racy says the file changed too close to since to be recorded.
func (s fileStat) racy(since time.Time) bool {
	limit := since.Add(-racyWindow).UnixNano()
	return s.mtime >= limit || s.ctime >= limit || s.ino == 0
}

// hashIndex is the index of one pushed root.
type hashIndex struct {
	file    string                // where it is kept ("" : no index)
	records map[string]hashRecord // by content path ("" for a single file)
}

type hashRecord struct {
	stat   fileStat
	sha256 string
}

// indexFile is where the index of root is kept under dir.
func indexFile(dir, root string) string {
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(dir, hex.EncodeToString(sum[:16])+".idx")
}

// loadHashIndex reads the index of root from dir; any problem (none yet,
// unreadable, torn, another root) gives an empty index.
func loadHashIndex(dir, root string) *hashIndex {
	ix := &hashIndex{records: map[string]hashRecord{}}
	if dir == "" {
		return ix
	}
	ix.file = indexFile(dir, root)
	data, err := os.ReadFile(ix.file)
	if err != nil {
		return ix
	}
	if recs, ok := parseHashIndex(data, root); ok {
		ix.records = recs
	}
	return ix
}

// parseHashIndex decodes an index file: the version line, the root, one
// line per record, and a last line with the count and the sha256 of
// everything before it.
func parseHashIndex(data []byte, root string) (map[string]hashRecord, bool) {
	end := bytes.LastIndex(data[:max(len(data)-1, 0)], []byte("\nend "))
	if end < 0 || len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, false
	}
	body, trailer := data[:end+1], strings.Fields(string(data[end+1:]))
	sum := sha256.Sum256(body)
	if len(trailer) != 3 || trailer[2] != hex.EncodeToString(sum[:]) {
		return nil, false
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) < 2 || lines[0] != hashIndexVersion || lines[1] != "root "+root {
		return nil, false
	}
	n, err := strconv.Atoi(trailer[1])
	if err != nil || n != len(lines)-2 {
		return nil, false
	}
	recs := make(map[string]hashRecord, n)
	for _, line := range lines[2:] {
		f := strings.SplitN(line, " ", 7)
		if len(f) != 7 || len(f[5]) != 64 {
			return nil, false
		}
		var r hashRecord
		var errs [5]error
		r.stat.dev, errs[0] = strconv.ParseUint(f[0], 10, 64)
		r.stat.ino, errs[1] = strconv.ParseUint(f[1], 10, 64)
		r.stat.size, errs[2] = strconv.ParseInt(f[2], 10, 64)
		r.stat.mtime, errs[3] = strconv.ParseInt(f[3], 10, 64)
		r.stat.ctime, errs[4] = strconv.ParseInt(f[4], 10, 64)
		for _, err := range errs {
			if err != nil {
				return nil, false
			}
		}
		r.sha256 = f[5]
		recs[f[6]] = r
	}
	return recs, true
}

// lookup returns the recorded sha256 of the file at rel if its stat is
// unchanged.
func (ix *hashIndex) lookup(rel string, s fileStat) (string, bool) {
	r, ok := ix.records[rel]
	if !ok || r.stat != s {
		return "", false
	}
	return r.sha256, true
}

// update makes the index hold exactly files: reused records stay, files
// hashed since hashStart are recorded unless racy. It reports whether
// anything changed.
func (ix *hashIndex) update(files []localFile, hashStart time.Time) bool {
	next := make(map[string]hashRecord, len(files))
	changed := false
	for _, f := range files {
		if r, ok := ix.records[f.rel]; ok && r.stat == f.stat && r.sha256 == f.sha256 {
			next[f.rel] = r
			continue
		}
		changed = true
		if !f.stat.racy(hashStart) {
			next[f.rel] = hashRecord{stat: f.stat, sha256: f.sha256}
		}
	}
	changed = changed || len(next) != len(ix.records)
	ix.records = next
	return changed
}

// save writes the index (temp file and rename: readers see the old or the
// new one; a torn one is detected by its trailer and ignored).
func (ix *hashIndex) save(root string) error {
	if ix.file == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(ix.file), 0o700); err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(hashIndexVersion + "\nroot " + root + "\n")
	for rel, r := range ix.records {
		fmt.Fprintf(&b, "%d %d %d %d %d %s %s\n", r.stat.dev, r.stat.ino, r.stat.size, r.stat.mtime, r.stat.ctime, r.sha256, rel)
	}
	sum := sha256.Sum256(b.Bytes())
	fmt.Fprintf(&b, "end %d %s\n", len(ix.records), hex.EncodeToString(sum[:]))
	tmp, err := os.CreateTemp(filepath.Dir(ix.file), ".idx-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b.Bytes())
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), ix.file)
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
	}
	return werr
}
