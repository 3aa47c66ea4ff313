package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/store"
)

// TestGrowInPlace raises a pool of 1 GiB volumes to 2 GiB with the real
// Lambdas and agents on loop-mounted ext4: the reconcile Lambda, given the
// new VOLSD_VOLUME_SIZE_GIB as a deploy would, grows every pool volume
// (ModifyVolume; the harness grows the loop image and its device) and
// every volume record and EC2 volume ends at 2 GiB; the agents of the
// running instances try the online grow on their next apply (ext4's
// online resize is refused in this sandbox: they keep serving at the old
// size, logged); an instance launched afterwards gets the recycled idle
// volume (1 GiB ext4 with the content, grown to 2 GiB by EBS), whose `up`
// grows the filesystem offline before mounting (logged) and serves 2 GiB;
// the oracle finds every instance's content intact.
func TestGrowInPlace(t *testing.T) {
	t.Parallel()
	// One zone, so the scale-out after the grow lands where the recycled
	// volume waits.
	c := startCluster(t, harness.Options{IdlePerAZ: 1, VolumeSizeGiB: 1, ReleasePolicy: "recycle", ApplyInterval: 0, AZs: []string{harness.Region + "a"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := filepath.Join(c.WorkDir(), "trees")
	pushed, push := pusher(ctx, t, c)
	if _, err := c.Schedule(ctx, "reconcile"); err != nil {
		t.Fatal(err)
	}
	launch(ctx, t, c, 2)
	site := filepath.Join(work, "site")
	for i := range 40 {
		writeFile(t, filepath.Join(site, fmt.Sprintf("d%d", i%5), fmt.Sprintf("page-%02d.html", i)), fmt.Sprintf("<p>page %d</p>\n", i), 0o644)
	}
	push(site, "site")
	verifyFleet(t, c, pushed)
	// Scale in one: its volume (content at the head, 1 GiB ext4) returns
	// to the idle pool; reconcile drops the surplus blank idle volume (the
	// lowest seq goes first).
	gone, err := c.Group.ScaleIn(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var recycled string
	vols, err := c.Store.ListVolumes(ctx, c.Names.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.State == store.VolumeIdle && v.Seq > 0 {
			recycled = v.VolumeID
		}
	}
	if recycled == "" {
		t.Fatalf("no recycled idle volume after scaling in %v: %+v", gone, vols)
	}
	before := c.Group.InService()
	fsSize := func(id string) int64 {
		t.Helper()
		in, ok := c.Fleet.Get(id)
		if !ok {
			t.Fatalf("instance %s not running", id)
		}
		var st unix.Statfs_t
		if err := unix.Statfs(in.Mount, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Bsize
	}
	for _, id := range before {
		if s := fsSize(id); s > 1<<30 {
			t.Fatalf("%s: filesystem of %d bytes on a 1 GiB volume", id, s)
		}
	}

	// Deploy the new size; reconcile grows every volume, then records follow.
	set := map[string]string{"VOLSD_VOLUME_SIZE_GIB": "2"}
	c.SetLambdaEnv("reconcile", set)
	c.SetLambdaEnv("lifecycle", set)
	for range 2 {
		if _, err := c.Schedule(ctx, "reconcile"); err != nil {
			t.Fatal(err)
		}
	}
	checkSizes := func() {
		t.Helper()
		vols, err := c.Store.ListVolumes(ctx, c.Names.Pool)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, v := range vols {
			if v.State == store.VolumeGone {
				continue
			}
			ids = append(ids, v.VolumeID)
			if v.SizeGiB != 2 {
				t.Errorf("volume record %s (%s) at %d GiB, want 2", v.VolumeID, v.State, v.SizeGiB)
			}
		}
		out, err := c.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("tag:volsd:pool"), Values: []string{c.Names.Pool}}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range out.Volumes {
			if aws.ToInt32(v.Size) != 2 || !slices.Contains(ids, aws.ToString(v.VolumeId)) {
				t.Errorf("EC2 volume %s at %d GiB (record: %v), want 2 GiB and a record", aws.ToString(v.VolumeId), aws.ToInt32(v.Size), slices.Contains(ids, aws.ToString(v.VolumeId)))
			}
		}
		if len(out.Volumes) != len(ids) || len(ids) < 2 { // at least one in use and one idle
			t.Errorf("%d EC2 volumes, %d records", len(out.Volumes), len(ids))
		}
	}
	checkSizes()

	// The running agents' next apply tries the online grow.
	notes := filepath.Join(work, "notes")
	writeFile(t, filepath.Join(notes, "grown.txt"), "after the grow\n", 0o644)
	push(notes, "notes")
	for _, id := range before {
		t.Logf("%s (mounted ext4): filesystem %d MiB after the online grow attempt (ext4's EXT4_IOC_RESIZE_FS is refused in this sandbox)", id, fsSize(id)>>20)
	}

	// A new instance gets a grown idle volume: up grows ext4 offline.
	launch(ctx, t, c, 1)
	var added []string
	for _, id := range c.Group.InService() {
		if !slices.Contains(before, id) {
			added = append(added, id)
		}
	}
	if len(added) != 1 {
		t.Fatalf("new instances %v", added)
	}
	if s := fsSize(added[0]); s < 19<<30/10 {
		t.Fatalf("%s: filesystem %d MiB on a 2 GiB volume after up (offline grow)", added[0], s>>20)
	}
	if rec, err := c.Store.GetInstance(ctx, c.Names.Pool, added[0]); err != nil || rec.VolumeID != recycled {
		t.Fatalf("%s holds %s, want the recycled volume %s (%v)", added[0], rec.VolumeID, recycled, err)
	}
	logs, err := os.ReadFile(filepath.Join(c.LogDir(), "agents.log"))
	if err != nil {
		t.Fatal(err)
	}
	offline := false
	for _, line := range strings.Split(string(logs), "\n") {
		if strings.Contains(line, added[0]) && strings.Contains(line, "growing the filesystem before mounting it") {
			offline = true
			t.Logf("offline grow: %s", line)
		}
	}
	if !offline {
		t.Fatalf("%s: no offline grow in the agent's log", added[0])
	}
	if _, err := c.Schedule(ctx, "reconcile"); err != nil { // refill the idle pool (new volumes at 2 GiB)
		t.Fatal(err)
	}
	checkSizes()
	verifyFleet(t, c, pushed)
	if errs := c.AsyncErrors(); len(errs) > 0 {
		t.Fatalf("asynchronous invocations failed: %v", errs)
	}
}
