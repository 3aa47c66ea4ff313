package story

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/store"
)

// Expected is the content every in-service instance must hold: paths
// relative to the volume's mount.
type Expected map[string]harness.FileDigest

// WithPrefix returns the digest of a local tree as it must appear under
// prefix on the volumes.
func WithPrefix(d map[string]harness.FileDigest, prefix string) Expected {
	out := Expected{}
	for p, f := range d {
		out[prefix+"/"+p] = f
	}
	return out
}

// Without returns e without the tree at dir (a file or directory path).
func (e Expected) Without(dir string) Expected {
	out := Expected{}
	for p, f := range e {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			continue
		}
		out[p] = f
	}
	return out
}

// Replace returns e with the tree at prefix replaced by d.
func (e Expected) Replace(prefix string, d map[string]harness.FileDigest) Expected {
	out := e.Without(prefix)
	for p, f := range d {
		out[prefix+"/"+p] = f
	}
	return out
}

// VerifyInstance compares an instance's mounted volume with want.
func VerifyInstance(in *harness.Instance, want Expected) error {
	if ok, err := isMountPoint(in.Mount); err != nil || !ok {
		return fmt.Errorf("instance %s: %s is not mounted (%v)", in.ID, in.Mount, err)
	}
	got, err := harness.Digest(in.Mount)
	if err != nil {
		return fmt.Errorf("instance %s: %w", in.ID, err)
	}
	if diffs := harness.DiffTrees(want, got); len(diffs) > 0 {
		if len(diffs) > 8 {
			diffs = append(diffs[:8], fmt.Sprintf("… and %d more", len(diffs)-8))
		}
		return fmt.Errorf("instance %s differs from the pushed content:\n  %s", in.ID, strings.Join(diffs, "\n  "))
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

// WaitConverged waits until every in-service instance holds want (content
// compared byte for byte).
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
