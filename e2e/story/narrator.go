// Package story is volsd's whole-system scenarios on one machine: the
// story `make demo` tells (pool, launch, push, converge, scale out, delete,
// scale in, snapshot, refresh, status) and the fault scenario, both driven
// against a harness.Cluster and checked at every step. The demo runs them
// at full size; the end-to-end tests at a smaller one.
package story

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Narrator prints the story's steps with their timings.
type Narrator struct {
	W     io.Writer
	start time.Time
	mu    sync.Mutex
	steps []StepTiming
	n     int
}

// StepTiming is one finished step.
type StepTiming struct {
	Title    string
	Duration time.Duration
	Detail   string
}

// NewNarrator starts the clock.
func NewNarrator(w io.Writer) *Narrator {
	if w == nil {
		w = io.Discard
	}
	return &Narrator{W: w, start: time.Now()}
}

func (n *Narrator) stamp() string {
	return fmt.Sprintf("[%7.1fs]", time.Since(n.start).Seconds())
}

// Step announces a step and returns the function that closes it with a
// detail line.
func (n *Narrator) Step(format string, args ...any) func(detail string, dargs ...any) {
	n.mu.Lock()
	n.n++
	num := n.n
	title := fmt.Sprintf(format, args...)
	fmt.Fprintf(n.W, "%s %2d. %s\n", n.stamp(), num, title)
	n.mu.Unlock()
	begin := time.Now()
	return func(detail string, dargs ...any) {
		d := time.Since(begin)
		msg := fmt.Sprintf(detail, dargs...)
		n.mu.Lock()
		defer n.mu.Unlock()
		n.steps = append(n.steps, StepTiming{Title: title, Duration: d, Detail: msg})
		fmt.Fprintf(n.W, "%s     ✓ %s (%.1f s)\n", n.stamp(), msg, d.Seconds())
	}
}

// Note prints an indented line under the current step.
func (n *Narrator) Note(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n") {
		fmt.Fprintf(n.W, "%s       %s\n", n.stamp(), line)
	}
}

// Steps returns the finished steps.
func (n *Narrator) Steps() []StepTiming {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]StepTiming{}, n.steps...)
}

// Summary prints the step timings as a table.
func (n *Narrator) Summary() {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Fprintf(n.W, "\n%-70s %9s\n", "step", "seconds")
	var total time.Duration
	for _, s := range n.steps {
		title := s.Title
		if len(title) > 70 {
			title = title[:67] + "..."
		}
		fmt.Fprintf(n.W, "%-70s %9.1f\n", title, s.Duration.Seconds())
		total += s.Duration
	}
	fmt.Fprintf(n.W, "%-70s %9.1f\n", "total", time.Since(n.start).Seconds())
}
