package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// WarmPool plays the group's warm pool (a pool state of Stopped), the
// transitions of internal/awsfake's model (AutoScaling.AddToWarmPool,
// LeaveWarmPool) on the simulated machines: Fill launches instances into
// the pool — each boots, waits in Warmed:Pending:Wait on the launch hook
// (event Origin EC2, Destination WarmPool: the lifecycle Lambda attaches
// its volume, the agent's `up` catches up and completes the action), then
// is stopped: the machine powers off (the agent stops, the filesystem is
// unmounted) and its volume stays attached. ScaleOut draws on the pool:
// the instance is started, boots again (a fresh /run), joins the group
// and waits in Pending:Wait (event Origin WarmPool, Destination
// AutoScalingGroup) until its agent's `up` has remounted, caught up and
// completed the second action.
type WarmPool struct {
	Group *Group
	// Stop powers the machine off without detaching its volumes; Start
	// boots it again.
	Stop  func(ctx context.Context, id string) error
	Start func(ctx context.Context, id, az string) error

	mu     sync.Mutex
	warmed map[string]*member // Warmed:Pending:Wait, Warmed:Stopped
}

// Warmed lists the instances waiting stopped in the pool, sorted.
func (w *WarmPool) Warmed() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return inState(w.warmed, "Warmed:Stopped")
}

// Fill launches n instances into the warm pool and returns once each is
// warmed and stopped (its launch action completed CONTINUE).
func (w *WarmPool) Fill(ctx context.Context, n int) ([]LaunchResult, error) {
	g := w.Group
	var launches []*Launch
	for i := 0; i < n; i++ {
		w.mu.Lock()
		if w.warmed == nil {
			w.warmed = map[string]*member{}
		}
		az := w.pickAZ(g)
		w.mu.Unlock()
		id, err := g.runInstance(ctx, az)
		if err != nil {
			return nil, fmt.Errorf("into the warm pool: %w", err)
		}
		action, err := g.Lifecycle.StartIntoWarmPool(ctx, g.Name, id, az)
		if err != nil {
			return nil, err
		}
		m := &member{id: id, az: az, launched: time.Now(), state: "Warmed:Pending:Wait"}
		w.mu.Lock()
		w.warmed[id] = m
		w.mu.Unlock()
		l, err := g.boot(ctx, m, action, "Launching a new EC2 instance into the warm pool", g.Boot)
		if err != nil {
			return nil, err
		}
		launches = append(launches, l)
	}
	var out []LaunchResult
	for _, l := range launches {
		res, err := g.result(ctx, l)
		if err != nil {
			return out, err
		}
		out = append(out, res)
		if res.Result != "CONTINUE" {
			// ABANDON: the instance is terminated, not warmed.
			g.record(l.InstanceID, l.AZ, "Warm-pool launch abandoned by the lifecycle hook; terminating")
			w.mu.Lock()
			delete(w.warmed, l.InstanceID)
			w.mu.Unlock()
			if err := g.PowerOff(ctx, l.InstanceID); err != nil {
				return out, err
			}
			if _, err := g.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{l.InstanceID}}); err != nil {
				return out, fmt.Errorf("terminate %s: %w", l.InstanceID, err)
			}
			continue
		}
		if err := w.Stop(ctx, l.InstanceID); err != nil {
			return out, fmt.Errorf("stop %s in the warm pool: %w", l.InstanceID, err)
		}
		if _, err := g.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{l.InstanceID}}); err != nil {
			return out, fmt.Errorf("stop %s: %w", l.InstanceID, err)
		}
		w.mu.Lock()
		w.warmed[l.InstanceID].state = "Warmed:Stopped"
		w.mu.Unlock()
		g.record(l.InstanceID, l.AZ, "Instance warmed and stopped in the warm pool")
	}
	return out, nil
}

// pickAZ balances the pool over the group's AZs. w.mu must be held.
func (w *WarmPool) pickAZ(g *Group) string {
	counts := map[string]int{}
	for az := range g.Subnets {
		counts[az] = 0
	}
	for _, m := range w.warmed {
		counts[m.az]++
	}
	return fewest(counts)
}

// ScaleOut moves n warmed instances (oldest first) into the group and
// returns them in Pending:Wait, their launch events (Origin WarmPool) sent.
// Wait for them with Group.WaitInService.
func (w *WarmPool) ScaleOut(ctx context.Context, n int) ([]*Launch, error) {
	g := w.Group
	w.mu.Lock()
	var picks []*member
	for _, m := range w.warmed {
		if m.state == "Warmed:Stopped" {
			picks = append(picks, m)
		}
	}
	sort.Slice(picks, func(i, j int) bool {
		return picks[i].launched.Before(picks[j].launched) || picks[i].launched.Equal(picks[j].launched) && picks[i].id < picks[j].id
	})
	if len(picks) < n {
		w.mu.Unlock()
		return nil, fmt.Errorf("scale out from the warm pool: %d warmed instances, %d asked", len(picks), n)
	}
	picks = picks[:n]
	for _, m := range picks {
		delete(w.warmed, m.id)
	}
	w.mu.Unlock()
	var out []*Launch
	for _, m := range picks {
		if _, err := g.EC2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{m.id}}); err != nil {
			return out, fmt.Errorf("start %s: %w", m.id, err)
		}
		if _, err := g.ASG.AttachInstances(ctx, &autoscaling.AttachInstancesInput{AutoScalingGroupName: &g.Name, InstanceIds: []string{m.id}}); err != nil {
			return out, fmt.Errorf("attach %s to group %s: %w", m.id, g.Name, err)
		}
		action, err := g.Lifecycle.StartFromWarmPool(ctx, g.Name, m.id)
		if err != nil {
			return out, err
		}
		l, err := g.boot(ctx, g.join(m.id, m.az, action), action, "Starting an EC2 instance from the warm pool", w.Start)
		if err != nil {
			return out, err
		}
		out = append(out, l)
	}
	return out, nil
}

// stopMachine powers a warm-pool instance off: its agents stop and its
// filesystem is unmounted, its volumes stay attached (their loop devices
// and by-id links stay).
func (c *Cluster) stopMachine(_ context.Context, id string) error {
	if in, ok := c.Fleet.Get(id); ok {
		in.Shutdown()
	}
	c.Fleet.Remove(id)
	return nil
}

// restartMachine boots a stopped instance again: /run is empty, as after
// any boot (it is a tmpfs), the rest of its disk is as it was.
func (c *Cluster) restartMachine(ctx context.Context, id, az string) error {
	if err := os.RemoveAll(filepath.Join(c.workDir, "instances", id, "run")); err != nil {
		return err
	}
	return c.boot(ctx, id, az)
}
