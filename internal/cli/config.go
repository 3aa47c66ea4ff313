// Package cli is the operator CLI `volsd`: push files and trees to a pool
// through the S3 origin and the SQS push queue, wait for every running
// instance to apply them, and show the pool's state. cmd/volsd wires it.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/volsd/volsd/internal/envconfig"
)

// Config says which pool the CLI works on and where its parts are.
type Config struct {
	Pool     string `json:"pool"`
	Table    string `json:"table"`
	Bucket   string `json:"bucket"`
	QueueURL string `json:"queueUrl"`
	Region   string `json:"region"`
	// What volsd doctor checks besides (the stack outputs of the same names).
	Group                   string `json:"autoScalingGroupName,omitempty"`
	DeadLetterQueueURL      string `json:"deadLetterQueueUrl,omitempty"`
	EventDeadLetterQueueURL string `json:"eventDeadLetterQueueUrl,omitempty"`
	DocumentPrefix          string `json:"documentPrefix,omitempty"`
	Rules                   string `json:"rules,omitempty"`
}

// Environment variables the CLI reads (flags override them; they override
// the stack outputs file).
const (
	EnvPool     = "VOLSD_POOL"
	EnvTable    = "VOLSD_TABLE"
	EnvBucket   = "VOLSD_BUCKET"
	EnvQueueURL = "VOLSD_QUEUE_URL"
	EnvRegion   = "AWS_REGION"
	EnvOutputs  = "VOLSD_OUTPUTS"
	EnvStack    = "VOLSD_STACK"
)

// Output keys of the volsd stack (docs/contracts.md, infra/volsd.OutputNames).
const (
	outPool   = "PoolName"
	outTable  = "TableName"
	outBucket = "BucketName"
	outQueue  = "QueueUrl"
	outRegion = "Region"
	// Read by volsd doctor.
	outGroup          = "AutoScalingGroupName"
	outDLQ            = "DeadLetterQueueUrl"
	outEventDLQ       = "EventDeadLetterQueueUrl"
	outDocumentPrefix = "DocumentPrefix"
	outRules          = "Rules"
)

// ReadOutputs reads the file `cdk deploy --outputs-file` writes
// ({"<stack>": {"PoolName": …, "TableName": …, …}}) and returns the
// configuration of stack, or of the only stack that has a PoolName output
// when stack is empty.
func ReadOutputs(path, stack string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read stack outputs: %w", err)
	}
	var stacks map[string]map[string]any
	if err := json.Unmarshal(raw, &stacks); err != nil {
		return Config{}, fmt.Errorf("stack outputs %s: not the JSON object `cdk deploy --outputs-file` writes: %w", path, err)
	}
	var names []string
	for name, outs := range stacks {
		if _, ok := outs[outPool]; ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	switch {
	case stack != "":
		if _, ok := stacks[stack]; !ok {
			return Config{}, fmt.Errorf("stack outputs %s: no stack %q (stacks with volsd outputs: %s)", path, stack, strings.Join(names, ", "))
		}
	case len(names) == 1:
		stack = names[0]
	case len(names) == 0:
		return Config{}, fmt.Errorf("stack outputs %s: no stack has a %s output", path, outPool)
	default:
		return Config{}, fmt.Errorf("stack outputs %s: several volsd stacks (%s); choose one with --stack", path, strings.Join(names, ", "))
	}
	outs := stacks[stack]
	get := func(k string) string {
		if s, ok := outs[k].(string); ok {
			return s
		}
		return ""
	}
	return Config{Pool: get(outPool), Table: get(outTable), Bucket: get(outBucket), QueueURL: get(outQueue), Region: get(outRegion),
		Group: get(outGroup), DeadLetterQueueURL: get(outDLQ), EventDeadLetterQueueURL: get(outEventDLQ),
		DocumentPrefix: get(outDocumentPrefix), Rules: get(outRules)}, nil
}

// Resolve merges the configuration: flags first, then the environment,
// then the stack outputs file (from --outputs or VOLSD_OUTPUTS).
func Resolve(flags Config, outputs, stack string, lookup func(string) (string, bool)) (Config, error) {
	env := func(k string) string {
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	var file Config
	if outputs == "" {
		outputs = env(EnvOutputs)
	}
	if stack == "" {
		stack = env(EnvStack)
	}
	if outputs != "" {
		var err error
		if file, err = ReadOutputs(outputs, stack); err != nil {
			return Config{}, err
		}
	}
	pick := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	return Config{
		Pool:     pick(flags.Pool, env(EnvPool), file.Pool),
		Table:    pick(flags.Table, env(EnvTable), file.Table),
		Bucket:   pick(flags.Bucket, env(EnvBucket), file.Bucket),
		QueueURL: pick(flags.QueueURL, env(EnvQueueURL), file.QueueURL),
		Region:   pick(flags.Region, env(EnvRegion), file.Region),

		Group:                   pick(flags.Group, file.Group),
		DeadLetterQueueURL:      pick(flags.DeadLetterQueueURL, file.DeadLetterQueueURL),
		EventDeadLetterQueueURL: pick(flags.EventDeadLetterQueueURL, file.EventDeadLetterQueueURL),
		DocumentPrefix:          pick(flags.DocumentPrefix, file.DocumentPrefix),
		Rules:                   pick(flags.Rules, file.Rules),
	}, nil
}

// Need names the settings a command needs.
type Need int

// Settings a command may need.
const (
	NeedPool Need = 1 << iota
	NeedTable
	NeedBucket
	NeedQueue
	NeedGroup
)

// ErrConfig marks a missing or bad setting (exit code 2).
var ErrConfig = errors.New("configuration")

// Check returns an error naming every missing setting and where to set it.
func (c Config) Check(need Need) error {
	var missing []string
	add := func(n Need, have, what, flag, env string) {
		if need&n != 0 && have == "" {
			missing = append(missing, fmt.Sprintf("%s (--%s, %s or --outputs)", what, flag, env))
		}
	}
	add(NeedPool, c.Pool, "pool", "pool", EnvPool)
	add(NeedTable, c.Table, "table", "table", EnvTable)
	add(NeedBucket, c.Bucket, "bucket", "bucket", EnvBucket)
	add(NeedQueue, c.QueueURL, "queue URL", "queue-url", EnvQueueURL)
	if need&NeedGroup != 0 && c.Group == "" {
		missing = append(missing, "Auto Scaling group (--asg or the "+outGroup+" output in --outputs)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", ErrConfig, strings.Join(missing, "; "))
	}
	if need&NeedPool != 0 && !envconfig.PoolName.MatchString(c.Pool) {
		return fmt.Errorf("%w: pool %q must be letters, digits, - and _, at most 64", ErrConfig, c.Pool)
	}
	return nil
}
