package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

// Status is the pool summary `volsd status` shows.
type Status struct {
	Pool         string           `json:"pool"`
	Head         int64            `json:"head"`
	Zones        []ZoneStatus     `json:"zones"`
	LastSnapshot *store.Snapshot  `json:"lastSnapshot,omitempty"`
	Instances    []InstanceStatus `json:"instances"`
	// Volumes is every volume that is not gone with its size, used and
	// free bytes as last reported (Space is nil before any agent reported
	// on it).
	Volumes  []VolumeSpace   `json:"volumes"`
	Rejected []store.Request `json:"rejected"`
	// Reclaim is the origin's last reclaim run (nil before the first).
	Reclaim *store.ReclaimRun `json:"reclaim,omitempty"`
	// Stalled is set when running instances report a journal entry
	// refused as bad content: the pool cannot pass that seq until the
	// origin is repaired.
	Stalled *Stall `json:"stalled,omitempty"`
}

// Stall is a journal entry the pool's agents refuse.
type Stall struct {
	Seq       int64    `json:"seq"`
	Reason    string   `json:"reason"`
	Instances []string `json:"instances"`
	Fix       string   `json:"fix"`
}

// stallFix says how to repair a refused entry.
const stallFix = "re-upload the right bytes of the blob from a local copy with `volsd repair FILE…` " +
	"(each FILE is hashed and put over blobs/<its sha256> with its checksum; the agents retry by themselves), " +
	"or push a corrected tree over the same DEST and then repair or delete the stalled entry's content"

// ZoneStatus counts a zone's volumes by state.
type ZoneStatus struct {
	AZ     string         `json:"az"`
	Idle   int            `json:"idle"`
	InUse  int            `json:"inUse"`
	Other  map[string]int `json:"other,omitempty"` // creating, claimed, attaching, releasing, deleting, failed
	Behind int            `json:"idleBehind"`      // idle volumes below the head
}

// VolumeSpace is one volume's size: EBS's (SizeGiB) and its filesystem's
// as the agent of the instance holding it reported it last.
type VolumeSpace struct {
	VolumeID   string       `json:"volumeId"`
	AZ         string       `json:"az"`
	State      string       `json:"state"`
	InstanceID string       `json:"instanceId,omitempty"`
	SizeGiB    int32        `json:"sizeGiB"`
	Space      *store.Space `json:"space,omitempty"`
}

// InstanceStatus is an instance with its lag behind the journal head.
type InstanceStatus struct {
	InstanceID   string    `json:"instanceId"`
	AZ           string    `json:"az"`
	State        string    `json:"state"`
	VolumeID     string    `json:"volumeId,omitempty"`
	Seq          int64     `json:"seq"`
	Lag          int64     `json:"lag"`
	LastStatus   string    `json:"lastStatus,omitempty"`
	LastError    string    `json:"lastError,omitempty"`
	LastReportAt time.Time `json:"lastReportAt,omitzero"`
	// Space is the filesystem of the instance's volume as its agent last
	// reported it.
	Space *store.Space `json:"space,omitempty"`
}

// Status reads the pool summary: every instance that is not gone, volume
// counts per zone, the newest completed snapshot and the newest rejected
// requests (at most rejected).
func (a *App) Status(ctx context.Context, rejected int) (Status, error) {
	pool := a.Cfg.Pool
	st := Status{Pool: pool, Zones: []ZoneStatus{}, Instances: []InstanceStatus{}, Volumes: []VolumeSpace{}, Rejected: []store.Request{}}
	var err error
	if st.Head, err = a.State.Head(ctx, pool); err != nil {
		return st, err
	}
	vols, err := a.State.ListVolumes(ctx, pool)
	if err != nil {
		return st, err
	}
	zones := map[string]*ZoneStatus{}
	for _, v := range vols {
		if v.State == store.VolumeGone {
			continue
		}
		st.Volumes = append(st.Volumes, VolumeSpace{VolumeID: v.VolumeID, AZ: v.AZ, State: string(v.State), InstanceID: v.InstanceID, SizeGiB: v.SizeGiB, Space: v.Space})
		z := zones[v.AZ]
		if z == nil {
			z = &ZoneStatus{AZ: v.AZ}
			zones[v.AZ] = z
		}
		switch v.State {
		case store.VolumeIdle:
			z.Idle++
			if v.Seq < st.Head {
				z.Behind++
			}
		case store.VolumeInUse:
			z.InUse++
		default:
			if z.Other == nil {
				z.Other = map[string]int{}
			}
			z.Other[string(v.State)]++
		}
	}
	for _, z := range zones {
		st.Zones = append(st.Zones, *z)
	}
	sort.Slice(st.Zones, func(i, j int) bool { return st.Zones[i].AZ < st.Zones[j].AZ })
	sort.Slice(st.Volumes, func(i, j int) bool {
		a, b := st.Volumes[i], st.Volumes[j]
		return a.AZ < b.AZ || a.AZ == b.AZ && a.VolumeID < b.VolumeID
	})

	snaps, err := a.State.ListSnapshots(ctx, pool)
	if err != nil {
		return st, err
	}
	for i := range snaps {
		s := snaps[i]
		if s.State == store.SnapshotCompleted && (st.LastSnapshot == nil || s.CreatedAt.After(st.LastSnapshot.CreatedAt)) {
			st.LastSnapshot = &s
		}
	}

	ins, err := a.State.ListInstances(ctx, pool)
	if err != nil {
		return st, err
	}
	for _, i := range ins {
		if i.State == store.InstanceGone {
			continue
		}
		st.Instances = append(st.Instances, InstanceStatus{
			InstanceID: i.InstanceID, AZ: i.AZ, State: string(i.State), VolumeID: i.VolumeID, Seq: i.Seq,
			Lag: max(0, st.Head-i.Seq), LastStatus: i.LastStatus, LastError: i.LastError, LastReportAt: i.LastReportAt, Space: i.Space,
		})
	}
	sort.Slice(st.Instances, func(i, j int) bool {
		a, b := st.Instances[i], st.Instances[j]
		return a.AZ < b.AZ || a.AZ == b.AZ && a.InstanceID < b.InstanceID
	})
	st.Stalled = stalled(st.Instances, st.Head)
	switch run, err := a.State.GetReclaimRun(ctx, pool); {
	case err == nil:
		st.Reclaim = &run
	case !errors.Is(err, store.ErrNotFound):
		return st, err
	}
	if rejected > 0 {
		if st.Rejected, err = a.State.ListRejected(ctx, pool, rejected); err != nil {
			return st, err
		}
		if st.Rejected == nil {
			st.Rejected = []store.Request{}
		}
	}
	return st, nil
}

// stalled finds the lowest entry that running instances below the head
// report refused as bad content.
func stalled(ins []InstanceStatus, head int64) *Stall {
	var s *Stall
	for _, i := range ins {
		reason, ok := events.StalledBy(i.LastError)
		if !ok || i.Seq >= head || i.State == string(store.InstanceTerminating) {
			continue
		}
		switch seq := i.Seq + 1; {
		case s == nil || seq < s.Seq:
			s = &Stall{Seq: seq, Reason: reason, Instances: []string{i.InstanceID}, Fix: stallFix}
		case seq == s.Seq:
			s.Instances = append(s.Instances, i.InstanceID)
		}
	}
	return s
}

// VolumeRow is one volume as `volsd volumes` lists it.
type VolumeRow struct {
	store.Volume
	Lag int64 `json:"lag"`
}

// Volumes lists the pool's volumes (gone ones excluded) with their lag.
func (a *App) Volumes(ctx context.Context) ([]VolumeRow, error) {
	head, err := a.State.Head(ctx, a.Cfg.Pool)
	if err != nil {
		return nil, err
	}
	vols, err := a.State.ListVolumes(ctx, a.Cfg.Pool)
	if err != nil {
		return nil, err
	}
	out := []VolumeRow{}
	for _, v := range vols {
		if v.State != store.VolumeGone {
			out = append(out, VolumeRow{Volume: v, Lag: max(0, head-v.Seq)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.AZ != b.AZ {
			return a.AZ < b.AZ
		}
		if a.State != b.State {
			return a.State < b.State
		}
		return a.VolumeID < b.VolumeID
	})
	return out, nil
}

// Journal returns the last n entries (all when n <= 0), oldest first.
// Entries that expired from the table (below the compaction floor) are
// not shown.
func (a *App) Journal(ctx context.Context, n int64) ([]events.JournalEntry, error) {
	head, err := a.State.Head(ctx, a.Cfg.Pool)
	if err != nil {
		return nil, err
	}
	after := int64(0)
	if n > 0 && head > n {
		after = head - n
	}
	es, err := a.State.Entries(ctx, a.Cfg.Pool, after, head)
	if es == nil {
		es = []events.JournalEntry{}
	}
	return es, err
}

// Text renderers.

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < 0:
		return t.UTC().Format("2006-01-02 15:04:05Z")
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	default:
		return t.UTC().Format("2006-01-02 15:04Z")
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a table cell on one line and readable: control bytes and
// invalid UTF-8 are escaped (hostile paths stay visible, not interpreted
// by the terminal), long text is cut.
func oneLine(s string, max int) string {
	clean := utf8.ValidString(s)
	for _, r := range s {
		if unicode.IsControl(r) {
			clean = false
			break
		}
	}
	if !clean {
		q := strconv.Quote(s)
		s = q[1 : len(q)-1]
	}
	if len(s) > max {
		cut := max - 1
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// RenderStatus writes the status as readable tables.
func RenderStatus(w io.Writer, st Status, now time.Time) error {
	fmt.Fprintf(w, "pool %s   journal head %d", st.Pool, st.Head)
	if s := st.LastSnapshot; s != nil {
		fmt.Fprintf(w, "   last snapshot %s at seq %d (%s)", s.SnapshotID, s.Seq, ago(now, s.CreatedAt))
	} else {
		fmt.Fprint(w, "   no completed snapshot")
	}
	fmt.Fprintln(w)
	if r := st.Reclaim; r != nil {
		fmt.Fprintf(w, "origin reclaim %s: ", ago(now, r.At))
		switch {
		case r.Skipped != "":
			fmt.Fprintf(w, "deleted nothing: %s", oneLine(r.Skipped, 300))
		default:
			fmt.Fprintf(w, "%d objects (%s) deleted; %d unreferenced (%s) waiting out the grace of %s", r.Deleted, bytesText(r.DeletedBytes),
				r.Waiting, bytesText(r.WaitingBytes), r.Grace)
		}
		fmt.Fprintf(w, "; %d objects (%s) reclaimed in all\n", r.TotalDeleted, bytesText(r.TotalDeletedBytes))
		if r.Error != "" {
			fmt.Fprintf(w, "origin reclaim stopped early: %s\n", oneLine(r.Error, 300))
		}
	}
	if s := st.Stalled; s != nil {
		fmt.Fprintf(w, "\nSTALLED at seq %d: %d instance(s) refuse it (%s): %s\nfix: %s\n",
			s.Seq, len(s.Instances), strings.Join(s.Instances, ", "), oneLine(s.Reason, 400), s.Fix)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ZONE\tIDLE\tIN USE\tIDLE BEHIND HEAD\tOTHER")
	for _, z := range st.Zones {
		var other []string
		for k, n := range z.Other {
			other = append(other, fmt.Sprintf("%s %d", k, n))
		}
		sort.Strings(other)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", z.AZ, z.Idle, z.InUse, z.Behind, dash(strings.Join(other, ", ")))
	}
	if len(st.Zones) == 0 {
		fmt.Fprintln(tw, "(no volumes)\t\t\t\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tZONE\tSTATE\tSEQ\tLAG\tLAST REPORT\tSTATUS\tLAST ERROR")
	for _, i := range st.Instances {
		// An instance that has not answered a command yet has no known
		// seq (agents report through SSM only): show "-" rather than a lag.
		seq, lag := fmt.Sprint(i.Seq), fmt.Sprint(i.Lag)
		if i.LastReportAt.IsZero() {
			seq, lag = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.InstanceID, i.AZ, i.State, seq, lag, ago(now, i.LastReportAt),
			dash(i.LastStatus), dash(oneLine(i.LastError, 80)))
	}
	if len(st.Instances) == 0 {
		fmt.Fprintln(tw, "(no instances)\t\t\t\t\t\t\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Volumes) > 0 {
		fmt.Fprintln(w)
		if err := renderSpace(w, st.Volumes, now); err != nil {
			return err
		}
	}
	if len(st.Rejected) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "REJECTED REQUEST\tWHEN\tOP\tPATH\tREASON")
		for _, r := range st.Rejected {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.RequestID, ago(now, r.CreatedAt), dash(oneLine(string(r.Op), 10)),
				dash(oneLine(r.Path, 40)), oneLine(r.Reason, 100))
		}
		return tw.Flush()
	}
	return nil
}

// renderSpace writes each volume's size, used and free bytes; "-" where no
// agent has reported on the volume yet.
func renderSpace(w io.Writer, vols []VolumeSpace, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tZONE\tSTATE\tINSTANCE\tEBS SIZE\tFS SIZE\tUSED\tFREE\tFREE %\tREPORTED")
	for _, v := range vols {
		size, used, free, pct, at := "-", "-", "-", "-", "-"
		if s := v.Space; s != nil {
			size, used, free = bytesText(s.SizeBytes), bytesText(s.UsedBytes), bytesText(s.FreeBytes)
			pct, at = fmt.Sprintf("%.0f%%", 100*s.FreeFraction()), ago(now, s.At)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d GiB\t%s\t%s\t%s\t%s\t%s\n", v.VolumeID, v.AZ, v.State, dash(v.InstanceID), v.SizeGiB, size, used, free, pct, at)
	}
	return tw.Flush()
}

// RenderVolumes writes the volumes as a table.
func RenderVolumes(w io.Writer, vols []VolumeRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tZONE\tSTATE\tINSTANCE\tSEQ\tLAG\tSIZE\tSNAPSHOT\tUPDATED\tLAST ERROR")
	for _, v := range vols {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d GiB\t%s\t%s\t%s\n", v.VolumeID, v.AZ, v.State, dash(v.InstanceID), v.Seq, v.Lag,
			v.SizeGiB, dash(v.SnapshotID), ago(now, v.UpdatedAt), dash(oneLine(v.LastError, 80)))
	}
	return tw.Flush()
}

// RenderJournal writes journal entries as a table.
func RenderJournal(w io.Writer, es []events.JournalEntry, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tWHEN\tOP\tPATH\tCONTENT\tREQUEST")
	for _, e := range es {
		content := "-"
		switch {
		case e.Blob != nil:
			content = fmt.Sprintf("blob %s… %d B %04o", e.Blob.SHA256[:12], e.Blob.Size, e.Blob.Mode)
		case e.Manifest != nil:
			content = fmt.Sprintf("manifest %s…", e.Manifest.SHA256[:12])
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, ago(now, e.CreatedAt), e.Op, oneLine(e.Path, 60), content, e.RequestID)
	}
	return tw.Flush()
}

// RenderSent writes what a push or delete sent.
func RenderSent(w io.Writer, s Sent) {
	if s.DryRun {
		renderPlan(w, s)
		return
	}
	switch s.Op {
	case events.OpSync:
		fmt.Fprintf(w, "sync %s: %d files, %s; uploaded %d blobs (%s), %d already in the origin; manifest %s…\n",
			s.Path, s.Files, bytesText(s.Bytes), s.UploadedBlobs, bytesText(s.UploadedBytes), s.PresentBlobs, s.Manifest[:12])
	case events.OpPut:
		fmt.Fprintf(w, "put %s: %s; ", s.Path, bytesText(s.Bytes))
		if s.UploadedBlobs > 0 {
			fmt.Fprintln(w, "uploaded")
		} else {
			fmt.Fprintln(w, "already in the origin")
		}
	default:
		fmt.Fprintf(w, "delete %s\n", s.Path)
	}
	fmt.Fprintf(w, "request %s sent\n", s.RequestID)
}

// RenderWaited writes the end of a wait.
func RenderWaited(w io.Writer, wt Waited, now time.Time) error {
	switch wt.Outcome {
	case WaitCaughtUp:
		fmt.Fprintf(w, "seq %d: all %d running instances caught up in %s\n", wt.Seq, len(wt.Instances), wt.Elapsed.Round(100*time.Millisecond))
	case WaitRejected:
		fmt.Fprintf(w, "request %s rejected: %s\n", wt.RequestID, wt.Reason)
		return nil
	default:
		fmt.Fprintf(w, "seq %d: %s\n", wt.Seq, wt.Reason)
	}
	if len(wt.Instances) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tZONE\tSEQ\tRESULT\tLAST REPORT\tLAST ERROR")
	for _, i := range wt.Instances {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", i.InstanceID, i.AZ, i.Seq, i.Verdict, ago(now, i.LastReportAt), dash(oneLine(i.LastError, 80)))
	}
	return tw.Flush()
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// renderPlan writes a --dry-run: the counts, then the first paths of each
// kind.
func renderPlan(w io.Writer, s Sent) {
	p := s.Plan
	fmt.Fprintf(w, "dry run: %s %s: %d to add, %d to change, %d to delete (%d there now); nothing uploaded or sent\n",
		s.Op, s.Path, p.Add, p.Change, p.Delete, p.Target)
	if p.Since > 0 {
		fmt.Fprintf(w, "(from journal seq %d on: what only older, compacted entries put there is not counted)\n", p.Since)
	}
	for _, l := range []struct {
		what  string
		n     int
		paths []string
	}{{"add", p.Add, p.Adds}, {"change", p.Change, p.Changes}, {"delete", p.Delete, p.Deletes}} {
		for _, path := range l.paths {
			fmt.Fprintf(w, "  %-7s %s\n", l.what, path)
		}
		if more := l.n - len(l.paths); more > 0 {
			fmt.Fprintf(w, "  %-7s … and %d more\n", l.what, more)
		}
	}
}
