package pool

import "time"

// The lifecycle hooks as volsd's construct puts them on the group
// (infra/volsd builds them from these; volsd doctor checks a deployed
// group against them). The names are events.LaunchHookName and
// events.TerminateHookName.
const (
	// LaunchHookDefaultResult: an instance whose launch volsd could not
	// finish is abandoned, never put in service without content.
	LaunchHookDefaultResult = "ABANDON"
	// TerminateHookDefaultResult: termination goes on when the release
	// could not finish (reconcile heals the volume).
	TerminateHookDefaultResult = "CONTINUE"
	// FunctionTimeout is the lifecycle Lambda's timeout.
	FunctionTimeout = 300 * time.Second
	// AsyncRetryAttempts is how often Lambda retries a failed asynchronous
	// invocation of the EventBridge-invoked functions.
	AsyncRetryAttempts = 2
	// asyncRetryDelay is what Lambda waits before its retries of an
	// asynchronous invocation: about 1 minute, then 2 (AWS Lambda
	// developer guide, "Error handling and automatic retries").
	asyncRetryDelay = 3 * time.Minute
)

// TerminateHeartbeatMin is the shortest terminate hook heartbeat timeout
// that outlasts every try of the lifecycle Lambda: its timeout per try,
// Lambda's retry delays, and a minute for EventBridge delivery.
func TerminateHeartbeatMin() time.Duration {
	return FunctionTimeout*(1+AsyncRetryAttempts) + asyncRetryDelay + time.Minute
}
