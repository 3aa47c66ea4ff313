package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/testenv"
)

// TestReadersNeverSeeTornFiles: a reader hashes files continuously while
// 200 entries (puts that replace files, syncs that change trees, deletes)
// are applied. Every read is a complete old or new content of that path,
// and paths that only ever get replaced never go missing.
func TestReadersNeverSeeTornFiles(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	a := w.agent(t, w.config(t), Deps{})
	mountedVolume(t, a, 128)
	rng := rand.New(rand.NewPCG(1, 2))
	valid := map[string]map[string]bool{} // path → sha256 of every content it may have
	allow := func(p string, data []byte) {
		if valid[p] == nil {
			valid[p] = map[string]bool{}
		}
		valid[p][sum(data)] = true
	}
	pick := func(label string) []byte {
		sizes := []int{100, 4 << 10, 32 << 10, 128 << 10}
		return gen(label, sizes[rng.IntN(len(sizes))]+rng.IntN(1000))
	}
	stable := []string{"s/a", "s/b", "s/c"} // only ever replaced
	for _, p := range stable {
		data := pick(p + "0")
		allow(p, data)
		w.put(p, data, 0o644)
	}
	var r Report
	if err := a.Apply(context.Background(), 0, false, &r); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ { // 200 entries applied while the reader runs
		switch x := rng.IntN(10); {
		case x < 5:
			p := stable[rng.IntN(len(stable))]
			data := pick(fmt.Sprint(p, i))
			allow(p, data)
			w.put(p, data, 0o644)
		case x < 7:
			p := fmt.Sprintf("v/%d", rng.IntN(3))
			data := pick(fmt.Sprint(p, i))
			allow(p, data)
			w.put(p, data, 0o644)
		case x < 8:
			w.del(fmt.Sprintf("v/%d", rng.IntN(3)))
		default:
			files := map[string]file{}
			for j := 0; j < 4; j++ {
				if rng.IntN(3) > 0 {
					data := pick(fmt.Sprint("t", j, i%5))
					allow(fmt.Sprintf("tree/%d", j), data)
					files[fmt.Sprint(j)] = file{data, 0o644}
				}
			}
			w.sync("tree", files)
		}
	}
	paths := append([]string{}, stable...)
	for p := range valid {
		if p[0] != 's' {
			paths = append(paths, p)
		}
	}

	var reads, torn, missing atomic.Int64
	var firstBad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 1; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range paths {
					data, err := os.ReadFile(filepath.Join(a.cfg.MountPath, p))
					switch {
					case errors.Is(err, fs.ErrNotExist):
						if p[0] == 's' {
							missing.Add(1)
							firstBad.CompareAndSwap(nil, p+" missing")
						}
						continue
					case err != nil:
						continue
					}
					reads.Add(1)
					if !valid[p][sum(data)] {
						torn.Add(1)
						firstBad.CompareAndSwap(nil, fmt.Sprintf("%s: %d bytes of no known content", p, len(data)))
					}
				}
				time.Sleep(200 * time.Microsecond) // leave the agent a core
			}
		}()
	}
	r = Report{}
	err := a.Apply(context.Background(), 0, false, &r)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if r.Applied != 200 {
		t.Fatalf("applied %d entries", r.Applied)
	}
	assertTree(t, a.cfg.MountPath, w.model)
	t.Logf("%d reads during %d entries", reads.Load(), r.Applied)
	if torn.Load() > 0 || missing.Load() > 0 {
		t.Fatalf("%d torn reads, %d stable files missing; first: %v", torn.Load(), missing.Load(), firstBad.Load())
	}
	if reads.Load() < 1000 {
		t.Fatalf("only %d reads: the reader did not race the apply", reads.Load())
	}
}

// TestKillNineAnywhere kills the agent program with SIGKILL at random
// points of an apply, at least 50 times; a final apply must leave exactly
// the journal's tree, the head as watermark, and none of the agent's
// leftovers.
func TestKillNineAnywhere(t *testing.T) {
	testenv.RequireRoot(t, needsRoot)
	w := newWorld(t)
	cfg := w.config(t)
	a := w.agent(t, cfg, Deps{})
	mountedVolume(t, a, 128)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 150; i++ {
		p := fmt.Sprintf("d%d/f%d", rng.IntN(3), rng.IntN(6))
		switch x := rng.IntN(10); {
		case x < 6:
			w.put(p, gen(fmt.Sprint("c", i), 1000+rng.IntN(200<<10)), 0o644)
		case x < 7:
			w.del(fmt.Sprintf("d%d", rng.IntN(3)))
		case x < 8:
			w.del(p)
		default:
			files := map[string]file{}
			for j := 0; j < 20; j++ {
				files[fmt.Sprintf("%d/%d", j%4, j)] = file{gen(fmt.Sprint("s", j, i%4), 500+rng.IntN(40<<10)), 0o644}
			}
			w.sync(fmt.Sprintf("tree%d", rng.IntN(2)), files)
		}
	}
	n := int64(len(w.models) - 1)
	env := processEnv(t, cfg, imdsServer(t, "i-0crash"), "VOLSD_LOG_LEVEL=warn")

	kills, finished := 0, 0
	for try := 0; kills < 50; try++ {
		if try > 400 {
			t.Fatalf("only %d kills in %d tries", kills, try)
		}
		cmd := exec.Command(agentBinary(t), "apply")
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			finished++
			if err != nil {
				t.Fatalf("apply ended by itself with %v", err)
			}
			// At the head: set the watermark back so there is work to
			// interrupt again (re-applying must be harmless too).
			if err := a.writeState(int64(rng.IntN(int(n)))); err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Duration(50+rng.IntN(400)) * time.Millisecond):
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			kills++
		}
		if seq := watermark(t, cfg.MountPath); seq < 0 || seq > n {
			t.Fatalf("watermark %d out of 0..%d", seq, n)
		}
	}
	t.Logf("%d kills, %d applies that finished first", kills, finished)
	r, code, stderr := runAgent(t, env, "apply")
	if code != 0 || r.Seq != n {
		t.Fatalf("final apply: exit %d %+v\n%s", code, r, stderr)
	}
	assertTree(t, cfg.MountPath, w.model)
	if got := watermark(t, cfg.MountPath); got != n {
		t.Fatalf("watermark %d, want %d", got, n)
	}
	leftovers := []string{}
	_ = filepath.WalkDir(cfg.MountPath, func(p string, d fs.DirEntry, err error) error {
		if err == nil && (d.Name() == rsyncTmpName || d.Name() == stagingDir || d.Name() == rsyncTmpDir) {
			leftovers = append(leftovers, p)
		}
		return nil
	})
	if len(leftovers) > 0 {
		t.Fatalf("leftovers: %v", leftovers)
	}
}
