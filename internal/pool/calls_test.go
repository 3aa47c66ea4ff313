package pool_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/google/go-cmp/cmp"

	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
)

// calls counts API calls by "Service.Operation".
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[op]++
}

func (c *calls) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.n
	c.n = map[string]int{}
	return out
}

type countEC2 struct {
	pool.EC2
	c *calls
}

func (x countEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	x.c.add("EC2.DescribeInstances")
	return x.EC2.DescribeInstances(ctx, in, o...)
}

func (x countEC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, o ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	x.c.add("EC2.DescribeVolumes")
	return x.EC2.DescribeVolumes(ctx, in, o...)
}

func (x countEC2) CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, o ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	x.c.add("EC2.CreateVolume")
	return x.EC2.CreateVolume(ctx, in, o...)
}

func (x countEC2) AttachVolume(ctx context.Context, in *ec2.AttachVolumeInput, o ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error) {
	x.c.add("EC2.AttachVolume")
	return x.EC2.AttachVolume(ctx, in, o...)
}

func (x countEC2) DetachVolume(ctx context.Context, in *ec2.DetachVolumeInput, o ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error) {
	x.c.add("EC2.DetachVolume")
	return x.EC2.DetachVolume(ctx, in, o...)
}

func (x countEC2) DeleteVolume(ctx context.Context, in *ec2.DeleteVolumeInput, o ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error) {
	x.c.add("EC2.DeleteVolume")
	return x.EC2.DeleteVolume(ctx, in, o...)
}

type countASG struct {
	pool.AutoScaling
	c *calls
}

func (x countASG) DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, o ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	x.c.add("AutoScaling.DescribeAutoScalingGroups")
	return x.AutoScaling.DescribeAutoScalingGroups(ctx, in, o...)
}

func (x countASG) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, o ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	x.c.add("AutoScaling.CompleteLifecycleAction")
	return x.AutoScaling.CompleteLifecycleAction(ctx, in, o...)
}

type countSSM struct {
	pool.SSM
	c *calls
}

func (x countSSM) SendCommand(ctx context.Context, in *ssm.SendCommandInput, o ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	x.c.add("SSM.SendCommand")
	return x.SSM.SendCommand(ctx, in, o...)
}

func (x countSSM) GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, o ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	x.c.add("SSM.GetCommandInvocation")
	return x.SSM.GetCommandInvocation(ctx, in, o...)
}

type countDDB struct {
	store.DynamoDB
	c *calls
}

func (x countDDB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	x.c.add("DynamoDB.GetItem")
	return x.DynamoDB.GetItem(ctx, in, o...)
}

func (x countDDB) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	x.c.add("DynamoDB.PutItem")
	return x.DynamoDB.PutItem(ctx, in, o...)
}

func (x countDDB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	x.c.add("DynamoDB.UpdateItem")
	return x.DynamoDB.UpdateItem(ctx, in, o...)
}

func (x countDDB) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	x.c.add("DynamoDB.DeleteItem")
	return x.DynamoDB.DeleteItem(ctx, in, o...)
}

func (x countDDB) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	x.c.add("DynamoDB.Query")
	return x.DynamoDB.Query(ctx, in, o...)
}

func (x countDDB) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	x.c.add("DynamoDB.TransactWriteItems")
	return x.DynamoDB.TransactWriteItems(ctx, in, o...)
}

// TestCallCounts counts the AWS and DynamoDB calls of one happy-path launch
// (claim, and on demand), one terminate (recycle) and one steady reconcile
// run, with EC2 state changes that are done by the next read. The figures
// are in docs/pool.md; a change here must change them there.
func TestCallCounts(t *testing.T) {
	c := &calls{n: map[string]int{}}
	e := newEnv(t, awsfake.EC2Config{})
	e.store = store.New(countDDB{e.db, c}, e.cfg.Table)
	build := func() {
		e.pool = pool.New(e.cfg, pool.Deps{Store: e.store, EC2: countEC2{e.ec2, c}, AutoScaling: countASG{e.asg, c},
			SSM: countSSM{e.ssm, c}, Log: e.logger(0), Timing: e.timing})
	}
	build()
	e.seedIdle()
	c.take()

	got := map[string]map[string]int{}
	id, raw := e.launch("us-east-1a")
	e.mustHandle(raw)
	got["launch (claim)"] = c.take()
	v := checkAttached(t, e, id)

	e.agentUp(raw, 0)
	e.ssm.setReport(id, v.VolumeID, 0)
	traw, err := e.asg.Terminate(e.cfg.Group, id, "")
	if err != nil {
		t.Fatal(err)
	}
	c.take()
	e.mustHandle(traw)
	got["terminate (recycle)"] = c.take()

	e.reconcile() // trims the recycled surplus
	c.take()
	e.reconcile()
	got["reconcile (steady)"] = c.take()

	e.cfg.IdlePerAZ = 0
	build()
	e.reconcile() // empties the pool
	c.take()
	id2, raw2 := e.launch("us-east-1b")
	e.mustHandle(raw2)
	got["launch (on demand)"] = c.take()
	checkAttached(t, e, id2)

	want := map[string]map[string]int{
		"launch (claim)": {
			"EC2.DescribeInstances": 1, "EC2.DescribeVolumes": 1, "EC2.AttachVolume": 1,
			"DynamoDB.GetItem": 3, "DynamoDB.Query": 1, "DynamoDB.TransactWriteItems": 1, "DynamoDB.PutItem": 2,
		},
		"launch (on demand)": {
			"EC2.DescribeInstances": 1, "EC2.DescribeVolumes": 2, "EC2.CreateVolume": 1, "EC2.AttachVolume": 1,
			"DynamoDB.GetItem": 4, "DynamoDB.Query": 2, "DynamoDB.TransactWriteItems": 1, "DynamoDB.PutItem": 2,
		},
		"terminate (recycle)": {
			"SSM.SendCommand": 1, "SSM.GetCommandInvocation": 2, "EC2.DescribeVolumes": 2, "EC2.DetachVolume": 1,
			"AutoScaling.CompleteLifecycleAction": 1, "DynamoDB.GetItem": 3, "DynamoDB.PutItem": 4, "DynamoDB.UpdateItem": 1,
		},
		"reconcile (steady)": {
			"AutoScaling.DescribeAutoScalingGroups": 1, "EC2.DescribeVolumes": 1, "DynamoDB.Query": 3, "DynamoDB.GetItem": 1,
		},
	}
	var table []string
	for _, name := range []string{"launch (claim)", "launch (on demand)", "terminate (recycle)", "reconcile (steady)"} {
		var ops []string
		aws, ddb := 0, 0
		for op, n := range got[name] {
			ops = append(ops, fmt.Sprintf("%s %d", op, n))
			if strings.HasPrefix(op, "DynamoDB.") {
				ddb += n
			} else {
				aws += n
			}
		}
		sort.Strings(ops)
		table = append(table, fmt.Sprintf("%-20s AWS %2d, DynamoDB %2d: %s", name, aws, ddb, strings.Join(ops, ", ")))
		if diff := cmp.Diff(want[name], got[name]); diff != "" {
			t.Errorf("%s calls (-want +got):\n%s", name, diff)
		}
	}
	t.Log("calls per operation:\n" + strings.Join(table, "\n"))
}

// TestLaunchAttachWaitLooksOnce counts the Describe calls of a claim launch
// whose attachment takes 5 s, on a virtual clock (the fake's and the
// pool's; sleeps advance it): DescribeInstances once for the zone, and one
// DescribeVolumes look at the attachment, made when it is done. The attach
// wait looked first after 1–2 s, then 2–4 s, 4–8 s: two or three looks per
// launch, ≈ 2.7 in the 500-instance scale-out (docs/benchmarks.md §6).
func TestLaunchAttachWaitLooksOnce(t *testing.T) {
	clock := awsfake.NewClock(time.Now())
	c := &calls{n: map[string]int{}}
	e := newEnv(t, awsfake.EC2Config{Now: clock.Now, AttachDelay: 5 * time.Second}, withTiming(func(tm *pool.Timing) {
		*tm = pool.DefaultTiming() // production waits, on the virtual clock
		tm.Now = clock.Now
		tm.Sleep = func(ctx context.Context, d time.Duration) error { clock.Advance(d); return ctx.Err() }
	}))
	e.seedIdle()
	for i := 0; i < 10; i++ { // the jitter varies the looks' times
		e.pool = pool.New(e.cfg, pool.Deps{Store: e.store, EC2: countEC2{e.ec2, c}, AutoScaling: e.asg, SSM: e.ssm, Log: e.logger(0), Timing: e.timing})
		id, raw := e.launch(testAZs[i%len(testAZs)])
		c.take()
		e.mustHandle(raw)
		got := c.take()
		want := map[string]int{"EC2.DescribeInstances": 1, "EC2.DescribeVolumes": 1, "EC2.AttachVolume": 1}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("launch %d: EC2 calls (-want +got):\n%s", i, diff)
		}
		checkAttached(t, e, id)
		e.seedIdle()
	}
}
