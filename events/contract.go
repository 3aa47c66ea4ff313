package events

import (
	"regexp"
	"strings"
)

// Contract names: the values the CDK construct (infra/volsd), the Lambdas,
// the agent, the CLI and the tests must agree on, each defined here once
// (docs/contracts.md, docs/design.md "Where each rule lives").
// infra/volsd's TestTemplateAndCodeAgree checks that the synthesized
// template carries the same values the code reads.

// Tags volsd reads and writes.
const (
	// TagPool carries the pool name on every volume and snapshot volsd
	// creates and on the instances of the pool's group: Run Command
	// targets it, the Lambdas' IAM conditions require it, the agent finds
	// its volume by it.
	TagPool = "volsd:pool"
	// TagSeq carries the journal seq a snapshot holds.
	TagSeq = "volsd:seq"
	// TagName is EC2's display-name tag; volsd sets it to "volsd-<pool>"
	// on what it creates.
	TagName = "Name"
	// TagGroup is the tag Auto Scaling puts on every instance of a group.
	// Only Auto Scaling can set a tag with the aws: prefix, so the
	// Lambdas' IAM conditions take it as the trust anchor for instances:
	// TagPool alone can be put on any instance by whoever may tag it.
	TagGroup = "aws:autoscaling:groupName"
)

// SSM document kinds. The document of kind k is named DocumentPrefix + k
// (DefaultDocumentPrefix unless the pool sets its own) and its name
// reaches the Lambdas in DocumentVariable(k).
const (
	DocApply   = "Apply"
	DocFreeze  = "Freeze"
	DocThaw    = "Thaw"
	DocRelease = "Release"
	DocStatus  = "Status"
)

// DocumentKinds lists every document kind in a fixed order (the order of
// the construct's resources and of doctor's checks).
var DocumentKinds = []string{DocApply, DocFreeze, DocThaw, DocRelease, DocStatus}

// DefaultDocumentPrefix prefixes the SSM document names of a pool that
// sets no DocumentPrefix.
const DefaultDocumentPrefix = "volsd-"

// DefaultDocumentName is the name of the document of kind under
// DefaultDocumentPrefix ("volsd-Apply").
func DefaultDocumentName(kind string) string { return DefaultDocumentPrefix + kind }

// DocumentVariable is the Lambda environment variable that carries the
// name of the document of kind (VOLSD_DOC_APPLY for Apply).
func DocumentVariable(kind string) string { return "VOLSD_DOC_" + strings.ToUpper(kind) }

// DocumentNamePattern is SSM's rule for a document name.
var DocumentNamePattern = regexp.MustCompile(`^[a-zA-Z0-9_\-.]{3,128}$`)

// PushMaxReceiveCount is the push queue's maxReceiveCount: after this many
// receives SQS moves a push message to the dead-letter queue. The push
// Lambda rejects a request whose blobs or manifest are still missing on
// the receive with this count (SQS ApproximateReceiveCount), so the
// rejection is recorded on the last delivery before the message leaves.
const PushMaxReceiveCount = 5
