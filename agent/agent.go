package agent

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/internal/awserr"
)

// Deps are the clients and settings main wires into an Agent.
type Deps struct {
	IMDS        IMDS
	EC2         EC2
	AutoScaling AutoScaling
	S3          S3
	Journal     Journal
	Logger      *slog.Logger

	// Self is this program, started again as the thaw watchdog; default
	// os.Executable().
	Self string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// HeartbeatEvery spaces lifecycle heartbeats during up (default 60s).
	HeartbeatEvery time.Duration
	// CheckpointEvery spaces watermark checkpoints (syncfs + state file)
	// while applying many entries (default 500ms; the last entry always
	// checkpoints).
	CheckpointEvery time.Duration
	// LockWait bounds how long freeze and release wait for a running apply
	// (default 60s).
	LockWait time.Duration
	// StallRetry is the first wait before a refused entry is tried again
	// (default DefaultStallRetry); it doubles up to MaxStallRetry.
	StallRetry time.Duration
	// EntryTimeout is the base of each entry's deadline (default
	// EntryBaseTimeout; its size adds to it).
	EntryTimeout time.Duration
	// ThrottleWait paces the volume wait's DescribeVolumes calls that
	// EC2's request limit refused (default DefaultThrottleWait: until the
	// wait's deadline); Attempts > 0 bounds them.
	ThrottleWait awserr.Backoff
}

// DefaultThrottleWait paces throttled DescribeVolumes calls of up's
// volume wait: 1 s × 2, at most 30 s, jittered, as often as it takes
// within DeviceWait. A mass scale-out empties EC2's Describe bucket for
// minutes; a wait that gave up after a few quick tries only restarted
// (RestartSec) into the same throttling.
var DefaultThrottleWait = awserr.Backoff{Initial: time.Second, Factor: 2, Max: 30 * time.Second}

// Agent runs the volsd-agent commands for one configuration.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	imds    IMDS
	ec2     EC2
	asg     AutoScaling
	journal Journal
	origin  origin

	self            string
	now             func() time.Time
	heartbeatEvery  time.Duration
	checkpointEvery time.Duration
	lockWait        time.Duration
	stallRetry      time.Duration
	entryBase       time.Duration
	throttleWait    awserr.Backoff
	rsyncBin        string
	rsyncErr        error

	// unconfined runs rsync outside the jail (only tests that wrap
	// rsync in a script of their own).
	unconfined bool
	// placeNativeMax is the most paths an entry may place for the agent
	// to place them itself, without rsync (NativePlaceMax; tests lower it
	// to run the rsync passes).
	placeNativeMax int
}

// New returns an Agent.
func New(cfg Config, d Deps) *Agent {
	a := &Agent{
		cfg: cfg, log: d.Logger, imds: d.IMDS, ec2: d.EC2, asg: d.AutoScaling, journal: d.Journal,
		origin: origin{s3: d.S3, bucket: cfg.Bucket},
		self:   d.Self, now: d.Now,
		heartbeatEvery: d.HeartbeatEvery, checkpointEvery: d.CheckpointEvery, lockWait: d.LockWait, stallRetry: d.StallRetry,
		throttleWait: d.ThrottleWait,
	}
	if a.throttleWait.Initial <= 0 {
		a.throttleWait = DefaultThrottleWait
	}
	if a.stallRetry <= 0 {
		a.stallRetry = DefaultStallRetry
	}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a.log = a.log.With("pool", cfg.Pool)
	if a.self == "" {
		a.self, _ = os.Executable()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.heartbeatEvery <= 0 {
		a.heartbeatEvery = 60 * time.Second
	}
	if a.checkpointEvery <= 0 {
		a.checkpointEvery = 500 * time.Millisecond
	}
	if a.lockWait <= 0 {
		a.lockWait = 60 * time.Second
	}
	if a.entryBase = d.EntryTimeout; a.entryBase <= 0 {
		a.entryBase = EntryBaseTimeout
	}
	a.rsyncBin, a.rsyncErr = findRsync()
	a.placeNativeMax = NativePlaceMax
	return a
}

// releasedFile in runDir says release ran: applies stop and refuse until
// the next up.
const releasedFile = "released"

func (a *Agent) checkNotReleased() error {
	if _, err := os.Stat(filepath.Join(a.cfg.RunDir, releasedFile)); err == nil {
		return notReady("volume released by `volsd-agent release`; run `volsd-agent up` to use it again")
	}
	return nil
}

// Release stops applying (running applies stop after their current entry),
// thaws, syncs and unmounts the volume, lazily only as a last resort, and
// reports the final watermark. Releasing an unmounted volume is fine.
func (a *Agent) Release(ctx context.Context, r *Report) error {
	r.Command = "release"
	a.fillIdentity(ctx, r)
	if err := a.ensureRunDir(); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(a.cfg.RunDir, releasedFile), []byte(a.now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return retryable("write release marker: %v", err)
	}
	lock, err := a.lockApply(ctx, a.lockWait)
	if err != nil {
		return err
	}
	defer lock.release()
	if m, ok := a.readFreeze(); ok {
		if err := a.thaw(m.Mount); err != nil {
			return err
		}
	}
	a.tearDownJail() // a crashed apply's bind of the volume would keep it busy
	if err := a.checkMounted(); err != nil {
		a.log.Info("nothing mounted; already released", "mount", a.cfg.MountPath)
		return nil
	}
	if st, ok, err := a.readState(); err == nil && ok {
		r.Seq = st.Seq
	}
	fd, err := openDir(a.cfg.MountPath)
	if err != nil {
		return retryable("%v", err)
	}
	err = unix.Syncfs(fd)
	unix.Close(fd)
	if err != nil {
		return retryable("syncfs %s: %v", a.cfg.MountPath, err)
	}
	var uerr error
	for try := 0; try < 10; try++ {
		if uerr = unix.Unmount(a.cfg.MountPath, 0); uerr == nil {
			a.log.Info("unmounted", "mount", a.cfg.MountPath, "seq", r.Seq)
			break
		}
		if !errors.Is(uerr, unix.EBUSY) {
			return retryable("unmount %s: %v", a.cfg.MountPath, uerr)
		}
		select {
		case <-ctx.Done():
			return retryable("unmount %s: %v", a.cfg.MountPath, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if uerr != nil {
		// Readers (a web server) still hold files: detach the mount now,
		// the filesystem goes when they close; its data is synced.
		a.log.Warn("mount busy; lazy unmount as a last resort", "mount", a.cfg.MountPath)
		if err := unix.Unmount(a.cfg.MountPath, unix.MNT_DETACH); err != nil {
			return retryable("lazy unmount %s: %v", a.cfg.MountPath, err)
		}
	}
	if err := os.Remove(filepath.Join(a.cfg.RunDir, volumeFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("remove volume info", "err", err)
	}
	return nil
}

// Status reports the watermark, the journal head, and whether the
// filesystem is frozen. An unmounted volume is "not ready".
func (a *Agent) Status(ctx context.Context, r *Report) error {
	r.Command = "status"
	a.fillIdentity(ctx, r)
	if m, ok := a.isFrozen(); ok {
		a.log.Info("frozen", "mount", m.Mount, "until", m.Deadline.UTC().Format(time.RFC3339))
	}
	if err := a.checkMounted(); err != nil {
		return err
	}
	st, ok, err := a.readState()
	if err != nil {
		return err
	}
	if !ok {
		return notReady("volume at %s has no watermark %s (run `volsd-agent up`)", a.cfg.MountPath, a.statePath())
	}
	r.Seq = st.Seq
	head, err := a.journal.Head(ctx, a.cfg.Pool)
	if err != nil {
		return awsFailure(err, "read journal head of pool %s", a.cfg.Pool)
	}
	r.Head = head
	a.log.Info("status", "seq", r.Seq, "head", head, "behind", head-r.Seq, "updatedAt", st.UpdatedAt)
	return nil
}
