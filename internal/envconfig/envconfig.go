// Package envconfig reads a component's configuration from environment
// variables and collects every problem into one error, so a bad deployment
// fails at cold start with a message naming each variable and what is wrong.
package envconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/volsd/volsd/events"
)

// Reader reads variables through lookup (os.LookupEnv in mains, a map in
// tests) and remembers every error.
type Reader struct {
	lookup func(string) (string, bool)
	errs   []error
}

// New returns a Reader over lookup.
func New(lookup func(string) (string, bool)) *Reader { return &Reader{lookup: lookup} }

// FromMap returns a Reader over a fixed map (for tests and the local run).
func FromMap(m map[string]string) *Reader {
	return New(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

func (r *Reader) get(name string) (string, bool) {
	v, ok := r.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// VarError is the problem of one variable: Name is the variable, Rule
// what it must be.
type VarError struct{ Name, Rule string }

func (e *VarError) Error() string { return e.Name + ": " + e.Rule }

// Fail records a problem of variable name that the typed readers cannot
// see (a rule across variables).
func (r *Reader) Fail(name, format string, args ...any) { r.fail(name, format, args...) }

func (r *Reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, &VarError{Name: name, Rule: fmt.Sprintf(format, args...)})
}

// Problems returns every VarError inside err (as Err joins them).
func Problems(err error) []*VarError {
	var out []*VarError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *VarError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// String returns the variable, or def when unset. required makes unset an error.
func (r *Reader) String(name, def string, required bool) string {
	v, ok := r.get(name)
	if !ok {
		if required {
			r.fail(name, "is required")
		}
		return def
	}
	return v
}

// Match returns the variable if it matches re (and is set when required).
func (r *Reader) Match(name, def string, required bool, re *regexp.Regexp, rule string) string {
	v := r.String(name, def, required)
	if v != "" && !re.MatchString(v) {
		r.fail(name, "must be %s (got %q)", rule, v)
	}
	return v
}

// OneOf returns the variable if it is one of allowed.
func (r *Reader) OneOf(name, def string, required bool, allowed ...string) string {
	v := r.String(name, def, required)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	if v != "" || required {
		r.fail(name, "must be one of %s (got %q)", strings.Join(allowed, ", "), v)
	}
	return v
}

// Int returns the variable as an integer within [lo, hi].
func (r *Reader) Int(name string, def int64, required bool, lo, hi int64) int64 {
	v, ok := r.get(name)
	if !ok {
		if required {
			r.fail(name, "is required")
		}
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		r.fail(name, "must be an integer (got %q)", v)
		return def
	}
	if n < lo || n > hi {
		r.fail(name, "must be between %d and %d (got %d)", lo, hi, n)
	}
	return n
}

// Duration returns the variable as a Go duration (e.g. 90s, 168h) within [lo, hi].
func (r *Reader) Duration(name string, def time.Duration, required bool, lo, hi time.Duration) time.Duration {
	v, ok := r.get(name)
	if !ok {
		if required {
			r.fail(name, "is required")
		}
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, "must be a duration like 90s or 168h (got %q)", v)
		return def
	}
	if d < lo || d > hi {
		r.fail(name, "must be between %s and %s (got %s)", lo, hi, d)
	}
	return d
}

// List returns a comma-separated variable as its non-empty items.
func (r *Reader) List(name string) []string {
	v, _ := r.get(name)
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Err returns every problem found, joined, or nil.
func (r *Reader) Err() error {
	if len(r.errs) == 0 {
		return nil
	}
	return fmt.Errorf("configuration: %w", errors.Join(r.errs...))
}

// PoolName is the rule for pool names: letters, digits, - and _, 1..64.
var PoolName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Pool reads the pool's name from VOLSD_POOL (required, PoolName).
func (r *Reader) Pool() string {
	return r.Match("VOLSD_POOL", "", true, PoolName, "letters, digits, - and _, at most 64")
}

// Lambda is what a volsd Lambda reads besides its own settings.
type Lambda struct {
	Table    string     // VOLSD_TABLE
	LogLevel slog.Level // VOLSD_LOG_LEVEL
}

// Lambda reads VOLSD_TABLE (required) and VOLSD_LOG_LEVEL.
func (r *Reader) Lambda() Lambda {
	return Lambda{Table: r.String("VOLSD_TABLE", "", true), LogLevel: r.LogLevel("VOLSD_LOG_LEVEL")}
}

// Document reads the name of the SSM document of kind (events.DocApply
// …) from events.DocumentVariable(kind), by default
// events.DefaultDocumentName(kind), and checks it against SSM's rule
// (events.DocumentNamePattern).
func (r *Reader) Document(kind string) string {
	return r.Match(events.DocumentVariable(kind), events.DefaultDocumentName(kind), false, events.DocumentNamePattern, "an SSM document name")
}

// LogLevel reads a log level (debug, info, warn, error; default info).
func (r *Reader) LogLevel(name string) slog.Level {
	switch r.OneOf(name, "info", false, "debug", "info", "warn", "error") {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
