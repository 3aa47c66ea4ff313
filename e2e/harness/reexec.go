package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
)

// ReexecWithEmulators runs this program again under
// scripts/with-emulators.sh (from the repository root), which starts
// DynamoDB Local and moto on free 127.0.0.1 ports and stops them when the
// program ends. It returns the exit code to leave with; name prefixes errors.
func ReexecWithEmulators(root, name string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 2
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "with-emulators.sh"), append([]string{self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Dir = root
	signal.Ignore(os.Interrupt) // the child handles Ctrl-C and cleans up
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, name+":", err)
		return 2
	}
	return 0
}
