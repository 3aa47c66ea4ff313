package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/testenv"
)

// imdsServer serves IMDSv2 for one instance: a token, then the identity
// document and the region, each refused without the token.
func imdsServer(t testing.TB, instanceID string) string {
	t.Helper()
	const token = "fake-imds-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
			fmt.Fprint(w, token)
			return
		}
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/latest/dynamic/instance-identity/document":
			_ = json.NewEncoder(w).Encode(map[string]string{
				"instanceId": instanceID, "availabilityZone": "us-east-1a", "region": testenv.Region,
				"accountId": testenv.MotoAccount, "architecture": "x86_64", "imageId": "ami-12345678",
			})
		case "/latest/meta-data/placement/region":
			fmt.Fprint(w, testenv.Region)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// autoScalingServer answers the two lifecycle actions moto lacks, in the
// Auto Scaling query protocol, and records them.
type autoScalingServer struct {
	mu        sync.Mutex
	pending   map[string]bool
	completed []url.Values
	url       string
}

func newAutoScalingServer(t testing.TB, instances ...string) *autoScalingServer {
	s := &autoScalingServer{pending: map[string]bool{}}
	for _, i := range instances {
		s.pending[i] = true
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		action, id := r.Form.Get("Action"), r.Form.Get("InstanceId")
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.pending[id] {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>No active Lifecycle Action found with instance ID %s</Message></Error><RequestId>r</RequestId></ErrorResponse>`, id)
			return
		}
		if action == "CompleteLifecycleAction" {
			delete(s.pending, id)
			s.completed = append(s.completed, r.Form)
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<%sResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><%sResult/><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></%sResponse>`, action, action, action)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// processEnv is the environment of the agent program for one simulated
// instance: its own VOLSD_CONFIG, standard AWS endpoint variables, a fake
// IMDS. These are the knobs the end-to-end harness uses.
func processEnv(t testing.TB, cfg Config, imdsURL string, extra ...string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.json")
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	moto := testenv.Endpoint(t, testenv.EnvMoto)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"VOLSD_CONFIG=" + path,
		"AWS_ACCESS_KEY_ID=" + testenv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + testenv.SecretKey,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_ENDPOINT_URL_DYNAMODB=" + testenv.Endpoint(t, testenv.EnvDynamoDB),
		"AWS_ENDPOINT_URL_S3=" + moto,
		"AWS_ENDPOINT_URL_EC2=" + moto,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imdsURL,
	}
	return append(env, extra...)
}

// runAgent runs the agent program and returns its report, exit code and
// stderr; stdout's last line must be the report.
func runAgent(t testing.TB, env []string, args ...string) (Report, int, string) {
	t.Helper()
	cmd := exec.Command(agentBinary(t), args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	r, perr := events.ParseAgentReport(stdout.String())
	if perr != nil {
		t.Fatalf("volsd-agent %s: no report on stdout (%v):\n%s\nstderr:\n%s", strings.Join(args, " "), perr, stdout.String(), stderr.String())
	}
	return r, code, stderr.String()
}

// TestProgramUpApplyStatusRelease runs the built program through a whole
// instance life with only the standard endpoint variables and a fake IMDS,
// as the end-to-end harness and SSM do.
func TestProgramUpApplyStatusRelease(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("a", gen("a", 100), 0o644)
	in := newInstance(t, w, "")
	as := newAutoScalingServer(t, in.id)
	env := processEnv(t, in.cfg, imdsServer(t, in.id), "AWS_ENDPOINT_URL_AUTO_SCALING="+as.url, "AWS_REGION=")

	r, code, stderr := runAgent(t, env, "up")
	if code != 0 || r.Command != "up" || r.Seq != 1 || r.Instance != in.id || r.Volume != in.volume || r.Device != in.dev || r.Mount != in.cfg.MountPath {
		t.Fatalf("up: exit %d %+v\n%s", code, r, stderr)
	}
	if len(as.completed) != 1 || as.completed[0].Get("LifecycleActionResult") != "CONTINUE" || as.completed[0].Get("InstanceId") != in.id {
		t.Fatalf("lifecycle completions: %v", as.completed)
	}
	w.put("b", gen("b", 200), 0o644)
	w.put("c", gen("c", 300), 0o644)
	r, code, stderr = runAgent(t, env, "apply", "--upto", "2")
	if code != 0 || r.Seq != 2 || r.Head != 3 || r.Applied != 1 || r.Instance != in.id || r.Volume != in.volume || r.Bytes != 200 {
		t.Fatalf("apply --upto 2: exit %d %+v\n%s", code, r, stderr)
	}
	r, code, _ = runAgent(t, env, "apply", "--periodic")
	if code != 0 || r.Seq != 3 || r.Applied != 1 {
		t.Fatalf("periodic apply after a partial one: exit %d %+v", code, r)
	}
	w.put("d", gen("d", 1), 0o644)
	r, code, _ = runAgent(t, env, "apply", "--periodic")
	if code != 0 || r.Seq != 3 || r.Applied != 0 {
		t.Fatalf("periodic apply right after one that reached the head must skip: exit %d %+v", code, r)
	}
	r, code, _ = runAgent(t, env, "status")
	if code != 0 || r.Seq != 3 || r.Head != 4 {
		t.Fatalf("status: exit %d %+v", code, r)
	}
	r, code, _ = runAgent(t, env, "release")
	if code != 0 || r.Seq != 3 || isMountPoint(in.cfg.MountPath) {
		t.Fatalf("release: exit %d %+v", code, r)
	}
	r, code, _ = runAgent(t, env, "apply")
	if code != ExitNotReady || r.ErrorKind != "not-ready" {
		t.Fatalf("apply after release: exit %d %+v", code, r)
	}
	r, code, _ = runAgent(t, env, "status")
	if code != ExitNotReady {
		t.Fatalf("status after release: exit %d %+v", code, r)
	}
	r, code, _ = runAgent(t, env, "release")
	if code != 0 {
		t.Fatalf("second release: exit %d %+v", code, r)
	}
	r, code, stderr = runAgent(t, env, "up")
	if code != 0 || r.Seq != 4 {
		t.Fatalf("up again: exit %d %+v\n%s", code, r, stderr)
	}
	assertTree(t, in.cfg.MountPath, w.model)
}

// TestProgramFreezeWithoutThawIsThawedAfterTheBound: freeze, then nobody
// thaws and the freezing process group is killed; the detached watchdog
// thaws at the bound. Applies meanwhile are refused at once ("not ready"),
// and thaw is idempotent.
func TestProgramFreezeWithoutThawIsThawedAfterTheBound(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	w.put("a", gen("a", 100), 0o644)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 64)
	env := processEnv(t, cfg, imdsServer(t, "i-0freeze"), "AWS_REGION="+testenv.Region)

	start := time.Now()
	cmd := exec.Command(agentBinary(t), "freeze", "--max-seconds", "2")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("freeze: %v\n%s", err, out)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // SSM ending the command's process group
	if !frozen(t, cfg.MountPath) {
		t.Fatal("not frozen after freeze")
	}
	applyStart := time.Now()
	r, code, _ := runAgent(t, env, "apply")
	if code != ExitNotReady || !strings.Contains(r.Error, "frozen") || time.Since(applyStart) > 1500*time.Millisecond {
		t.Fatalf("apply while frozen: exit %d %+v after %s", code, r, time.Since(applyStart))
	}
	var thawedAfter time.Duration
	for time.Since(start) < 8*time.Second {
		if !frozen(t, cfg.MountPath) {
			thawedAfter = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if thawedAfter == 0 {
		t.Fatal("still frozen 8s after a 2s freeze")
	}
	if thawedAfter < 1900*time.Millisecond {
		t.Fatalf("thawed after %s, before the 2s bound", thawedAfter)
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, freezeFile)); !os.IsNotExist(err) {
		t.Fatalf("freeze marker still there: %v", err)
	}
	for i := 0; i < 2; i++ {
		if r, code, _ := runAgent(t, env, "thaw"); code != 0 || r.Command != "thaw" {
			t.Fatalf("thaw %d: exit %d %+v", i, code, r)
		}
	}
	// An explicit thaw ends the freeze before the bound.
	if r, code, _ := runAgent(t, env, "freeze", "--max-seconds", "60"); code != 0 || r.Seq != 0 {
		t.Fatalf("freeze: exit %d %+v", code, r)
	}
	if !frozen(t, cfg.MountPath) {
		t.Fatal("not frozen")
	}
	if _, code, _ := runAgent(t, env, "thaw"); code != 0 || frozen(t, cfg.MountPath) {
		t.Fatalf("thaw: exit %d, frozen %v", code, frozen(t, cfg.MountPath))
	}
	if r, code, _ := runAgent(t, env, "apply"); code != 0 || r.Seq != 1 {
		t.Fatalf("apply after thaw: exit %d %+v", code, r)
	}
	if r, code, _ := runAgent(t, env, "freeze", "--max-seconds", "0"); code != ExitBadInput {
		t.Fatalf("freeze --max-seconds 0: exit %d %+v", code, r)
	}
}

// frozen tells whether the filesystem at dir is frozen: a second freeze
// fails with EBUSY. When it succeeds, the test thaws at once.
func frozen(t testing.TB, dir string) bool {
	t.Helper()
	fd, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFD(fd)
	if err := ioctlFreeze(fd); err != nil {
		return true
	}
	if err := ioctlThaw(fd); err != nil {
		t.Fatal(err)
	}
	return false
}
