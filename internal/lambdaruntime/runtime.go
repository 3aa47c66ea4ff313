// Package lambdaruntime runs built Lambda `bootstrap` binaries
// (provided.al2023, aws-lambda-go with -tags lambda.norpc) the way Lambda
// does, behind the Lambda Runtime API (2018-06-01: invocation/next,
// …/response, …/error, init/error). It is the one local Runtime API server:
// the functions' own tests (internal/lambdatest), the whole-system harness
// (e2e/harness) and the cold-start bench (e2e/bench) all use it.
package lambdaruntime

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Function runs a built Lambda `bootstrap` (provided.al2023 custom runtime)
// the way Lambda does: each sandbox is one bootstrap process with its own
// Runtime API server (AWS_LAMBDA_RUNTIME_API); an invocation is handed out by
// GET …/invocation/next and finished by POST …/{id}/response or …/{id}/error.
// Sandboxes are reused between invocations; up to MaxConcurrency run at
// once; a sandbox whose invocation times out or whose process exits is
// thrown away, as Lambda does.
type Function struct {
	Name      string
	Bootstrap string        // path of the bootstrap binary
	Env       []string      // environment (VOLSD_*, AWS_*), without the Lambda-set variables
	Timeout   time.Duration // function timeout
	// MaxConcurrency bounds concurrent sandboxes (reserved concurrency); 0 = 4.
	MaxConcurrency int
	// MemoryMiB is the function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE);
	// 0 = 128, Lambda's default.
	MemoryMiB int
	// MaxRetryAttempts is how often Lambda retries a failed asynchronous
	// invocation (EventInvokeConfig MaximumRetryAttempts, 0..2); nil = 2,
	// Lambda's default.
	MaxRetryAttempts *int
	// Stdout and Stderr receive the bootstrap's output (CloudWatch Logs:
	// EMF metrics on stdout, JSON logs on stderr); nil = discarded.
	Stdout, Stderr io.Writer
	// Observe, if set, is told what each sandbox does on the Runtime API,
	// with the time it happened (the cold-start bench measures with it).
	Observe func(Observation)
	// Region and Account make the function ARN.
	Region, Account string
	// Logger receives the invoker's own warnings (nil = none).
	Logger *slog.Logger

	mu       sync.Mutex
	idle     []*sandbox
	live     map[*sandbox]bool // every running sandbox, idle or busy (Close stops them all)
	count    int
	waiters  []chan struct{}
	closed   bool
	stats    FunctionStats
	asyncWG  sync.WaitGroup
	sandboxN int
	gen      int // configuration generation (Reconfigure)
}

// Reconfigure replaces the function's environment, as a deploy that
// updates its configuration does: idle sandboxes are stopped, busy ones
// finish their invocation and are then thrown away, and every invocation
// after it starts in a sandbox with env.
func (f *Function) Reconfigure(env []string) {
	f.mu.Lock()
	f.Env = append([]string{}, env...)
	f.gen++
	idle := f.idle
	f.idle = nil
	f.mu.Unlock()
	for _, sb := range idle {
		f.discard(sb)
	}
}

// Observation is one thing a sandbox did.
type Observation struct {
	Sandbox int // 1, 2, … in start order
	Kind    ObservationKind
	At      time.Time
	// Outcome of a Returned invocation: "response", or "error: <type>:
	// <message>"; of InitFailed the init error.
	Outcome string
}

// ObservationKind names what a sandbox did.
type ObservationKind string

// The observations, in the order a sandbox makes them.
const (
	Started    ObservationKind = "started"     // the bootstrap process started
	AskedNext  ObservationKind = "asked-next"  // GET invocation/next arrived (init done, or ready again)
	Handed     ObservationKind = "handed"      // an invocation was handed out
	Returned   ObservationKind = "returned"    // POST …/response or …/error arrived
	InitFailed ObservationKind = "init-failed" // POST init/error arrived
)

func (f *Function) observe(sb *sandbox, kind ObservationKind, outcome string) {
	if f.Observe != nil {
		f.Observe(Observation{Sandbox: sb.n, Kind: kind, At: time.Now(), Outcome: outcome})
	}
}

// FunctionStats counts what a function did.
type FunctionStats struct {
	Invocations int
	Errors      int // function errors, timeouts and crashes
	ColdStarts  int
}

// Stats returns the function's counters.
func (f *Function) Stats() FunctionStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// FunctionError is an invocation that failed: the handler returned an error
// (errorType, errorMessage as the runtime posted them), timed out, or its
// runtime crashed.
type FunctionError struct {
	Function string `json:"-"`
	Type     string `json:"errorType"`
	Message  string `json:"errorMessage"`
}

func (e *FunctionError) Error() string {
	return fmt.Sprintf("lambda %s: %s: %s", e.Function, e.Type, e.Message)
}

type invocation struct {
	id       string
	payload  []byte
	deadline time.Time
	done     chan invocationResult
	once     sync.Once
}

type invocationResult struct {
	payload []byte
	err     *FunctionError
}

func (iv *invocation) finish(r invocationResult) {
	iv.once.Do(func() { iv.done <- r })
}

// Invoke runs one synchronous invocation (RequestResponse) and returns the
// handler's response payload, or a *FunctionError.
func (f *Function) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	sb, err := f.acquire(ctx)
	if err != nil {
		return nil, err
	}
	iv := &invocation{
		id:       NewRequestID(),
		payload:  payload,
		deadline: time.Now().Add(f.timeout()),
		done:     make(chan invocationResult, 1),
	}
	f.mu.Lock()
	f.stats.Invocations++
	f.mu.Unlock()
	select {
	case sb.next <- iv:
	case <-sb.exited:
		f.discard(sb)
		return nil, f.crashErr(sb)
	case <-ctx.Done():
		f.release(sb)
		return nil, ctx.Err()
	}
	timer := time.NewTimer(time.Until(iv.deadline))
	defer timer.Stop()
	select {
	case r := <-iv.done:
		f.release(sb)
		if r.err != nil {
			f.countError()
			return r.payload, r.err
		}
		return r.payload, nil
	case <-sb.exited:
		f.discard(sb)
		f.countError()
		return nil, f.crashErr(sb)
	case <-timer.C:
		f.discard(sb)
		f.countError()
		return nil, &FunctionError{Function: f.Name, Type: "Sandbox.Timedout",
			Message: fmt.Sprintf("Task timed out after %.2f seconds", f.timeout().Seconds())}
	case <-ctx.Done():
		// The caller stopped waiting; Lambda would still run the invocation
		// to its end, so leave the sandbox to finish and go back to idle.
		go func() {
			select {
			case <-iv.done:
				f.release(sb)
			case <-sb.exited:
				f.discard(sb)
			case <-time.After(time.Until(iv.deadline)):
				f.discard(sb)
			}
		}()
		return nil, ctx.Err()
	}
}

// InvokeAsync is an asynchronous (Event) invocation, as EventBridge makes:
// on a function error Lambda retries MaxRetryAttempts times, after
// retryDelay and then twice that. onDone, if not nil, gets the final outcome.
func (f *Function) InvokeAsync(ctx context.Context, payload []byte, retryDelay time.Duration, onDone func(error)) {
	f.asyncWG.Add(1)
	go func() {
		defer f.asyncWG.Done()
		var err error
		delay := retryDelay
		attempts := 1 + f.maxRetryAttempts()
		for attempt := 0; attempt < attempts; attempt++ {
			if attempt > 0 {
				select {
				case <-ctx.Done():
					err = ctx.Err()
					attempt = attempts
					continue
				case <-time.After(delay):
				}
				delay *= 2
			}
			_, err = f.Invoke(ctx, payload)
			if err == nil || ctx.Err() != nil {
				break
			}
			if f.Logger != nil {
				f.Logger.Warn("async invocation failed; Lambda retries", "function", f.Name, "attempt", attempt+1, "err", err)
			}
		}
		if onDone != nil {
			onDone(err)
		}
	}()
}

// WaitAsync waits for the asynchronous invocations in flight.
func (f *Function) WaitAsync() { f.asyncWG.Wait() }

func (f *Function) maxRetryAttempts() int {
	if f.MaxRetryAttempts == nil {
		return 2
	}
	return *f.MaxRetryAttempts
}

func (f *Function) memoryMiB() int {
	if f.MemoryMiB <= 0 {
		return 128
	}
	return f.MemoryMiB
}

func (f *Function) timeout() time.Duration {
	if f.Timeout <= 0 {
		return 60 * time.Second
	}
	return f.Timeout
}

func (f *Function) countError() {
	f.mu.Lock()
	f.stats.Errors++
	f.mu.Unlock()
}

func (f *Function) crashErr(sb *sandbox) error {
	typ := "Runtime.ExitError"
	msg := "RequestId: runtime exited"
	if sb.initErr != nil {
		typ, msg = sb.initErr.Type, sb.initErr.Message
	} else if sb.waitErr != nil {
		msg = "Runtime exited with error: " + sb.waitErr.Error()
	}
	return &FunctionError{Function: f.Name, Type: typ, Message: msg}
}

func (f *Function) acquire(ctx context.Context) (*sandbox, error) {
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return nil, fmt.Errorf("lambda %s: closed", f.Name)
		}
		if n := len(f.idle); n > 0 {
			sb := f.idle[n-1]
			f.idle = f.idle[:n-1]
			f.mu.Unlock()
			select {
			case <-sb.exited:
				f.discard(sb)
				continue
			default:
				return sb, nil
			}
		}
		limit := f.MaxConcurrency
		if limit <= 0 {
			limit = 4
		}
		if f.count < limit {
			f.count++
			f.stats.ColdStarts++
			f.sandboxN++
			n := f.sandboxN
			f.mu.Unlock()
			sb, err := f.start(n)
			if err != nil {
				f.mu.Lock()
				f.count--
				f.mu.Unlock()
				f.wake()
				return nil, err
			}
			return sb, nil
		}
		w := make(chan struct{})
		f.waiters = append(f.waiters, w)
		f.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (f *Function) wake() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.waiters) > 0 {
		close(f.waiters[0])
		f.waiters = f.waiters[1:]
	}
}

func (f *Function) release(sb *sandbox) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		sb.stop()
		return
	}
	if sb.gen != f.gen {
		f.mu.Unlock()
		f.discard(sb) // started before Reconfigure
		return
	}
	f.idle = append(f.idle, sb)
	f.mu.Unlock()
	f.wake()
}

func (f *Function) discard(sb *sandbox) {
	sb.stop()
	f.mu.Lock()
	f.count--
	f.mu.Unlock()
	f.wake()
}

// Close stops every sandbox, busy ones too (their invocations fail as
// crashed), and returns when their processes are gone.
func (f *Function) Close() {
	f.mu.Lock()
	f.closed = true
	f.idle = nil
	var all []*sandbox
	for sb := range f.live {
		all = append(all, sb)
	}
	f.mu.Unlock()
	for _, sb := range all {
		sb.stop()
	}
}

// sandbox is one bootstrap process and its Runtime API server.
type sandbox struct {
	fn     *Function
	n      int
	gen    int // the function's configuration generation it started with
	cmd    *exec.Cmd
	srv    *http.Server
	next   chan *invocation
	exited chan struct{}

	mu      sync.Mutex
	current *invocation
	initErr *FunctionError
	waitErr error
}

func (f *Function) start(n int) (*sandbox, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	env, gen := append([]string{}, f.Env...), f.gen
	f.mu.Unlock()
	sb := &sandbox{fn: f, n: n, gen: gen, next: make(chan *invocation), exited: make(chan struct{})}
	sb.srv = &http.Server{Handler: sb, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = sb.srv.Serve(ln) }()

	cmd := exec.Command(f.Bootstrap)
	cmd.Env = append(env,
		"AWS_LAMBDA_RUNTIME_API="+ln.Addr().String(),
		"AWS_LAMBDA_FUNCTION_NAME="+f.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE="+strconv.Itoa(f.memoryMiB()),
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/"+f.Name,
		"AWS_LAMBDA_LOG_STREAM_NAME="+time.Now().UTC().Format("2006/01/02")+"/[$LATEST]sandbox"+strconv.Itoa(n),
		"AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023",
		"_HANDLER=bootstrap",
		"TZ=:UTC",
	)
	cmd.Stdout = orDiscard(f.Stdout)
	cmd.Stderr = orDiscard(f.Stderr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		sb.srv.Close()
		return nil, fmt.Errorf("lambda %s: start %s: %w", f.Name, f.Bootstrap, err)
	}
	f.observe(sb, Started, "")
	sb.cmd = cmd
	go func() {
		err := cmd.Wait()
		sb.mu.Lock()
		sb.waitErr = err
		cur := sb.current
		sb.mu.Unlock()
		f.mu.Lock()
		delete(f.live, sb)
		f.mu.Unlock()
		close(sb.exited)
		if cur != nil {
			cur.finish(invocationResult{err: f.crashErr(sb).(*FunctionError)})
		}
		sb.srv.Close()
	}()
	f.mu.Lock()
	if f.live == nil {
		f.live = map[*sandbox]bool{}
	}
	f.live[sb] = true
	closed := f.closed
	f.mu.Unlock()
	if closed { // Close ran while this one started
		sb.stop()
		return nil, fmt.Errorf("lambda %s: closed", f.Name)
	}
	return sb, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func (sb *sandbox) stop() {
	if sb.cmd != nil && sb.cmd.Process != nil {
		_ = syscall.Kill(-sb.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-sb.exited
}

const runtimePrefix = "/2018-06-01/runtime/"

func (sb *sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, runtimePrefix) {
		http.NotFound(w, r)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, runtimePrefix)
	switch {
	case p == "invocation/next" && r.Method == http.MethodGet:
		sb.serveNext(w, r)
	case p == "init/error" && r.Method == http.MethodPost:
		fe := readFunctionError(sb.fn.Name, r, "Runtime.InitError")
		sb.mu.Lock()
		sb.initErr = fe
		sb.mu.Unlock()
		sb.fn.observe(sb, InitFailed, fe.Type+": "+fe.Message)
		runtimeJSON(w, http.StatusAccepted, map[string]string{"status": "OK"})
	case strings.HasPrefix(p, "invocation/") && r.Method == http.MethodPost:
		rest := strings.TrimPrefix(p, "invocation/")
		id, what, ok := strings.Cut(rest, "/")
		if !ok || (what != "response" && what != "error") {
			http.NotFound(w, r)
			return
		}
		sb.mu.Lock()
		cur := sb.current
		if cur != nil && cur.id == id {
			sb.current = nil
		}
		sb.mu.Unlock()
		if cur == nil || cur.id != id {
			runtimeJSON(w, http.StatusBadRequest, map[string]string{
				"errorMessage": "Invalid request ID: " + id, "errorType": "InvalidRequestID"})
			return
		}
		finish := func(res invocationResult) {
			outcome := "response"
			if res.err != nil {
				outcome = "error: " + res.err.Type + ": " + res.err.Message
			}
			sb.fn.observe(sb, Returned, outcome)
			cur.finish(res)
		}
		if what == "error" {
			finish(invocationResult{err: readFunctionError(sb.fn.Name, r, "Unhandled")})
		} else {
			body, err := io.ReadAll(io.LimitReader(r.Body, 6<<20+1))
			switch {
			case err != nil:
				finish(invocationResult{err: &FunctionError{Function: sb.fn.Name, Type: "Runtime.ResponseError", Message: err.Error()}})
			case len(body) > 6<<20:
				finish(invocationResult{err: &FunctionError{Function: sb.fn.Name, Type: "Function.ResponseSizeTooLarge", Message: "Response payload size exceeded maximum allowed payload size (6291556 bytes)."}})
			case r.Trailer.Get("Lambda-Runtime-Function-Error-Type") != "":
				fe := &FunctionError{Function: sb.fn.Name, Type: r.Trailer.Get("Lambda-Runtime-Function-Error-Type")}
				if b, err := base64.StdEncoding.DecodeString(r.Trailer.Get("Lambda-Runtime-Function-Error-Body")); err == nil {
					_ = json.Unmarshal(b, fe)
				}
				finish(invocationResult{err: fe})
			default:
				finish(invocationResult{payload: body})
			}
		}
		runtimeJSON(w, http.StatusAccepted, map[string]string{"status": "OK"})
	default:
		http.NotFound(w, r)
	}
}

func (sb *sandbox) serveNext(w http.ResponseWriter, r *http.Request) {
	sb.fn.observe(sb, AskedNext, "")
	select {
	case iv := <-sb.next:
		sb.fn.observe(sb, Handed, "")
		sb.mu.Lock()
		sb.current = iv
		sb.mu.Unlock()
		h := w.Header()
		h.Set("Lambda-Runtime-Aws-Request-Id", iv.id)
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(iv.deadline.UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", sb.fn.Region, sb.fn.Account, sb.fn.Name))
		h.Set("Lambda-Runtime-Trace-Id", "Root=1-"+strconv.FormatInt(time.Now().Unix(), 16)+"-"+strings.ReplaceAll(iv.id, "-", "")[:24]+";Sampled=0")
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(iv.payload)
	case <-r.Context().Done():
	case <-sb.exited:
	}
}

func readFunctionError(fn string, r *http.Request, defType string) *FunctionError {
	fe := &FunctionError{Function: fn}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := json.Unmarshal(body, fe); err != nil || (fe.Type == "" && fe.Message == "") {
		fe.Message = strings.TrimSpace(string(body))
	}
	if t := r.Header.Get("Lambda-Runtime-Function-Error-Type"); t != "" && fe.Type == "" {
		fe.Type = t
	}
	if fe.Type == "" {
		fe.Type = defType
	}
	return fe
}

func runtimeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// NewRequestID returns a random UUID (version 4), as Lambda request IDs
// and other AWS IDs are.
func NewRequestID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
