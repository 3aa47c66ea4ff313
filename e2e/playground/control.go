package playground

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/store"
)

// The control commands of `volsd-demo ctl`.
const (
	CmdScaleOut  = "scale-out"
	CmdScaleIn   = "scale-in"
	CmdKill      = "kill"
	CmdSnapshot  = "snapshot"
	CmdReconcile = "reconcile"
	CmdInstances = "instances"
)

// Request is one control command on the wire (POST /v1/command, JSON).
type Request struct {
	Command  string `json:"command"`
	N        int    `json:"n,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// Response is a command's outcome: a text for the user, the instances in
// service afterwards, and an error when it failed.
type Response struct {
	Output    string     `json:"output"`
	Instances []Instance `json:"instances"`
	Error     string     `json:"error,omitempty"`
}

// ParseCommand turns `ctl` arguments into a request, or says what is wrong.
func ParseCommand(args []string) (Request, error) {
	const usage = "want one of: scale-out N | scale-in N | kill INSTANCE | snapshot | reconcile | instances"
	if len(args) == 0 {
		return Request{}, errors.New("no command; " + usage)
	}
	r := Request{Command: args[0]}
	want := 0
	switch r.Command {
	case CmdScaleOut, CmdScaleIn, CmdKill:
		want = 1
	case CmdSnapshot, CmdReconcile, CmdInstances:
	default:
		return r, fmt.Errorf("unknown command %q; %s", r.Command, usage)
	}
	if len(args)-1 != want {
		return r, fmt.Errorf("%s takes %d argument(s), got %d; %s", r.Command, want, len(args)-1, usage)
	}
	switch r.Command {
	case CmdScaleOut, CmdScaleIn:
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 || n > 10 {
			return r, fmt.Errorf("%s %q: N must be a whole number from 1 to 10", r.Command, args[1])
		}
		r.N = n
	case CmdKill:
		if !strings.HasPrefix(args[1], "i-") {
			return r, fmt.Errorf("kill %q: INSTANCE is an instance ID (i-…); see `ctl instances`", args[1])
		}
		r.Instance = args[1]
	}
	return r, nil
}

// serveControl serves the control API on the unix socket in the state
// directory: mode 0600, owned by the user who ran sudo (SUDO_UID), so that
// user and root may drive the group and nobody else. It returns the stop
// function.
func (p *Playground) serveControl(ctx context.Context) (func(), error) {
	_ = os.Remove(p.socket)
	ln, err := net.Listen("unix", p.socket)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", p.socket, err)
	}
	if err := os.Chmod(p.socket, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if uid, err := strconv.Atoi(os.Getenv("SUDO_UID")); err == nil && uid > 0 {
		gid, _ := strconv.Atoi(os.Getenv("SUDO_GID"))
		_ = os.Chown(p.socket, uid, gid)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/command", func(w http.ResponseWriter, r *http.Request) {
		var req Request
		resp := Response{}
		status := http.StatusOK
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			status, resp.Error = http.StatusBadRequest, "not a control request: "+err.Error()
		} else if out, err := p.run(ctx, req); err != nil {
			status, resp.Output, resp.Error = http.StatusConflict, out, err.Error()
		} else {
			resp.Output = out
		}
		resp.Instances = p.instances()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(resp)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close(); _ = os.Remove(p.socket) }, nil
}

// run executes one control command; commands run one at a time.
func (p *Playground) run(ctx context.Context, req Request) (string, error) {
	args := []string{req.Command}
	if req.N > 0 {
		args = append(args, strconv.Itoa(req.N))
	}
	if req.Instance != "" {
		args = append(args, req.Instance)
	}
	if _, err := ParseCommand(args); err != nil {
		return "", err
	}
	p.ctlMu.Lock()
	defer p.ctlMu.Unlock()
	var b strings.Builder
	switch req.Command {
	case CmdScaleOut:
		begin := time.Now()
		insts, err := p.scaleOut(ctx, req.N)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d instance(s) in service with the current content after %.1f s:\n", len(insts), time.Since(begin).Seconds())
		writeInstances(&b, insts)
	case CmdScaleIn:
		if n := len(p.c.Group.InService()); req.N >= n {
			return "", fmt.Errorf("scale-in %d: the group has %d instance(s) in service; keep at least one", req.N, n)
		}
		terms, err := p.c.Group.ScaleInResults(ctx, req.N)
		p.syncWebServers()
		if err != nil {
			return "", err
		}
		for _, t := range terms {
			fmt.Fprintf(&b, "%s (%s) terminated: terminate hook %s after %.1f s (timed out: %v)\n", t.InstanceID, t.AZ, t.Result, t.Took.Seconds(), t.TimedOut)
		}
	case CmdKill:
		begin := time.Now()
		l, err := p.c.Group.Lose(ctx, req.Instance)
		p.syncWebServers()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s lost without a terminate hook; the group launched %s in %s\n", req.Instance, l.InstanceID, l.AZ)
		insts, err := p.waitInService(ctx, []*harness.Launch{l})
		if err != nil {
			return b.String(), err
		}
		fmt.Fprintf(&b, "replacement in service with the current content after %.1f s:\n", time.Since(begin).Seconds())
		writeInstances(&b, insts)
		fmt.Fprintf(&b, "the volume %s held stays in-use in the table until a reconcile finds the instance gone, "+
			"2 minutes after the volume's last update (GoneGrace); %s, then `volsd volumes` shows it idle again\n", req.Instance, p.reconcileNote())
	case CmdSnapshot:
		out, err := p.c.Schedule(ctx, "snapshot")
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "snapshot Lambda: %s\n", compactJSON(out))
	case CmdReconcile:
		if _, err := p.c.Schedule(ctx, "reconcile"); err != nil {
			return "", err
		}
		b.WriteString("reconcile done; ")
		b.WriteString(p.volumeSummary(ctx))
	case CmdInstances:
		writeInstances(&b, p.instances())
	}
	return b.String(), nil
}

// reconcileNote says when reconcile runs next.
func (p *Playground) reconcileNote() string {
	if p.opts.ReconcileEvery <= 0 {
		return "run `ctl reconcile` after that"
	}
	return "the playground runs reconcile every " + p.opts.ReconcileEvery.String()
}

// volumeSummary counts the pool's volumes by state.
func (p *Playground) volumeSummary(ctx context.Context) string {
	vols, err := p.c.Store.ListVolumes(ctx, p.c.Opts.Pool)
	if err != nil {
		return "volumes: " + err.Error() + "\n"
	}
	counts := map[store.VolumeState]int{}
	for _, v := range vols {
		counts[v.State]++
	}
	var parts []string
	for st, n := range counts {
		parts = append(parts, fmt.Sprintf("%s %d", st, n))
	}
	sort.Strings(parts)
	return "volumes: " + strings.Join(parts, ", ") + " (volsd volumes lists them)\n"
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

// Ctl sends one control command to the playground of stateDir and writes
// its output to w.
func Ctl(ctx context.Context, stateDir string, args []string, w io.Writer) error {
	req, err := ParseCommand(args)
	if err != nil {
		return err
	}
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	sock := filepath.Join(stateDir, socketFile)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://playground/v1/command", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(hreq)
	if err != nil {
		return fmt.Errorf("no playground answers on %s (start one with `sudo make local`; another state directory needs -state DIR): %w", sock, err)
	}
	defer resp.Body.Close()
	var out Response
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("playground answered %s without a control response: %w", resp.Status, err)
	}
	io.WriteString(w, out.Output)
	if out.Error != "" {
		return fmt.Errorf("%s: %s", req.Command, out.Error)
	}
	return nil
}
