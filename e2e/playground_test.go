package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/testenv"
)

// playgroundInstance is one line of the playground's instance list.
type playgroundInstance struct{ ID, AZ, URL, Mount string }

var instanceLine = regexp.MustCompile(`^\s+(i-[0-9a-f]+)\s+(\S+)\s+(http://127\.0\.0\.1:\d+/)\s+(\S+)\s*$`)

func parseInstances(text string) []playgroundInstance {
	var out []playgroundInstance
	for _, line := range strings.Split(text, "\n") {
		if m := instanceLine.FindStringSubmatch(line); m != nil {
			out = append(out, playgroundInstance{m[1], m[2], m[3], m[4]})
		}
	}
	return out
}

// printedValue returns what follows "label: " on a line of the printed
// instructions.
func printedValue(t *testing.T, text, label string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + `: (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the playground printed no %q line:\n%s", label, text)
	}
	return m[1]
}

// TestPlayground runs `volsd-demo serve` (make local) in the background as
// a user would: pushes a tree with the real CLI configured only by the
// printed env and outputs files, fetches every file from every instance's
// URL, scales out by one through `volsd-demo ctl` and fetches from the new
// instance, loses one (`ctl kill`) and fetches from its replacement, then stops it with SIGTERM and checks that nothing is left:
// mounts, loop devices, processes, the work and state files.
func TestPlayground(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t, "the end-to-end tests (loop devices, mount)")
	testenv.Endpoint(t, testenv.EnvDynamoDB)
	testenv.Endpoint(t, testenv.EnvMoto)
	binaries(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	demo := filepath.Join(tmp, "volsd-demo")
	build := exec.Command("go", "build", "-o", demo, "./e2e/cmd/volsd-demo")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build volsd-demo: %v\n%s", err, out)
	}
	state := filepath.Join(tmp, "state")

	// Its own pool name: the emulators are shared with the other tests.
	serve := exec.Command(demo, "serve", "-state", state, "-binaries", buildDir, "-pool", testenv.UniqueName(t, "pg"),
		"-instances", "2", "-idle-per-az", "1")
	serve.Env = os.Environ()
	stdout, err := serve.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	serve.Stderr = &stderr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	stopped := make(chan struct{}) // closed once the playground has exited
	var printed strings.Builder
	var printedMu sync.Mutex
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			printedMu.Lock()
			printed.WriteString(sc.Text() + "\n")
			printedMu.Unlock()
			if strings.HasPrefix(sc.Text(), "Stop with Ctrl-C") {
				once.Do(func() { close(ready) })
			}
		}
		exited <- serve.Wait()
		close(stopped)
	}()
	output := func() string {
		printedMu.Lock()
		defer printedMu.Unlock()
		return printed.String()
	}
	t.Cleanup(func() {
		// A failed test still stops the playground the way a user would, so
		// it cleans up; a kill is the last resort (the next run's sweep
		// cleans up after that).
		_ = serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-stopped:
		case <-time.After(90 * time.Second):
			_ = serve.Process.Kill()
		}
		if t.Failed() {
			t.Logf("playground stdout:\n%s\nstderr:\n%s", output(), stderr.String())
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("the playground exited before it was up: %v\n%s\n%s", err, output(), stderr.String())
	case <-time.After(4 * time.Minute):
		t.Fatalf("the playground was not up after 4 minutes:\n%s\n%s", output(), stderr.String())
	}
	text := output()
	envFile := printedValue(t, text, "env file")
	outputs := printedValue(t, text, "outputs file")
	work := printedValue(t, text, "work directory")
	insts := parseInstances(text)
	if len(insts) != 2 {
		t.Fatalf("the playground lists %d instances; want 2:\n%s", len(insts), text)
	}

	// The user's shell: nothing but the env file, with a real account's
	// profile and another pool's table set that it must override.
	src := filepath.Join(tmp, "site")
	if _, err := harness.GenerateTree(src, harness.TreeSpec{Files: 24, TotalBytes: 512 << 10, BigFile: 128 << 10, Seed: 19}); err != nil {
		t.Fatal(err)
	}
	local, err := harness.Digest(src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	userShell := func(script string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "bash", append([]string{"-euc", script, "user-shell"}, args...)...)
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + tmp, "AWS_PROFILE=a-real-account", "VOLSD_TABLE=another-pools-table"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	out := userShell(`. "$1"; volsd push --outputs "$2" "$3" www --wait; volsd status; volsd volumes; volsd journal`, envFile, outputs, src)
	t.Logf("volsd push/status/volumes/journal:\n%s", out)

	fetchAll := func(in playgroundInstance) {
		t.Helper()
		for _, rel := range slices.Sorted(maps.Keys(local)) {
			got, err := httpGet(ctx, in.URL+"www/"+rel)
			if err != nil {
				t.Fatalf("instance %s: %v", in.ID, err)
			}
			sum := sha256.Sum256(got)
			if hex.EncodeToString(sum[:]) != local[rel].SHA256 || int64(len(got)) != local[rel].Size {
				t.Fatalf("instance %s served www/%s: %d bytes, sha256 %x; pushed %d bytes, sha256 %s", in.ID, rel, len(got), sum, local[rel].Size, local[rel].SHA256)
			}
		}
		if _, err := httpGet(ctx, in.URL+".volsd/state.json"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("instance %s serves the agent's .volsd/ (err %v); a web server must not", in.ID, err)
		}
	}
	for _, in := range insts {
		fetchAll(in)
	}

	out = userShell(`. "$1"; volsd-demo ctl -state "$2" scale-out 1`, envFile, state)
	added := parseInstances(out)
	if len(added) != 1 || added[0].ID == insts[0].ID || added[0].ID == insts[1].ID {
		t.Fatalf("ctl scale-out 1 reported %v; want one new instance:\n%s", added, out)
	}
	fetchAll(added[0])
	if all := parseInstances(userShell(`. "$1"; volsd-demo ctl -state "$2" instances`, envFile, state)); len(all) != 3 {
		t.Fatalf("ctl instances lists %v after the scale-out; want 3", all)
	}

	// Instance loss: the group replaces the lost instance, the replacement
	// serves the same bytes, the lost one's web server is gone.
	lost := insts[0]
	out = userShell(`. "$1"; volsd-demo ctl -state "$2" kill "$3"`, envFile, state, lost.ID)
	repl := parseInstances(out)
	if len(repl) != 1 || repl[0].ID == lost.ID || repl[0].ID == added[0].ID || repl[0].ID == insts[1].ID {
		t.Fatalf("ctl kill %s reported %v; want one replacement:\n%s", lost.ID, repl, out)
	}
	fetchAll(repl[0])
	if _, err := httpGet(ctx, lost.URL); err == nil {
		t.Fatalf("the lost instance %s still serves at %s", lost.ID, lost.URL)
	}
	added = append(added, repl...)

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the playground's exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the playground had not exited 2 minutes after SIGTERM")
	}
	checkNothingLeft(t, work, state, append(insts, added...))
}

// checkNothingLeft checks that a stopped playground left no mount, loop
// device, process, web server, work directory or state file.
func checkNothingLeft(t *testing.T, work, state string, insts []playgroundInstance) {
	t.Helper()
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], work) {
			t.Errorf("still mounted: %s", f[4])
		}
	}
	loops, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(loops), "\n") {
		if strings.Contains(line, work) {
			t.Errorf("loop device left: %s", line)
		}
	}
	// The playground's Lambdas and agents run the test's prebuilt programs,
	// which other tests run too; they are told apart by their environment,
	// which names the work directory (agent.json, the Lambdas' config files).
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		exe, _ := os.Readlink(filepath.Join(p, "exe"))
		env, _ := os.ReadFile(filepath.Join(p, "environ"))
		if strings.HasPrefix(exe, work) || strings.Contains(string(env), work) {
			t.Errorf("process left: %s runs %s", p, exe)
		}
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("work directory %s is still there (stat: %v)", work, err)
	}
	left, _ := os.ReadDir(state)
	var names []string
	for _, e := range left {
		if e.Name() != "lock" { // the lock file stays, unlocked, for the next run
			names = append(names, e.Name())
		}
	}
	if len(names) > 0 {
		t.Errorf("state files left in %s: %v", state, names)
	}
	for _, in := range insts {
		if _, err := http.Get(in.URL); err == nil {
			t.Errorf("the web server of %s still answers at %s", in.ID, in.URL)
		}
	}
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}
