package report

import (
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/envconfig"
)

// Config is the report Lambda's configuration.
type Config struct {
	Pool string // VOLSD_POOL
	// Documents are the volsd SSM document names (VOLSD_DOC_*); events of
	// other documents are ignored.
	Documents []string
	// InvocationWait bounds how long the handler waits for an invocation
	// to become readable and finished in GetCommandInvocation.
	InvocationWait time.Duration
	Margin         time.Duration
}

// Env is what the report main reads from the environment.
type Env struct {
	Config
	envconfig.Lambda
}

// LoadEnv reads the report Lambda's configuration and returns every
// problem at once.
func LoadEnv(r *envconfig.Reader) (Env, error) {
	var e Env
	e.Pool = r.Pool()
	e.Lambda = r.Lambda()
	e.InvocationWait = 20 * time.Second
	e.Margin = 3 * time.Second
	for _, kind := range events.DocumentKinds {
		e.Documents = append(e.Documents, r.Document(kind))
	}
	return e, r.Err()
}
