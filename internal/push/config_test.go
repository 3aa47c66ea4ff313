package push_test

import (
	"strings"
	"testing"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/push"
)

func TestLoadEnv(t *testing.T) {
	env, err := push.LoadEnv(envconfig.FromMap(map[string]string{"VOLSD_POOL": "web", "VOLSD_TABLE": "t", "VOLSD_BUCKET": "b"}))
	if err != nil {
		t.Fatal(err)
	}
	if env.DocApply != "volsd-Apply" || env.MaxConcurrency != "50%" || env.MaxErrors != push.DefaultMaxErrors || env.MissingReceives != events.PushMaxReceiveCount {
		t.Fatalf("defaults %+v", env.Config)
	}
	_, err = push.LoadEnv(envconfig.FromMap(map[string]string{"VOLSD_POOL": "web/x", "VOLSD_SSM_MAX_CONCURRENCY": "0", "VOLSD_SSM_MAX_ERRORS": "all", "VOLSD_LOG_LEVEL": "loud"}))
	for _, want := range []string{"VOLSD_POOL", "VOLSD_TABLE", "VOLSD_BUCKET", "VOLSD_SSM_MAX_CONCURRENCY", "VOLSD_SSM_MAX_ERRORS", "VOLSD_LOG_LEVEL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
