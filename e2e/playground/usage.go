package playground

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// printUsage tells the user how to use the running playground: the env
// and outputs files for the CLI, every instance's URL and mount, the
// control commands, how to stop.
func (p *Playground) printUsage() {
	w := p.opts.Out
	insts := p.instances()
	example := "http://127.0.0.1:PORT/"
	if len(insts) > 0 {
		example = insts[0].URL
	}
	ctl := "volsd-demo ctl"
	if p.opts.StateDir != DefaultStateDir {
		ctl += " -state " + shellQuote(p.opts.StateDir)
	}
	idle := len(p.c.Opts.AZs) * p.opts.IdlePerAZ
	fmt.Fprintf(w, `
volsd playground is up: pool %s, %d instances in service, %d idle volumes (pid %d).

In another shell (as any user), set up the volsd CLI and push a directory:
  . %s
  volsd push ./site www --wait
  volsd status
  volsd volumes
  volsd journal
  curl %swww/

env file: %s
%s
outputs file: %s
  (cdk deploy --outputs-file shape; the env file sets VOLSD_OUTPUTS to it, or pass --outputs %s)

`, p.c.Opts.Pool, len(insts), idle, os.Getpid(), shellQuote(p.env), example, p.env, indent(p.envText(), "  "), p.outputs, shellQuote(p.outputs))
	fmt.Fprintln(w, "Instances (ID, AZ, web server on its mount, mount):")
	writeInstances(w, insts)
	fmt.Fprintf(w, `
Control the group (after . the env file):
  %[1]s scale-out 1        launch an instance; it enters service with the current content
  %[1]s scale-in 1         terminate one through the terminate hook (its volume goes back to the pool)
  %[1]s kill INSTANCE      lose an instance without a hook; the group replaces it, a later reconcile releases its volume
  %[1]s snapshot           the snapshot schedule, now
  %[1]s reconcile          the reconcile schedule, now (it also runs every %[2]s)
  %[1]s instances          list the instances with their URLs and mounts

logs: %[3]s (Lambdas, agents, CLI)
work directory: %[4]s
Stop with Ctrl-C here or kill -TERM %[5]d: agents, Lambdas, mounts, loop devices and temp dirs are removed.
`, ctl, orOff(p.opts.ReconcileEvery.String(), p.opts.ReconcileEvery == 0), filepath.Join(p.workDir, "logs"), p.workDir, os.Getpid())
}

func orOff(s string, off bool) string {
	if off {
		return "never (-reconcile-every 0)"
	}
	return s
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix)
}

// writeInstances prints one line per instance: ID, AZ, URL, mount.
func writeInstances(w io.Writer, insts []Instance) {
	for _, i := range insts {
		url := i.URL
		if url == "" {
			url = "(no web server yet)"
		}
		fmt.Fprintf(w, "  %s  %s  %s  %s\n", i.ID, i.AZ, url, i.Mount)
	}
}
