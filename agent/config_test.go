package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := write("full.json", `{"pool":"web","table":"volsd-web","bucket":"origin-bucket","region":"eu-west-1","asg":"web-asg",
		"lifecycleHook":"hook","mountPath":"/srv/content","fsType":"xfs","applyInterval":"90s","deviceRoot":"/tmp/by-id",
		"sysfsRoot":"/tmp/sys","runDir":"/tmp/run","deviceWait":"5s"}`)
	minimal := write("minimal.json", `{"pool":"web","table":"volsd-web","bucket":"origin-bucket"}`)
	cases := []struct {
		name string
		env  map[string]string
		want func(c Config) bool
		err  string
	}{
		{"defaults", map[string]string{"VOLSD_CONFIG": minimal}, func(c Config) bool {
			return c.MountPath == "/srv/volsd" && c.FSType == "ext4" && c.LifecycleHook == "volsd-launch" &&
				c.ApplyInterval == Duration(5*time.Minute) && c.DeviceRoot == "/dev/disk/by-id" && c.SysfsRoot == "/sys" &&
				c.RunDir == "/run/volsd" && c.DeviceWait == Duration(120*time.Second) && c.Region == "" && c.ASG == ""
		}, ""},
		{"every field from the file", map[string]string{"VOLSD_CONFIG": full}, func(c Config) bool {
			return c.Region == "eu-west-1" && c.ASG == "web-asg" && c.LifecycleHook == "hook" && c.MountPath == "/srv/content" &&
				c.FSType == "xfs" && c.ApplyInterval == Duration(90*time.Second) && c.DeviceRoot == "/tmp/by-id" &&
				c.SysfsRoot == "/tmp/sys" && c.RunDir == "/tmp/run" && c.DeviceWait == Duration(5*time.Second)
		}, ""},
		{"environment overrides the file", map[string]string{
			"VOLSD_CONFIG": full, "VOLSD_POOL": "other", "VOLSD_TABLE": "t2-table", "VOLSD_BUCKET": "b2", "AWS_REGION": "us-west-2",
			"VOLSD_ASG": "g2", "VOLSD_LIFECYCLE_HOOK": "h2", "VOLSD_MOUNT": "/mnt/x", "VOLSD_FS_TYPE": "ext4",
			"VOLSD_APPLY_INTERVAL": "1m", "VOLSD_DEVICE_ROOT": "/d", "VOLSD_SYSFS_ROOT": "/s", "VOLSD_RUN_DIR": "/r", "VOLSD_DEVICE_WAIT": "3s",
		}, func(c Config) bool {
			return c.Pool == "other" && c.Table == "t2-table" && c.Bucket == "b2" && c.Region == "us-west-2" && c.ASG == "g2" &&
				c.LifecycleHook == "h2" && c.MountPath == "/mnt/x" && c.FSType == "ext4" && c.ApplyInterval == Duration(time.Minute) &&
				c.DeviceRoot == "/d" && c.SysfsRoot == "/s" && c.RunDir == "/r" && c.DeviceWait == Duration(3*time.Second)
		}, ""},
		{"environment only, default file absent", map[string]string{"VOLSD_POOL": "web", "VOLSD_TABLE": "tbl", "VOLSD_BUCKET": "b"}, func(c Config) bool {
			return c.Pool == "web" && c.Table == "tbl" && c.Bucket == "b"
		}, ""},
		{"unknown field", map[string]string{"VOLSD_CONFIG": write("unknown.json", `{"pool":"web","table":"tbl","bucket":"b","autoScalingGroup":"x"}`)}, nil, `"autoScalingGroup" is not a known field`},
		{"wrong type", map[string]string{"VOLSD_CONFIG": write("type.json", `{"pool":5}`)}, nil, `field "pool" has the wrong type`},
		{"explicit file missing", map[string]string{"VOLSD_CONFIG": filepath.Join(dir, "nope.json")}, nil, "nope.json"},
		{"every problem at once", map[string]string{
			"VOLSD_CONFIG": minimal, "VOLSD_POOL": "bad pool!", "VOLSD_FS_TYPE": "zfs", "VOLSD_MOUNT": "relative/path",
			"VOLSD_APPLY_INTERVAL": "soon", "VOLSD_DEVICE_WAIT": "-1s",
		}, nil, "pool (VOLSD_POOL) must be; fsType (VOLSD_FS_TYPE) must be ext4 or xfs; mountPath (VOLSD_MOUNT) must be a clean absolute path; VOLSD_APPLY_INTERVAL: must be a duration"},
		{"mount at root", map[string]string{"VOLSD_CONFIG": minimal, "VOLSD_MOUNT": "/"}, nil, "must not be /"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := LoadConfig(func(k string) string { return c.env[k] })
			if c.err != "" {
				for _, part := range strings.Split(c.err, "; ") {
					if err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(part, " must be")) {
						t.Fatalf("error %v, want it to contain %q", err, part)
					}
				}
				if KindOf(err) != KindBadInput {
					t.Fatalf("kind %s", KindOf(err))
				}
				return
			}
			if err != nil || !c.want(cfg) {
				t.Fatalf("config %+v, err %v", cfg, err)
			}
		})
	}
}
