package story

import (
	"context"
	"strings"

	"github.com/volsd/volsd/e2e/harness"
)

// Operator runs the real `volsd` CLI against the local stack, with the
// stack outputs file `cdk deploy --outputs-file` would write.
type Operator struct {
	c       *harness.Cluster
	outputs string
}

// NewOperator writes the outputs file and returns the operator.
func NewOperator(c *harness.Cluster) (*Operator, error) {
	p, err := c.OutputsFile()
	if err != nil {
		return nil, err
	}
	return &Operator{c: c, outputs: p}, nil
}

func (o *Operator) run(ctx context.Context, args ...string) (string, error) {
	full := append([]string{args[0], "--outputs", o.outputs}, args[1:]...)
	r, err := o.c.CLI(ctx, full...)
	return strings.TrimRight(r.Stdout+r.Stderr, "\n"), err
}

// Push syncs the local tree dir to remote on every instance and waits for
// the fleet to converge (volsd push --wait).
func (o *Operator) Push(ctx context.Context, dir, remote string) (string, error) {
	return o.run(ctx, "push", "--wait", dir, remote)
}

// PushNoWait queues the push and returns without waiting for the fleet.
func (o *Operator) PushNoWait(ctx context.Context, dir, remote string) (string, error) {
	return o.run(ctx, "push", dir, remote)
}

// Delete removes remote (a file or directory) everywhere and waits.
func (o *Operator) Delete(ctx context.Context, remote string) (string, error) {
	return o.run(ctx, "delete", "--wait", remote)
}

// Status prints the pool's status.
func (o *Operator) Status(ctx context.Context) (string, error) {
	return o.run(ctx, "status")
}

// StatusJSON is `volsd --json status`.
func (o *Operator) StatusJSON(ctx context.Context) (string, error) {
	return o.run(ctx, "--json", "status")
}
