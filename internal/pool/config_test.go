package pool_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/pool"
)

func baseEnv() map[string]string {
	return map[string]string{
		"VOLSD_POOL": "web", "VOLSD_TABLE": "volsd-web", "VOLSD_ASG": "web-asg", "VOLSD_IDLE_PER_AZ": "2",
		"VOLSD_VOLUME_SIZE_GIB": "20", "VOLSD_VOLUME_TYPE": "gp3", "VOLSD_RELEASE_POLICY": "recycle",
	}
}

func TestLoadConfigDefaultsAndAll(t *testing.T) {
	c, err := pool.LoadConfig(envconfig.FromMap(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	want := pool.Config{Pool: "web", Table: "volsd-web", Group: "web-asg", IdlePerAZ: 2, SizeGiB: 20, VolumeType: "gp3",
		ReleasePolicy: "recycle", DocRelease: "volsd-Release", DocStatus: "volsd-Status", RefreshBehind: 500, RefreshAge: 168 * time.Hour, RefreshMax: 2,
		AutoGrowStepGiB: 10, AutoGrowMaxGiB: 65536, FillAlarmPercent: 90, LogLevel: slog.LevelInfo}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("defaults (-want +got):\n%s", diff)
	}
	m := baseEnv()
	for k, v := range map[string]string{
		"VOLSD_AZS": "eu-west-1a, eu-west-1b", "VOLSD_VOLUME_IOPS": "6000", "VOLSD_VOLUME_THROUGHPUT": "500",
		"VOLSD_VOLUME_INIT_RATE": "300", "VOLSD_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/abcd",
		"VOLSD_SOURCE_SNAPSHOT": "snap-0123456789abcdef0", "VOLSD_RELEASE_POLICY": "delete", "VOLSD_DOC_RELEASE": "my-Release",
		"VOLSD_REFRESH_BEHIND": "50", "VOLSD_REFRESH_AGE": "24h", "VOLSD_REFRESH_MAX": "5", "VOLSD_LOG_LEVEL": "debug",
		"VOLSD_AUTOGROW_FREE_PERCENT": "15", "VOLSD_AUTOGROW_STEP_GIB": "50", "VOLSD_AUTOGROW_MAX_GIB": "500", "VOLSD_FILL_ALARM_PERCENT": "95",
	} {
		m[k] = v
	}
	c, err = pool.LoadConfig(envconfig.FromMap(m))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.AZs, ",") != "eu-west-1a,eu-west-1b" || c.IOPS != 6000 || c.Throughput != 500 || c.InitRate != 300 ||
		c.SourceSnapshot != "snap-0123456789abcdef0" || c.ReleasePolicy != "delete" || c.DocRelease != "my-Release" ||
		c.RefreshBehind != 50 || c.RefreshAge != 24*time.Hour || c.RefreshMax != 5 || c.LogLevel != slog.LevelDebug || c.KMSKeyID == "" ||
		c.AutoGrowFreePercent != 15 || c.AutoGrowStepGiB != 50 || c.AutoGrowMaxGiB != 500 || c.FillAlarmPercent != 95 {
		t.Fatalf("config %+v", c)
	}
}

func TestLoadConfigRejectsBadValues(t *testing.T) {
	cases := []struct {
		name string
		set  map[string]string
		want []string // every problem, named by variable
	}{
		{"all required missing", map[string]string{"VOLSD_POOL": "", "VOLSD_TABLE": "", "VOLSD_ASG": "", "VOLSD_IDLE_PER_AZ": "",
			"VOLSD_VOLUME_SIZE_GIB": "", "VOLSD_VOLUME_TYPE": "", "VOLSD_RELEASE_POLICY": ""},
			[]string{"VOLSD_POOL: is required", "VOLSD_TABLE: is required", "VOLSD_ASG: is required", "VOLSD_IDLE_PER_AZ: is required",
				"VOLSD_VOLUME_SIZE_GIB: is required", "VOLSD_VOLUME_TYPE: must be one of", "VOLSD_RELEASE_POLICY: must be one of"}},
		{"bad values", map[string]string{"VOLSD_POOL": "web pool", "VOLSD_IDLE_PER_AZ": "-1", "VOLSD_VOLUME_SIZE_GIB": "big",
			"VOLSD_VOLUME_TYPE": "st1", "VOLSD_RELEASE_POLICY": "keep", "VOLSD_REFRESH_AGE": "1 week", "VOLSD_SOURCE_SNAPSHOT": "vol-1"},
			[]string{"VOLSD_POOL: must be letters", "VOLSD_IDLE_PER_AZ: must be between", "VOLSD_VOLUME_SIZE_GIB: must be an integer",
				"VOLSD_VOLUME_TYPE: must be one of gp3, gp2, io1, io2", `VOLSD_RELEASE_POLICY: must be one of recycle, delete (got "keep")`,
				"VOLSD_REFRESH_AGE: must be a duration", "VOLSD_SOURCE_SNAPSHOT: must be a snapshot ID"}},
		{"auto-grow", map[string]string{"VOLSD_AUTOGROW_FREE_PERCENT": "91", "VOLSD_AUTOGROW_MAX_GIB": "10"},
			[]string{"VOLSD_AUTOGROW_FREE_PERCENT: must be between 0 and 90", "VOLSD_AUTOGROW_MAX_GIB: must be 0 (the gp3 maximum) or 20..65536 GiB"}},
		{"volume combinations", map[string]string{"VOLSD_VOLUME_TYPE": "gp2", "VOLSD_VOLUME_IOPS": "3000", "VOLSD_VOLUME_THROUGHPUT": "200",
			"VOLSD_VOLUME_INIT_RATE": "50", "VOLSD_AZS": "eu-west-1a,moon"},
			[]string{"VOLSD_VOLUME_IOPS: must be 0 for gp2", "VOLSD_VOLUME_THROUGHPUT: only gp3", "VOLSD_VOLUME_INIT_RATE: must be 0 (off) or 100..300",
				`VOLSD_AZS: "moon" is not an availability zone`}},
		{"io2 needs iops", map[string]string{"VOLSD_VOLUME_TYPE": "io2"}, []string{"VOLSD_VOLUME_IOPS: is required for io2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := baseEnv()
			for k, v := range tc.set {
				m[k] = v
			}
			_, err := pool.LoadConfig(envconfig.FromMap(m))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}
