package pool

import (
	"log/slog"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/envconfig"
)

// Release policies (VOLSD_RELEASE_POLICY).
const (
	PolicyRecycle = "recycle"
	PolicyDelete  = "delete"
)

// Config is the pool control plane's configuration (docs/contracts.md,
// "Lambda environment").
type Config struct {
	Pool  string
	Table string
	Group string // VOLSD_ASG
	// IdlePerAZ is the idle volumes kept in each zone.
	IdlePerAZ int
	// AZs restricts the zones; empty means the group's zones.
	AZs []string

	SizeGiB    int32
	VolumeType string
	IOPS       int32 // 0 = AWS default
	Throughput int32 // MiB/s, gp3 only; 0 = AWS default
	InitRate   int32 // VolumeInitializationRate MiB/s for volumes from snapshots; 0 = off
	KMSKeyID   string
	// SourceSnapshot is the pool's base when it has no completed snapshot
	// of its own ("" = blank volumes).
	SourceSnapshot string
	ReleasePolicy  string
	DocRelease     string
	DocStatus      string

	// Freshness: an idle volume more than RefreshBehind entries behind the
	// head, or older than RefreshAge, is replaced when a newer completed
	// snapshot exists; at most RefreshMax replacements per reconcile run.
	RefreshBehind int64
	RefreshAge    time.Duration
	RefreshMax    int

	// Auto-grow (docs/design.md §5b): a volume whose filesystem the agent
	// reports with less than AutoGrowFreePercent free (0: off) is grown by
	// AutoGrowStepGiB, up to AutoGrowMaxGiB. FillAlarmPercent: a volume at
	// least this full that cannot grow (auto-grow off or at its maximum)
	// is counted in VolumesFullCannotGrow (the construct alarms on it).
	AutoGrowFreePercent int
	AutoGrowStepGiB     int32
	AutoGrowMaxGiB      int32
	FillAlarmPercent    int

	LogLevel slog.Level
}

var (
	snapshotID = regexp.MustCompile(`^snap-[0-9a-f]{8,17}$`)
	groupName  = regexp.MustCompile(`^[\x20-\x7e]{1,255}$`)
	azName     = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+-[0-9][a-z]$`)
	kmsKey     = regexp.MustCompile(`^[\x21-\x7e]{1,1000}$`)
)

// LoadConfig reads the configuration, reporting every problem at once.
func LoadConfig(r *envconfig.Reader) (Config, error) {
	c := Config{
		Pool:           r.Pool(),
		Table:          r.String("VOLSD_TABLE", "", true),
		Group:          r.Match("VOLSD_ASG", "", true, groupName, "an Auto Scaling group name"),
		IdlePerAZ:      int(r.Int("VOLSD_IDLE_PER_AZ", 0, true, 0, 1000)),
		AZs:            r.List("VOLSD_AZS"),
		SizeGiB:        int32(r.Int("VOLSD_VOLUME_SIZE_GIB", 0, true, 1, 65536)),
		VolumeType:     r.OneOf("VOLSD_VOLUME_TYPE", "", true, "gp3", "gp2", "io1", "io2"),
		IOPS:           int32(r.Int("VOLSD_VOLUME_IOPS", 0, false, 0, 256000)),
		Throughput:     int32(r.Int("VOLSD_VOLUME_THROUGHPUT", 0, false, 0, 2000)),
		InitRate:       int32(r.Int("VOLSD_VOLUME_INIT_RATE", 0, false, 0, 300)),
		KMSKeyID:       r.Match("VOLSD_KMS_KEY_ID", "", false, kmsKey, "a KMS key ID, alias or ARN"),
		SourceSnapshot: r.Match("VOLSD_SOURCE_SNAPSHOT", "", false, snapshotID, "a snapshot ID like snap-0123456789abcdef0"),
		ReleasePolicy:  r.OneOf("VOLSD_RELEASE_POLICY", "", true, PolicyRecycle, PolicyDelete),
		DocRelease:     r.Document(events.DocRelease),
		DocStatus:      r.Document(events.DocStatus),
		RefreshBehind:  r.Int("VOLSD_REFRESH_BEHIND", 500, false, 1, 1<<40),
		RefreshAge:     r.Duration("VOLSD_REFRESH_AGE", 168*time.Hour, false, time.Minute, 10*365*24*time.Hour),
		RefreshMax:     int(r.Int("VOLSD_REFRESH_MAX", 2, false, 0, 100)),

		AutoGrowFreePercent: int(r.Int("VOLSD_AUTOGROW_FREE_PERCENT", 0, false, 0, 90)),
		AutoGrowStepGiB:     int32(r.Int("VOLSD_AUTOGROW_STEP_GIB", 10, false, 1, 65536)),
		AutoGrowMaxGiB:      int32(r.Int("VOLSD_AUTOGROW_MAX_GIB", 0, false, 0, 65536)),
		FillAlarmPercent:    int(r.Int("VOLSD_FILL_ALARM_PERCENT", 90, false, 1, 100)),
	}
	c.LogLevel = r.LogLevel("VOLSD_LOG_LEVEL")
	for _, az := range c.AZs {
		if !azName.MatchString(az) {
			r.Fail("VOLSD_AZS", "%q is not an availability zone name like eu-west-1a", az)
		}
	}
	checkVolume(r, &c)
	return c, r.Err()
}

// volumeLimits are EBS's limits per volume type (CreateVolume): size in
// GiB, and provisioned IOPS when given (gp3 takes 0 for its baseline;
// io1 and io2 require IOPS; gp2's follow its size). gp3 grew to 64 TiB,
// 80,000 IOPS and 2,000 MiB/s in 2025.
var volumeLimits = map[string]struct{ minGiB, maxGiB, minIOPS, maxIOPS int32 }{
	"gp2": {1, 16384, 0, 0},
	"gp3": {1, 65536, 3000, 80000},
	"io1": {4, 16384, 100, 64000},
	"io2": {4, 65536, 100, 256000},
}

// checkVolume applies the rules across the volume variables.
// It fills in AutoGrowMaxGiB's default (the type's maximum).
func checkVolume(r *envconfig.Reader, c *Config) {
	lim, ok := volumeLimits[c.VolumeType]
	if !ok {
		return // VOLSD_VOLUME_TYPE is reported already
	}
	if c.SizeGiB != 0 && (c.SizeGiB < lim.minGiB || c.SizeGiB > lim.maxGiB) {
		r.Fail("VOLSD_VOLUME_SIZE_GIB", "must be %d..%d GiB for %s (got %d)", lim.minGiB, lim.maxGiB, c.VolumeType, c.SizeGiB)
	}
	switch {
	case c.VolumeType == "gp2" && c.IOPS != 0:
		r.Fail("VOLSD_VOLUME_IOPS", "must be 0 for gp2: its IOPS follow its size (got %d)", c.IOPS)
	case (c.VolumeType == "io1" || c.VolumeType == "io2") && c.IOPS == 0:
		r.Fail("VOLSD_VOLUME_IOPS", "is required for %s: %d..%d", c.VolumeType, lim.minIOPS, lim.maxIOPS)
	case c.IOPS != 0 && (c.IOPS < lim.minIOPS || c.IOPS > lim.maxIOPS):
		r.Fail("VOLSD_VOLUME_IOPS", "must be %d..%d for %s, or 0 for its default (got %d)", lim.minIOPS, lim.maxIOPS, c.VolumeType, c.IOPS)
	}
	if c.Throughput != 0 && c.VolumeType != "gp3" {
		r.Fail("VOLSD_VOLUME_THROUGHPUT", "only gp3 volumes take a throughput; use 0 for %s", c.VolumeType)
	} else if c.Throughput != 0 && c.Throughput < 125 {
		r.Fail("VOLSD_VOLUME_THROUGHPUT", "must be 125..2000 MiB/s for gp3, or 0 for its default (got %d)", c.Throughput)
	}
	if c.AutoGrowMaxGiB == 0 {
		c.AutoGrowMaxGiB = lim.maxGiB
	}
	if sizeOK := c.SizeGiB >= lim.minGiB && c.SizeGiB <= lim.maxGiB; sizeOK && (c.AutoGrowMaxGiB < c.SizeGiB || c.AutoGrowMaxGiB > lim.maxGiB) {
		r.Fail("VOLSD_AUTOGROW_MAX_GIB", "must be 0 (the %s maximum) or %d..%d GiB: at least the volume size, at most what %s allows (got %d)",
			c.VolumeType, c.SizeGiB, lim.maxGiB, c.VolumeType, c.AutoGrowMaxGiB)
	}
	if c.InitRate != 0 && c.InitRate < 100 {
		r.Fail("VOLSD_VOLUME_INIT_RATE", "must be 0 (off) or 100..300 MiB/s (got %d)", c.InitRate)
	}
}

// Retryer is the SDK retryer for the control plane's EC2 client:
// awserr.NewAdaptiveRetryer (client-side rate limiting when EC2 throttles),
// at most attempts tries per call.
func Retryer(attempts int) func() aws.Retryer {
	return func() aws.Retryer { return awserr.NewAdaptiveRetryer(attempts) }
}
