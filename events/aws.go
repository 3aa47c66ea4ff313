// Package events holds volsd's wire formats with their exact JSON names: the
// EventBridge envelope and the details volsd consumes (Auto Scaling lifecycle
// actions, schedules, SSM command status changes), the push request the
// operator sends through SQS, the manifest, the journal entry and the
// agent's report, plus their validation. Captured samples live in testdata/.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Event detail types and sources volsd consumes.
const (
	DetailTypeLaunch    = "EC2 Instance-launch Lifecycle Action"
	DetailTypeTerminate = "EC2 Instance-terminate Lifecycle Action"
	// DetailTypeLaunchSuccessful: an instance entered service (or the warm
	// pool) after its launch hooks completed.
	DetailTypeLaunchSuccessful = "EC2 Instance Launch Successful"
	DetailTypeSchedule         = "Scheduled Event"
	DetailTypeSSMStatus        = "EC2 Command Invocation Status-change Notification"
	// DetailTypeSSMCommand is the status change of a whole Run Command.
	DetailTypeSSMCommand = "EC2 Command Status-change Notification"

	SourceAutoScaling = "aws.autoscaling"
	SourceSchedule    = "aws.events"
	SourceSSM         = "aws.ssm"

	TransitionLaunching   = "autoscaling:EC2_INSTANCE_LAUNCHING"
	TransitionTerminating = "autoscaling:EC2_INSTANCE_TERMINATING"
	TestNotificationEvent = "autoscaling:TEST_NOTIFICATION"
)

// The lifecycle hooks volsd puts on the group (docs/contracts.md). Other
// hooks on the same group belong to someone else: volsd's rule does not
// match them and its handler ignores them.
const (
	LaunchHookName    = "volsd-launch"
	TerminateHookName = "volsd-terminate"
)

// HookFor returns volsd's hook name for a lifecycle transition ("" for
// any other transition).
func HookFor(transition string) string {
	switch transition {
	case TransitionLaunching:
		return LaunchHookName
	case TransitionTerminating:
		return TerminateHookName
	}
	return ""
}

// Envelope is an EventBridge event; Detail stays raw until the detail type
// says what it holds.
type Envelope struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       time.Time       `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// LifecycleAction is the detail of "EC2 Instance-launch Lifecycle Action"
// and "EC2 Instance-terminate Lifecycle Action". Origin and Destination are
// EC2, AutoScalingGroup or WarmPool.
type LifecycleAction struct {
	Origin               string `json:"Origin,omitempty"`
	Destination          string `json:"Destination,omitempty"`
	LifecycleActionToken string `json:"LifecycleActionToken"`
	AutoScalingGroupName string `json:"AutoScalingGroupName"`
	LifecycleHookName    string `json:"LifecycleHookName"`
	EC2InstanceID        string `json:"EC2InstanceId"`
	LifecycleTransition  string `json:"LifecycleTransition"`
	NotificationMetadata string `json:"NotificationMetadata,omitempty"`
}

// LaunchResult is the detail of "EC2 Instance Launch Successful": the
// fields volsd reads.
type LaunchResult struct {
	Origin               string `json:"Origin,omitempty"`
	Destination          string `json:"Destination,omitempty"`
	AutoScalingGroupName string `json:"AutoScalingGroupName"`
	EC2InstanceID        string `json:"EC2InstanceId"`
	ActivityID           string `json:"ActivityId,omitempty"`
	StatusCode           string `json:"StatusCode,omitempty"`
}

// Validate checks the fields volsd acts on.
func (r LaunchResult) Validate() error {
	switch {
	case r.AutoScalingGroupName == "":
		return invalid("AutoScalingGroupName", "is required", "")
	case !validInstanceID(r.EC2InstanceID):
		return invalid("EC2InstanceId", "must be an instance ID like i-0123456789abcdef0", r.EC2InstanceID)
	}
	return nil
}

// Warm pool locations in Origin/Destination.
const (
	LocationEC2      = "EC2"
	LocationASG      = "AutoScalingGroup"
	LocationWarmPool = "WarmPool"
)

// Validate checks the fields volsd acts on.
func (a LifecycleAction) Validate() error {
	switch {
	case a.AutoScalingGroupName == "":
		return invalid("AutoScalingGroupName", "is required", "")
	case a.LifecycleHookName == "":
		return invalid("LifecycleHookName", "is required", "")
	case a.LifecycleActionToken == "":
		return invalid("LifecycleActionToken", "is required", "")
	case !validInstanceID(a.EC2InstanceID):
		return invalid("EC2InstanceId", "must be an instance ID like i-0123456789abcdef0", a.EC2InstanceID)
	case a.LifecycleTransition != TransitionLaunching && a.LifecycleTransition != TransitionTerminating:
		return invalid("LifecycleTransition", "must be "+TransitionLaunching+" or "+TransitionTerminating, a.LifecycleTransition)
	}
	return nil
}

// IntoWarmPool reports whether a launch moves the instance into the warm
// pool (it is stopped or hibernated there, not put in service).
func (a LifecycleAction) IntoWarmPool() bool { return a.Destination == LocationWarmPool }

// FromWarmPool reports whether the instance comes out of the warm pool
// (it kept its volume while it waited).
func (a LifecycleAction) FromWarmPool() bool { return a.Origin == LocationWarmPool }

// TestNotification is what Auto Scaling sends once to a lifecycle hook's
// notification target when the hook is created. volsd ignores it.
type TestNotification struct {
	AccountID            string `json:"AccountId"`
	RequestID            string `json:"RequestId"`
	AutoScalingGroupARN  string `json:"AutoScalingGroupARN"`
	AutoScalingGroupName string `json:"AutoScalingGroupName"`
	Service              string `json:"Service"`
	Event                string `json:"Event"`
	Time                 string `json:"Time"`
}

// IsTestNotification reports whether raw (an event or its detail) is an
// autoscaling:TEST_NOTIFICATION.
func IsTestNotification(raw []byte) bool {
	var t TestNotification
	if json.Unmarshal(raw, &t) == nil && t.Event == TestNotificationEvent {
		return true
	}
	var e Envelope
	if json.Unmarshal(raw, &e) == nil && len(e.Detail) > 0 && json.Unmarshal(e.Detail, &t) == nil {
		return t.Event == TestNotificationEvent
	}
	return false
}

// CommandStatus is the detail of "EC2 Command Invocation Status-change
// Notification" (one per instance of a Run Command).
type CommandStatus struct {
	CommandID         string `json:"command-id"`
	DocumentName      string `json:"document-name"`
	InstanceID        string `json:"instance-id"`
	RequestedDateTime string `json:"requested-date-time"`
	Status            string `json:"status"`
	StatusDetails     string `json:"status-details"`
}

// Validate checks the fields volsd acts on.
func (c CommandStatus) Validate() error {
	switch {
	case c.CommandID == "":
		return invalid("command-id", "is required", "")
	case c.DocumentName == "":
		return invalid("document-name", "is required", "")
	case !validInstanceID(c.InstanceID):
		return invalid("instance-id", "must be an instance ID like i-0123456789abcdef0", c.InstanceID)
	case c.Status == "":
		return invalid("status", "is required", "")
	}
	return nil
}

// InvocationFailureStatuses are the final statuses of a command's
// invocation on one instance other than Success.
var InvocationFailureStatuses = []string{"Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated", "DeliveryTimedOut", "ExecutionTimedOut"}

// CommandFinalStatuses are the final statuses of a whole command (every
// invocation finished).
var CommandFinalStatuses = []string{"Success", "Failed", "Cancelled", "TimedOut"}

// Terminal reports whether the invocation has finished.
func (c CommandStatus) Terminal() bool {
	return c.Status == "Success" || slices.Contains(InvocationFailureStatuses, c.Status)
}

// CommandSummary is the detail of "EC2 Command Status-change Notification"
// (one per Run Command, whatever its number of instances).
type CommandSummary struct {
	CommandID         string `json:"command-id"`
	DocumentName      string `json:"document-name"`
	RequestedDateTime string `json:"requested-date-time"`
	Status            string `json:"status"`
}

// Validate checks the fields volsd acts on.
func (c CommandSummary) Validate() error {
	switch {
	case c.CommandID == "":
		return invalid("command-id", "is required", "")
	case c.DocumentName == "":
		return invalid("document-name", "is required", "")
	case c.Status == "":
		return invalid("status", "is required", "")
	}
	return nil
}

// Terminal reports whether the command has finished (every invocation).
func (c CommandSummary) Terminal() bool {
	return slices.Contains(CommandFinalStatuses, c.Status)
}

// ErrWrongDetailType is returned by Decode when the envelope carries another
// kind of event.
var ErrWrongDetailType = errors.New("unexpected detail-type")

// DecodeDetail decodes an envelope of the given detail type into detail.
func DecodeDetail(raw []byte, detailType string, detail any) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, invalid("event", "is not an EventBridge event: "+err.Error(), "")
	}
	if e.DetailType != detailType {
		return e, fmt.Errorf("%w: got %q, want %q", ErrWrongDetailType, e.DetailType, detailType)
	}
	if err := json.Unmarshal(e.Detail, detail); err != nil {
		return e, invalid("detail", "does not match "+detailType+": "+err.Error(), "")
	}
	return e, nil
}

func validInstanceID(s string) bool {
	if len(s) < 10 || len(s) > 19 || s[:2] != "i-" {
		return false
	}
	for i := 2; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// AgentReport is the JSON object volsd-agent prints as its last stdout line.
// The report Lambda reads it from the SSM invocation output.
type AgentReport struct {
	Command  string  `json:"command"` // up, apply, freeze, thaw, release, status
	Instance string  `json:"instance"`
	Volume   string  `json:"volume"`
	Device   string  `json:"device"`
	Mount    string  `json:"mount"`
	Seq      int64   `json:"seq"`      // watermark after the command
	Head     int64   `json:"head"`     // journal head the agent saw
	Applied  int     `json:"applied"`  // entries applied by this command
	Bytes    int64   `json:"bytes"`    // bytes fetched from the origin
	Duration float64 `json:"duration"` // seconds
	// SizeBytes, UsedBytes and FreeBytes are the mounted filesystem's
	// size, the bytes in use and the bytes free to an unprivileged writer
	// (statfs) after the command; 0 when not mounted.
	SizeBytes int64  `json:"sizeBytes,omitempty"`
	UsedBytes int64  `json:"usedBytes,omitempty"`
	FreeBytes int64  `json:"freeBytes,omitempty"`
	Error     string `json:"error,omitempty"`
	// ErrorKind classifies Error: "retryable", "bad-input", "not-ready" or
	// ErrorKindBadContent.
	ErrorKind string `json:"errorKind,omitempty"`
}

// ErrorKindBadContent is the errorKind of an apply that refused a journal
// entry as bad content (hash or size mismatch, blob or manifest missing,
// an entry that breaks the rules): every agent refuses it the same way, so
// the pool is stalled at that seq until an operator repairs it (docs/design.md
// §5 "Content safety"; `volsd repair`).
const ErrorKindBadContent = "bad-content"

// RecordedError is the error the report Lambda records for an instance:
// "<errorKind>: <error>" (or the error alone without a kind).
func (r AgentReport) RecordedError() string {
	if r.ErrorKind == "" {
		return r.Error
	}
	return r.ErrorKind + ": " + r.Error
}

// StalledBy says whether an instance's recorded error (RecordedError) is a
// refused entry, and returns the agent's error without the kind.
func StalledBy(recorded string) (string, bool) {
	return strings.CutPrefix(recorded, ErrorKindBadContent+": ")
}

// ParseAgentReport finds the report in an agent's stdout: its last non-empty
// line, which must be a JSON object. GetCommandInvocation returns only the
// first 24,000 characters of stdout, so the agent writes its human lines to
// stderr and keeps stdout to the report alone.
func ParseAgentReport(stdout string) (AgentReport, error) {
	var r AgentReport
	lines := strings.Split(stdout, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if line == "" {
			continue
		}
		if line[0] != '{' {
			return r, invalid("stdout", "last line is not a JSON report", line)
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return r, invalid("stdout", "last line is not a valid report: "+err.Error(), line)
		}
		return r, nil
	}
	return r, invalid("stdout", "is empty; no report", "")
}

// ScheduledDetail is the (empty) detail of a scheduled event.
type ScheduledDetail struct{}

func asError(err error, target any) bool { return errors.As(err, target) }
