package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// Benchmark size knobs: VOLSD_BENCH_FILES files (default 10000) of mixed
// sizes adding up to about VOLSD_BENCH_MIB MiB (default 1024).
func benchSize() (files int, bytes int64) {
	files, bytes = 10000, 1024<<20
	if v, err := strconv.Atoi(os.Getenv("VOLSD_BENCH_FILES")); err == nil && v > 0 {
		files = v
	}
	if v, err := strconv.Atoi(os.Getenv("VOLSD_BENCH_MIB")); err == nil && v > 0 {
		bytes = int64(v) << 20
	}
	return files, bytes
}

// benchTree is a generated content tree on its own loop-mounted ext4:
// tree/ holds the files (the staging tree the rsync baseline copies),
// blobs/ holds the same files by sha256 (hard links) for the origin.
type benchTree struct {
	root     string
	manifest events.Manifest
	raw      []byte // canonical manifest
	bytes    int64
}

func (bt *benchTree) dir() string { return filepath.Join(bt.root, "tree") }

// newBenchTree writes n files of mixed sizes (70% up to 16 KiB, 28% up to
// 256 KiB, 2% of 1 to 4 MiB, scaled to about total bytes) in 50×7
// directories.
func newBenchTree(b *testing.B, n int, total int64) *benchTree {
	b.Helper()
	dev, _ := loopDevice(b, int(total*3/2>>20)+256)
	run(b, "mkfs.ext4", "-q", dev)
	bt := &benchTree{root: b.TempDir()}
	run(b, "mount", "-o", "noatime", dev, bt.root)
	unmountAtCleanup(b, bt.root)
	rng := rand.New(rand.NewPCG(7, 7))
	sizes := make([]int64, n)
	var sum int64
	for i := range sizes {
		switch r := rng.Float64(); {
		case r < 0.70:
			sizes[i] = 100 + rng.Int64N(16<<10)
		case r < 0.98:
			sizes[i] = 16<<10 + rng.Int64N(240<<10)
		default:
			sizes[i] = 1<<20 + rng.Int64N(3<<20)
		}
		sum += sizes[i]
	}
	var largest int64
	for i := range sizes {
		sizes[i] = max(1, sizes[i]*total/sum)
		largest = max(largest, sizes[i])
	}
	buf := make([]byte, largest)
	for i := range sizes {
		rel := fmt.Sprintf("d%02d/e%d/f%05d", i%50, i%7, i)
		bt.writeFile(b, rel, buf[:sizes[i]], rng)
	}
	bt.finish(b)
	return bt
}

// writeFile writes random content at rel in the tree and links it as a
// blob.
func (bt *benchTree) writeFile(b *testing.B, rel string, buf []byte, rng *rand.Rand) {
	for j := 0; j < len(buf); j += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && j+k < len(buf); k++ {
			buf[j+k] = byte(v >> (8 * k))
		}
	}
	p := filepath.Join(bt.dir(), rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.Fatal(err)
	}
	os.Remove(p) // never in place: the old version may be linked elsewhere
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	h := sha256.Sum256(buf)
	blob := filepath.Join(bt.root, "blobs", hex.EncodeToString(h[:]))
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Link(p, blob); err != nil && !os.IsExist(err) {
		b.Fatal(err)
	}
}

// finish builds the manifest of the tree as it is now.
func (bt *benchTree) finish(b *testing.B) {
	bt.manifest = events.Manifest{Version: events.ManifestVersion}
	bt.bytes = 0
	err := filepath.Walk(bt.dir(), func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(bt.dir(), p)
		sha, n, err := hashFile(p)
		if err != nil {
			return err
		}
		bt.manifest.Entries = append(bt.manifest.Entries, events.ManifestEntry{Path: rel, Type: events.TypeFile, SHA256: sha, Size: n, Mode: 0o644})
		bt.bytes += n
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if bt.raw, err = bt.manifest.Canonical(); err != nil {
		b.Fatal(err)
	}
	key := filepath.Join(bt.root, "manifests", sum(bt.raw)+".json")
	if err := os.MkdirAll(filepath.Dir(key), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(key, bt.raw, 0o644); err != nil {
		b.Fatal(err)
	}
}

// change rewrites pct percent of the files with new content (new files,
// not in place) and returns the bytes changed.
func (bt *benchTree) change(b *testing.B, pct float64, seed uint64) int64 {
	rng := rand.New(rand.NewPCG(seed, seed))
	var changed, largest int64
	for _, e := range bt.manifest.Entries {
		largest = max(largest, e.Size)
	}
	buf := make([]byte, largest)
	for _, e := range bt.manifest.Entries {
		if rng.Float64() < pct/100 {
			bt.writeFile(b, e.Path, buf[:e.Size], rng)
			changed += e.Size
		}
	}
	bt.finish(b)
	return changed
}

// originServer serves the tree's blobs and manifests with the S3 GET API
// (path style, ranges) to the real SDK client: a local origin whose speed
// is the disk's, not an emulator's.
func originServer(b *testing.B, root string) *s3.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)
		if len(parts) != 2 || r.Method != http.MethodGet {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		f, err := os.Open(filepath.Join(root, filepath.Clean("/"+parts[1])))
		if err != nil {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>%s</Key></Error>`, parts[1])
			return
		}
		defer f.Close()
		fi, _ := f.Stat()
		w.Header().Set("ETag", `"`+strconv.FormatInt(fi.ModTime().UnixNano(), 16)+`"`)
		w.Header().Set("Content-Type", "binary/octet-stream") // S3's default; also spares ServeContent a sniffing read
		http.ServeContent(w, r, "", fi.ModTime(), f)
	}))
	b.Cleanup(srv.Close)
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", ""),
		DisableLogOutputChecksumValidationSkipped: true,
		ResponseChecksumValidation:                aws.ResponseChecksumValidationWhenRequired,
	})
}

// memJournal is a journal in memory: the benchmark measures the apply, not
// two DynamoDB reads.
type memJournal struct{ entries []events.JournalEntry }

func (m *memJournal) Head(context.Context, string) (int64, error) { return int64(len(m.entries)), nil }

func (m *memJournal) Entries(_ context.Context, _ string, after, upTo int64) ([]events.JournalEntry, error) {
	if upTo <= 0 || upTo > int64(len(m.entries)) {
		upTo = int64(len(m.entries))
	}
	if after >= upTo {
		return nil, nil
	}
	return m.entries[after:upTo], nil
}

func (m *memJournal) sync(raw []byte) {
	m.entries = append(m.entries, events.JournalEntry{
		Seq: int64(len(m.entries) + 1), Op: events.OpSync, Path: events.RootPath, RequestID: fmt.Sprint("bench-", len(m.entries)),
		Manifest: &events.ManifestRef{SHA256: sum(raw)}, CreatedAt: time.Date(2026, 11, 21, 10, 0, len(m.entries), 0, time.UTC),
	})
}

// benchVolume is a loop-mounted ext4 the agent or rsync writes to.
type benchVolume struct {
	dev, dir string
}

func newBenchVolume(b *testing.B, bytes int64) *benchVolume {
	dev, _ := loopDevice(b, int(bytes*5/2>>20)+256)
	v := &benchVolume{dev: dev, dir: filepath.Join(b.TempDir(), "mnt")}
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		b.Fatal(err)
	}
	unmountAtCleanup(b, v.dir)
	return v
}

// format makes the volume a fresh empty ext4, mounted.
func (v *benchVolume) format(b *testing.B) {
	if isMountPoint(v.dir) {
		run(b, "umount", v.dir)
	}
	run(b, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", v.dev)
	run(b, "mount", "-o", "noatime", v.dev, v.dir)
}

// settle writes back everything dirty, so a timed section pays only for
// its own writes.
func settle(b *testing.B) {
	unix.Sync()
	time.Sleep(200 * time.Millisecond)
}

func syncfs(b *testing.B, dir string) {
	fd, err := openDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer closeFD(fd)
	if err := unix.Syncfs(fd); err != nil {
		b.Fatal(err)
	}
}

func rsyncBaseline(b *testing.B, src, dst string) {
	out, err := exec.Command("rsync", "-a", "--delete", src+"/", dst+"/").CombinedOutput()
	if err != nil {
		b.Fatalf("rsync -a: %v\n%s", err, out)
	}
}

// benchAgent returns an agent on vol with the in-memory journal and the
// local origin.
func benchAgent(b *testing.B, vol *benchVolume, j *memJournal, origin *s3.Client) *Agent {
	cfg := Config{Pool: "bench", Table: "bench", Bucket: "origin", MountPath: vol.dir, FSType: "ext4", RunDir: filepath.Join(b.TempDir(), "run"),
		ApplyInterval: Duration(time.Minute), DeviceWait: Duration(time.Second)}
	return New(cfg, Deps{S3: NewS3Getter(origin.Options()), Journal: j, Logger: benchLogger(), CheckpointEvery: time.Hour})
}

func initVolume(b *testing.B, a *Agent) {
	if err := os.MkdirAll(a.stateDir(), 0o700); err != nil {
		b.Fatal(err)
	}
	if err := a.writeState(0); err != nil {
		b.Fatal(err)
	}
}

// figures collects the timings of one benchmark, one value per iteration.
type figures struct {
	agent, rsync, rsyncSync []time.Duration
	agentCPU                time.Duration // CPU of this process and its children (rsync) while the agent ran
}

// cpuTime is the user and system CPU of this process and its waited-for
// children so far. In the benchmarks it includes the origin server, which
// runs in this process.
func cpuTime() time.Duration {
	var self, children unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &children)
	var d time.Duration
	for _, tv := range []unix.Timeval{self.Utime, self.Stime, children.Utime, children.Stime} {
		d += time.Duration(tv.Nano())
	}
	return d
}

// timeApply times one Apply of a up to upTo (after settling), with its
// CPU and, when asked for, its CPU profile.
func (f *figures) timeApply(b *testing.B, a *Agent, upTo int64) Report {
	settle(b)
	stopProfile := startProfile(b)
	cpu := cpuTime()
	start := time.Now()
	b.StartTimer()
	var r Report
	err := a.Apply(context.Background(), upTo, false, &r)
	b.StopTimer()
	f.agent = append(f.agent, time.Since(start))
	f.agentCPU += cpuTime() - cpu
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// timeRsync times the baselines of one iteration: `rsync -a src/ dst/`,
// and the same followed by syncfs; reset (untimed) puts dst back to where
// the agent started from before each.
func (f *figures) timeRsync(b *testing.B, src, dst string, reset func()) {
	for _, withSync := range []bool{false, true} {
		reset()
		settle(b)
		start := time.Now()
		rsyncBaseline(b, src, dst)
		if withSync {
			syncfs(b, dst)
			f.rsyncSync = append(f.rsyncSync, time.Since(start))
		} else {
			f.rsync = append(f.rsync, time.Since(start))
		}
	}
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(max(1, len(ds)))
}

// report gives the means of each side and their ratios, and the median of
// the per-iteration ratios agent / (rsync + syncfs): each iteration runs
// both sides back to back, so this figure is the least disturbed by a
// machine whose speed drifts between iterations.
func (f *figures) report(b *testing.B, bytes int64) {
	agent, rsync, rsyncSync := mean(f.agent), mean(f.rsync), mean(f.rsyncSync)
	b.ReportMetric(agent.Seconds(), "agent-s/op")
	if f.agentCPU > 0 {
		b.ReportMetric((f.agentCPU / time.Duration(len(f.agent))).Seconds(), "agent-cpu-s/op")
	}
	b.ReportMetric(rsync.Seconds(), "rsync-s/op")
	b.ReportMetric(rsyncSync.Seconds(), "rsync+syncfs-s/op")
	b.ReportMetric(float64(agent)/float64(rsync), "agent/rsync")
	b.ReportMetric(float64(agent)/float64(rsyncSync), "agent/rsync+syncfs")
	paired := make([]float64, len(f.agent))
	for i := range paired {
		paired[i] = float64(f.agent[i]) / float64(f.rsyncSync[i])
	}
	slices.Sort(paired)
	med := paired[len(paired)/2]
	if len(paired)%2 == 0 {
		med = (paired[len(paired)/2-1] + med) / 2
	}
	b.ReportMetric(med, "median-paired-ratio")
	b.SetBytes(bytes)
}

// BenchmarkSyncFull: a sync of the whole generated tree onto a blank
// volume, against rsync -a of the same tree onto the same kind of blank
// ext4. The agent fetches every blob from the origin, verifies it and
// places the tree with rsync; its time includes the syncfs of its
// checkpoint, which rsync -a does not do: "rsync+syncfs" adds one.
func BenchmarkSyncFull(b *testing.B) {
	testenv.RequireRoot(b, needsRoot)
	files, total := benchSize()
	bt := newBenchTree(b, files, total)
	origin := originServer(b, bt.root)
	vol := newBenchVolume(b, bt.bytes)
	j := &memJournal{}
	j.sync(bt.raw)
	b.Logf("tree: %d files, %s", len(bt.manifest.Entries), fmtBytes(bt.bytes))
	var f figures
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		vol.format(b)
		a := benchAgent(b, vol, j, origin)
		initVolume(b, a)
		r := f.timeApply(b, a, 0)
		if r.Bytes < bt.bytes {
			b.Fatalf("agent fetched %d bytes of %d", r.Bytes, bt.bytes)
		}

		f.timeRsync(b, bt.dir(), vol.dir, func() { vol.format(b) })
	}
	f.report(b, bt.bytes)
}

// BenchmarkSyncDelta1Percent: a sync after 1% of the files changed, onto
// a volume holding the previous version, against rsync -a --delete of the
// new tree onto a copy of the previous one.
func BenchmarkSyncDelta1Percent(b *testing.B) {
	bt, _, a, rsyncVol, changed := newDeltaBench(b)
	var r Report
	var f figures
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		// Agent: volume at version 1 (entry 1, or entry 3 which is the
		// same tree), apply version 2.
		if i > 0 {
			if err := a.Apply(context.Background(), 3, false, &r); err != nil {
				b.Fatal(err)
			}
			if err := a.writeState(1); err != nil {
				b.Fatal(err)
			}
		}
		r = f.timeApply(b, a, 2)
		if r.Bytes > changed+int64(len(bt.raw))+1<<20 {
			b.Fatalf("delta fetched %s; %s changed", fmtBytes(r.Bytes), fmtBytes(changed))
		}

		f.timeRsync(b, bt.dir(), rsyncVol.dir, func() { rsyncBaseline(b, filepath.Join(bt.root, "tree-v1"), rsyncVol.dir) })
	}
	f.report(b, changed)
}

// newDeltaBench sets up a 1% delta: the generated tree as version 1
// (kept in tree-v1 as links), 1% of its files rewritten as version 2, a
// journal of sync entries v1, v2, v1 (the last to go back for the next
// round), an agent on its own volume at version 1, and a blank volume for
// the rsync baseline. It returns the bytes changed.
func newDeltaBench(b *testing.B) (*benchTree, *memJournal, *Agent, *benchVolume, int64) {
	testenv.RequireRoot(b, needsRoot)
	files, total := benchSize()
	bt := newBenchTree(b, files, total)
	origin := originServer(b, bt.root)
	j := &memJournal{}
	j.sync(bt.raw)
	// Keep version 1 as a tree of links (the blobs keep the content).
	run(b, "cp", "-al", bt.dir(), filepath.Join(bt.root, "tree-v1"))
	changed := bt.change(b, 1, 42)
	j.sync(bt.raw)
	j.sync(j.rawOf(b, bt.root, 0))
	b.Logf("tree: %d files, %s; %s changed", len(bt.manifest.Entries), fmtBytes(bt.bytes), fmtBytes(changed))

	vol := newBenchVolume(b, bt.bytes)
	vol.format(b)
	a := benchAgent(b, vol, j, origin)
	initVolume(b, a)
	var r Report
	if err := a.Apply(context.Background(), 1, false, &r); err != nil {
		b.Fatal(err)
	}
	rsyncVol := newBenchVolume(b, bt.bytes)
	rsyncVol.format(b)
	return bt, j, a, rsyncVol, changed
}

// rawOf returns the canonical manifest of journal entry i's tree: the
// manifest file named by its ref.
func (m *memJournal) rawOf(b *testing.B, root string, i int) []byte {
	data, err := os.ReadFile(filepath.Join(root, "manifests", m.entries[i].Manifest.SHA256+".json"))
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// startProfile starts a CPU profile of the timed section when
// VOLSD_BENCH_CPUPROFILE names a file (the last iteration's profile is
// kept); the returned func stops it.
func startProfile(b *testing.B) func() {
	path := os.Getenv("VOLSD_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// benchLogger discards logs unless VOLSD_BENCH_DEBUG=1 (phase timings).
func benchLogger() *slog.Logger {
	if os.Getenv("VOLSD_BENCH_DEBUG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// BenchmarkPlaceFull: only the agent's placement of a staged tree (the
// rsync passes and their checks), against rsync -a of the same tree onto
// the same kind of blank ext4. Staging (fetch and verify) is not timed.
func BenchmarkPlaceFull(b *testing.B) {
	testenv.RequireRoot(b, needsRoot)
	files, total := benchSize()
	bt := newBenchTree(b, files, total)
	origin := originServer(b, bt.root)
	vol := newBenchVolume(b, bt.bytes)
	j := &memJournal{}
	j.sync(bt.raw)
	var f figures
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		vol.format(b)
		a := benchAgent(b, vol, j, origin)
		initVolume(b, a)
		f.agent = append(f.agent, timePlace(b, a, j.entries[0]))
		f.timeRsync(b, bt.dir(), vol.dir, func() { vol.format(b) })
	}
	f.report(b, bt.bytes)
}

// BenchmarkPlaceDelta1Percent: the placement of a 1% delta, against
// rsync -a --delete of the new tree onto the previous one.
func BenchmarkPlaceDelta1Percent(b *testing.B) {
	bt, j, a, rsyncVol, changed := newDeltaBench(b)
	var r Report
	var f figures
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		f.agent = append(f.agent, timePlace(b, a, j.entries[1]))
		// Back to version 1 for the next round (untimed).
		if err := a.writeState(0); err != nil {
			b.Fatal(err)
		}
		if err := a.Apply(context.Background(), 1, false, &r); err != nil {
			b.Fatal(err)
		}
		f.timeRsync(b, bt.dir(), rsyncVol.dir, func() { rsyncBaseline(b, filepath.Join(bt.root, "tree-v1"), rsyncVol.dir) })
	}
	f.report(b, changed)
}

// timePlace prepares e on a (untimed) and times its placement.
func timePlace(b *testing.B, a *Agent, e events.JournalEntry) time.Duration {
	root, err := openDir(a.cfg.MountPath)
	if err != nil {
		b.Fatal(err)
	}
	defer closeFD(root)
	defer a.removeStaging()
	run, err := a.startRun(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer run.end()
	pe, err := run.prepareEntry(context.Background(), root, e, newPhases())
	if err != nil {
		b.Fatal(err)
	}
	settle(b)
	start := time.Now()
	b.StartTimer()
	if err := run.placeEntry(context.Background(), root, pe, newPhases()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	return time.Since(start)
}
