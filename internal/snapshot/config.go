package snapshot

import (
	"log/slog"
	"time"

	"github.com/volsd/volsd/internal/envconfig"
)

// Env is the snapshot Lambda's environment (docs/contracts.md).
type Env struct {
	Config
	Table    string     // VOLSD_TABLE
	LogLevel slog.Level // VOLSD_LOG_LEVEL
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
//	VOLSD_LOG_LEVEL                           debug, info, warn, error (info)
func LoadEnv(r *envconfig.Reader) (Env, error) {
	var e Env
	e.Pool = r.Match("VOLSD_POOL", "", true, envconfig.PoolName, "letters, digits, - and _, at most 64")
	e.Table = r.String("VOLSD_TABLE", "", true)
	e.Group = r.String("VOLSD_ASG", "", true)
	e.Keep = int(r.Int("VOLSD_SNAPSHOT_KEEP", 3, false, 1, 1000))
	e.FreezeSeconds = int(r.Int("VOLSD_FREEZE_SECONDS", 30, false, 5, 900))
	e.DocFreeze = r.String("VOLSD_DOC_FREEZE", "volsd-Freeze", false)
	e.DocThaw = r.String("VOLSD_DOC_THAW", "volsd-Thaw", false)
	e.KMSKeyID = r.String("VOLSD_KMS_KEY_ID", "", false)
	e.CompactGrace = r.Duration("VOLSD_COMPACT_GRACE", 24*time.Hour, false, 0, 720*time.Hour)
	e.LogLevel = r.LogLevel("VOLSD_LOG_LEVEL")
	return e, r.Err()
}
