package pool_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/store"
)

// sampleEvent is the captured event in events/testdata/file with the
// detail fields of set replaced.
func sampleEvent(t *testing.T, file string, set map[string]any) json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("../../events/testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	d := ev["detail"].(map[string]any)
	for k, v := range set {
		d[k] = v
	}
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// foreignEvent is AWS's documented sample lifecycle event (Amazon EC2 Auto
// Scaling event reference: hook "my-lifecycle-hook", its own token) for
// another team's hook on volsd's group and instance id.
func foreignEvent(t *testing.T, file, group, id string) json.RawMessage {
	t.Helper()
	return sampleEvent(t, file, map[string]any{"AutoScalingGroupName": group, "EC2InstanceId": id})
}

func TestForeignTerminateHookLeavesVolumeAlone(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	e.mustHandle(raw)
	v := checkAttached(t, e, id)
	e.agentUp(raw, 4)
	completes := e.asg.Calls("CompleteLifecycleAction")

	e.mustHandle(foreignEvent(t, "foreign-hook-terminate.json", e.cfg.Group, id))
	if got := e.ssm.sentTo(); len(got) != 0 {
		t.Fatalf("volsd-Release sent to %v for another team's terminate hook", got)
	}
	if n := e.asg.Calls("CompleteLifecycleAction") - completes; n != 0 {
		t.Fatalf("CompleteLifecycleAction called %d times for another team's hook", n)
	}
	if in := e.instance(id); in.State != store.InstanceReady || in.VolumeID != v.VolumeID {
		t.Fatalf("instance record after a foreign terminate: %+v", in)
	}
	rec, err := e.store.GetVolume(bg, e.cfg.Pool, v.VolumeID)
	if err != nil || rec.State != store.VolumeInUse || rec.InstanceID != id {
		t.Fatalf("volume record after a foreign terminate: %+v %v", rec, err)
	}
	if ev, _ := e.ec2.Volume(v.VolumeID); ev.Instance != id || ev.Attachment != types.VolumeAttachmentStateAttached {
		t.Fatalf("volume in EC2 after a foreign terminate: %+v", ev)
	}
	if len(e.logs.lines("ignoring lifecycle action of another hook")) != 1 {
		t.Fatalf("no log line for the ignored hook:\n%s", e.logs.String())
	}
}

func TestForeignLaunchHookAttachesNothing(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a") // volsd's own launch action is pending too
	before := e.idle()

	e.mustHandle(foreignEvent(t, "foreign-hook-launch.json", e.cfg.Group, id))
	if h := e.held(id); len(h) != 0 {
		t.Fatalf("another team's launch hook got the instance a volume: %+v", h)
	}
	if n := e.asg.Calls("CompleteLifecycleAction"); n != 0 {
		t.Fatalf("CompleteLifecycleAction called %d times for another team's hook", n)
	}
	if got := e.idle(); got["us-east-1a"] != before["us-east-1a"] {
		t.Fatalf("idle pool changed: %v → %v", before, got)
	}
	// volsd's own action for the same instance still gets its volume.
	e.mustHandle(raw)
	checkAttached(t, e, id)
	if a := e.action(raw); a.Completed {
		t.Fatalf("volsd's launch action completed by the Lambda: %+v", a)
	}
}
