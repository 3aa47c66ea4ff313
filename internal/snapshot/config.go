package snapshot

import (
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/reclaim"
)

// Env is the snapshot Lambda's environment (docs/contracts.md).
type Env struct {
	Config
	envconfig.Lambda
}

// LoadEnv reads the snapshot Lambda's variables and reports every problem
// at once:
//
//	VOLSD_POOL, VOLSD_TABLE, VOLSD_ASG        required
//	VOLSD_SNAPSHOT_KEEP                       completed snapshots kept, 1..1000 (3)
//	VOLSD_FREEZE_SECONDS                      agent's thaw bound, 5..900 (30)
//	VOLSD_DOC_FREEZE, VOLSD_DOC_THAW          SSM documents (volsd-Freeze, volsd-Thaw)
//	VOLSD_KMS_KEY_ID                          pool EBS key, checked on snapshots (empty)
//	VOLSD_COMPACT_GRACE                       journal entries below the floor live this long, 0..720h (24h)
//	VOLSD_BUCKET                              the S3 origin reclaim sweeps (required unless reclaim is off)
//	VOLSD_RECLAIM_GRACE                       origin objects unreferenced this long are deleted: 0 (off) or 120h..8760h (168h)
//	VOLSD_LOG_LEVEL                           debug, info, warn, error (info)
func LoadEnv(r *envconfig.Reader) (Env, error) {
	var e Env
	e.Pool = r.Pool()
	e.Table = r.String("VOLSD_TABLE", "", true)
	e.Group = r.String("VOLSD_ASG", "", true)
	e.Keep = int(r.Int("VOLSD_SNAPSHOT_KEEP", 3, false, 1, 1000))
	e.FreezeSeconds = int(r.Int("VOLSD_FREEZE_SECONDS", 30, false, 5, 900))
	e.DocFreeze = r.Document(events.DocFreeze)
	e.DocThaw = r.Document(events.DocThaw)
	e.KMSKeyID = r.String("VOLSD_KMS_KEY_ID", "", false)
	e.CompactGrace = r.Duration("VOLSD_COMPACT_GRACE", 24*time.Hour, false, 0, 720*time.Hour)
	e.ReclaimGrace = r.Duration("VOLSD_RECLAIM_GRACE", reclaim.DefaultGrace, false, 0, 365*24*time.Hour)
	if e.ReclaimGrace > 0 && e.ReclaimGrace < reclaim.MinGrace {
		r.Fail("VOLSD_RECLAIM_GRACE", "must be 0 (reclaim off) or at least %s: longer than a push request may wait in the queue (%s) plus a day for its upload, so a concurrent push's objects are never deleted",
			reclaim.MinGrace, reclaim.MaxPushInFlight)
	}
	e.Bucket = r.String("VOLSD_BUCKET", "", e.ReclaimGrace > 0)
	e.LogLevel = r.LogLevel("VOLSD_LOG_LEVEL")
	return e, r.Err()
}
