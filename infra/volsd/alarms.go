package volsd

import (
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawscloudwatch"
	"github.com/aws/jsii-runtime-go"

	"github.com/volsd/volsd/internal/metrics"
	"github.com/volsd/volsd/internal/snapshot"
)

// MetricsNamespace is the CloudWatch namespace of volsd's EMF metrics.
const MetricsNamespace = metrics.Namespace

// PushLagThresholdSeconds is the age of the oldest push message that raises the push lag alarm.
const PushLagThresholdSeconds = 300

func (p *Pool) alarm(id, description string, metric awscloudwatch.IMetric, threshold float64,
	op awscloudwatch.ComparisonOperator, periods float64, missing awscloudwatch.TreatMissingData) awscloudwatch.Alarm {
	a := awscloudwatch.NewAlarm(p.Construct, jsii.String(id), &awscloudwatch.AlarmProps{
		AlarmDescription:   jsii.String("volsd " + p.props.PoolName + ": " + description),
		Metric:             metric,
		Threshold:          f(threshold),
		ComparisonOperator: op,
		EvaluationPeriods:  f(periods),
		TreatMissingData:   missing,
	})
	for _, action := range p.props.AlarmActions {
		a.AddAlarmAction(action)
	}
	p.Alarms = append(p.Alarms, a)
	return a
}

// idleVolumesMetric is the smallest IdleVolumes count over the pool's AZs (a
// Metrics Insights query: the AZs are not known at synth time for an existing group).
func (p *Pool) idleVolumesMetric() awscloudwatch.IMetric {
	return awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String(fmt.Sprintf(
			`SELECT MIN(%s) FROM SCHEMA(%s, %s) WHERE Pool = '%s'`, metrics.IdleVolumes, MetricsNamespace,
			strings.Join(metrics.Read[metrics.IdleVolumes], ", "), p.props.PoolName)),
		Label:        jsii.String("idle volumes in the emptiest AZ"),
		Period:       awscdk.Duration_Minutes(f(5)),
		UsingMetrics: &map[string]awscloudwatch.IMetric{},
	})
}

func (p *Pool) snapshotAgeMetric() awscloudwatch.IMetric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String(MetricsNamespace),
		MetricName:    jsii.String(metrics.SnapshotAgeSeconds),
		DimensionsMap: &map[string]*string{"Pool": jsii.String(p.props.PoolName)},
		Statistic:     jsii.String("Maximum"),
		Period:        awscdk.Duration_Hours(f(1)),
	})
}

func (p *Pool) pushLagMetric() awscloudwatch.IMetric {
	return p.Queue.MetricApproximateAgeOfOldestMessage(&awscloudwatch.MetricOptions{
		Statistic: jsii.String("Maximum"),
		Period:    awscdk.Duration_Minutes(f(1)),
	})
}

func (p *Pool) newAlarms() {
	gt := awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD
	notBreaching := awscloudwatch.TreatMissingData_NOT_BREACHING
	for _, q := range []struct {
		id, what string
		metric   awscloudwatch.IMetric
	}{
		{"DeadLetterQueueNotEmptyAlarm", "push requests failed repeatedly and wait in the dead-letter queue",
			p.DeadLetterQueue.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Statistic: jsii.String("Maximum"), Period: awscdk.Duration_Minutes(f(1))})},
		{"EventDeadLetterQueueNotEmptyAlarm", "lifecycle, schedule or command-status events could not be handled and wait in the event dead-letter queue",
			p.EventDeadLetterQueue.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Statistic: jsii.String("Maximum"), Period: awscdk.Duration_Minutes(f(1))})},
	} {
		p.alarm(q.id, q.what, q.metric, 0, gt, 1, notBreaching)
	}
	if *p.props.IdlePerAZ > 0 {
		p.alarm("IdlePoolEmptyAlarm", "an AZ has no idle volume left (launches there create volumes on demand, slowly)",
			p.idleVolumesMetric(), 0, awscloudwatch.ComparisonOperator_LESS_THAN_OR_EQUAL_TO_THRESHOLD, 3, notBreaching)
	}
	p.alarm("PushLagAlarm", fmt.Sprintf("the oldest push request has waited more than %d s", PushLagThresholdSeconds),
		p.pushLagMetric(), PushLagThresholdSeconds, gt, 3, notBreaching)
	for _, name := range FunctionNames {
		fn := p.Functions[name]
		p.alarm(titled(name)+"ErrorsAlarm", "the "+name+" Lambda reported errors",
			fn.MetricErrors(&awscloudwatch.MetricOptions{Statistic: jsii.String("Sum"), Period: awscdk.Duration_Minutes(f(5))}),
			0, gt, 1, notBreaching)
	}
	p.alarm("PoolStalledAlarm", "an agent refused a journal entry as bad content: the pool is stalled at that seq (volsd status says where and why; repair with volsd repair)",
		awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace: jsii.String(MetricsNamespace), MetricName: jsii.String(metrics.StalledReports),
			DimensionsMap: &map[string]*string{"Pool": jsii.String(p.props.PoolName)}, Statistic: jsii.String("Sum"), Period: awscdk.Duration_Minutes(f(5)),
		}), 0, gt, 1, notBreaching)
	p.alarm("VolumeFullAlarm", fmt.Sprintf("a pool volume is at least %d%% full and will not grow (auto-grow off or at AutoGrowMaxGiB): raise VolumeSizeGiB or AutoGrowMaxGiB, or free space (volsd status shows each volume)", p.props.FillAlarmPercent),
		awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace: jsii.String(MetricsNamespace), MetricName: jsii.String(metrics.VolumesFullCannotGrow),
			DimensionsMap: &map[string]*string{"Pool": jsii.String(p.props.PoolName)}, Statistic: jsii.String("Maximum"), Period: awscdk.Duration_Minutes(f(15)),
		}), 0, gt, 1, notBreaching)
	maxAge := snapshot.MaxAge(time.Duration(*p.props.SnapshotInterval.ToSeconds(nil)) * time.Second).Seconds()
	p.alarm("SnapshotAgeAlarm", fmt.Sprintf("the newest completed snapshot is older than %.0f s (two snapshot intervals and an hour)", maxAge),
		p.snapshotAgeMetric(), maxAge, gt, 1, notBreaching)
}

func (p *Pool) newDashboard() {
	graph := func(title string, metrics ...awscloudwatch.IMetric) awscloudwatch.IWidget {
		return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{
			Title: jsii.String(title), Left: &metrics, Width: jsii.Number(12), Height: jsii.Number(6),
		})
	}
	var errors []awscloudwatch.IMetric
	var durations []awscloudwatch.IMetric
	for _, name := range FunctionNames {
		errors = append(errors, p.Functions[name].MetricErrors(&awscloudwatch.MetricOptions{Label: jsii.String(name)}))
		durations = append(durations, p.Functions[name].MetricDuration(&awscloudwatch.MetricOptions{Label: jsii.String(name), Statistic: jsii.String("p90")}))
	}
	alarms := make([]interfacesawscloudwatch.IAlarmRef, 0, len(p.Alarms))
	for _, a := range p.Alarms {
		alarms = append(alarms, a)
	}
	lagStage := func(name, label string) awscloudwatch.IMetric {
		return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace: jsii.String(MetricsNamespace), MetricName: jsii.String(name), Label: jsii.String(label),
			DimensionsMap: &map[string]*string{"Pool": jsii.String(p.props.PoolName)}, Statistic: jsii.String("Maximum"),
		})
	}
	// Push lag in its two stages: SQS sent → appended (push), appended →
	// every in-service instance reported (report).
	pushLag := lagStage(metrics.PushLagSeconds, "sent → appended")
	reportedLag := lagStage(metrics.ReportedLagSeconds, "appended → all instances reported")
	origin := func(name, label, stat string) awscloudwatch.IMetric {
		return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace: jsii.String(MetricsNamespace), MetricName: jsii.String(name), Label: jsii.String(label),
			DimensionsMap: &map[string]*string{"Pool": jsii.String(p.props.PoolName)}, Statistic: jsii.String(stat),
			Period: awscdk.Duration_Hours(f(6)),
		})
	}
	p.Dashboard = awscloudwatch.NewDashboard(p.Construct, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DefaultInterval: awscdk.Duration_Hours(f(6)),
		Widgets: &[]*[]awscloudwatch.IWidget{
			{awscloudwatch.NewAlarmStatusWidget(&awscloudwatch.AlarmStatusWidgetProps{
				Title: jsii.String("volsd " + p.props.PoolName + " alarms"), Alarms: &alarms, Width: jsii.Number(24),
			})},
			{graph("Idle volumes (emptiest AZ)", p.idleVolumesMetric()), graph("Snapshot age (s)", p.snapshotAgeMetric())},
			{graph("Push lag (s)", p.pushLagMetric(), pushLag, reportedLag), graph("Dead-letter queues",
				p.DeadLetterQueue.MetricApproximateNumberOfMessagesVisible(nil), p.EventDeadLetterQueue.MetricApproximateNumberOfMessagesVisible(nil))},
			{graph("Lambda errors", errors...), graph("Lambda duration p90", durations...)},
			{graph("Origin reclaim (bytes)", origin(metrics.ReclaimedBytes, "deleted", "Sum"),
				origin(metrics.UnreferencedBytes, "unreferenced, waiting out the grace", "Maximum"))},
		},
	})
}

func titled(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
