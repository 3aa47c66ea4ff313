package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/volsd/volsd/events"
)

// DefaultConfigPath is where the agent's configuration lives on an
// instance (docs/contracts.md); VOLSD_CONFIG overrides it.
const DefaultConfigPath = "/etc/volsd/agent.json"

// Config is /etc/volsd/agent.json with environment overrides
// (docs/contracts.md, "Agent configuration").
type Config struct {
	Pool          string   `json:"pool"`
	Table         string   `json:"table"`
	Bucket        string   `json:"bucket"`
	Region        string   `json:"region"`
	ASG           string   `json:"asg"`
	LifecycleHook string   `json:"lifecycleHook"`
	MountPath     string   `json:"mountPath"`
	FSType        string   `json:"fsType"`
	ApplyInterval Duration `json:"applyInterval"`
	DeviceRoot    string   `json:"deviceRoot"`
	SysfsRoot     string   `json:"sysfsRoot"`
	RunDir        string   `json:"runDir"`
	DeviceWait    Duration `json:"deviceWait"`
}

// Duration is a time.Duration written as a Go duration string ("5m").
type Duration time.Duration

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("must be a duration string such as \"5m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("must be a duration such as \"5m\": %v", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// envVars maps each JSON field to its environment override.
var envVars = []struct{ field, env string }{
	{"pool", "VOLSD_POOL"},
	{"table", "VOLSD_TABLE"},
	{"bucket", "VOLSD_BUCKET"},
	{"region", "AWS_REGION"},
	{"asg", "VOLSD_ASG"},
	{"lifecycleHook", "VOLSD_LIFECYCLE_HOOK"},
	{"mountPath", "VOLSD_MOUNT"},
	{"fsType", "VOLSD_FS_TYPE"},
	{"applyInterval", "VOLSD_APPLY_INTERVAL"},
	{"deviceRoot", "VOLSD_DEVICE_ROOT"},
	{"sysfsRoot", "VOLSD_SYSFS_ROOT"},
	{"runDir", "VOLSD_RUN_DIR"},
	{"deviceWait", "VOLSD_DEVICE_WAIT"},
}

var (
	poolPattern  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	tablePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{3,255}$`)
)

// LoadConfig reads the configuration: defaults, then the JSON file at
// VOLSD_CONFIG (default DefaultConfigPath; a missing default file is fine
// when the environment gives what is required), then the environment
// variables of docs/contracts.md. getenv is os.Getenv in main. Every problem
// is reported in one error of kind bad input.
func LoadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		LifecycleHook: events.LaunchHookName,
		MountPath:     "/srv/volsd",
		FSType:        "ext4",
		ApplyInterval: Duration(5 * time.Minute),
		DeviceRoot:    "/dev/disk/by-id",
		SysfsRoot:     "/sys",
		RunDir:        "/run/volsd",
		DeviceWait:    Duration(120 * time.Second),
	}
	path := getenv("VOLSD_CONFIG")
	explicit := path != ""
	if !explicit {
		path = DefaultConfigPath
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
	case err != nil:
		return c, badInput("config: read %s: %v", path, err)
	default:
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return c, badInput("config %s: %v", path, jsonProblem(err))
		}
		if dec.More() {
			return c, badInput("config %s: data after the JSON object", path)
		}
	}
	var problems []string
	for _, v := range envVars {
		val := getenv(v.env)
		if val == "" {
			continue
		}
		// Each override goes through the same decoder as the file, so a
		// bad value is named the same way.
		b, _ := json.Marshal(map[string]string{v.field: val})
		if err := json.Unmarshal(b, &c); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", v.env, err))
		}
	}
	problems = append(problems, c.problems()...)
	if len(problems) > 0 {
		return c, badInput("config (%s and environment): %s", path, strings.Join(problems, "; "))
	}
	return c, nil
}

func jsonProblem(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q has the wrong type (%s)", te.Field, te.Value)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		return fmt.Errorf("%s is not a known field (see docs/agent.md)", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return err
}

// problems lists what is wrong with c.
func (c Config) problems() []string {
	var p []string
	if !poolPattern.MatchString(c.Pool) {
		p = append(p, fmt.Sprintf("pool (VOLSD_POOL) must be 1 to 64 letters, digits, - or _ (got %q)", c.Pool))
	}
	if !tablePattern.MatchString(c.Table) {
		p = append(p, fmt.Sprintf("table (VOLSD_TABLE) must be a DynamoDB table name (got %q)", c.Table))
	}
	if c.Bucket == "" {
		p = append(p, "bucket (VOLSD_BUCKET) is required")
	}
	if c.FSType != "ext4" && c.FSType != "xfs" {
		p = append(p, fmt.Sprintf("fsType (VOLSD_FS_TYPE) must be ext4 or xfs (got %q)", c.FSType))
	}
	for _, d := range []struct{ name, val string }{
		{"mountPath (VOLSD_MOUNT)", c.MountPath}, {"deviceRoot (VOLSD_DEVICE_ROOT)", c.DeviceRoot},
		{"sysfsRoot (VOLSD_SYSFS_ROOT)", c.SysfsRoot}, {"runDir (VOLSD_RUN_DIR)", c.RunDir},
	} {
		if !filepath.IsAbs(d.val) || filepath.Clean(d.val) != d.val {
			p = append(p, fmt.Sprintf("%s must be a clean absolute path (got %q)", d.name, d.val))
		}
	}
	if c.MountPath == "/" {
		p = append(p, "mountPath (VOLSD_MOUNT) must not be /")
	}
	if c.ApplyInterval < Duration(time.Second) {
		p = append(p, fmt.Sprintf("applyInterval (VOLSD_APPLY_INTERVAL) must be at least 1s (got %s)", time.Duration(c.ApplyInterval)))
	}
	if c.DeviceWait <= 0 {
		p = append(p, fmt.Sprintf("deviceWait (VOLSD_DEVICE_WAIT) must be positive (got %s)", time.Duration(c.DeviceWait)))
	}
	return p
}
