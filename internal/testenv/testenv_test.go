package testenv

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// verdict records what requireRoot did to a test.
type verdict struct {
	testing.TB
	failed, skipped string
}

func (v *verdict) Helper() {}

// Fatalf and Skipf end the calling goroutine, as testing.T's do.
func (v *verdict) Fatalf(format string, args ...any) {
	v.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (v *verdict) Skipf(format string, args ...any) {
	v.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls requireRoot as a test would, on a goroutine of its own.
func (v *verdict) run(why string, euid int, required string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		requireRoot(v, why, euid, required)
	}()
	<-done
}

// TestRequireRootFailsWhenTheRunDemandsIt: as root the test runs; not as
// root it fails when VOLSD_TEST_EMULATORS=1 (make test, CI) demands every
// test, naming what needs root and how to run it, and is skipped with that
// reason otherwise.
func TestRequireRootFailsWhenTheRunDemandsIt(t *testing.T) {
	for _, c := range []struct {
		euid     int
		required string
		fail     bool
		skip     bool
	}{
		{euid: 0, required: "1"},
		{euid: 0, required: ""},
		{euid: 1000, required: "1", fail: true},
		{euid: 1000, required: "", skip: true},
		{euid: 1000, required: "0", skip: true},
	} {
		v := &verdict{}
		v.run("mounting the volume", c.euid, c.required)
		if (v.failed != "") != c.fail || (v.skipped != "") != c.skip {
			t.Errorf("euid %d, %s=%q: failed %q, skipped %q; want fail %v, skip %v", c.euid, EnvRequired, c.required, v.failed, v.skipped, c.fail, c.skip)
		}
		for _, msg := range []string{v.failed, v.skipped} {
			if msg != "" && !strings.Contains(msg, "mounting the volume needs root") {
				t.Errorf("%q does not say what needs root", msg)
			}
		}
		if v.failed != "" && !strings.Contains(v.failed, "as root") {
			t.Errorf("%q does not say how to run it", v.failed)
		}
	}
}
