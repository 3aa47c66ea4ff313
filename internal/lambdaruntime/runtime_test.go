package lambdaruntime

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	testFnOnce sync.Once
	testFnPath string
	testFnErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testFnPath != "" {
		os.RemoveAll(filepath.Dir(testFnPath))
	}
	os.Exit(code)
}

// testFunction builds testdata/testfn once per test binary.
func testFunction(t *testing.T) string {
	t.Helper()
	testFnOnce.Do(func() {
		dir, err := os.MkdirTemp("", "volsd-testfn-")
		if err != nil {
			testFnErr = err
			return
		}
		testFnPath = filepath.Join(dir, "bootstrap")
		cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", testFnPath, "./testdata/testfn")
		if out, err := cmd.CombinedOutput(); err != nil {
			testFnErr = errors.New(string(out))
		}
	})
	if testFnErr != nil {
		t.Fatalf("build testfn: %v", testFnErr)
	}
	return testFnPath
}

func newTestFunction(t *testing.T, timeout time.Duration, conc int) *Function {
	f := &Function{
		Name: "testfn", Bootstrap: testFunction(t), Env: []string{"GREETING=hello"},
		Timeout: timeout, MaxConcurrency: conc, Region: "us-east-1", Account: "123456789012",
	}
	t.Cleanup(f.Close)
	return f
}

func invokeJSON(t *testing.T, f *Function, req map[string]any) (map[string]any, error) {
	t.Helper()
	b, _ := json.Marshal(req)
	out, err := f.Invoke(context.Background(), b)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("response %q is not JSON: %v", out, err)
	}
	return m, nil
}

func TestRuntimeAPIInvokeResponseAndContext(t *testing.T) {
	f := newTestFunction(t, 10*time.Second, 1)
	m, err := invokeJSON(t, f, map[string]any{"echo": "hi", "env": "GREETING"})
	if err != nil {
		t.Fatal(err)
	}
	if m["echo"] != "hi" || m["env"] != "hello" {
		t.Errorf("response %v: want echo hi and env hello", m)
	}
	if arn, _ := m["arn"].(string); arn != "arn:aws:lambda:us-east-1:123456789012:function:testfn" {
		t.Errorf("invoked function ARN %q", arn)
	}
	if dl, _ := m["deadlineInMs"].(float64); dl < 8000 || dl > 10000 {
		t.Errorf("deadline in %v ms; want about the 10 s timeout", dl)
	}
	id1, _ := m["requestId"].(string)
	m2, err := invokeJSON(t, f, map[string]any{"echo": "again"})
	if err != nil {
		t.Fatal(err)
	}
	if m2["requestId"] == id1 || id1 == "" {
		t.Errorf("request IDs %v and %v: want distinct", id1, m2["requestId"])
	}
	if m2["pid"] != m["pid"] {
		t.Errorf("second invocation ran in pid %v, first in %v: the warm sandbox should be reused", m2["pid"], m["pid"])
	}
	if s := f.Stats(); s.ColdStarts != 1 || s.Invocations != 2 || s.Errors != 0 {
		t.Errorf("stats %+v; want 1 cold start, 2 invocations, 0 errors", s)
	}
}

func TestRuntimeAPIFunctionError(t *testing.T) {
	f := newTestFunction(t, 10*time.Second, 1)
	_, err := invokeJSON(t, f, map[string]any{"fail": "blob missing"})
	var fe *FunctionError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v; want a *FunctionError", err)
	}
	if fe.Message != "blob missing" || fe.Type != "errorString" {
		t.Errorf("error type %q message %q; want errorString / blob missing", fe.Type, fe.Message)
	}
	// The sandbox survives a handler error.
	if _, err := invokeJSON(t, f, map[string]any{"echo": "x"}); err != nil {
		t.Fatal(err)
	}
	if s := f.Stats(); s.ColdStarts != 1 {
		t.Errorf("cold starts %d after a handler error; want 1", s.ColdStarts)
	}
}

func TestRuntimeAPITimeoutAndCrashReplaceTheSandbox(t *testing.T) {
	f := newTestFunction(t, time.Second, 1)
	_, err := invokeJSON(t, f, map[string]any{"sleepMs": 3000})
	var fe *FunctionError
	if !errors.As(err, &fe) || fe.Type != "Sandbox.Timedout" || !strings.Contains(fe.Message, "Task timed out after 1.00 seconds") {
		t.Fatalf("error %v; want Sandbox.Timedout", err)
	}
	if _, err := invokeJSON(t, f, map[string]any{"exit": 3}); !errors.As(err, &fe) || fe.Type != "Runtime.ExitError" || !strings.Contains(fe.Message, "exit status 3") {
		t.Fatalf("error %v; want Runtime.ExitError with exit status 3", err)
	}
	if _, err := invokeJSON(t, f, map[string]any{"echo": "after"}); err != nil {
		t.Fatalf("invocation after a crash: %v", err)
	}
	if s := f.Stats(); s.ColdStarts != 3 || s.Errors != 2 {
		t.Errorf("stats %+v; want 3 cold starts (timeout and crash discard the sandbox) and 2 errors", s)
	}
}

func TestRuntimeAPIConcurrencyLimit(t *testing.T) {
	f := newTestFunction(t, 10*time.Second, 2)
	var wg sync.WaitGroup
	pids := make(chan float64, 6)
	start := time.Now()
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := invokeJSON(t, f, map[string]any{"sleepMs": 300})
			if err != nil {
				t.Error(err)
				return
			}
			pids <- m["pid"].(float64)
		}()
	}
	wg.Wait()
	close(pids)
	distinct := map[float64]bool{}
	for p := range pids {
		distinct[p] = true
	}
	if len(distinct) != 2 {
		t.Errorf("%d sandboxes served 6 concurrent invocations; want exactly the limit 2", len(distinct))
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("6 invocations of 300 ms on 2 sandboxes took %v; they cannot have been limited to 2", d)
	}
}

func TestRuntimeAPIAsyncRetriesTwice(t *testing.T) {
	f := newTestFunction(t, 10*time.Second, 1)
	done := make(chan error, 1)
	f.InvokeAsync(context.Background(), []byte(`{"fail":"always"}`), 10*time.Millisecond, func(err error) { done <- err })
	err := <-done
	if err == nil {
		t.Fatal("async invocation of a failing handler reported success")
	}
	if s := f.Stats(); s.Invocations != 3 {
		t.Errorf("%d attempts; Lambda makes 1 + 2 retries", s.Invocations)
	}
}

func TestRuntimeAPIRejectsUnknownRequestID(t *testing.T) {
	f := newTestFunction(t, 10*time.Second, 1)
	if _, err := invokeJSON(t, f, map[string]any{"echo": "warm"}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	sb := f.idle[0]
	f.mu.Unlock()
	rec := httptest.NewRecorder()
	sb.ServeHTTP(rec, httptest.NewRequest("POST", "/2018-06-01/runtime/invocation/nope/response", strings.NewReader("{}")))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "InvalidRequestID") {
		t.Errorf("status %d body %q; want 400 InvalidRequestID", rec.Code, rec.Body.String())
	}
}

// Close stops busy sandboxes too: a run that stops while an invocation is
// in flight (Ctrl-C of make local or make demo) leaves no bootstrap behind.
func TestRuntimeAPICloseStopsBusySandboxes(t *testing.T) {
	f := newTestFunction(t, 30*time.Second, 2)
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := f.Invoke(context.Background(), []byte(`{"sleepMs": 20000}`))
			done <- err
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(bootstraps(f.Bootstrap)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two sandboxes did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // both handlers are sleeping now
	f.Close()
	if left := bootstraps(f.Bootstrap); len(left) > 0 {
		t.Fatalf("after Close bootstrap processes %v still run", left)
	}
	for range 2 {
		select {
		case err := <-done:
			if err == nil {
				t.Error("an invocation cut off by Close succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("an invocation cut off by Close did not return")
		}
	}
}

// bootstraps lists the pids of running processes of the binary exe.
func bootstraps(exe string) []string {
	var pids []string
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if target, err := os.Readlink(p); err == nil && target == exe {
			stat, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
			if f := strings.Fields(string(stat)); len(f) > 2 && f[2] != "Z" {
				pids = append(pids, filepath.Base(filepath.Dir(p)))
			}
		}
	}
	return pids
}

func TestRuntimeAPIMemoryAndRetriesFromSettings(t *testing.T) {
	f := newTestFunction(t, 10*time.Second, 1)
	f.MemoryMiB = 1769
	m, err := invokeJSON(t, f, map[string]any{"env": "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"})
	if err != nil {
		t.Fatal(err)
	}
	if m["env"] != "1769" {
		t.Errorf("AWS_LAMBDA_FUNCTION_MEMORY_SIZE = %v, want the function's MemoryMiB 1769", m["env"])
	}
	zero := 0
	f.MaxRetryAttempts = &zero
	done := make(chan error, 1)
	before := f.Stats().Invocations
	f.InvokeAsync(context.Background(), []byte(`{"fail":"boom"}`), 10*time.Millisecond, func(err error) { done <- err })
	if err := <-done; err == nil {
		t.Fatal("a failing async invocation reported success")
	}
	if n := f.Stats().Invocations - before; n != 1 {
		t.Errorf("MaximumRetryAttempts 0: %d invocations, want 1", n)
	}
}

func TestRuntimeAPIObservations(t *testing.T) {
	f := newTestFunction(t, 10*time.Second, 1)
	var mu sync.Mutex
	var got []string
	f.Observe = func(o Observation) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, string(o.Kind)+" "+o.Outcome)
	}
	if _, err := invokeJSON(t, f, map[string]any{"echo": "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := invokeJSON(t, f, map[string]any{"fail": "no"}); err == nil {
		t.Fatal("want the function error")
	}
	f.Close()
	mu.Lock()
	defer mu.Unlock()
	want := []string{"started ", "asked-next ", "handed ", "returned response", "asked-next ", "handed "}
	if len(got) < len(want)+1 || strings.Join(got[:len(want)], "|") != strings.Join(want, "|") ||
		!strings.HasPrefix(got[len(want)], "returned error: ") || !strings.Contains(got[len(want)], "no") {
		t.Errorf("observations %q, want %q then a returned error", got, want)
	}
}
