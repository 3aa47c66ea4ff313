package volsd_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/volsd/volsd/infra/assembly"
	"github.com/volsd/volsd/internal/metrics"
)

// readMetric is one volsd metric an alarm or the dashboard reads.
type readMetric struct {
	where, name string
	dims        []string
}

var insights = regexp.MustCompile(`FROM SCHEMA\(([^,)]+)((?:, *[A-Za-z]+)*)\)`)
var insightsMetric = regexp.MustCompile(`SELECT [A-Z]+\(([A-Za-z]+)\)`)

// collectMetrics finds every metric of the volsd namespace in v (an
// alarm's properties or the dashboard body): CloudWatch metric arrays
// ["volsd", name, dim, value, …], alarm fields Namespace/MetricName/
// Dimensions, and Metrics Insights queries over SCHEMA(volsd, dims…).
func collectMetrics(where string, v any, out *[]readMetric) {
	switch x := v.(type) {
	case []any:
		if len(x) >= 2 && x[0] == metrics.Namespace {
			m := readMetric{where: where, name: x[1].(string)}
			for i := 2; i+1 < len(x); i += 2 {
				if k, ok := x[i].(string); ok {
					m.dims = append(m.dims, k)
				}
			}
			sort.Strings(m.dims)
			*out = append(*out, m)
			return
		}
		for _, e := range x {
			collectMetrics(where, e, out)
		}
	case map[string]any:
		if x["Namespace"] == metrics.Namespace {
			m := readMetric{where: where, name: x["MetricName"].(string)}
			ds, _ := x["Dimensions"].([]any)
			for _, d := range ds {
				m.dims = append(m.dims, d.(map[string]any)["Name"].(string))
			}
			sort.Strings(m.dims)
			*out = append(*out, m)
		}
		for _, e := range x {
			collectMetrics(where, e, out)
		}
	case string:
		if s := insights.FindStringSubmatch(x); s != nil && strings.TrimSpace(s[1]) == metrics.Namespace {
			name := insightsMetric.FindStringSubmatch(x)
			m := readMetric{where: where, name: name[1]}
			for _, d := range strings.Split(s[2], ",") {
				if d = strings.TrimSpace(d); d != "" {
					m.dims = append(m.dims, d)
				}
			}
			sort.Strings(m.dims)
			*out = append(*out, m)
		}
	}
}

// TestEveryReadMetricIsEmitted collects the volsd metrics that the
// synthesized alarms and dashboards read and checks each against the
// metrics the code emits (metrics.Read, whose emission with exactly these
// dimensions the emitting packages' tests check from their EMF lines: pool
// for IdleVolumes, snapshot for SnapshotAgeSeconds, push for
// PushLagSeconds and ReportedLagSeconds). A metric nothing emits, or emitted with other
// dimensions, would leave a widget empty or an alarm blind.
func TestEveryReadMetricIsEmitted(t *testing.T) {
	for _, stack := range []string{stackName, defaultName} {
		tmpl := template(t, stack)
		var read []readMetric
		for _, a := range tmpl.OfType("AWS::CloudWatch::Alarm") {
			collectMetrics(a.ID, a.Properties, &read)
		}
		for _, d := range tmpl.OfType("AWS::CloudWatch::Dashboard") {
			body, err := assembly.Resolve(d.Properties["DashboardBody"])
			if err != nil {
				t.Fatal(err)
			}
			var parsed any
			if err := json.Unmarshal([]byte(body), &parsed); err != nil {
				t.Fatalf("%s: dashboard body: %v", d.ID, err)
			}
			collectMetrics(d.ID, parsed, &read)
		}
		seen := map[string]bool{}
		for _, m := range read {
			seen[m.name] = true
			want, ok := metrics.Read[m.name]
			switch {
			case !ok:
				t.Errorf("%s: %s reads %s/%s, which no code emits", stack, m.where, metrics.Namespace, m.name)
			case !slices.Equal(want, m.dims):
				t.Errorf("%s: %s reads %s with dimensions %v; the code emits it with %v", stack, m.where, m.name, m.dims, want)
			}
		}
		if stack == stackName {
			for name := range metrics.Read {
				if !seen[name] {
					t.Errorf("%s: nothing reads %s: drop it from metrics.Read or graph it", stack, name)
				}
			}
		}
	}
}
