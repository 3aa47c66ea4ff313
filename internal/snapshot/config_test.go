package snapshot_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/snapshot"
)

func TestLoadEnv(t *testing.T) {
	base := map[string]string{"VOLSD_POOL": "web", "VOLSD_TABLE": "volsd-web", "VOLSD_ASG": "web-asg", "VOLSD_BUCKET": "origin"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	t.Run("defaults", func(t *testing.T) {
		e, err := snapshot.LoadEnv(envconfig.FromMap(base))
		if err != nil {
			t.Fatal(err)
		}
		want := snapshot.Config{Pool: "web", Group: "web-asg", Keep: 3, FreezeSeconds: 30,
			DocFreeze: "volsd-Freeze", DocThaw: "volsd-Thaw", CompactGrace: 24 * time.Hour, Bucket: "origin", ReclaimGrace: 7 * 24 * time.Hour}
		if e.Config != want || e.Table != "volsd-web" || e.LogLevel != slog.LevelInfo {
			t.Errorf("got %+v, want %+v", e, want)
		}
	})
	t.Run("set", func(t *testing.T) {
		e, err := snapshot.LoadEnv(envconfig.FromMap(with("VOLSD_SNAPSHOT_KEEP", "7", "VOLSD_FREEZE_SECONDS", "12",
			"VOLSD_DOC_FREEZE", "p-Freeze", "VOLSD_DOC_THAW", "p-Thaw", "VOLSD_KMS_KEY_ID", "alias/ebs",
			"VOLSD_COMPACT_GRACE", "2h", "VOLSD_LOG_LEVEL", "debug", "VOLSD_RECLAIM_GRACE", "0")))
		if err != nil {
			t.Fatal(err)
		}
		if e.Keep != 7 || e.FreezeSeconds != 12 || e.DocFreeze != "p-Freeze" || e.DocThaw != "p-Thaw" ||
			e.KMSKeyID != "alias/ebs" || e.CompactGrace != 2*time.Hour || e.LogLevel != slog.LevelDebug || e.ReclaimGrace != 0 {
			t.Errorf("got %+v", e)
		}
	})
	t.Run("every problem at once", func(t *testing.T) {
		_, err := snapshot.LoadEnv(envconfig.FromMap(map[string]string{"VOLSD_POOL": "no spaces", "VOLSD_SNAPSHOT_KEEP": "0",
			"VOLSD_FREEZE_SECONDS": "thirty", "VOLSD_COMPACT_GRACE": "-1h", "VOLSD_LOG_LEVEL": "loud", "VOLSD_RECLAIM_GRACE": "24h"}))
		if err == nil {
			t.Fatal("accepted")
		}
		for _, want := range []string{"VOLSD_POOL: must be", "VOLSD_TABLE: is required", "VOLSD_ASG: is required",
			"VOLSD_SNAPSHOT_KEEP: must be between 1", "VOLSD_FREEZE_SECONDS: must be an integer",
			"VOLSD_COMPACT_GRACE: must be between", "VOLSD_LOG_LEVEL: must be one of", "VOLSD_RECLAIM_GRACE: must be 0 (reclaim off) or at least 120h"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := snapshot.New(snapshot.Config{Keep: 0, FreezeSeconds: 2}, nil, nil, nil, nil, nil, nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"pool is empty", "group is empty", "keep must be at least 1", "freeze seconds must be at least 5", "document names"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
