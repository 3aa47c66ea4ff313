package story

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/oracle"
	"github.com/volsd/volsd/internal/store"
)

// Expected is the content every in-service instance must hold. It is kept
// twice: as the digests of its files (paths relative to the volume's
// mount), for counting and narration, and as a reference directory holding
// exactly that content, which the oracle compares each volume with. The
// oracle is not volsd's code: `rsync -rlpcni --delete REF/ MOUNT/` (a dry
// run comparing checksums, modes, links and what exists) must print
// nothing, and every file's mtime must be the source's in whole seconds.
//
// An Expected is a value: Replace and Without return a new one and leave
// the old intact. Each reference directory is a hard-link copy of the one
// before it, changed only by removing paths and copying fresh trees in, so
// no file is ever written in place and older values stay true.
type Expected struct {
	files map[string]harness.FileDigest
	ref   string
	refs  *refDirs
}

// refDirs hands out the reference directories of one expectation's
// history.
type refDirs struct {
	root string
	n    atomic.Int64
}

func (r *refDirs) next() string {
	return filepath.Join(r.root, strconv.FormatInt(r.n.Add(1), 10))
}

// Pushed is the expected content after src was pushed to prefix on empty
// volumes. Its reference directories live under workDir.
func Pushed(workDir, src, prefix string) (Expected, error) {
	root, err := os.MkdirTemp(workDir, "expected-")
	if err != nil {
		return Expected{}, err
	}
	refs := &refDirs{root: root}
	dir := refs.next()
	// The volume's root: mkfs makes it 0755.
	if err := os.Mkdir(dir, 0o755); err != nil {
		return Expected{}, err
	}
	return Expected{files: map[string]harness.FileDigest{}, ref: dir, refs: refs}.Replace(prefix, src)
}

// Len is the number of regular files expected.
func (e Expected) Len() int { return len(e.files) }

// Paths lists the expected regular files, sorted.
func (e Expected) Paths() []string { return slices.Sorted(maps.Keys(e.files)) }

// derive makes the reference directory of a new value: a hard-link copy
// of e's.
func (e Expected) derive() (Expected, error) {
	dir := e.refs.next()
	if out, err := exec.Command("cp", "-a", "-l", e.ref, dir).CombinedOutput(); err != nil {
		return Expected{}, fmt.Errorf("copy the reference tree: %v: %s", err, out)
	}
	return Expected{files: maps.Clone(e.files), ref: dir, refs: e.refs}, nil
}

// Without returns e without the tree at dir (a file or directory path).
func (e Expected) Without(dir string) (Expected, error) {
	out, err := e.derive()
	if err != nil {
		return Expected{}, err
	}
	maps.DeleteFunc(out.files, func(p string, _ harness.FileDigest) bool {
		return p == dir || strings.HasPrefix(p, dir+"/")
	})
	if err := os.RemoveAll(filepath.Join(out.ref, dir)); err != nil {
		return Expected{}, err
	}
	return out, nil
}

// Replace returns e with the tree at prefix replaced by the local tree src
// as it is now (a sync of src to prefix).
func (e Expected) Replace(prefix, src string) (Expected, error) {
	d, err := harness.Digest(src)
	if err != nil {
		return Expected{}, err
	}
	out, err := e.Without(prefix)
	if err != nil {
		return Expected{}, err
	}
	for p, f := range d {
		out.files[prefix+"/"+p] = f
	}
	to := filepath.Join(out.ref, prefix)
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return Expected{}, err
	}
	if b, err := exec.Command("cp", "-a", src, to).CombinedOutput(); err != nil {
		return Expected{}, fmt.Errorf("copy %s into the reference tree: %v: %s", src, err, b)
	}
	return out, nil
}

// VerifyInstance compares an instance's mounted volume with want by the
// rsync oracle and the source mtimes.
func VerifyInstance(in *harness.Instance, want Expected) error {
	if ok, err := isMountPoint(in.Mount); err != nil || !ok {
		return fmt.Errorf("instance %s: %s is not mounted (%v)", in.ID, in.Mount, err)
	}
	// .volsd is the agent's state and lost+found mkfs's: neither is content.
	diffs, err := oracle.RsyncDiffs(want.ref, in.Mount, "/.volsd", "/lost+found")
	if err != nil {
		return fmt.Errorf("instance %s: %w", in.ID, err)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("instance %s differs from the pushed content (rsync -rlpcni --delete, reference → volume):\n  %s", in.ID, oracle.Summary(diffs, 8))
	}
	d, err := oracle.MtimeDiffs(want.ref, in.Mount, 8)
	if err != nil {
		return fmt.Errorf("instance %s: %w", in.ID, err)
	}
	if len(d) > 0 {
		return fmt.Errorf("instance %s: file mtimes differ from the source: %s", in.ID, strings.Join(d, "; "))
	}
	return nil
}

// VerifyAll checks every in-service instance of the group against want.
func VerifyAll(c *harness.Cluster, want Expected) error {
	var errs []error
	ids := c.Group.InService()
	if len(ids) == 0 {
		return errors.New("no instance in service")
	}
	for _, id := range ids {
		in, ok := c.Fleet.Get(id)
		if !ok {
			errs = append(errs, fmt.Errorf("instance %s is in service but not running", id))
			continue
		}
		if err := VerifyInstance(in, want); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func isMountPoint(dir string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true, nil
		}
	}
	return false, nil
}

// IdleByAZ counts the pool's idle volumes per AZ (from the table).
func IdleByAZ(ctx context.Context, c *harness.Cluster) (map[string][]store.Volume, error) {
	out := map[string][]store.Volume{}
	for _, az := range c.Opts.AZs {
		vs, err := c.Store.ListVolumesByState(ctx, c.Opts.Pool, az, store.VolumeIdle)
		if err != nil {
			return nil, err
		}
		out[az] = vs
	}
	return out, nil
}

// WaitFor polls ok until it reports true or timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, what string, ok func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		done, err := ok()
		if done && err == nil {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("%s: not within %v: %w", what, timeout, last)
			}
			return fmt.Errorf("%s: not within %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitConverged waits until every in-service instance holds want (by the
// rsync oracle).
func WaitConverged(ctx context.Context, c *harness.Cluster, want Expected, timeout time.Duration) error {
	return WaitFor(ctx, timeout, "all instances converge", func() (bool, error) {
		err := VerifyAll(c, want)
		return err == nil, err
	})
}

// PoolVolumes describes the pool's volumes for the narration.
func PoolVolumes(ctx context.Context, c *harness.Cluster) (string, error) {
	vs, err := c.Store.ListVolumes(ctx, c.Opts.Pool)
	if err != nil {
		return "", err
	}
	sort.Slice(vs, func(i, j int) bool {
		if vs[i].AZ != vs[j].AZ {
			return vs[i].AZ < vs[j].AZ
		}
		return vs[i].VolumeID < vs[j].VolumeID
	})
	var b strings.Builder
	for _, v := range vs {
		fmt.Fprintf(&b, "%s %-22s %-9s seq %-4d %s %s\n", v.AZ, v.VolumeID, v.State, v.Seq, orDash(v.InstanceID), orDash(v.SnapshotID))
	}
	return strings.TrimRight(b.String(), "\n"), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// mib formats bytes as MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// StatusTells checks `volsd --json status` (js) against the system: every
// instance in service — newest among them, which entered service through
// its launch hook and Auto Scaling's "EC2 Instance Launch Successful"
// event, no later command — is ready at the head; each in-use volume
// record carries its instance's seq.
func StatusTells(ctx context.Context, c *harness.Cluster, js string, head int64, newest string) error {
	var st struct {
		Head      int64 `json:"head"`
		Instances []struct {
			InstanceID string `json:"instanceId"`
			State      string `json:"state"`
			Seq        int64  `json:"seq"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		return fmt.Errorf("status JSON: %w", err)
	}
	if st.Head != head {
		return fmt.Errorf("status head %d, journal head %d", st.Head, head)
	}
	seqs := map[string]int64{}
	for _, in := range st.Instances {
		seqs[in.InstanceID] = in.Seq
		if in.InstanceID == newest || slices.Contains(c.Group.InService(), in.InstanceID) {
			if in.State != "ready" || in.Seq != head {
				return fmt.Errorf("%s is %s at seq %d in status; it is in service with the content of seq %d", in.InstanceID, in.State, in.Seq, head)
			}
		}
	}
	if _, ok := seqs[newest]; !ok {
		return fmt.Errorf("the newest instance %s is not in status", newest)
	}
	vols, err := c.Store.ListVolumes(ctx, c.Opts.Pool)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if v.State != store.VolumeInUse {
			continue
		}
		if want, ok := seqs[v.InstanceID]; ok && v.Seq != want {
			return fmt.Errorf("in-use volume %s of %s records seq %d; its instance is at %d", v.VolumeID, v.InstanceID, v.Seq, want)
		}
	}
	return nil
}
