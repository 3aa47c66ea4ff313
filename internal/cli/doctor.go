package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/volsd/volsd/internal/doctor"
	"github.com/volsd/volsd/internal/snapshot"
	"github.com/volsd/volsd/internal/store"
)

// ErrProblems says volsd doctor found problems (exit code 3).
var ErrProblems = errors.New("problems found")

// DoctorClients builds doctor's clients from an AWS configuration; the
// snapshot age is read from the pool's table.
func DoctorClients(awsCfg aws.Config, st *store.Store, pool string) doctor.Clients {
	return doctor.Clients{
		Groups:    autoscaling.NewFromConfig(awsCfg),
		Rules:     eventbridge.NewFromConfig(awsCfg),
		Managed:   ssm.NewFromConfig(awsCfg),
		Queues:    sqs.NewFromConfig(awsCfg),
		Instances: ec2.NewFromConfig(awsCfg),
		Roles:     iam.NewFromConfig(awsCfg),
		SnapshotAge: func(ctx context.Context) (time.Duration, error) {
			return snapshot.Age(ctx, st, pool, time.Now())
		},
	}
}

// Doctor runs volsd doctor's checks on the configured pool.
func Doctor(ctx context.Context, cfg Config, c doctor.Clients) (doctor.Report, error) {
	rules, err := doctor.ParseRules(cfg.Rules)
	if err != nil {
		return doctor.Report{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return doctor.New(doctor.Config{
		Pool: cfg.Pool, Group: cfg.Group, Table: cfg.Table, Bucket: cfg.Bucket, DocumentPrefix: cfg.DocumentPrefix,
		DeadLetterQueueURL: cfg.DeadLetterQueueURL, EventDeadLetterQueueURL: cfg.EventDeadLetterQueueURL, Rules: rules,
	}, c).Run(ctx)
}

// RenderDoctor prints the report: each check with ok or its problems, each
// problem with its fix.
func RenderDoctor(w io.Writer, r doctor.Report) {
	fmt.Fprintf(w, "pool %s, group %s\n", r.Pool, r.Group)
	for _, c := range r.Checks {
		if c.OK || c.Skipped {
			fmt.Fprintf(w, "  %-8s %-18s %s\n", map[bool]string{true: "ok", false: "SKIPPED"}[c.OK], c.Name, c.Detail)
			continue
		}
		fmt.Fprintf(w, "  PROBLEM  %s\n", c.Name)
		for _, f := range c.Findings {
			fmt.Fprintf(w, "           - %s\n", f.Problem)
			if f.Fix != "" {
				fmt.Fprintf(w, "             fix: %s\n", f.Fix)
			}
		}
	}
	if n := r.Problems(); n == 1 {
		fmt.Fprintln(w, "1 problem")
	} else if n > 1 {
		fmt.Fprintf(w, "%d problems\n", n)
	} else {
		fmt.Fprintln(w, "no problems")
	}
}
