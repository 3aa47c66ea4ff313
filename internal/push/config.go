package push

import (
	"regexp"
	"time"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/envconfig"
)

// DefaultMaxConcurrency and DefaultMaxErrors are the push command's rate
// controls when the pool sets none (the construct uses the same values).
// MaxErrors is 100%: an instance that cannot apply (a full or failing
// disk, a refused blob) must not stop the command reaching the others. A
// failed apply changes nothing on its instance (docs/agent.md), so there is
// nothing a lower threshold protects, while Run Command's rounding makes
// "25%" of fewer than 4 targets allow no error at all: one bad instance
// would cancel the command on every instance not yet reached.
const (
	DefaultMaxConcurrency = "50%"
	DefaultMaxErrors      = "100%"
)

// SendCommand's MaxConcurrency and MaxErrors patterns (the SSM API's).
var (
	maxConcurrencyPattern = regexp.MustCompile(`^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$`)
	maxErrorsPattern      = regexp.MustCompile(`^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$`)
)

// Config is the push Lambda's configuration.
type Config struct {
	Pool           string // VOLSD_POOL
	Bucket         string // VOLSD_BUCKET: the S3 origin
	DocApply       string // VOLSD_DOC_APPLY
	MaxConcurrency string // VOLSD_SSM_MAX_CONCURRENCY
	MaxErrors      string // VOLSD_SSM_MAX_ERRORS
	// MissingReceives is the receive count at which a request whose content
	// is still missing is rejected (events.PushMaxReceiveCount); tests lower it.
	MissingReceives int
	// Margin is how long before the Lambda's deadline the handler stops
	// starting work; unfinished messages are reported as failures.
	Margin time.Duration
}

// Env is what the push main reads from the environment.
type Env struct {
	Config
	envconfig.Lambda
}

// LoadEnv reads the push Lambda's configuration and returns every problem
// at once.
func LoadEnv(r *envconfig.Reader) (Env, error) {
	var e Env
	e.Pool = r.Pool()
	e.Lambda = r.Lambda()
	e.Bucket = r.String("VOLSD_BUCKET", "", true)
	e.DocApply = r.Document(events.DocApply)
	e.MaxConcurrency = r.Match("VOLSD_SSM_MAX_CONCURRENCY", DefaultMaxConcurrency, false, maxConcurrencyPattern, `a count like 10 or a percentage like 50% (SSM MaxConcurrency)`)
	e.MaxErrors = r.Match("VOLSD_SSM_MAX_ERRORS", DefaultMaxErrors, false, maxErrorsPattern, `a count like 0 or 5, or a percentage like 25% (SSM MaxErrors)`)
	e.MissingReceives = events.PushMaxReceiveCount
	e.Margin = 5 * time.Second
	return e, r.Err()
}
