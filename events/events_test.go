package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// roundTrip decodes a captured sample into v, encodes it again, and checks
// the JSON is the same value as the sample: no field lost or renamed.
func roundTrip(t *testing.T, file string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: decode: %v", file, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: encode: %v", file, err)
	}
	var want, got any
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	normalize(want)
	normalize(got)
	if !reflect.DeepEqual(want, got) {
		t.Errorf("%s: round trip changed the event\nwant %s\n got %s", file, raw, out)
	}
}

// normalize re-encodes embedded detail objects so both sides compare as
// values, and folds equal instants written with different precision.
func normalize(v any) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, x := range m {
		if s, ok := x.(string); ok && (k == "time" || k == "createdAt") {
			m[k] = strings.TrimSuffix(strings.TrimSuffix(s, "Z"), ".000")
		}
		normalize(x)
	}
}

func TestRoundTripEnvelopes(t *testing.T) {
	for _, tc := range []struct {
		file, detailType string
		detail           any
	}{
		{"launch.json", DetailTypeLaunch, &LifecycleAction{}},
		{"terminate.json", DetailTypeTerminate, &LifecycleAction{}},
		{"launch-into-warmpool.json", DetailTypeLaunch, &LifecycleAction{}},
		{"launch-from-warmpool.json", DetailTypeLaunch, &LifecycleAction{}},
		{"scheduled.json", DetailTypeSchedule, &ScheduledDetail{}},
		{"ssm-status.json", DetailTypeSSMStatus, &CommandStatus{}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			roundTrip(t, tc.file, &Envelope{})
			raw, _ := os.ReadFile(filepath.Join("testdata", tc.file))
			env, err := DecodeDetail(raw, tc.detailType, tc.detail)
			if err != nil {
				t.Fatal(err)
			}
			if env.Time.IsZero() || env.Region != "eu-west-1" {
				t.Errorf("envelope fields not decoded: %+v", env)
			}
			// The detail alone must round-trip too.
			var want, got any
			_ = json.Unmarshal(env.Detail, &want)
			out, _ := json.Marshal(tc.detail)
			_ = json.Unmarshal(out, &got)
			if !reflect.DeepEqual(want, got) {
				t.Errorf("detail round trip\nwant %s\n got %s", env.Detail, out)
			}
			if _, err := DecodeDetail(raw, "Something Else", tc.detail); !errors.Is(err, ErrWrongDetailType) {
				t.Errorf("wrong detail type: got %v", err)
			}
		})
	}
}

func TestLifecycleActionFields(t *testing.T) {
	raw, _ := os.ReadFile("testdata/launch.json")
	var a LifecycleAction
	if _, err := DecodeDetail(raw, DetailTypeLaunch, &a); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	want := LifecycleAction{
		Origin: "EC2", Destination: "AutoScalingGroup",
		LifecycleActionToken: "87654321-4321-4321-4321-210987654321",
		AutoScalingGroupName: "web", LifecycleHookName: "volsd-launch",
		EC2InstanceID: "i-0b1c2d3e4f5a6b7c8", LifecycleTransition: TransitionLaunching,
		NotificationMetadata: `{"pool":"web"}`,
	}
	if a != want {
		t.Errorf("got %+v\nwant %+v", a, want)
	}
	if a.IntoWarmPool() || a.FromWarmPool() {
		t.Error("plain launch reported as warm-pool transition")
	}
	var into, from LifecycleAction
	r1, _ := os.ReadFile("testdata/launch-into-warmpool.json")
	r2, _ := os.ReadFile("testdata/launch-from-warmpool.json")
	_, _ = DecodeDetail(r1, DetailTypeLaunch, &into)
	_, _ = DecodeDetail(r2, DetailTypeLaunch, &from)
	if !into.IntoWarmPool() || into.FromWarmPool() || !from.FromWarmPool() || from.IntoWarmPool() {
		t.Errorf("warm pool transitions: into=%+v from=%+v", into, from)
	}
	bad := a
	bad.EC2InstanceID = "i-../../etc"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "EC2InstanceId") {
		t.Errorf("bad instance id: %v", err)
	}
	bad = a
	bad.LifecycleTransition = "autoscaling:EC2_INSTANCE_LAUNCH_ERROR"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "LifecycleTransition") {
		t.Errorf("bad transition: %v", err)
	}
}

func TestTestNotification(t *testing.T) {
	raw, _ := os.ReadFile("testdata/test-notification.json")
	roundTrip(t, "test-notification.json", &TestNotification{})
	if !IsTestNotification(raw) {
		t.Error("bare test notification not recognized")
	}
	wrapped, _ := json.Marshal(Envelope{DetailType: "EC2 Instance-launch Lifecycle Action", Detail: raw})
	if !IsTestNotification(wrapped) {
		t.Error("test notification inside an envelope not recognized")
	}
	launch, _ := os.ReadFile("testdata/launch.json")
	if IsTestNotification(launch) {
		t.Error("launch event taken for a test notification")
	}
}

func TestCommandStatus(t *testing.T) {
	raw, _ := os.ReadFile("testdata/ssm-status.json")
	var c CommandStatus
	if _, err := DecodeDetail(raw, DetailTypeSSMStatus, &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.CommandID != "0b9a8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d" || c.DocumentName != "volsd-Apply" || c.InstanceID != "i-0b1c2d3e4f5a6b7c8" || !c.Terminal() {
		t.Errorf("decoded %+v", c)
	}
	c.Status = "InProgress"
	if c.Terminal() {
		t.Error("InProgress is not terminal")
	}
}

func TestRoundTripContent(t *testing.T) {
	for _, tc := range []struct {
		file string
		v    any
	}{
		{"push-put.json", &PushRequest{}},
		{"push-sync.json", &PushRequest{}},
		{"push-delete.json", &PushRequest{}},
		{"manifest.json", &Manifest{}},
		{"journal-entry.json", &JournalEntry{}},
		{"agent-report.json", &AgentReport{}},
		{"agent-report-error.json", &AgentReport{}},
	} {
		t.Run(tc.file, func(t *testing.T) { roundTrip(t, tc.file, tc.v) })
	}
}

func TestSamplesValidate(t *testing.T) {
	for _, f := range []string{"push-put.json", "push-sync.json", "push-delete.json"} {
		raw, _ := os.ReadFile(filepath.Join("testdata", f))
		if _, err := ParsePushRequest(raw); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	raw, _ := os.ReadFile("testdata/manifest.json")
	m, err := ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 3 || m.Entries[2].Mode != 0o755 {
		t.Errorf("manifest decoded as %+v", m)
	}
	raw, _ = os.ReadFile("testdata/journal-entry.json")
	var e JournalEntry
	_ = json.Unmarshal(raw, &e)
	if err := e.Validate(); err != nil {
		t.Error(err)
	}
}

func TestCanonicalManifestIsOrderIndependent(t *testing.T) {
	a := Manifest{Version: 1, Entries: []ManifestEntry{
		{Path: "b", SHA256: strings.Repeat("b", 64), Size: 1, Mode: 0o644},
		{Path: "a", SHA256: strings.Repeat("a", 64), Size: 2, Mode: 0o600},
	}}
	b := Manifest{Version: 1, Entries: []ManifestEntry{a.Entries[1], a.Entries[0]}}
	ca, err := a.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := b.Canonical()
	if !bytes.Equal(ca, cb) {
		t.Errorf("canonical forms differ:\n%s\n%s", ca, cb)
	}
	if a.Entries[0].Path != "b" {
		t.Error("Canonical reordered the caller's entries")
	}
	back, err := ParseManifest(bytes.NewReader(ca))
	if err != nil || len(back.Entries) != 2 || back.Entries[0].Path != "a" {
		t.Errorf("canonical manifest does not parse back: %v %+v", err, back)
	}
}

func TestParseAgentReport(t *testing.T) {
	good, _ := os.ReadFile("testdata/agent-report.json")
	for _, tc := range []struct {
		name, stdout string
		wantSeq      int64
		wantErr      string
	}{
		{"only report", string(good), 42, ""},
		{"log lines before", "mounting /dev/nvme1n1\napplied 3 entries\n" + string(good), 42, ""},
		{"trailing blank lines", string(good) + "\n\n  \n", 42, ""},
		{"empty", "", 0, "no report"},
		{"last line is text", string(good) + "done\n", 0, "not a JSON report"},
		{"truncated json", `{"seq": 4`, 0, "not a valid report"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseAgentReport(tc.stdout)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Seq != tc.wantSeq || r.Volume != "vol-0123456789abcdef0" {
				t.Errorf("got %+v", r)
			}
		})
	}
}
