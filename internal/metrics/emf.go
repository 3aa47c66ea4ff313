// Package metrics writes CloudWatch metrics as Embedded Metric Format (EMF)
// log lines: one JSON object per line on the Lambda's stdout, which
// CloudWatch Logs turns into metrics without any API call.
package metrics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// Namespace is volsd's CloudWatch namespace.
const Namespace = "volsd"

// Unit is a CloudWatch unit.
type Unit string

// Units volsd uses.
const (
	Count        Unit = "Count"
	Seconds      Unit = "Seconds"
	Milliseconds Unit = "Milliseconds"
	Bytes        Unit = "Bytes"
)

// Emitter writes EMF lines to w; safe for concurrent use.
type Emitter struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// New returns an Emitter writing to w (os.Stdout in a Lambda).
func New(w io.Writer) *Emitter { return &Emitter{w: w, now: time.Now} }

// Put writes one metric value with its dimensions (e.g. Pool, AZ).
func (e *Emitter) Put(name string, value float64, unit Unit, dims map[string]string) {
	if e == nil {
		return
	}
	keys := make([]string, 0, len(dims))
	for k := range dims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	line := map[string]any{
		"_aws": map[string]any{
			"Timestamp": e.now().UnixMilli(),
			"CloudWatchMetrics": []any{map[string]any{
				"Namespace":  Namespace,
				"Dimensions": [][]string{keys},
				"Metrics":    []any{map[string]string{"Name": name, "Unit": string(unit)}},
			}},
		},
		name: value,
	}
	for k, v := range dims {
		line[k] = v
	}
	b, err := json.Marshal(line)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(append(b, '\n'))
}

// Metrics that alarms and the dashboard read (infra/volsd), each emitted by
// the code with exactly these dimensions.
const (
	// IdleVolumes is the idle volume count of one zone (reconcile).
	IdleVolumes = "IdleVolumes"
	// SnapshotAgeSeconds is the age of the newest completed snapshot (snapshot).
	SnapshotAgeSeconds = "SnapshotAgeSeconds"
	// PushLagSeconds is how long the oldest newly appended request of a
	// batch waited: SQS sent → appended to the journal (push).
	PushLagSeconds = "PushLagSeconds"
	// ReportedLagSeconds is the second stage of push lag: appended to the
	// journal → every in-service instance reported it, for the oldest
	// entry that the last instance's report brought in (report; emitted
	// once per raise of the pool's reported watermark).
	ReportedLagSeconds = "ReportedLagSeconds"
	// StalledReports counts reports of a journal entry an agent refused as
	// bad content: the pool is stalled at that seq (report; the
	// construct's PoolStalledAlarm fires on any).
	StalledReports = "StalledReports"
	// VolumesFullCannotGrow counts pool volumes at least
	// VOLSD_FILL_ALARM_PERCENT full that reconcile will not grow
	// (auto-grow off or at its maximum) (reconcile; VolumeFullAlarm).
	VolumesFullCannotGrow = "VolumesFullCannotGrow"
	// ReclaimedBytes is what one reclaim run deleted from the origin
	// (snapshot).
	ReclaimedBytes = "ReclaimedBytes"
	// UnreferencedBytes is what the origin holds that nothing references,
	// waiting out the reclaim grace period (snapshot).
	UnreferencedBytes = "UnreferencedBytes"
)

// Read are the metrics alarms and the dashboard read, with the dimensions
// of each, sorted.
var Read = map[string][]string{
	IdleVolumes:           {"AZ", "Pool"},
	SnapshotAgeSeconds:    {"Pool"},
	PushLagSeconds:        {"Pool"},
	ReportedLagSeconds:    {"Pool"},
	StalledReports:        {"Pool"},
	ReclaimedBytes:        {"Pool"},
	UnreferencedBytes:     {"Pool"},
	VolumesFullCannotGrow: {"Pool"},
}

// Line is one EMF metric line as Put writes it.
type Line struct {
	Namespace  string
	Name       string
	Dimensions []string
	Values     map[string]string // dimension → value
}

// ParseLines returns the EMF metric lines in out (other lines are skipped).
func ParseLines(out []byte) []Line {
	var lines []Line
	for _, raw := range bytes.Split(out, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		aws, _ := m["_aws"].(map[string]any)
		cwm, _ := aws["CloudWatchMetrics"].([]any)
		for _, d := range cwm {
			dm, _ := d.(map[string]any)
			ns, _ := dm["Namespace"].(string)
			var dims []string
			if sets, _ := dm["Dimensions"].([]any); len(sets) > 0 {
				for _, k := range sets[0].([]any) {
					dims = append(dims, fmt.Sprint(k))
				}
			}
			values := map[string]string{}
			for _, k := range dims {
				values[k] = fmt.Sprint(m[k])
			}
			ms, _ := dm["Metrics"].([]any)
			for _, x := range ms {
				name, _ := x.(map[string]any)["Name"].(string)
				lines = append(lines, Line{Namespace: ns, Name: name, Dimensions: dims, Values: values})
			}
		}
	}
	return lines
}

// Values returns the values of metric name in the EMF lines of out, in
// order.
func Values(out []byte, name string) []float64 {
	var vals []float64
	for _, raw := range bytes.Split(out, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		if v, ok := m[name].(float64); ok {
			vals = append(vals, v)
		}
	}
	return vals
}
