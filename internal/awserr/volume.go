package awserr

import "time"

// EBSModificationCooldown is EBS's rule of one modification per volume
// per 6 hours: an earlier ModifyVolume fails with
// VolumeModificationRateExceeded.
const EBSModificationCooldown = 6 * time.Hour

// IsModificationRefused reports whether EBS refused a ModifyVolume for now:
// an earlier modification is still modifying or optimizing
// (IncorrectModificationState), or the volume was modified less than 6
// hours ago (VolumeModificationRateExceeded). The next run tries again.
func IsModificationRefused(err error) bool {
	switch Code(err) {
	case "IncorrectModificationState", "VolumeModificationRateExceeded":
		return true
	}
	return false
}
