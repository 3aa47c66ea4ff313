// Package lambdatest runs a Lambda main the way Lambda does, for the
// functions' own tests: built as `bootstrap` with -tags lambda.norpc and fed
// events through the local Lambda Runtime API (internal/lambdaruntime, the
// one the whole-system harness and the bench use too).
package lambdatest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/lambdaruntime"
	"github.com/volsd/volsd/internal/testenv"
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

// BadConfig runs bin at cold start with env (plus PATH) and checks that it
// exits with code 2 and that its stderr names every problem in wants; it
// returns the stderr.
func BadConfig(t testing.TB, bin string, env []string, wants ...string) string {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want code 2; stderr:\n%s", err, stderr.String())
	}
	for _, want := range wants {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	return stderr.String()
}

// Result is what one run of a bootstrap answered and printed.
type Result struct {
	Answers        []string // per event: "response: <body>" or "error: <body>"
	Stdout, Stderr string   // EMF metrics; JSON logs
}

// Invoke starts bin with env (plus PATH) as one Lambda sandbox behind
// the local Runtime API (internal/lambdaruntime) and hands it events in
// order, each with timeout as the function's timeout. It fails t when an
// answer does not come within timeout or the runtime crashes.
func Invoke(t testing.TB, bin string, env []string, timeout time.Duration, events ...[]byte) Result {
	t.Helper()
	var outBuf, errBuf testenv.Buffer
	f := &lambdaruntime.Function{
		Name: "volsd-test", Bootstrap: bin, Env: append([]string{"PATH=" + os.Getenv("PATH")}, env...),
		Timeout: timeout, MaxConcurrency: 1, Region: "us-east-1", Account: "123456789012",
		Stdout: &outBuf, Stderr: &errBuf,
	}
	defer f.Close()
	var answers []string
	for i, ev := range events {
		payload, err := f.Invoke(context.Background(), ev)
		var fe *lambdaruntime.FunctionError
		switch {
		case err == nil:
			answers = append(answers, "response: "+string(payload))
		case errors.As(err, &fe) && fe.Type != "Sandbox.Timedout" && !strings.HasPrefix(fe.Type, "Runtime."):
			b, _ := json.Marshal(fe)
			answers = append(answers, "error: "+string(b))
		default:
			f.Close()
			t.Fatalf("no answer to event %d from %s within %s: %v; stderr:\n%s", i, bin, timeout, err, errBuf.String())
		}
	}
	f.Close()
	return Result{Answers: answers, Stdout: outBuf.String(), Stderr: errBuf.String()}
}
