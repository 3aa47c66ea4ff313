// Package push is the logic of the push Lambda (docs/design.md §3 "Push"):
// validate SQS push requests against the schema and the S3 origin, append
// them to the journal and fan volsd-Apply out to the pool's instances with
// one SendCommand per batch. The report Lambda, which folds the agents'
// reports back into the instance records, is internal/report.
package push

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/volsd/volsd/events"
)

// Message is one SQS push message decoded: the request when the body is
// valid, else the validation error, and in both cases the ID under which
// the outcome is recorded.
type Message struct {
	Request events.PushRequest
	// Err is the *events.ValidationError that makes the body invalid.
	Err error
	// RecordID keys the REQ# record: the body's requestId when it has a
	// usable one (so the sender finds the verdict on its own request),
	// otherwise a stand-in "sqs:<messageId>" (or "sqs-body:<hash>" when the
	// message ID is unusable too). It always passes
	// events.ValidateRequestID.
	RecordID string
	// Op and Path are what the body claimed, for the record of a rejection.
	Op   events.Op
	Path string
}

// DecodeMessage parses and validates one SQS body strictly
// (events.ParsePushRequest) and, when it is invalid, still recovers a
// record ID, op and path from it leniently.
func DecodeMessage(messageID, body string) Message {
	req, err := events.ParsePushRequest([]byte(body))
	if err == nil {
		return Message{Request: req, RecordID: req.RequestID, Op: req.Op, Path: req.Path}
	}
	m := Message{Err: err}
	var loose struct {
		RequestID any `json:"requestId"`
		Op        any `json:"op"`
		Path      any `json:"path"`
	}
	// The first JSON value of the body, whatever follows it.
	if len(body) <= events.MaxPushRequestBytes && json.NewDecoder(strings.NewReader(body)).Decode(&loose) == nil {
		if id, ok := loose.RequestID.(string); ok && events.ValidateRequestID("requestId", id) == nil {
			m.RecordID = id
		}
		if op, ok := loose.Op.(string); ok {
			m.Op = events.Op(op)
		}
		if p, ok := loose.Path.(string); ok {
			m.Path = p
		}
	}
	if m.RecordID == "" {
		m.RecordID = standInID(messageID, body)
	}
	return m
}

// standInID names the record of a message whose body has no usable
// requestId: the SQS message ID (stable across redeliveries) or, failing
// that, a hash of the body.
func standInID(messageID, body string) string {
	var b strings.Builder
	for _, c := range messageID {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		}
	}
	if b.Len() > 0 && b.Len() == len(messageID) && len(messageID) <= 100 {
		return "sqs:" + messageID
	}
	sum := sha256.Sum256([]byte(body))
	return "sqs-body:" + hex.EncodeToString(sum[:16])
}
