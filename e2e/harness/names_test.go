package harness

import (
	"regexp"
	"strings"
	"testing"
)

// S3's bucket naming rules: 3..63 of a-z, 0-9, '.', '-', starting and
// ending with a letter or digit.
var bucketRule = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

func TestBucketNameFitsS3ForLongPools(t *testing.T) {
	for _, pool := range []string{"web", "e2e-testlaunchfailsfastwithoutrsync-1a2b3c4d", "E2E_" + strings.Repeat("x", 60) + "-9f8e7d6c"} {
		b := bucketName(pool, "0123abcd")
		if !bucketRule.MatchString(b) {
			t.Errorf("pool %q: bucket %q is not a valid S3 bucket name", pool, b)
		}
		if tail := strings.ToLower(pool[max(0, len(pool)-8):]); !strings.Contains(b, tail) {
			t.Errorf("pool %q: bucket %q lost the pool's unique end %q", pool, b, tail)
		}
	}
}
