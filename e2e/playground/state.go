package playground

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultStateDir is where `make local` keeps what a user and a later run
// need: the outputs and env files, the control socket, and the record of
// what this run started (for the cleanup after a crash). /run is root's
// own tmpfs (no other user can plant a symlink there), cleared at boot with
// the loop devices and mounts it describes.
const DefaultStateDir = "/run/volsd-local"

// State files inside the state directory.
const (
	recordFile  = "playground.json"
	lockFile    = "lock"
	outputsFile = "cdk-outputs.json"
	envFile     = "env"
	socketFile  = "ctl.sock"
)

// Process names one process by pid and start time (clock ticks since boot,
// /proc/PID/stat field 22), so a later run never signals a process that
// merely reuses the pid.
type Process struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// record is what a running playground leaves in the state directory
// before it starts anything, so the next run can clean up after a kill -9.
type record struct {
	Server Process `json:"server"`
	// WorkDir holds images, instance trees, binaries and logs; the
	// harness's sweep (harness.SweepStale) unmounts, detaches and kills
	// what lies under it once Server is gone.
	WorkDir string `json:"workDir"`
	// Emulators are DynamoDB Local and moto as scripts/with-emulators.sh
	// started them; they outlive the playground only when that script was
	// killed too.
	Emulators      []Process `json:"emulators,omitempty"`
	EmulatorLogDir string    `json:"emulatorLogDir,omitempty"`
	StartedAt      time.Time `json:"startedAt"`
}

// processOf identifies pid now; false if it is not running.
func processOf(pid int) (Process, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Process{}, false
	}
	// pid (comm) state ppid … : comm may hold spaces and parentheses, the
	// fields after the last ')' do not. starttime is field 22 overall.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Process{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" {
		return Process{}, false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Process{}, false
	}
	return Process{PID: pid, Start: start}, true
}

// alive says whether p is still the same running process.
func (p Process) alive() bool {
	now, ok := processOf(p.PID)
	return ok && now.Start == p.Start
}

// ParseEmulatorPIDs reads VOLSD_EMULATOR_PIDS (space-separated, as
// scripts/with-emulators.sh exports it) into processes.
func ParseEmulatorPIDs(v string) ([]Process, error) {
	var out []Process
	for _, f := range strings.Fields(v) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("VOLSD_EMULATOR_PIDS %q: %q is not a process id", v, f)
		}
		if p, ok := processOf(pid); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// openStateDir makes the state directory (0755: users read the env and
// outputs files) and takes its lock for the life of this process: a
// second playground on the same directory is refused while the first
// runs, and the kernel drops the lock when the holder dies however it
// dies. It returns the lock's file, to keep open.
func openStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || (st != nil && int(st.Uid) != os.Geteuid()) {
		return nil, fmt.Errorf("state directory %s is not a directory of this user (a symlink or someone else's); remove it or choose another with -state", dir)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		who := "another process"
		if r, rerr := readRecord(dir); rerr == nil && r.Server.alive() {
			who = fmt.Sprintf("pid %d", r.Server.PID)
		}
		return nil, fmt.Errorf("a playground already runs on state directory %s (%s): stop it with Ctrl-C in its terminal or kill -TERM, or start a second one with -state DIR", dir, who)
	}
	return lock, nil
}

func readRecord(dir string) (record, error) {
	var r record
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", filepath.Join(dir, recordFile), err)
	}
	return r, nil
}

func writeRecord(dir string, r record) error {
	b, _ := json.MarshalIndent(r, "", "  ")
	return writeFileAtomic(filepath.Join(dir, recordFile), b, 0o644)
}

// writeFileAtomic writes a state file whole or not at all (temp, fsync,
// rename), so a crash never leaves a half record.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// sweepLeftovers cleans up after a playground that died without its own
// cleanup (kill -9, OOM): the emulators it recorded, if they are still the
// same processes, and their log directory; its work directory is left to
// harness.SweepStale, which harness.Start runs (agents, Lambdas, mounts,
// loop devices, files). Then the state files go. Called with the lock held,
// so the recorded server is gone.
func sweepLeftovers(dir string, log *slog.Logger) error {
	r, err := readRecord(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return removeStateFiles(dir)
	}
	if err != nil {
		log.Warn("unreadable record of an earlier run; removing it", "err", err)
		return removeStateFiles(dir)
	}
	for _, p := range r.Emulators {
		if p.alive() {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			log.Info("stopped an emulator of a killed playground", "pid", p.PID)
		}
	}
	if r.EmulatorLogDir != "" && strings.HasPrefix(filepath.Base(r.EmulatorLogDir), "volsd-emulators.") {
		_ = os.RemoveAll(r.EmulatorLogDir)
	}
	if r.WorkDir != "" {
		log.Info("the work directory of a killed playground is swept at start", "dir", r.WorkDir)
	}
	return removeStateFiles(dir)
}

func removeStateFiles(dir string) error {
	var errs []error
	for _, f := range []string{outputsFile, envFile, socketFile, recordFile, recordFile + ".tmp"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
