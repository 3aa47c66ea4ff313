package report_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// TestReportRecordsSpaceOnInstanceAndVolume: the agent's report of its
// filesystem (size, used, free) lands on the instance record and on the
// in-use volume it holds; a late, older report does not replace a newer
// one, and a report without space (not mounted) keeps the last known.
func TestReportRecordsSpaceOnInstanceAndVolume(t *testing.T) {
	rr := newReportRig(t)
	ctx := context.Background()
	rr.ssm.AddInstance(inst, map[string]string{"volsd:pool": "web"})
	if _, err := rr.st.PutVolume(ctx, store.Volume{Pool: "web", VolumeID: "vol-0123456789abcdef0", AZ: "eu-west-1a", State: store.VolumeIdle, SizeGiB: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := rr.st.ClaimIdle(ctx, "web", "eu-west-1a", inst); err != nil {
		t.Fatal(err)
	}
	v, _ := rr.st.GetVolume(ctx, "web", "vol-0123456789abcdef0")
	v.State, v.InstanceID = store.VolumeInUse, inst
	if _, err := rr.st.TransitionVolume(ctx, v, store.VolumeClaimed); err != nil {
		t.Fatal(err)
	}
	spaced := func(seq, size, used, free int64) string {
		b, _ := json.Marshal(events.AgentReport{Command: "apply", Instance: inst, Seq: seq, Head: seq, SizeBytes: size, UsedBytes: used, FreeBytes: free})
		return string(b) + "\n"
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	newer := withTime(t, rr.run(t, "volsd-Apply", inst, ssmtypes.CommandInvocationStatusSuccess, spaced(5, 2<<30, 1<<30, 900<<20), ""), t0.Add(time.Minute))
	older := withTime(t, rr.run(t, "volsd-Apply", inst, ssmtypes.CommandInvocationStatusSuccess, spaced(4, 1<<30, 1<<29, 400<<20), ""), t0)
	unmounted := withTime(t, rr.run(t, "volsd-Status", inst, ssmtypes.CommandInvocationStatusSuccess, spaced(5, 0, 0, 0), ""), t0.Add(2*time.Minute))
	for _, ev := range []json.RawMessage{newer, older, unmounted} {
		if err := rr.r.HandleEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	want := store.Space{SizeBytes: 2 << 30, UsedBytes: 1 << 30, FreeBytes: 900 << 20, At: t0.Add(time.Minute)}
	in, err := rr.st.GetInstance(ctx, "web", inst)
	if err != nil || in.Space == nil || *in.Space != want {
		t.Fatalf("instance space %+v (%v), want %+v", in.Space, err, want)
	}
	v, err = rr.st.GetVolume(ctx, "web", "vol-0123456789abcdef0")
	if err != nil || v.Space == nil || *v.Space != want || v.Seq != 5 {
		t.Fatalf("volume seq %d space %+v (%v), want 5 %+v", v.Seq, v.Space, err, want)
	}
}
