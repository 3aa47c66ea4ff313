package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"golang.org/x/sys/unix"
)

// Files of the agent. Inside the volume (<mount>/.volsd/, mode 0700):
const (
	stateFile   = "state.json" // the watermark
	stagingDir  = "staging"    // per-entry staging trees (same filesystem as the content)
	rsyncTmpDir = "tmp"        // rsync --temp-dir
)

// In runDir (tmpfs, mode 0700):
const (
	lockFile   = "apply.lock"  // flock: apply, freeze and release serialize on it
	volumeFile = "volume.json" // what up found: instance, volume, device, mount
	freezeFile = "freeze.json" // present while frozen: deadline and token
)

// VolumeState is <mount>/.volsd/state.json: the watermark of the volume,
// the last journal seq whose changes are completely in place.
type VolumeState struct {
	Version   int       `json:"version"`
	Pool      string    `json:"pool"`
	Seq       int64     `json:"seq"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func (a *Agent) stateDir() string  { return filepath.Join(a.cfg.MountPath, stateDirName) }
func (a *Agent) statePath() string { return filepath.Join(a.stateDir(), stateFile) }

// readState reads the watermark; ok is false when the file does not exist.
func (a *Agent) readState() (VolumeState, bool, error) {
	var s VolumeState
	data, err := os.ReadFile(a.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, retryable("read watermark %s: %v", a.statePath(), err)
	}
	if err := json.Unmarshal(data, &s); err != nil || s.Version != 1 || s.Seq < 0 {
		return s, true, badInput("watermark %s is unreadable (%q): fix it, or remove it to replay the journal from seq 1", a.statePath(), truncate(string(data), 120))
	}
	if s.Pool != a.cfg.Pool {
		return s, true, badInput("volume belongs to pool %q (%s), not to this agent's pool %q", s.Pool, a.statePath(), a.cfg.Pool)
	}
	return s, true, nil
}

// writeState advances the watermark: the new state is written to a temp
// file, then the content and that file are made durable with one syncfs,
// then the temp file is renamed over the state file and the directory
// fsynced. So the watermark never runs ahead of the content, even across
// a power loss, and the state file is always whole. (The syncfs stands for
// the temp file's own fsync: one flush fewer per checkpoint.) During an
// apply the syncfs runs on the apply's flusher, so a writeback error any
// earlier flush of the apply met fails it too.
func (a *Agent) writeState(seq int64) error { return a.writeStateWith(seq, nil) }

// writeStateWith is writeState with the syncfs on f (nil: a flusher of its
// own, outside an apply).
func (a *Agent) writeStateWith(seq int64, f *flusher) error {
	data, _ := json.Marshal(VolumeState{Version: 1, Pool: a.cfg.Pool, Seq: seq, UpdatedAt: a.now().UTC()})
	fail := func(err error) error {
		if isNoSpace(err) {
			return retryable("disk full writing the watermark %s: %v", a.statePath(), err)
		}
		return retryable("write watermark %s: %v", a.statePath(), err)
	}
	tmp, err := writeTemp(a.statePath(), append(data, '\n'), 0o600, false)
	if err != nil {
		return fail(err)
	}
	defer os.Remove(tmp) // a no-op after the rename
	if f == nil {        // outside an apply (up's first watermark)
		if f, err = openFlusher(a.cfg.MountPath); err != nil {
			return err
		}
		defer f.close()
	}
	if err := f.syncfs("checkpoint"); err != nil {
		return err
	}
	if err := os.Rename(tmp, a.statePath()); err != nil {
		return fail(err)
	}
	if err := syncDir(a.stateDir()); err != nil {
		return fail(err)
	}
	return nil
}

// volumeInfo is runDir/volume.json, written by up for the reports of the
// other commands.
type volumeInfo struct {
	Instance string `json:"instance"`
	Volume   string `json:"volume"`
	Device   string `json:"device"`
	Mount    string `json:"mount"`
}

func (a *Agent) readVolumeInfo() (volumeInfo, bool) {
	var v volumeInfo
	data, err := os.ReadFile(filepath.Join(a.cfg.RunDir, volumeFile))
	if err != nil || json.Unmarshal(data, &v) != nil {
		return v, false
	}
	return v, true
}

func (a *Agent) writeVolumeInfo(v volumeInfo) error {
	data, _ := json.Marshal(v)
	return writeFileAtomic(filepath.Join(a.cfg.RunDir, volumeFile), append(data, '\n'), 0o600)
}

// fillIdentity puts what is known about this instance and volume into r:
// runDir/volume.json when up wrote it, else the instance from IMDS (best
// effort, bounded: reports must not wait on a missing metadata service).
func (a *Agent) fillIdentity(ctx context.Context, r *Report) {
	r.Mount = a.cfg.MountPath
	if v, ok := a.readVolumeInfo(); ok {
		r.Instance, r.Volume, r.Device = v.Instance, v.Volume, v.Device
		return
	}
	if a.imds == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if doc, err := a.imds.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{}); err == nil {
		r.Instance = doc.InstanceID
	}
}

// ensureRunDir creates runDir (mode 0700).
func (a *Agent) ensureRunDir() error {
	if err := os.MkdirAll(a.cfg.RunDir, 0o700); err != nil {
		return retryable("create runDir %s: %v", a.cfg.RunDir, err)
	}
	return nil
}

// checkMounted says whether the volume is mounted and initialised: the
// mount path is a mount point (its device differs from its parent's) and
// holds .volsd/. Nothing is ever written into an unmounted mount path, which
// would land on the root disk.
func (a *Agent) checkMounted() error {
	var st, parent unix.Stat_t
	if err := unix.Stat(a.cfg.MountPath, &st); err != nil {
		return notReady("volume not mounted: %s: %v", a.cfg.MountPath, err)
	}
	if err := unix.Stat(filepath.Dir(a.cfg.MountPath), &parent); err != nil {
		return notReady("volume not mounted: %s: %v", filepath.Dir(a.cfg.MountPath), err)
	}
	if st.Dev == parent.Dev {
		return notReady("volume not mounted: %s is not a mount point (run `volsd-agent up`)", a.cfg.MountPath)
	}
	if fi, err := os.Lstat(a.stateDir()); err != nil || !fi.IsDir() {
		return notReady("volume at %s is not initialised: %s missing (run `volsd-agent up`)", a.cfg.MountPath, a.stateDir())
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// fmtBytes writes a byte count for humans.
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
