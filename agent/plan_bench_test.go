package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// BenchmarkPlanSyncUnchanged times the plan of a sync whose 10,000 files
// (VOLSD_BENCH_FILES) are all already right: the walk of the live tree a
// small delta pays for, on a loop-mounted ext4. Files carry the content
// records the agent writes when it places them.
func BenchmarkPlanSyncUnchanged(b *testing.B) {
	testenv.RequireRoot(b, needsRoot)
	files, _ := benchSize()
	vol := newBenchVolume(b, 64<<20+int64(files)*8<<10)
	vol.format(b)
	m := events.Manifest{Version: events.ManifestVersion}
	for i := range files {
		rel := fmt.Sprintf("d%02d/e%d/f%05d.html", i%50, i%7, i)
		data := fmt.Appendf(nil, "file %d\n", i)
		sum := sha256.Sum256(data)
		sha := hex.EncodeToString(sum[:])
		abs := filepath.Join(vol.dir, "site", rel)
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(abs, data, 0o644); err != nil {
			b.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(abs, &st); err != nil {
			b.Fatal(err)
		}
		rec := content{SHA256: sha, Size: int64(len(data)), Mtime: st.Mtim.Nano()}
		if err := unix.Lsetxattr(abs, contentXattr, rec.xattr(), 0); err != nil {
			b.Fatal(err)
		}
		m.Entries = append(m.Entries, events.ManifestEntry{Path: rel, Type: events.TypeFile, SHA256: sha, Size: int64(len(data)), Mode: 0o644})
	}
	e := events.JournalEntry{Seq: 1, Op: events.OpSync, Path: "site", Manifest: &events.ManifestRef{SHA256: "x"}}
	root, err := openDir(vol.dir)
	if err != nil {
		b.Fatal(err)
	}
	defer closeFD(root)
	settle(b)
	fine := fineTimestamps(vol.dir)
	if !fine {
		b.Fatal("ext4 without nanosecond timestamps")
	}
	plan := func(b *testing.B, idx *treeIndex) *entryPlan {
		p, err := planSync(root, vol.dir, e, m, idx, fine)
		if err != nil {
			b.Fatal(err)
		}
		if p.unchanged != files {
			b.Fatalf("plan: %s; want %d unchanged", p.describe(), files)
		}
		return p
	}
	// The index as the apply that placed these files would leave it.
	idx := &treeIndex{}
	idx.add(plan(b, nil).records)
	if len(idx.recs) != files {
		b.Fatalf("the walk kept %d records for the index, want %d", len(idx.recs), files)
	}
	for _, bc := range []struct {
		name string
		idx  *treeIndex
	}{{"records", nil}, {"index", idx}} {
		b.Run(bc.name, func(b *testing.B) {
			stop := startProfile(b)
			defer stop()
			b.ReportAllocs()
			for b.Loop() {
				plan(b, bc.idx)
			}
		})
	}
}
