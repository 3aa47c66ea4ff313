package pool_test

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

func TestTerminateReleasesPerPolicy(t *testing.T) {
	cases := []struct {
		name    string
		policy  string
		agent   func(s *releaseSSM, inst, vol string) // how the agent answers volsd-Release
		report  int64                                 // seq reported before (0 = never)
		recycle bool
		seq     int64
	}{
		{"recycle with the seq from the release", pool.PolicyRecycle, func(s *releaseSSM, inst, vol string) {
			s.Seq, s.Volume = map[string]int64{inst: 17}, map[string]string{inst: vol}
		}, 0, true, 17},
		{"recycle with the seq from the release: Cancelling is not the end", pool.PolicyRecycle, func(s *releaseSSM, inst, vol string) {
			// A cancel that came as the agent finished: Cancelling is
			// read, then the agent's Success with its report.
			s.Before = []ssmtypes.CommandInvocationStatus{ssmtypes.CommandInvocationStatusDelayed, ssmtypes.CommandInvocationStatusCancelling}
			s.Seq, s.Volume = map[string]int64{inst: 17}, map[string]string{inst: vol}
		}, 0, true, 17},
		{"recycle with the last reported seq when the release fails", pool.PolicyRecycle, func(s *releaseSSM, _, _ string) {
			s.Status = ssmtypes.CommandInvocationStatusFailed
		}, 9, true, 9},
		{"recycle: agent hangs, seq reported before", pool.PolicyRecycle, func(s *releaseSSM, _, _ string) { s.Hang = true }, 5, true, 5},
		{"recycle: seq never known → delete", pool.PolicyRecycle, func(s *releaseSSM, _, _ string) {
			s.SendErr = awsfake.EC2Error("InvalidInstanceId", "Instances not in a valid state for account")
		}, 0, false, 0},
		{"delete", pool.PolicyDelete, func(s *releaseSSM, inst, vol string) {
			s.Seq, s.Volume = map[string]int64{inst: 17}, map[string]string{inst: vol}
		}, 0, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, awsfake.EC2Config{DetachDelay: 3 * time.Millisecond, DeleteDelay: 3 * time.Millisecond},
				withConfig(func(c *pool.Config) { c.ReleasePolicy = tc.policy }))
			e.seedIdle()
			id, raw := e.launch("us-east-1b")
			e.mustHandle(raw)
			v := checkAttached(t, e, id)
			act := e.action(raw)
			if err := completeHook(e.asg, act, "CONTINUE"); err != nil {
				t.Fatal(err)
			}
			if tc.report > 0 {
				in := e.instance(id)
				in.Seq, in.LastReportAt = tc.report, time.Now().UTC()
				if _, err := e.store.UpdateInstance(bg, in); err != nil {
					t.Fatal(err)
				}
			}
			tc.agent(e.ssm, id, v.VolumeID)
			traw, err := e.asg.Terminate(e.cfg.Group, id, "")
			if err != nil {
				t.Fatal(err)
			}
			e.mustHandle(traw)
			if got := e.ssm.sentTo(); e.ssm.SendErr == nil && (len(got) != 1 || got[0] != id) {
				t.Fatalf("volsd-Release sent to %v", got)
			}
			if a := e.action(traw); a.Result != "CONTINUE" || !a.Completed {
				t.Fatalf("terminate action %+v", a)
			}
			in := e.instance(id)
			if in.State != store.InstanceGone || in.VolumeID != "" {
				t.Fatalf("instance record %+v", in)
			}
			rec, err := e.store.GetVolume(bg, "web", v.VolumeID)
			ev, exists := e.ec2.Volume(v.VolumeID)
			if tc.recycle {
				if err != nil || rec.State != store.VolumeIdle || rec.Seq != tc.seq || rec.InstanceID != "" || rec.Device != "" {
					t.Fatalf("recycled record %+v %v", rec, err)
				}
				if !exists || ev.State != types.VolumeStateAvailable || ev.Instance != "" {
					t.Fatalf("recycled volume in EC2: %+v", ev)
				}
				return
			}
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("deleted volume's record: %+v %v", rec, err)
			}
			if exists && ev.State != types.VolumeStateDeleting {
				t.Fatalf("volume in EC2 after delete: %+v", ev)
			}
			// Delivered again (the hook is done): nothing breaks.
			e.mustHandle(traw)
		})
	}
}

func TestTerminateBeforeLaunchLeavesNoVolume(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	traw, err := e.asg.Terminate(e.cfg.Group, id, "")
	if err != nil {
		t.Fatal(err)
	}
	e.mustHandle(traw) // reordered: terminate first
	e.mustHandle(raw)
	if h := e.held(id); len(h) != 0 {
		t.Fatalf("instance terminated before its launch holds %+v", h)
	}
	if got := e.idle(); got["us-east-1a"] != 2 {
		t.Fatalf("idle %v", got)
	}
	if a := e.action(traw); a.Result != "CONTINUE" {
		t.Fatalf("terminate action %+v", a)
	}
}

func TestTerminateRacingLaunch(t *testing.T) {
	// Launch and terminate of one instance at once, many times: the
	// instance never ends up holding a volume, and none leaks.
	e := newEnv(t, awsfake.EC2Config{AttachDelay: time.Millisecond, DetachDelay: time.Millisecond},
		withTiming(func(tm *pool.Timing) { tm.OrphanGrace = 0 }))
	e.seedIdle()
	for i := 0; i < 6; i++ {
		id, raw := e.launch(testAZs[i%3])
		traw, err := e.asg.Terminate(e.cfg.Group, id, "")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 2)
		go func() { done <- e.handle(raw) }()
		go func() { done <- e.handle(traw) }()
		for j := 0; j < 2; j++ {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		e.mustHandle(raw) // late redeliveries
		e.mustHandle(traw)
		if h := e.held(id); len(h) != 0 {
			t.Fatalf("round %d: terminated instance holds %+v", i, h)
		}
		for _, ev := range e.ec2.Volumes() {
			if ev.Instance == id && ev.Attachment != types.VolumeAttachmentStateDetaching {
				t.Fatalf("round %d: %s attached to the terminated instance", i, ev.ID)
			}
		}
	}
	e.reconcile()
	for _, az := range testAZs {
		if e.idle()[az] != 2 {
			t.Fatalf("idle after reconcile %v", e.idle())
		}
	}
}

func TestTerminateExpiredActionIsDone(t *testing.T) {
	e := newEnv(t, awsfake.EC2Config{})
	e.seedIdle()
	id, raw := e.launch("us-east-1a")
	e.mustHandle(raw)
	e.agentUp(raw, 3)
	traw, _ := e.asg.Terminate(e.cfg.Group, id, "")
	e.asg.ExpireAll() // the hook timed out (default CONTINUE) before we ran
	e.mustHandle(traw)
	if len(e.logs.lines("already completed or expired")) == 0 {
		t.Fatalf("no log line about the expired action:\n%s", e.logs.String())
	}
	if h := e.held(id); len(h) != 0 {
		t.Fatalf("instance still holds %+v", h)
	}
}
