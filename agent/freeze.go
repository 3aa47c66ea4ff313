package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Linux fsfreeze ioctls (_IOWR('X', 119, int) and _IOWR('X', 120, int)),
// what fsfreeze -f / -u call.
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// MaxFreezeSeconds bounds --max-seconds: a frozen filesystem blocks every
// writer, so the bound is short.
const MaxFreezeSeconds = 3600

// WatchdogCommand is the hidden command freeze starts, detached, to thaw
// at the deadline; it logs to runDir/watchdog.log.
const (
	WatchdogCommand = "thaw-watchdog"
	watchdogLog     = "watchdog.log"
)

// freezeMarker is runDir/freeze.json: present while the filesystem is
// frozen by the agent. The watchdog thaws at Deadline unless the marker is
// gone or carries another Token (a later freeze).
type freezeMarker struct {
	Mount    string    `json:"mount"`
	Deadline time.Time `json:"deadline"`
	Token    string    `json:"token"`
}

func (a *Agent) freezePath() string { return filepath.Join(a.cfg.RunDir, freezeFile) }

func (a *Agent) readFreeze() (freezeMarker, bool) {
	var m freezeMarker
	data, err := os.ReadFile(a.freezePath())
	if err != nil || json.Unmarshal(data, &m) != nil {
		return m, false
	}
	return m, true
}

// checkNotFrozen refuses to work on a frozen filesystem (every write would
// block until the thaw). A marker past its deadline means the watchdog did
// not run: thaw now and go on.
func (a *Agent) checkNotFrozen() error {
	m, ok := a.readFreeze()
	if !ok {
		return nil
	}
	if a.now().Before(m.Deadline) {
		return notReady("filesystem %s is frozen for a snapshot until %s (run `volsd-agent thaw`)", m.Mount, m.Deadline.UTC().Format(time.RFC3339))
	}
	a.log.Warn("freeze marker past its deadline; thawing", "mount", m.Mount, "deadline", m.Deadline)
	return a.thaw(m.Mount)
}

// Freeze takes the apply lock (so no entry is half applied), syncs and
// freezes the filesystem, and starts a detached watchdog that thaws it
// after maxSeconds even if thaw never comes and this process is gone.
func (a *Agent) Freeze(ctx context.Context, maxSeconds int, r *Report) error {
	r.Command = "freeze"
	a.fillIdentity(ctx, r)
	if maxSeconds < 1 || maxSeconds > MaxFreezeSeconds {
		return badInput("--max-seconds must be 1 to %d (got %d)", MaxFreezeSeconds, maxSeconds)
	}
	lock, err := a.lockApply(ctx, a.lockWait)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := a.checkMounted(); err != nil {
		return err
	}
	if st, ok, err := a.readState(); err == nil && ok {
		r.Seq = st.Seq
	}
	if m, ok := a.readFreeze(); ok && a.now().Before(m.Deadline) {
		a.log.Info("already frozen", "mount", m.Mount, "until", m.Deadline)
		return nil
	}
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	m := freezeMarker{Mount: a.cfg.MountPath, Deadline: a.now().Add(time.Duration(maxSeconds) * time.Second), Token: hex.EncodeToString(token)}
	data, _ := json.Marshal(m)
	if err := writeFileAtomic(a.freezePath(), data, 0o600); err != nil {
		return retryable("write freeze marker %s: %v", a.freezePath(), err)
	}
	// The watchdog runs before the freeze, so there is no moment when the
	// filesystem is frozen without one.
	if err := a.startWatchdog(m); err != nil {
		os.Remove(a.freezePath())
		return err
	}
	fd, err := openDir(a.cfg.MountPath)
	if err != nil {
		os.Remove(a.freezePath())
		return retryable("%v", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		os.Remove(a.freezePath())
		return retryable("syncfs %s: %v", a.cfg.MountPath, err)
	}
	if err := unix.IoctlSetInt(fd, ioctlFIFREEZE, 0); err != nil {
		os.Remove(a.freezePath())
		if errors.Is(err, unix.EBUSY) {
			return retryable("freeze %s: already frozen by someone else (not volsd)", a.cfg.MountPath)
		}
		return retryable("freeze %s: %v", a.cfg.MountPath, err)
	}
	a.log.Info("frozen", "mount", a.cfg.MountPath, "thaw at the latest", m.Deadline.UTC().Format(time.RFC3339))
	return nil
}

// startWatchdog starts `volsd-agent thaw-watchdog` in its own session with
// no stdio: it outlives this process and SSM's process group.
func (a *Agent) startWatchdog(m freezeMarker) error {
	cmd := exec.Command(a.self, WatchdogCommand, "--token", m.Token, "--deadline", strconv.FormatInt(m.Deadline.UnixNano(), 10))
	cmd.Env = os.Environ()
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	logPath := filepath.Join(a.cfg.RunDir, watchdogLog)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return retryable("open %s: %v", logPath, err)
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return retryable("start thaw watchdog %s: %v", a.self, err)
	}
	a.log.Info("thaw watchdog started", "pid", cmd.Process.Pid)
	return cmd.Process.Release()
}

// Watchdog is the body of the hidden thaw-watchdog command: poll the
// marker; at the deadline thaw if it still carries token. The wall clock
// is read once, at the start, for the time left; from then on the wait
// runs on the monotonic clock, so a step of the wall clock (NTP, a VM
// resumed) neither lengthens nor shortens the freeze.
func (a *Agent) Watchdog(ctx context.Context, token string, deadline time.Time) error {
	thawAt := time.NewTimer(deadline.Sub(a.now()))
	defer thawAt.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	for {
		m, ok := a.readFreeze()
		if !ok || m.Token != token {
			return nil // thawed, or a newer freeze with its own watchdog
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-thawAt.C:
			a.log.Warn("freeze bound reached without thaw; thawing", "mount", m.Mount)
			return a.thaw(m.Mount)
		case <-poll.C:
		}
	}
}

// Thaw thaws the filesystem; thawing one that is not frozen is fine.
func (a *Agent) Thaw(ctx context.Context, r *Report) error {
	r.Command = "thaw"
	a.fillIdentity(ctx, r)
	mount := a.cfg.MountPath
	if m, ok := a.readFreeze(); ok {
		mount = m.Mount
	}
	if err := a.thaw(mount); err != nil {
		return err
	}
	if st, ok, err := a.readState(); err == nil && ok {
		r.Seq = st.Seq
	}
	return nil
}

// thaw issues FITHAW (EINVAL: not frozen, fine) and removes the marker.
func (a *Agent) thaw(mount string) error {
	fd, err := openDir(mount)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return retryable("thaw: %v", err)
	}
	if err == nil {
		err = unix.IoctlSetInt(fd, ioctlFITHAW, 0)
		unix.Close(fd)
		switch {
		case err == nil:
			a.log.Info("thawed", "mount", mount)
		case errors.Is(err, unix.EINVAL):
			a.log.Info("not frozen", "mount", mount)
		default:
			return retryable("thaw %s: %v", mount, err)
		}
	}
	if err := os.Remove(a.freezePath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return retryable("remove freeze marker %s: %v", a.freezePath(), err)
	}
	return nil
}

// isFrozen is for status: the marker exists and the deadline is ahead.
func (a *Agent) isFrozen() (freezeMarker, bool) {
	m, ok := a.readFreeze()
	return m, ok && a.now().Before(m.Deadline)
}

// watchdogArgs parses the hidden command's flags.
func watchdogArgs(args []string) (token string, deadline time.Time, err error) {
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--token":
			token = args[i+1]
		case "--deadline":
			ns, perr := strconv.ParseInt(args[i+1], 10, 64)
			if perr != nil {
				return "", deadline, fmt.Errorf("--deadline: %v", perr)
			}
			deadline = time.Unix(0, ns)
		}
	}
	if token == "" || deadline.IsZero() {
		return "", deadline, fmt.Errorf("usage: %s --token T --deadline UNIXNANO", WatchdogCommand)
	}
	return token, deadline, nil
}
