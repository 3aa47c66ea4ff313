// Package agent is volsd-agent: on each instance of a pool it mounts the
// pool volume, catches up with the journal, applies journal entries with
// rsync, freezes the filesystem for snapshots and releases the volume
// (docs/design.md §3). Every command ends with one JSON events.AgentReport as
// its last stdout line and an exit code from docs/contracts.md.
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/awserr"
)

// Exit codes (docs/contracts.md).
const (
	ExitOK        = 0 // success
	ExitRetryable = 1 // retryable failure
	ExitBadInput  = 2 // bad arguments, hostile content, hash mismatch
	ExitNotReady  = 3 // no volume, not mounted, frozen, released
)

// Kind classifies a failure; it is the report's errorKind.
type Kind string

// The kinds of failure.
const (
	KindRetryable Kind = "retryable"
	KindBadInput  Kind = "bad-input"
	KindNotReady  Kind = "not-ready"
	// KindBadContent is a journal entry refused as bad input (hash or size
	// mismatch, missing from the origin past the bound, rules broken):
	// exit 2 for apply, like bad input, but up and the timer keep retrying
	// it with a capped backoff, for an operator can repair the origin.
	KindBadContent Kind = events.ErrorKindBadContent
)

// ExitCode returns the exit code of a failure of kind k.
func (k Kind) ExitCode() int {
	switch k {
	case KindBadInput, KindBadContent:
		return ExitBadInput
	case KindNotReady:
		return ExitNotReady
	default:
		return ExitRetryable
	}
}

// Error is a failure with its kind. Its message says what was wrong.
// Local marks bad input that is this instance's own state (a filesystem
// mounted inside the tree), not the entry's: it does not stall the pool.
type Error struct {
	Kind  Kind
	Err   error
	Local bool
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func badInput(format string, args ...any) error {
	return &Error{Kind: KindBadInput, Err: fmt.Errorf(format, args...)}
}

// localBadInput is bad input of this instance's own making (see Error.Local).
func localBadInput(format string, args ...any) error {
	return &Error{Kind: KindBadInput, Err: fmt.Errorf(format, args...), Local: true}
}

// isLocal reports whether err's kind comes from this instance's own state.
func isLocal(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Local
}

func notReady(format string, args ...any) error {
	return &Error{Kind: KindNotReady, Err: fmt.Errorf(format, args...)}
}

func retryable(format string, args ...any) error {
	return &Error{Kind: KindRetryable, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the kind of err: the kind of the outermost *Error in its
// chain; a ValidationError from events is bad input; an AWS error is as
// awsKind says; anything else is retryable.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		return KindBadInput
	}
	return awsKind(err, KindRetryable)
}

// awsKind is the kind of a failed AWS call, as internal/awserr classifies
// it: the caller decides what a missing resource means; a refused call
// (access denied, a request no retry changes) is bad configuration, exit 2
// — retrying it would fail the same way forever; everything else
// (throttling, server errors, timeouts) can be retried.
func awsKind(err error, notFound Kind) Kind {
	switch {
	case awserr.IsNotFound(err):
		return notFound
	case awserr.IsRefused(err):
		return KindBadInput
	}
	return KindRetryable
}

// awsFailure is the agent error of a failed AWS call: err wrapped with what
// the call was for, of the kind awsKind says (a missing resource is
// retryable). A refused call is this instance's own configuration (its
// role, its settings), not a journal entry's fault: Local, it does not
// stall the pool.
func awsFailure(err error, format string, args ...any) error {
	k := awsKind(err, KindRetryable)
	return &Error{Kind: k, Err: fmt.Errorf(format+": %w", append(args, err)...), Local: k == KindBadInput}
}

// describe is the report's message for err: its text, and for a call the
// instance's role may not make, which permission to grant.
func describe(err error) string {
	msg := err.Error()
	if !awserr.IsAccessDenied(err) {
		return msg
	}
	if p := awserr.Permission(err); p != "" {
		return msg + " (the instance role lacks " + p + ": grant it in the role's policy, then run the command again)"
	}
	return msg + " (the instance role lacks a permission: grant it in the role's policy, then run the command again)"
}

// Report is the events.AgentReport a command prints.
type Report = events.AgentReport

// WriteReport prints r as one JSON line: it must be the last stdout line.
func WriteReport(w io.Writer, r Report) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// finish fills the error fields of r from err and returns the exit code.
func finish(r *Report, err error) int {
	if err == nil {
		return ExitOK
	}
	k := KindOf(err)
	r.Error = describe(err)
	r.ErrorKind = string(k)
	return k.ExitCode()
}
