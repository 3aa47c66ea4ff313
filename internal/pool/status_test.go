package pool_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/store"
)

// launchSuccessful is AWS's "EC2 Instance Launch Successful" sample for an
// instance of group.
func launchSuccessful(t *testing.T, group, id, destination string) json.RawMessage {
	t.Helper()
	return sampleEvent(t, "launch-successful.json", map[string]any{
		"AutoScalingGroupName": group, "EC2InstanceId": id, "Destination": destination})
}

// TestInServiceInstanceIsAskedForItsStatus: once the agent completed the
// launch hook and the instance entered service, the lifecycle handler
// sends volsd-Status to it; the agent's report then makes the record
// ready with the seq it reached, and its volume carries that seq.
func TestInServiceInstanceIsAskedForItsStatus(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	e.mustHandle(raw)
	v := checkAttached(t, e, id)
	if err := completeHook(e.asg, e.action(raw), "CONTINUE"); err != nil { // the agent, caught up
		t.Fatal(err)
	}
	if in := e.instance(id); in.State != store.InstanceLaunching || in.Seq != 0 {
		t.Fatalf("before the status: %+v", in)
	}

	e.mustHandle(launchSuccessful(t, "other-asg", id, "AutoScalingGroup"))
	e.mustHandle(launchSuccessful(t, e.cfg.Group, id, "WarmPool"))
	if docs := e.ssm.sentDocs(); len(docs) != 0 {
		t.Fatalf("commands sent for another group's or a warm-pool launch: %v", docs)
	}
	e.mustHandle(launchSuccessful(t, e.cfg.Group, id, "AutoScalingGroup"))
	if docs, to := e.ssm.sentDocs(), e.ssm.sentTo(); !slices.Equal(docs, []string{"volsd-Status"}) || !slices.Equal(to, []string{id}) {
		t.Fatalf("sent %v to %v, want volsd-Status to %s", docs, to, id)
	}

	// The agent's status report, as the report Lambda records it.
	if _, _, err := e.store.RecordReport(bg, e.cfg.Pool, id, store.InstanceReport{Seq: 7, Status: "Success", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if in := e.instance(id); in.State != store.InstanceReady || in.Seq != 7 {
		t.Fatalf("after the status report: %+v", in)
	}
	if rec, err := e.store.GetVolume(bg, e.cfg.Pool, v.VolumeID); err != nil || rec.Seq != 7 || rec.State != store.VolumeInUse {
		t.Fatalf("in-use volume after the report: %+v %v", rec, err)
	}
	// A ready instance is not asked again (a redelivered event).
	e.mustHandle(launchSuccessful(t, e.cfg.Group, id, "AutoScalingGroup"))
	if n := len(e.ssm.sentDocs()); n != 1 {
		t.Fatalf("%d commands after a redelivery", n)
	}
}
