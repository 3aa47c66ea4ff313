// Package metrics writes CloudWatch metrics as Embedded Metric Format (EMF)
// log lines: one JSON object per line on the Lambda's stdout, which
// CloudWatch Logs turns into metrics without any API call.
package metrics

import (
	"encoding/json"
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
