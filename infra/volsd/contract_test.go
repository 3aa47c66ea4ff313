package volsd_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/volsd"
	"github.com/volsd/volsd/internal/envconfig"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/push"
	"github.com/volsd/volsd/internal/report"
	"github.com/volsd/volsd/internal/snapshot"
)

// loadedFunction is what one Lambda's own configuration loader makes of
// the environment the template gives it, and which variables it read.
type loadedFunction struct {
	env  map[string]string
	read map[string]bool
	err  error

	pool     pool.Config
	push     push.Env
	report   report.Env
	snapshot snapshot.Env
}

func loadFunction(t *testing.T, env map[string]string, name string) loadedFunction {
	t.Helper()
	lf := loadedFunction{env: env, read: map[string]bool{}}
	r := envconfig.New(func(k string) (string, bool) {
		lf.read[k] = true
		v, ok := env[k]
		return v, ok
	})
	switch name {
	case "lifecycle", "reconcile":
		lf.pool, lf.err = pool.LoadConfig(r)
	case "push":
		lf.push, lf.err = push.LoadEnv(r)
	case "report":
		lf.report, lf.err = report.LoadEnv(r)
	case "snapshot":
		lf.snapshot, lf.err = snapshot.LoadEnv(r)
	default:
		t.Fatalf("no loader for function %q", name)
	}
	return lf
}

// TestTemplateAndCodeAgree reads, from the synthesized template and from
// the code that runs against it, every value the two must hold equal
// (docs/design.md "Where each rule lives"): the push queue's
// maxReceiveCount and the push Lambda's rejection count, the SSM document
// names and the names the Lambdas send and accept, the tag keys in the IAM
// conditions and the tags the code writes and filters by, and the
// environment variable names the construct sets and the Lambdas read.
func TestTemplateAndCodeAgree(t *testing.T) {
	for stack, poolName := range map[string]string{stackName: testPool, defaultName: "media"} {
		t.Run(stack, func(t *testing.T) {
			tmpl := template(t, stack)
			fns := map[string]loadedFunction{}
			for _, name := range volsd.FunctionNames {
				env := templateEnvironment(t, tmpl, "Pool"+titled(name))
				fns[name] = loadFunction(t, env, name)
				if err := fns[name].err; err != nil {
					t.Errorf("%s: its loader refuses the template's environment: %v", name, err)
				}
			}

			// Every variable the construct sets is one the Lambda reads
			// (a misspelt name would be silently replaced by the default).
			for _, name := range volsd.FunctionNames {
				for k := range fns[name].env {
					if !fns[name].read[k] {
						t.Errorf("%s: the template sets %s, which the %s Lambda never reads", name, k, name)
					}
				}
			}

			// The push queue moves a message to the DLQ after exactly as
			// many receives as the push Lambda waits for missing blobs.
			q := one(t, tmpl, "AWS::SQS::Queue", "PushQueue")
			rp, _ := q.Properties["RedrivePolicy"].(map[string]any)
			maxReceive, _ := rp["maxReceiveCount"].(float64)
			if got := fns["push"].push.MissingReceives; int(maxReceive) != got || got != events.PushMaxReceiveCount {
				t.Errorf("push queue maxReceiveCount %v, push Lambda rejects missing content at receive %d, events.PushMaxReceiveCount %d: must be equal",
					rp["maxReceiveCount"], got, events.PushMaxReceiveCount)
			}

			// The documents the template creates are the ones each Lambda
			// sends (and the report Lambda accepts).
			docs := map[string]string{}
			for _, kind := range events.DocumentKinds {
				d := one(t, tmpl, "AWS::SSM::Document", "Document"+kind)
				docs[kind], _ = d.Properties["Name"].(string)
			}
			var all []string
			for _, kind := range events.DocumentKinds {
				all = append(all, docs[kind])
			}
			for _, c := range []struct {
				function, kind, loaded string
			}{
				{"push", events.DocApply, fns["push"].push.DocApply},
				{"snapshot", events.DocFreeze, fns["snapshot"].snapshot.DocFreeze},
				{"snapshot", events.DocThaw, fns["snapshot"].snapshot.DocThaw},
				{"lifecycle", events.DocRelease, fns["lifecycle"].pool.DocRelease},
				{"lifecycle", events.DocStatus, fns["lifecycle"].pool.DocStatus},
			} {
				if c.loaded != docs[c.kind] {
					t.Errorf("%s Lambda sends document %q, the template names the %s document %q", c.function, c.loaded, c.kind, docs[c.kind])
				}
			}
			if got := fns["report"].report.Documents; !slices.Equal(got, all) {
				t.Errorf("report Lambda accepts documents %q, the template has %q", got, all)
			}

			// Every tag key in the Lambdas' IAM conditions is one the code
			// writes or AWS sets, and the pool tag is among them with the
			// pool's name.
			st, err := tmpl.AllStatements()
			if err != nil {
				t.Fatal(err)
			}
			poolTagged := 0
			for _, s := range st {
				for _, keys := range s.Conditions {
					for key, values := range keys {
						i := strings.Index(strings.ToLower(key), "tag/")
						if i < 0 {
							continue
						}
						tag := key[i+len("tag/"):]
						switch tag {
						case events.TagPool:
							poolTagged++
							if len(values) != 1 || values[0] != poolName {
								t.Errorf("statement %s: %s = %q, want the pool's name", s.Sid, key, values)
							}
						case events.TagGroup:
						default:
							t.Errorf("statement %s conditions on tag %q, which is neither events.TagPool %q nor events.TagGroup %q", s.Sid, tag, events.TagPool, events.TagGroup)
						}
					}
				}
			}
			if poolTagged == 0 {
				t.Errorf("no IAM condition on the %s tag", events.TagPool)
			}
		})
	}
}
