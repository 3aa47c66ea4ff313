package agent

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// rsync runs the rsync program with argument lists, never through a
// shell. The files of a pass are given with --files-from (NUL-separated),
// so no content path is ever an argument.
type rsync struct {
	bin  string   // path of the rsync program
	lock *os.File // the apply lock, inherited by rsync (see applyLock)
	// jail, when set, is the root rsync runs chrooted into (see
	// setUpJail), with mount bound at jailMount: rsync is given the
	// paths inside it.
	jail, mount string
}

// path is p (a path in the mount) as rsync sees it.
func (r rsync) path(p string) string {
	if r.jail == "" {
		return p
	}
	rel, ok := strings.CutPrefix(p, filepath.Clean(r.mount))
	if !ok {
		return p
	}
	return jailMount + rel
}

// Passes. Each takes the staging root (the tree to copy from, laid out like
// the mount), the mount, and the paths relative to both.
//
//   - copy: replace existing regular files. rsync writes each into its
//     --temp-dir, moves it to .~tmp~ beside its destination and renames all
//     into place at the end (--delay-updates); --ignore-times because the
//     agent already decided these files differ.
//   - link: create files that do not exist yet, as hard links to the staged
//     files (--link-dest): no copy; a link appears complete or not at all.
//     No --xattrs: a hard link shares the staged inode, content record
//     included, and without it rsync does not read every file's xattrs on
//     both sides (a third of the pass for 10,000 files). Were a file ever
//     copied instead of linked, it would lack the record and the next walk
//     would hash it: slower, still right.
//
// Deletions are not an rsync pass: rsync 3.2's --delete-missing-args fails
// on nested paths ("invalid file mode 00", protocol error) and follows
// symlinked parents of what it deletes. The agent removes paths itself
// through directory descriptors opened with O_NOFOLLOW (removePath).
func (r rsync) copyPass(ctx context.Context, staging, mount, tmp string, paths []string) error {
	return r.run(ctx, "copy", paths, "--archive", "--numeric-ids", "--xattrs", "--ignore-times", "--delay-updates",
		"--temp-dir="+r.path(tmp), "--exclude=/"+stateDirName, r.path(staging)+"/", r.path(mount)+"/")
}

func (r rsync) linkPass(ctx context.Context, staging, mount string, paths []string) error {
	return r.run(ctx, "link", paths, "--archive", "--numeric-ids", "--link-dest="+r.path(staging),
		"--exclude=/"+stateDirName, r.path(staging)+"/", r.path(mount)+"/")
}

// run runs rsync with args plus --from0 --files-from=- and paths on its
// stdin (no list file: in the jail rsync sees only the volume). A failure
// names the pass and quotes rsync's last words; ENOSPC becomes a clear
// "disk full".
func (r rsync) run(ctx context.Context, pass string, paths []string, args ...string) error {
	if len(paths) == 0 {
		return nil
	}
	var list bytes.Buffer
	for _, p := range paths {
		list.WriteString(p)
		list.WriteByte(0)
	}
	full := append([]string{"--from0", "--files-from=-"}, args...)
	cmd := exec.CommandContext(ctx, r.bin, full...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Stdin = &list
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	// rsync and its forked receiver run in their own process group, which
	// is killed as a whole when ctx ends; Pdeathsig kills rsync if the agent
	// dies first. The inherited lock keeps other applies out until then.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Chroot: r.jail}
	if r.jail != "" {
		cmd.Dir = "/"
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if r.lock != nil {
		cmd.ExtraFiles = []*os.File{r.lock}
	}
	if err := cmd.Run(); err != nil {
		msg := lastLines(stderr.String(), 4)
		if ctx.Err() != nil {
			return retryable("rsync %s pass of %d paths stopped: %v", pass, len(paths), ctx.Err())
		}
		if strings.Contains(msg, "No space left on device") || strings.Contains(msg, "Disk quota exceeded") {
			return retryable("disk full during the rsync %s pass of %d paths: %s", pass, len(paths), msg)
		}
		return retryable("rsync %s pass of %d paths failed (%v): %s", pass, len(paths), err, msg)
	}
	return nil
}

// lastLines returns the last n non-empty lines of s, joined by " | ".
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// findRsync locates the rsync program.
func findRsync() (string, error) {
	p, err := lookProgram("rsync")
	if err != nil {
		return "", notReady("%s", DescribeMissing([]Program{{"rsync", "rsync"}}))
	}
	return p, nil
}
