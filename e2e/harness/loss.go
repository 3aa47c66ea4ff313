package harness

import (
	"context"
	"fmt"
	"maps"
	"slices"
)

// Lose plays the loss of instance id without a terminate hook (a Spot
// interruption, a manual TerminateInstances, a host failure): the machine
// goes away with its agent and mount, EC2 terminates it and force-detaches
// its volumes, and the group replaces it, as Auto Scaling does after a
// failed health check, through the launch hook like any launch. Wait for
// the replacement with WaitInService. The lost instance's volume stays in
// the table as held by a gone instance until reconcile releases it.
func (g *Group) Lose(ctx context.Context, id string) (*Launch, error) {
	g.mu.Lock()
	m := g.members[id]
	g.mu.Unlock()
	if m == nil {
		return nil, fmt.Errorf("instance %s is not in group %s (members: %v)", id, g.Name, slices.Sorted(maps.Keys(g.Members())))
	}
	g.record(id, m.az, "Instance lost (no terminate hook)")
	if err := g.terminate(ctx, id); err != nil {
		return nil, err
	}
	ls, err := g.ScaleOut(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("replace %s: %w", id, err)
	}
	return ls[0], nil
}
