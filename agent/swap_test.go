package agent

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// linkSwapper is the attacker of the confinement tests: one goroutine per
// directory d0..d<dirs-1> under mount keeps swapping that directory for a
// symlink to one of targets (in turn) and back, as another process on the
// instance could while the agent writes into it.
type linkSwapper struct {
	stop           atomic.Bool
	swaps, refused atomic.Int64 // swaps done; renames that failed (the directory was busy or gone)
	wg             sync.WaitGroup
}

func swapDirsForLinks(mount string, dirs int, targets []string) *linkSwapper {
	s := &linkSwapper{}
	for d := range dirs {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			live := filepath.Join(mount, "d"+strconv.Itoa(d))
			for n := 0; !s.stop.Load(); n++ {
				if err := os.Rename(live, live+".away"); err != nil {
					s.refused.Add(1)
					continue
				}
				_ = os.Symlink(targets[n%len(targets)], live)
				_ = os.Remove(live)
				for os.Rename(live+".away", live) != nil {
					_ = os.RemoveAll(live) // the writer made it again meanwhile
				}
				s.swaps.Add(1)
			}
		}()
	}
	return s
}

// halt stops the swapping and fails t when too few swaps ran for the race
// to have been played.
func (s *linkSwapper) halt(t *testing.T) {
	t.Helper()
	s.stop.Store(true)
	s.wg.Wait()
	if n := s.swaps.Load(); n < 1000 {
		t.Fatalf("only %d swaps: the race was not run", n)
	}
}

// requireNothingUnder fails t when who wrote anything below outside.
func requireNothingUnder(t *testing.T, outside, who string) {
	t.Helper()
	var escaped []string
	_ = filepath.WalkDir(outside, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != outside {
			escaped = append(escaped, p)
		}
		return nil
	})
	if len(escaped) > 0 {
		t.Fatalf("%s wrote %d paths outside the mount through swapped-in symlinks, e.g. %v", who, len(escaped), escaped[:min(5, len(escaped))])
	}
}
