package agent

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// TestDiskFullLosesNothing: an entry that does not fit is refused before
// anything is fetched; one whose files need more blocks and inodes than
// their bytes suggest runs out of space while staging. Both say "disk
// full", are retryable, leave the live tree and the watermark as they were
// and free the staging space.
func TestDiskFullLosesNothing(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	dev, _ := mountedVolume(t, a, 64)
	run(t, "tune2fs", "-m", "0", dev) // no root reserve: free space is what statfs says
	w.put("keep", gen("keep", 1000), 0o644)
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	before := readTree(t, cfg.MountPath)
	check := func(t *testing.T, err error, r Report) {
		t.Helper()
		if KindOf(err) != KindRetryable || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "entry 2") {
			t.Fatalf("apply: %v (kind %s); want a retryable disk full naming entry 2", err, KindOf(err))
		}
		if r.Seq != 1 || watermark(t, cfg.MountPath) != 1 {
			t.Fatalf("watermark moved: %d", watermark(t, cfg.MountPath))
		}
		if d := before.diff(readTree(t, cfg.MountPath)); d != "" {
			t.Fatalf("live tree changed:\n%s", d)
		}
		if _, err := os.Lstat(filepath.Join(cfg.MountPath, stateDirName, stagingDir)); err == nil {
			t.Fatal("staging left behind")
		}
	}

	t.Run("larger than the free space", func(t *testing.T) {
		cfg := cfg
		cfg.Pool = "full1"
		b := w.agent(t, cfg, Deps{})
		if err := b.writeState(1); err != nil {
			t.Fatal(err)
		}
		big := gen("big", 70<<20)
		w.upload(big)
		for _, e := range []events.JournalEntry{
			{Op: events.OpPut, Path: "keep", Blob: &events.Blob{SHA256: sum(gen("keep", 1000)), Size: 1000, Mode: 0o644}, RequestID: "f1"},
			{Op: events.OpPut, Path: "big", Blob: &events.Blob{SHA256: sum(big), Size: int64(len(big)), Mode: 0o644}, RequestID: "f2"},
		} {
			if _, _, err := w.store.Append(context.Background(), cfg.Pool, e); err != nil {
				t.Fatal(err)
			}
		}
		r := Report{}
		err := b.Apply(context.Background(), 0, false, &r)
		check(t, err, r)
		if r.Bytes != 0 {
			t.Fatalf("fetched %d bytes of an entry that cannot fit", r.Bytes)
		}
	})
	t.Run("out of blocks while staging", func(t *testing.T) {
		cfg := cfg
		cfg.Pool = "full2"
		b := w.agent(t, cfg, Deps{})
		if err := b.writeState(1); err != nil {
			t.Fatal(err)
		}
		// Leave 2 MiB; then a sync of 4000 files of 10 bytes: 40 KB by
		// size, but a block and an inode each.
		free, err := freeBytes(cfg.MountPath)
		if err != nil {
			t.Fatal(err)
		}
		filler := filepath.Join(cfg.MountPath, stateDirName, "filler")
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Fallocate(int(f.Fd()), 0, 0, free-2<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		defer os.Remove(filler)
		tiny := gen("tiny", 10)
		files := map[string]file{}
		for i := 0; i < 4000; i++ {
			files["many/"+string(rune('a'+i%26))+"/"+strings.Repeat("x", 1+i%7)+string(rune('0'+i%10))+"-"+itoa(i)] = file{tiny, 0o644}
		}
		ref := w.manifest(files)
		for _, e := range []events.JournalEntry{
			{Op: events.OpPut, Path: "keep", Blob: &events.Blob{SHA256: sum(gen("keep", 1000)), Size: 1000, Mode: 0o644}, RequestID: "g1"},
			{Op: events.OpSync, Path: "many", Manifest: &ref, RequestID: "g2"},
		} {
			if _, _, err := w.store.Append(context.Background(), cfg.Pool, e); err != nil {
				t.Fatal(err)
			}
		}
		r := Report{}
		err = b.Apply(context.Background(), 0, false, &r)
		check(t, err, r)
		if !strings.Contains(err.Error(), "while staging") {
			t.Fatalf("want the failure from staging itself, got %v", err)
		}
		if after, _ := freeBytes(cfg.MountPath); after < 1<<20 {
			t.Fatalf("staging space not freed: %d bytes free", after)
		}
	})
}

func itoa(i int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		if i /= 10; i == 0 {
			return string(b)
		}
	}
}

// TestReleaseUnmountsEvenWhenBusy: a reader holding a file open makes the
// unmount busy; release falls back to a lazy unmount, reports the final
// seq, and applies stop until the next up.
func TestReleaseUnmountsEvenWhenBusy(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("f", gen("f", 100), 0o644)
	in := newInstance(t, w, "")
	in.up(t)
	held, err := os.Open(filepath.Join(in.cfg.MountPath, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var r Report
	if err := in.agent.Release(context.Background(), &r); err != nil || r.Seq != 1 || r.Command != "release" {
		t.Fatalf("release: %+v %v", r, err)
	}
	if isMountPoint(in.cfg.MountPath) {
		t.Fatal("still mounted")
	}
	data := make([]byte, 100)
	if _, err := held.ReadAt(data, 0); err != nil || !bytes.Equal(data, gen("f", 100)) {
		t.Fatalf("the reader lost its open file: %v", err)
	}
	r = Report{}
	if err := in.agent.Apply(context.Background(), 0, false, &r); KindOf(err) != KindNotReady {
		t.Fatalf("apply after release: %v", err)
	}
}

// TestMainReportsEveryOutcome: whatever happens, the last stdout line is
// one JSON report and the exit code says what kind of outcome it was.
func TestMainReportsEveryOutcome(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfgPath, []byte(`{"pool":"web","table":"volsd-web","bucket":"origin","mountPath":"`+filepath.Join(dir, "mnt")+`","runDir":"`+filepath.Join(dir, "run")+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VOLSD_CONFIG": cfgPath}
	getenv := func(k string) string { return env[k] }
	connect := func(context.Context, Config, *slog.Logger) (Deps, error) { return Deps{Journal: fakeJournal{}}, nil }
	cases := []struct {
		args []string
		env  map[string]string
		code int
		kind string
		want string
	}{
		{nil, nil, ExitBadInput, "bad-input", "no command"},
		{[]string{"mount"}, nil, ExitBadInput, "bad-input", `unknown command "mount"`},
		{[]string{"apply", "--upto", "-1"}, nil, ExitBadInput, "bad-input", "--upto must be >= 0"},
		{[]string{"apply", "--upto", "x"}, nil, ExitBadInput, "bad-input", "invalid value"},
		{[]string{"apply", "extra"}, nil, ExitBadInput, "bad-input", "unexpected arguments"},
		{[]string{"status", "--upto", "3"}, nil, ExitBadInput, "bad-input", "does not take --upto"},
		{[]string{"freeze", "--max-seconds", "99999"}, nil, ExitBadInput, "bad-input", "--max-seconds must be 1 to 3600"},
		{[]string{"status"}, map[string]string{"VOLSD_FS_TYPE": "btrfs"}, ExitBadInput, "bad-input", "fsType (VOLSD_FS_TYPE) must be ext4 or xfs"},
		{[]string{"status"}, map[string]string{"VOLSD_CONFIG": filepath.Join(dir, "missing.json")}, ExitBadInput, "bad-input", "missing.json"},
		{[]string{"up"}, nil, ExitBadInput, "bad-input", "asg (VOLSD_ASG) is required for up"},
		{[]string{"status"}, nil, ExitNotReady, "not-ready", "not mounted"},
		{[]string{"apply"}, nil, ExitNotReady, "not-ready", "not mounted"},
		{[]string{"thaw"}, nil, ExitOK, "", ""},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			for k, v := range c.env {
				old := env[k]
				env[k] = v
				defer func() { env[k] = old }()
			}
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), c.args, &stdout, &stderr, getenv, connect)
			r, err := events.ParseAgentReport(stdout.String())
			if err != nil {
				t.Fatalf("no report: %v\nstdout %q\nstderr %s", err, stdout.String(), stderr.String())
			}
			if code != c.code || r.ErrorKind != c.kind || !strings.Contains(r.Error, c.want) {
				t.Fatalf("exit %d, report %+v; want exit %d, kind %q, error containing %q\nstderr %s", code, r, c.code, c.kind, c.want, stderr.String())
			}
			if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) != 1 {
				t.Fatalf("stdout has %d lines; human lines belong on stderr", len(lines))
			}
		})
	}
}

// fakeJournal is an empty journal.
type fakeJournal struct{}

func (fakeJournal) Head(context.Context, string) (int64, error) { return 0, nil }

func (fakeJournal) Entries(context.Context, string, int64, int64) ([]events.JournalEntry, error) {
	return nil, nil
}
