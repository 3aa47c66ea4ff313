package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// agentBinary builds cmd/volsd-agent once per test run: the crash, freeze
// and end-to-end tests run the real program, as SSM and systemd do.
func agentBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "volsd-agent-test-")
		if buildErr != nil {
			return
		}
		builtPath = filepath.Join(buildDir, "volsd-agent")
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command(goTool, "build", "-o", builtPath, "./cmd/volsd-agent")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = err
			builtPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build volsd-agent: %v\n%s", buildErr, builtPath)
	}
	return builtPath
}

func ioctlThaw(fd int) error { return unix.IoctlSetInt(fd, ioctlFITHAW, 0) }

func closeFD(fd int) { unix.Close(fd) }

func ioctlFreeze(fd int) error { return unix.IoctlSetInt(fd, ioctlFIFREEZE, 0) }
