package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// coldStart is what one bootstrap process did in front of the Runtime API:
// when it first asked for work (its init was done), when it returned from
// each invocation, and how.
type coldStart struct {
	Init        time.Duration   // process start → first GET …/invocation/next
	FirstReturn time.Duration   // process start → first POST …/response or …/error
	Warm        time.Duration   // second invocation: handed out → returned
	Outcome     string          // "response" or "error: <type>"
	Returns     []time.Duration // every return, since process start
}

// runtimeAPI is a minimal Lambda Runtime API (2018-06-01) for one
// bootstrap process: it hands out the queued events one by one with the
// headers Lambda sends, and records when the runtime asked and answered.
type runtimeAPI struct {
	fn     string
	events [][]byte
	start  time.Time

	mu      sync.Mutex
	next    int
	current string
	handed  []time.Time
	ready   time.Time // first GET next
	done    []time.Time
	outcome []string
	all     chan struct{}
}

// measureColdStart starts bootstrap with env behind a fresh Runtime API,
// feeds it events (the first is the cold invocation, the second a warm
// one) and returns what it measured. The process is killed afterwards.
func measureColdStart(ctx context.Context, fn, bootstrap string, env []string, events [][]byte, timeout time.Duration) (coldStart, error) {
	api := &runtimeAPI{fn: fn, events: events, all: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return coldStart{}, err
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	cmd := exec.Command(bootstrap)
	cmd.Env = append(append([]string{}, env...),
		"AWS_LAMBDA_RUNTIME_API="+ln.Addr().String(),
		"AWS_LAMBDA_FUNCTION_NAME="+fn,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/"+fn,
		"AWS_LAMBDA_LOG_STREAM_NAME=bench",
		"AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023",
		"_HANDLER=bootstrap",
		"TZ=:UTC",
	)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &lockedWriter{w: &logs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	api.start = time.Now()
	if err := cmd.Start(); err != nil {
		return coldStart{}, fmt.Errorf("start %s: %w", bootstrap, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-api.all:
	case err := <-exited:
		exited <- err
		return coldStart{}, fmt.Errorf("%s exited before answering (%v): %s", fn, err, tail(logs.String(), 600))
	case <-t.C:
		return coldStart{}, fmt.Errorf("%s did not answer %d events within %s: %s", fn, len(events), timeout, tail(logs.String(), 600))
	case <-ctx.Done():
		return coldStart{}, ctx.Err()
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	cs := coldStart{Init: api.ready.Sub(api.start), FirstReturn: api.done[0].Sub(api.start), Outcome: api.outcome[0]}
	for _, d := range api.done {
		cs.Returns = append(cs.Returns, d.Sub(api.start))
	}
	if len(api.done) > 1 {
		cs.Warm = api.done[1].Sub(api.handed[1])
	}
	return cs, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

const runtimePath = "/2018-06-01/runtime/"

func (a *runtimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	p, ok := strings.CutPrefix(r.URL.Path, runtimePath)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch {
	case p == "invocation/next" && r.Method == http.MethodGet:
		a.mu.Lock()
		if a.ready.IsZero() {
			a.ready = now
		}
		if a.next >= len(a.events) {
			a.mu.Unlock()
			<-r.Context().Done() // no more work: block like Lambda's freeze
			return
		}
		ev := a.events[a.next]
		a.next++
		var id [16]byte
		_, _ = rand.Read(id[:])
		a.current = hex.EncodeToString(id[:])
		a.handed = append(a.handed, time.Now())
		reqID := a.current
		a.mu.Unlock()
		h := w.Header()
		h.Set("Lambda-Runtime-Aws-Request-Id", reqID)
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(60*time.Second).UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:"+a.fn)
		h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
		h.Set("Content-Type", "application/json")
		_, _ = w.Write(ev)
	case p == "init/error" && r.Method == http.MethodPost:
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		a.mu.Lock()
		a.done = append(a.done, now)
		a.outcome = append(a.outcome, "init error: "+strings.TrimSpace(string(body)))
		a.finish()
		a.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	case strings.HasPrefix(p, "invocation/") && r.Method == http.MethodPost:
		id, what, _ := strings.Cut(strings.TrimPrefix(p, "invocation/"), "/")
		body, _ := io.ReadAll(io.LimitReader(r.Body, 6<<20))
		a.mu.Lock()
		if id != a.current || (what != "response" && what != "error") {
			a.mu.Unlock()
			http.Error(w, `{"errorType":"InvalidRequestID"}`, http.StatusBadRequest)
			return
		}
		a.current = ""
		a.done = append(a.done, now)
		if what == "response" {
			a.outcome = append(a.outcome, "response")
		} else {
			a.outcome = append(a.outcome, "error: "+tail(string(body), 300))
		}
		a.finish()
		a.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

// finish closes all once every event was answered; call with a.mu held.
func (a *runtimeAPI) finish() {
	if len(a.done) == len(a.events) || strings.HasPrefix(a.outcome[len(a.outcome)-1], "init error") {
		select {
		case <-a.all:
		default:
			close(a.all)
		}
	}
}
