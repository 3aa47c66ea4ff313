package playground

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startSleeper starts a process that stands for an emulator a killed run
// left behind.
func startSleeper(t *testing.T) (*exec.Cmd, Process) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	p, ok := processOf(cmd.Process.Pid)
	if !ok {
		t.Fatalf("process %d not found in /proc", cmd.Process.Pid)
	}
	return cmd, p
}

func exitedWithin(cmd *exec.Cmd, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, ok := processOf(cmd.Process.Pid); !ok {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// After a kill -9 the next run stops the emulators the record names (when
// they are still the same processes), removes their log directory and the
// state files; a process that only reuses a recorded pid is left alone.
func TestSweepLeftoversStopsRecordedEmulators(t *testing.T) {
	dir := t.TempDir()
	orphan, orphanProc := startSleeper(t)
	bystander, bystanderProc := startSleeper(t)
	reused := bystanderProc
	reused.Start-- // same pid, another start time: not the recorded process
	logDir := filepath.Join(t.TempDir(), "volsd-emulators.abc123")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeRecord(dir, record{
		Server: Process{PID: 1 << 22, Start: 1}, WorkDir: filepath.Join(os.TempDir(), "volsd-e2e-local-gone"),
		Emulators: []Process{orphanProc, reused}, EmulatorLogDir: logDir,
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{outputsFile, envFile, socketFile} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := sweepLeftovers(dir, quiet()); err != nil {
		t.Fatal(err)
	}
	if !exitedWithin(orphan, 5*time.Second) {
		t.Error("the recorded emulator still runs after the sweep")
	}
	if exitedWithin(bystander, 200*time.Millisecond) {
		t.Error("the sweep killed a process whose start time differs from the record (a reused pid)")
	}
	if _, err := os.Stat(logDir); !os.IsNotExist(err) {
		t.Errorf("emulator log directory %s survived the sweep (stat: %v)", logDir, err)
	}
	for _, f := range []string{recordFile, outputsFile, envFile, socketFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("state file %s survived the sweep (stat: %v)", f, err)
		}
	}
}

// A second playground on a state directory in use is refused with the
// holder's pid and what to do; once the holder is gone the lock is free.
func TestStateDirLockRefusesSecondPlayground(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := openStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := processOf(os.Getpid())
	if err := writeRecord(dir, record{Server: self}); err != nil {
		t.Fatal(err)
	}
	_, err = openStateDir(dir)
	if err == nil {
		t.Fatal("a second openStateDir on a locked directory succeeded")
	}
	for _, want := range []string{"already runs", "pid " + strconv.Itoa(os.Getpid()), "-state DIR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	first.Close()
	again, err := openStateDir(dir)
	if err != nil {
		t.Fatalf("after the holder closed its lock: %v", err)
	}
	again.Close()
}

// A state directory that is a symlink (someone else's path) is refused.
func TestStateDirRefusesSymlink(t *testing.T) {
	target := t.TempDir()
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if f, err := openStateDir(link); err == nil {
		f.Close()
		t.Fatal("openStateDir accepted a symlink")
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want Request
		err  string
	}{
		{[]string{"scale-out", "2"}, Request{Command: CmdScaleOut, N: 2}, ""},
		{[]string{"scale-in", "1"}, Request{Command: CmdScaleIn, N: 1}, ""},
		{[]string{"kill", "i-0abc"}, Request{Command: CmdKill, Instance: "i-0abc"}, ""},
		{[]string{"snapshot"}, Request{Command: CmdSnapshot}, ""},
		{[]string{"reconcile"}, Request{Command: CmdReconcile}, ""},
		{[]string{"instances"}, Request{Command: CmdInstances}, ""},
		{nil, Request{}, "no command"},
		{[]string{"scale-out"}, Request{}, "takes 1 argument"},
		{[]string{"scale-out", "0"}, Request{}, "from 1 to 10"},
		{[]string{"scale-out", "many"}, Request{}, "from 1 to 10"},
		{[]string{"kill", "web-1"}, Request{}, "instance ID"},
		{[]string{"snapshot", "now"}, Request{}, "takes 0 argument"},
		{[]string{"reboot"}, Request{}, `unknown command "reboot"`},
	} {
		got, err := ParseCommand(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseCommand(%q) error %v; want one saying %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseCommand(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}
