package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/store/storetest"
	"github.com/volsd/volsd/internal/testenv"
)

// needsRoot is what the agent tests that call testenv.RequireRoot need
// root for.
const needsRoot = "the agent's filesystem tests (loop devices, mkfs, mount, fsfreeze)"

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopDevice attaches a sparse image of sizeMiB to a free loop device and
// detaches it when the test ends.
func loopDevice(t testing.TB, sizeMiB int) (dev, img string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "volume.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return attachImage(t, img), img
}

func attachImage(t testing.TB, img string) string {
	t.Helper()
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() {
		// The mount cleanup (registered later) runs first.
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Logf("losetup -d %s: %v %s", dev, err, out)
		}
	})
	return dev
}

// unmountAtCleanup unmounts dir when the test ends (thawing first, in case
// a test left it frozen).
func unmountAtCleanup(t testing.TB, dir string) {
	t.Cleanup(func() {
		if fd, err := openDir(dir); err == nil {
			_ = ioctlThaw(fd)
			closeFD(fd)
		}
		for i := 0; i < 50; i++ {
			if err := exec.Command("umount", dir).Run(); err == nil || !isMountPoint(dir) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = exec.Command("umount", "-l", dir).Run()
	})
}

func isMountPoint(dir string) bool {
	mounts, _ := readMounts()
	for _, m := range mounts {
		if m.point == dir {
			return true
		}
	}
	return false
}

// fakeIMDS is an IMDS that knows one instance.
type fakeIMDS struct{ doc imds.InstanceIdentityDocument }

func (f fakeIMDS) GetInstanceIdentityDocument(context.Context, *imds.GetInstanceIdentityDocumentInput, ...func(*imds.Options)) (*imds.GetInstanceIdentityDocumentOutput, error) {
	return &imds.GetInstanceIdentityDocumentOutput{InstanceIdentityDocument: f.doc}, nil
}

// fakeAutoScaling stands in for the lifecycle calls moto lacks. It holds
// one pending lifecycle action per instance and answers like Auto Scaling:
// a ValidationError "No active Lifecycle Action found" once it is gone.
type fakeAutoScaling struct {
	mu         sync.Mutex
	pending    map[string]bool // instance → action active
	completed  []autoscaling.CompleteLifecycleActionInput
	heartbeats int
	failNext   error // returned once by the next Complete call
}

func newFakeAutoScaling(instances ...string) *fakeAutoScaling {
	f := &fakeAutoScaling{pending: map[string]bool{}}
	for _, i := range instances {
		f.pending[i] = true
	}
	return f
}

func noActiveAction(instance string) error {
	return &smithy.GenericAPIError{Code: "ValidationError", Message: "No active Lifecycle Action found with instance ID " + instance}
}

func (f *fakeAutoScaling) CompleteLifecycleAction(_ context.Context, in *autoscaling.CompleteLifecycleActionInput, _ ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return nil, err
	}
	id := aws.ToString(in.InstanceId)
	if !f.pending[id] {
		return nil, noActiveAction(id)
	}
	delete(f.pending, id)
	f.completed = append(f.completed, *in)
	return &autoscaling.CompleteLifecycleActionOutput{}, nil
}

func (f *fakeAutoScaling) RecordLifecycleActionHeartbeat(_ context.Context, in *autoscaling.RecordLifecycleActionHeartbeatInput, _ ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := aws.ToString(in.InstanceId)
	if !f.pending[id] {
		return nil, noActiveAction(id)
	}
	f.heartbeats++
	return &autoscaling.RecordLifecycleActionHeartbeatOutput{}, nil
}

// world is one test's pool: a table on DynamoDB Local, a bucket on moto,
// the journal written through store.Append, and the model of the tree the
// journal describes.
type world struct {
	t      testing.TB
	pool   string
	table  string
	bucket string
	db     *dynamodb.Client
	store  *store.Store
	s3     *s3.Client
	model  *model
	models []*model // models[k] is the tree at seq k
	now    time.Time
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{t: t, pool: "web", now: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
	w.store, w.db = storetest.NewWithClient(t)
	w.table = w.store.Table()
	w.s3 = s3.NewFromConfig(testenv.Moto(t), func(o *s3.Options) {
		o.UsePathStyle = true
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	w.bucket = strings.ToLower(testenv.UniqueName(t, "origin"))
	if _, err := w.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &w.bucket}); err != nil {
		t.Fatal(err)
	}
	w.model = newModel()
	w.models = []*model{w.model.clone()}
	return w
}

// config returns an agent configuration for this world with its own
// runDir and mount path.
func (w *world) config(t testing.TB) Config {
	dir := t.TempDir()
	return Config{
		Pool: w.pool, Table: w.table, Bucket: w.bucket, Region: testenv.Region, ASG: "web-asg",
		LifecycleHook: "volsd-launch", MountPath: filepath.Join(dir, "mnt"), FSType: "ext4",
		ApplyInterval: Duration(5 * time.Minute), DeviceRoot: filepath.Join(dir, "by-id"),
		SysfsRoot: filepath.Join(dir, "sys"), RunDir: filepath.Join(dir, "run"), DeviceWait: Duration(10 * time.Second),
	}
}

// agent returns an Agent on cfg with this world's clients.
func (w *world) agent(t testing.TB, cfg Config, d Deps) *Agent {
	d.S3 = NewS3Getter(w.s3.Options()) // as volsd-agent builds it
	d.Journal = store.NewJournalReader(w.db, w.table)
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	if d.Self == "" {
		d.Self = agentBinary(t)
	}
	return New(cfg, d)
}

type testWriter struct{ t testing.TB }

func (tw testWriter) Write(p []byte) (int, error) {
	tw.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// upload puts data into the origin as a blob.
func (w *world) upload(data []byte) {
	w.t.Helper()
	key := events.BlobKey(sum(data))
	if _, err := w.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &w.bucket, Key: &key, Body: bytes.NewReader(data)}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) uploadKey(key string, data []byte) {
	w.t.Helper()
	if _, err := w.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &w.bucket, Key: &key, Body: bytes.NewReader(data)}); err != nil {
		w.t.Fatal(err)
	}
}

// appendEntry appends e to the journal as is (no validation: tests of
// hostile entries use it) and returns its seq.
func (w *world) appendEntry(e events.JournalEntry) int64 {
	w.t.Helper()
	if e.RequestID == "" {
		e.RequestID = fmt.Sprintf("req-%d", len(w.models))
	}
	seq, _, err := w.store.Append(context.Background(), w.pool, e)
	if err != nil {
		w.t.Fatal(err)
	}
	return seq
}

// record notes the model after an entry the agent must apply.
func (w *world) record(seq int64) {
	if int64(len(w.models)) != seq {
		w.t.Fatalf("model has %d states, journal is at %d", len(w.models), seq)
	}
	w.models = append(w.models, w.model.clone())
}

// put appends a put of data at path.
func (w *world) put(path string, data []byte, mode uint32) int64 {
	w.t.Helper()
	w.upload(data)
	seq := w.appendEntry(events.JournalEntry{Op: events.OpPut, Path: path, Blob: &events.Blob{SHA256: sum(data), Size: int64(len(data)), Mode: mode}})
	w.model.put(path, data, mode)
	w.record(seq)
	return seq
}

// del appends a delete of path.
func (w *world) del(path string) int64 {
	w.t.Helper()
	seq := w.appendEntry(events.JournalEntry{Op: events.OpDelete, Path: path})
	w.model.del(path)
	w.record(seq)
	return seq
}

// file is one file of a synced tree.
type file struct {
	data []byte
	mode uint32
}

// manifest uploads the blobs and the manifest of files and returns its ref.
func (w *world) manifest(files map[string]file) events.ManifestRef {
	w.t.Helper()
	m := events.Manifest{Version: events.ManifestVersion}
	seen := map[string]bool{}
	for p, f := range files {
		if !seen[sum(f.data)] {
			w.upload(f.data)
			seen[sum(f.data)] = true
		}
		m.Entries = append(m.Entries, events.ManifestEntry{Path: p, Type: events.TypeFile, SHA256: sum(f.data), Size: int64(len(f.data)), Mode: f.mode})
	}
	data, err := m.Canonical()
	if err != nil {
		w.t.Fatal(err)
	}
	w.uploadKey(events.ManifestKey(sum(data)), data)
	return events.ManifestRef{SHA256: sum(data)}
}

// sync appends a sync of target to files.
func (w *world) sync(target string, files map[string]file) int64 {
	w.t.Helper()
	ref := w.manifest(files)
	seq := w.appendEntry(events.JournalEntry{Op: events.OpSync, Path: target, Manifest: &ref})
	w.model.sync(target, files)
	w.record(seq)
	return seq
}

// model is the tree a journal describes: files and directories, with the
// semantics of the rsync passes (directories stay until removed).
type model struct {
	files map[string]file
	dirs  map[string]bool
}

func newModel() *model { return &model{files: map[string]file{}, dirs: map[string]bool{}} }

func (m *model) clone() *model {
	c := newModel()
	for k, v := range m.files {
		c.files[k] = v
	}
	for k := range m.dirs {
		c.dirs[k] = true
	}
	return c
}

// removeTree removes p and everything under it.
func (m *model) removeTree(p string) {
	delete(m.files, p)
	delete(m.dirs, p)
	for k := range m.files {
		if strings.HasPrefix(k, p+"/") {
			delete(m.files, k)
		}
	}
	for k := range m.dirs {
		if strings.HasPrefix(k, p+"/") {
			delete(m.dirs, k)
		}
	}
}

// makeDirs makes every parent of p a directory, replacing files in the way.
func (m *model) makeDirs(p string) {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		d := strings.Join(parts[:i], "/")
		delete(m.files, d)
		m.dirs[d] = true
	}
}

func (m *model) put(p string, data []byte, mode uint32) {
	m.makeDirs(p)
	m.removeTree(p)
	m.files[p] = file{data: data, mode: mode}
}

func (m *model) del(p string) {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		if !m.dirs[strings.Join(parts[:i], "/")] {
			return // a parent is not a directory: nothing there
		}
	}
	m.removeTree(p)
}

func (m *model) sync(target string, files map[string]file) {
	prefix := ""
	if target == events.RootPath {
		m.files, m.dirs = map[string]file{}, map[string]bool{}
	} else {
		m.makeDirs(target)
		m.removeTree(target)
		m.dirs[target] = true
		prefix = target + "/"
	}
	for p, f := range files {
		m.makeDirs(prefix + p)
		m.files[prefix+p] = f
	}
}

// readTree reads the content tree under mount (without .volsd and the
// root lost+found), failing on anything that is not a file or directory.
func readTree(t testing.TB, mount string) *model {
	t.Helper()
	m := newModel()
	err := filepath.WalkDir(mount, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mount, p)
		if rel == "." {
			return nil
		}
		if rel == stateDirName || rel == lostFound {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			m.dirs[rel] = true
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m.files[rel] = file{data: data, mode: uint32(info.Mode().Perm())}
		default:
			return fmt.Errorf("%s is %v, not a file or directory", rel, info.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// diff describes how got differs from want ("" when equal).
func (m *model) diff(got *model) string {
	var d []string
	for p, f := range m.files {
		g, ok := got.files[p]
		switch {
		case !ok:
			d = append(d, "missing file "+p)
		case !bytes.Equal(g.data, f.data):
			d = append(d, fmt.Sprintf("file %s has other content (%d bytes, want %d)", p, len(g.data), len(f.data)))
		case g.mode != f.mode:
			d = append(d, fmt.Sprintf("file %s has mode %o, want %o", p, g.mode, f.mode))
		}
	}
	for p := range got.files {
		if _, ok := m.files[p]; !ok {
			d = append(d, "extra file "+p)
		}
	}
	for p := range m.dirs {
		if !got.dirs[p] {
			d = append(d, "missing dir "+p)
		}
	}
	for p := range got.dirs {
		if !m.dirs[p] {
			d = append(d, "extra dir "+p)
		}
	}
	sort.Strings(d)
	if len(d) > 20 {
		d = append(d[:20], fmt.Sprintf("… and %d more", len(d)-20))
	}
	return strings.Join(d, "\n")
}

func assertTree(t testing.TB, mount string, want *model) {
	t.Helper()
	if d := want.diff(readTree(t, mount)); d != "" {
		t.Fatalf("tree at %s differs from the journal:\n%s", mount, d)
	}
}

// watermark reads <mount>/.volsd/state.json.
func watermark(t testing.TB, mount string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mount, stateDirName, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var s VolumeState
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s.Seq
}

// gen makes deterministic file content of n bytes for a label.
func gen(label string, n int) []byte {
	out := make([]byte, 0, n)
	seed := sha256.Sum256([]byte(label))
	for len(out) < n {
		out = append(out, seed[:]...)
		seed = sha256.Sum256(seed[:])
	}
	return out[:n]
}

// mountedVolume formats a fresh loop device, mounts it at cfg.MountPath
// and initialises .volsd/ like up does (watermark 0).
func mountedVolume(t testing.TB, a *Agent, sizeMiB int) (dev, img string) {
	t.Helper()
	dev, img = loopDevice(t, sizeMiB)
	run(t, "mkfs.ext4", "-q", dev)
	if err := os.MkdirAll(a.cfg.MountPath, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-o", "noatime", dev, a.cfg.MountPath)
	unmountAtCleanup(t, a.cfg.MountPath)
	if err := os.MkdirAll(a.stateDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := a.writeState(0); err != nil {
		t.Fatal(err)
	}
	return dev, img
}
