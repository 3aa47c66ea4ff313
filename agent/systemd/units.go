// Package systemd holds volsd-agent's systemd units, so that the packages
// (agent/packaging) and install.sh install the same files.
package systemd

import _ "embed"

// The unit files, by name.
var (
	//go:embed volsd-agent.service
	AgentService string
	//go:embed volsd-apply.service
	ApplyService string
	//go:embed volsd-apply.timer
	ApplyTimer string
)

// Units maps each unit's file name to its content.
func Units() map[string]string {
	return map[string]string{
		"volsd-agent.service": AgentService,
		"volsd-apply.service": ApplyService,
		"volsd-apply.timer":   ApplyTimer,
	}
}
