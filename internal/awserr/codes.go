package awserr

import (
	"errors"
	"strings"

	"github.com/aws/smithy-go"
)

// Named predicates for the AWS error codes a caller decides on. Every
// comparison of an error code lives here (TestNoCodeComparisonsOutside
// keeps it so); callers ask by meaning.

// IsInvocationMissing reports whether GetCommandInvocation found no
// invocation for the command and instance (InvocationDoesNotExist): SSM
// has not registered it yet, or it never will.
func IsInvocationMissing(err error) bool { return Code(err) == "InvocationDoesNotExist" }

// IsSnapshotNotFound reports whether a call naming a snapshot (CreateVolume
// from it, DeleteSnapshot) failed because the snapshot does not exist.
func IsSnapshotNotFound(err error) bool { return Code(err) == "InvalidSnapshot.NotFound" }

// IsVolumeNotFound reports whether a call naming a volume failed because
// the volume does not exist (or EC2 does not show it yet).
func IsVolumeNotFound(err error) bool { return Code(err) == "InvalidVolume.NotFound" }

// IsInstanceNotFound reports whether a call naming an instance failed
// because the instance does not exist (or EC2 does not show it yet).
func IsInstanceNotFound(err error) bool { return Code(err) == "InvalidInstanceID.NotFound" }

// IsIncorrectInstanceState reports whether a call failed because the
// instance is not in a state that allows it (pending, stopping, …).
func IsIncorrectInstanceState(err error) bool { return Code(err) == "IncorrectInstanceState" }

// IsClientTokenReused reports whether EC2 refused a client token because an
// earlier call with the same token had other parameters
// (IdempotentParameterMismatch): use the next token.
func IsClientTokenReused(err error) bool { return Code(err) == "IdempotentParameterMismatch" }

// IsAlreadyDetached reports whether DetachVolume failed with EC2's
// IncorrectState: the volume is not attached (available) or already
// detaching. For a caller that wanted it detached, that is done. (Only that
// code: VolumeInUse and the rest of IsIncorrectState's family are not.)
func IsAlreadyDetached(err error) bool { return Code(err) == "IncorrectState" }

// IsTableExists reports whether CreateTable failed because the table exists
// already (ResourceInUseException).
func IsTableExists(err error) bool { return Code(err) == "ResourceInUseException" }

// IsTTLUnchanged reports whether UpdateTimeToLive was refused as a
// ValidationException, which DynamoDB returns when TTL is already enabled
// on the table ("TimeToLive is already enabled").
func IsTTLUnchanged(err error) bool { return Code(err) == "ValidationException" }

// IsItemConditionFailed reports whether err is a cancelled DynamoDB
// transaction whose item i (0-based, in request order) failed its
// condition (cancellation reason ConditionalCheckFailed).
func IsItemConditionFailed(err error, i int) bool {
	reasons := CancellationReasons(err)
	return i >= 0 && i < len(reasons) && reasons[i] == "ConditionalCheckFailed"
}

// credentialCodes say the request's credentials or signature were not
// accepted. Instance-role and Lambda credentials rotate and clocks get
// corrected, so though retrying the same request will not help, the next
// run may well succeed: they are not IsRefused.
var credentialCodes = set(
	"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidSignatureException",
	"SignatureDoesNotMatch", "RequestTimeTooSkewed", "InvalidClientTokenId",
	"UnrecognizedClientException", "IncompleteSignature",
)

// IsRefused reports whether the service refused the call for what it asks
// or who asks: access denied (IsAccessDenied), or another client error
// that no retry changes (a bad parameter, a resource in the wrong
// configuration) — Classify's Invalid, except credentials that may still
// refresh. For a caller run again and again (the agent), that is bad
// configuration: stop and say so instead of retrying forever.
func IsRefused(err error) bool {
	if IsAccessDenied(err) {
		return true
	}
	if Classify(err) != Invalid || credentialCodes[Code(err)] {
		return false
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorFault() != smithy.FaultServer
}

// iamPrefix maps an SDK service ID to its IAM action prefix.
var iamPrefix = map[string]string{
	"Auto Scaling": "autoscaling", "DynamoDB": "dynamodb", "EC2": "ec2", "S3": "s3",
	"SSM": "ssm", "SQS": "sqs", "Lambda": "lambda", "EventBridge": "events", "IAM": "iam",
	"CloudWatch": "cloudwatch", "STS": "sts",
}

// Permission returns the IAM action of the failed call err is of, as
// "dynamodb:Query", from the SDK's operation error ("" when err carries
// none): what a role lacks when the call is denied.
func Permission(err error) string {
	var oe *smithy.OperationError
	if !errors.As(err, &oe) || oe.OperationName == "" {
		return ""
	}
	p, ok := iamPrefix[oe.ServiceID]
	if !ok {
		p = strings.ToLower(strings.ReplaceAll(oe.ServiceID, " ", ""))
	}
	return p + ":" + oe.OperationName
}
