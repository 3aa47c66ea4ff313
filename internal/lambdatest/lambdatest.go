// Package lambdatest runs a Lambda main the way Lambda does, for the
// functions' own tests: built as `bootstrap` with -tags lambda.norpc and fed
// events through a minimal local Lambda Runtime API (next, response, error).
// The whole-system harness (e2e/harness) has the full Runtime API with
// retries, timeouts and concurrency.
package lambdatest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Build compiles the main package in the test's working directory as a
// bootstrap binary and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bootstrap")
	if out, err := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runtimeAPI serves events one by one and passes on each answer.
type runtimeAPI struct {
	mu      sync.Mutex
	events  [][]byte
	next    int
	answers chan string
}

func (a *runtimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const prefix = "/2018-06-01/runtime/invocation/"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == prefix+"next":
		a.mu.Lock()
		i := a.next
		a.next++
		a.mu.Unlock()
		if i >= len(a.events) {
			<-r.Context().Done()
			return
		}
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", fmt.Sprintf("req-%d", i))
		w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(2*time.Minute).UnixMilli(), 10))
		w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:volsd-test")
		_, _ = w.Write(a.events[i])
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/response"):
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		a.answers <- "response: " + string(body)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/error"):
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		a.answers <- "error: " + string(body)
	default:
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

// Result is what one run of a bootstrap answered and printed.
type Result struct {
	Answers        []string // per event: "response: <body>" or "error: <body>"
	Stdout, Stderr string   // EMF metrics; JSON logs
}

// Invoke starts bin with env (plus AWS_LAMBDA_RUNTIME_API) and hands it
// events in order through a local Runtime API. It fails t when an answer
// does not come within timeout.
func Invoke(t testing.TB, bin string, env []string, timeout time.Duration, events ...[]byte) Result {
	t.Helper()
	api := &runtimeAPI{events: events, answers: make(chan string, len(events))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String()}, env...)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var answers []string
	for i := range events {
		select {
		case got := <-api.answers:
			answers = append(answers, got)
		case <-time.After(timeout):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("no answer to event %d from %s within %s; stderr:\n%s", i, bin, timeout, errBuf.String())
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return Result{Answers: answers, Stdout: outBuf.String(), Stderr: errBuf.String()}
}
