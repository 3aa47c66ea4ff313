package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/volsd/volsd/internal/lambdaruntime"
)

// coldStart is what one bootstrap process did in front of the Runtime API:
// when it first asked for work (its init was done), when it returned from
// each invocation, and how.
type coldStart struct {
	Init        time.Duration   // process start → first GET …/invocation/next
	FirstReturn time.Duration   // process start → first POST …/response or …/error
	Warm        time.Duration   // second invocation: handed out → returned
	Outcome     string          // "response" or "error: <type>: <message>"
	Returns     []time.Duration // every return, since process start
}

// measureColdStart starts bootstrap with env and memoryMiB as one Lambda sandbox behind
// the local Runtime API (internal/lambdaruntime), feeds it events (the
// first is the cold invocation, the second a warm one) and returns what the
// runtime's observations show. The process is killed afterwards.
func measureColdStart(ctx context.Context, fn, bootstrap string, env []string, memoryMiB int, events [][]byte, timeout time.Duration) (coldStart, error) {
	var mu sync.Mutex
	var obs []lambdaruntime.Observation
	logs := &lockedWriter{w: &strings.Builder{}}
	f := &lambdaruntime.Function{
		Name: fn, Bootstrap: bootstrap, Env: env, Timeout: timeout, MaxConcurrency: 1,
		MemoryMiB: memoryMiB, Region: "us-east-1", Account: "123456789012", Stderr: logs,
		Observe: func(o lambdaruntime.Observation) {
			mu.Lock()
			defer mu.Unlock()
			obs = append(obs, o)
		},
	}
	defer f.Close()
	for i, ev := range events {
		_, err := f.Invoke(ctx, ev)
		var fe *lambdaruntime.FunctionError
		if err != nil && !errors.As(err, &fe) {
			return coldStart{}, err
		}
		if fe != nil && (fe.Type == "Sandbox.Timedout" || fe.Type == "Runtime.ExitError") {
			return coldStart{}, fmt.Errorf("%s: invocation %d: %v: %s", fn, i+1, err, tail(logs.String(), 600))
		}
		if fe != nil && !returned(&mu, &obs) {
			break // init error: the sandbox never took an invocation
		}
	}
	f.Close()
	mu.Lock()
	defer mu.Unlock()
	var cs coldStart
	var start, handed time.Time
	var readies, returns, hands int
	for _, o := range obs {
		switch o.Kind {
		case lambdaruntime.Started:
			start = o.At
		case lambdaruntime.AskedNext:
			if readies == 0 {
				cs.Init = o.At.Sub(start)
			}
			readies++
		case lambdaruntime.Handed:
			handed = o.At
			hands++
		case lambdaruntime.Returned, lambdaruntime.InitFailed:
			d := o.At.Sub(start)
			if returns == 0 {
				cs.FirstReturn, cs.Outcome = d, o.Outcome
				if o.Kind == lambdaruntime.InitFailed {
					cs.Outcome = "init error: " + o.Outcome
				}
			}
			if returns == 1 && hands == 2 {
				cs.Warm = o.At.Sub(handed)
			}
			returns++
			cs.Returns = append(cs.Returns, d)
		}
	}
	if returns == 0 {
		return coldStart{}, fmt.Errorf("%s did not answer: %s", fn, tail(logs.String(), 600))
	}
	return cs, nil
}

// returned reports whether any invocation returned (mu guards obs).
func returned(mu *sync.Mutex, obs *[]lambdaruntime.Observation) bool {
	mu.Lock()
	defer mu.Unlock()
	for _, o := range *obs {
		if o.Kind == lambdaruntime.Returned {
			return true
		}
	}
	return false
}

type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
