package cli

import "time"

// SetRacyWindow lets tests shorten the racily-clean window and returns the
// previous value.
func SetRacyWindow(d time.Duration) time.Duration {
	old := racyWindow
	racyWindow = d
	return old
}
