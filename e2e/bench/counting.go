package bench

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Calls counts API calls by "Service.Operation". Safe for concurrent use.
type Calls struct {
	mu      sync.Mutex
	n       map[string]int
	elapsed time.Duration
}

// AddTime adds d to the time spent inside the counted calls.
func (c *Calls) AddTime(d time.Duration) {
	c.mu.Lock()
	c.elapsed += d
	c.mu.Unlock()
}

// Elapsed is the time spent inside the counted calls (summed over
// concurrent calls).
func (c *Calls) Elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.elapsed
}

// Add counts one call of op.
func (c *Calls) Add(op string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[op]++
	c.mu.Unlock()
}

func (c *Calls) since(t time.Time) { c.AddTime(time.Since(t)) }

// Get returns the count of op.
func (c *Calls) Get(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[op]
}

// Snapshot returns a copy of the counts.
func (c *Calls) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// Reset sets every count to zero.
func (c *Calls) Reset() {
	c.mu.Lock()
	c.n, c.elapsed = nil, 0
	c.mu.Unlock()
}

// Total is the sum of the counts whose operation passes keep (all when
// keep is nil).
func (c *Calls) Total(keep func(op string) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := 0
	for k, v := range c.n {
		if keep == nil || keep(k) {
			t += v
		}
	}
	return t
}

// Ops lists the counted operations, sorted.
func (c *Calls) Ops() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ops := make([]string, 0, len(c.n))
	for k := range c.n {
		ops = append(ops, k)
	}
	sort.Strings(ops)
	return ops
}

// DynamoDBUse is what a DynamoDB client did: requests by operation,
// items read and the capacity DynamoDB reported.
type DynamoDBUse struct {
	Calls         Calls
	mu            sync.Mutex
	ItemsRead     int     // items returned by GetItem and Query pages
	ItemsScanned  int     // items Query evaluated (ScannedCount) before filters
	ReadUnits     float64 // consumed read capacity units (ReturnConsumedCapacity TOTAL)
	WriteUnits    float64
	TransactItems int // items written inside TransactWriteItems
}

// ddbRead reports whether op (a "DynamoDB.X" name) is a read request.
func ddbRead(op string) bool {
	switch op {
	case "DynamoDB.GetItem", "DynamoDB.Scan", "DynamoDB.BatchGetItem", "DynamoDB.TransactGetItems":
		return true
	}
	return strings.HasPrefix(op, "DynamoDB.Query")
}

// Reads is the number of read requests (GetItem and every Query page).
func (u *DynamoDBUse) Reads() int { return u.Calls.Total(ddbRead) }

// Writes is the number of write requests.
func (u *DynamoDBUse) Writes() int {
	return u.Calls.Total(func(op string) bool { return !ddbRead(op) })
}

// Reset clears everything counted.
func (u *DynamoDBUse) Reset() {
	u.Calls.Reset()
	u.mu.Lock()
	u.ItemsRead, u.ItemsScanned, u.ReadUnits, u.WriteUnits, u.TransactItems = 0, 0, 0, 0, 0
	u.mu.Unlock()
}

// Snapshot returns the item and capacity counters.
func (u *DynamoDBUse) Snapshot() (itemsRead, itemsScanned int, rcu, wcu float64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ItemsRead, u.ItemsScanned, u.ReadUnits, u.WriteUnits
}

func (u *DynamoDBUse) capacity(cc *ddbtypes.ConsumedCapacity, read bool) {
	if cc == nil || cc.CapacityUnits == nil {
		return
	}
	u.mu.Lock()
	if read {
		u.ReadUnits += *cc.CapacityUnits
	} else {
		u.WriteUnits += *cc.CapacityUnits
	}
	u.mu.Unlock()
}

// CountingDynamoDB wraps a DynamoDB client, counting every request and
// asking DynamoDB for the capacity each consumed (ReturnConsumedCapacity
// TOTAL on a copy of the input; the caller's input is not changed). The
// store's interface has no Scan: a full-table read cannot even be
// expressed through it, and Query pages are counted one by one.
type CountingDynamoDB struct {
	Inner store.DynamoDB // what the store calls; the wrapper passes exactly these through
	Use   *DynamoDBUse
}

func (c CountingDynamoDB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	c.Use.Calls.Add("DynamoDB.GetItem")
	cp := *in
	cp.ReturnConsumedCapacity = ddbtypes.ReturnConsumedCapacityTotal
	out, err := c.Inner.GetItem(ctx, &cp, optFns...)
	if err == nil {
		c.Use.capacity(out.ConsumedCapacity, true)
		if out.Item != nil {
			c.Use.mu.Lock()
			c.Use.ItemsRead++
			c.Use.ItemsScanned++
			c.Use.mu.Unlock()
		}
	}
	return out, err
}

func (c CountingDynamoDB) PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.Use.Calls.Add("DynamoDB.PutItem")
	cp := *in
	cp.ReturnConsumedCapacity = ddbtypes.ReturnConsumedCapacityTotal
	out, err := c.Inner.PutItem(ctx, &cp, optFns...)
	if err == nil {
		c.Use.capacity(out.ConsumedCapacity, false)
	}
	return out, err
}

func (c CountingDynamoDB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.Use.Calls.Add("DynamoDB.UpdateItem")
	cp := *in
	cp.ReturnConsumedCapacity = ddbtypes.ReturnConsumedCapacityTotal
	out, err := c.Inner.UpdateItem(ctx, &cp, optFns...)
	if err == nil {
		c.Use.capacity(out.ConsumedCapacity, false)
	}
	return out, err
}

func (c CountingDynamoDB) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	c.Use.Calls.Add("DynamoDB.DeleteItem")
	cp := *in
	cp.ReturnConsumedCapacity = ddbtypes.ReturnConsumedCapacityTotal
	out, err := c.Inner.DeleteItem(ctx, &cp, optFns...)
	if err == nil {
		c.Use.capacity(out.ConsumedCapacity, false)
	}
	return out, err
}

func (c CountingDynamoDB) Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	op := "DynamoDB.Query"
	if in.IndexName != nil {
		op = "DynamoDB.Query(" + *in.IndexName + ")"
	}
	c.Use.Calls.Add(op)
	cp := *in
	cp.ReturnConsumedCapacity = ddbtypes.ReturnConsumedCapacityTotal
	out, err := c.Inner.Query(ctx, &cp, optFns...)
	if err == nil {
		c.Use.capacity(out.ConsumedCapacity, true)
		c.Use.mu.Lock()
		c.Use.ItemsRead += int(out.Count)
		c.Use.ItemsScanned += int(out.ScannedCount)
		c.Use.mu.Unlock()
	}
	return out, err
}

func (c CountingDynamoDB) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, optFns ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	c.Use.Calls.Add("DynamoDB.TransactWriteItems")
	cp := *in
	cp.ReturnConsumedCapacity = ddbtypes.ReturnConsumedCapacityTotal
	out, err := c.Inner.TransactWriteItems(ctx, &cp, optFns...)
	c.Use.mu.Lock()
	c.Use.TransactItems += len(in.TransactItems)
	c.Use.mu.Unlock()
	if err == nil {
		for i := range out.ConsumedCapacity {
			c.Use.capacity(&out.ConsumedCapacity[i], false)
		}
	}
	return out, err
}

// ec2API is what the pool control plane calls (pool.EC2).
// ec2API is the EC2 the control plane calls.
type ec2API = pool.EC2

// CountingEC2 wraps an EC2 client and counts its calls.
type CountingEC2 struct {
	Inner ec2API
	Calls *Calls
}

func (c CountingEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	c.Calls.Add("EC2.DescribeInstances")
	defer c.Calls.since(time.Now())
	return c.Inner.DescribeInstances(ctx, in, optFns...)
}

func (c CountingEC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	c.Calls.Add("EC2.DescribeVolumes")
	defer c.Calls.since(time.Now())
	return c.Inner.DescribeVolumes(ctx, in, optFns...)
}

func (c CountingEC2) CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, optFns ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	c.Calls.Add("EC2.CreateVolume")
	defer c.Calls.since(time.Now())
	return c.Inner.CreateVolume(ctx, in, optFns...)
}

func (c CountingEC2) AttachVolume(ctx context.Context, in *ec2.AttachVolumeInput, optFns ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error) {
	c.Calls.Add("EC2.AttachVolume")
	defer c.Calls.since(time.Now())
	return c.Inner.AttachVolume(ctx, in, optFns...)
}

func (c CountingEC2) DetachVolume(ctx context.Context, in *ec2.DetachVolumeInput, optFns ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error) {
	c.Calls.Add("EC2.DetachVolume")
	defer c.Calls.since(time.Now())
	return c.Inner.DetachVolume(ctx, in, optFns...)
}

func (c CountingEC2) DeleteVolume(ctx context.Context, in *ec2.DeleteVolumeInput, optFns ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error) {
	c.Calls.Add("EC2.DeleteVolume")
	defer c.Calls.since(time.Now())
	return c.Inner.DeleteVolume(ctx, in, optFns...)
}

// autoScalingAPI is what the pool control plane calls (pool.AutoScaling).
type autoScalingAPI interface {
	DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, optFns ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
}

// CountingAutoScaling wraps an Auto Scaling client and counts its calls.
type CountingAutoScaling struct {
	Inner autoScalingAPI
	Calls *Calls
}

func (c CountingAutoScaling) DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	c.Calls.Add("AutoScaling.DescribeAutoScalingGroups")
	return c.Inner.DescribeAutoScalingGroups(ctx, in, optFns...)
}

func (c CountingAutoScaling) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, optFns ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	c.Calls.Add("AutoScaling.CompleteLifecycleAction")
	return c.Inner.CompleteLifecycleAction(ctx, in, optFns...)
}

// ssmAPI is what the push, report and lifecycle code call of SSM.
type ssmAPI interface {
	SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error)
	GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error)
	ListCommandInvocations(ctx context.Context, in *ssm.ListCommandInvocationsInput, optFns ...func(*ssm.Options)) (*ssm.ListCommandInvocationsOutput, error)
}

// CountingSSM wraps an SSM client and counts its calls.
type CountingSSM struct {
	Inner ssmAPI
	Calls *Calls
}

func (c CountingSSM) SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	c.Calls.Add("SSM.SendCommand")
	return c.Inner.SendCommand(ctx, in, optFns...)
}

func (c CountingSSM) GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	c.Calls.Add("SSM.GetCommandInvocation")
	return c.Inner.GetCommandInvocation(ctx, in, optFns...)
}

func (c CountingSSM) ListCommandInvocations(ctx context.Context, in *ssm.ListCommandInvocationsInput, optFns ...func(*ssm.Options)) (*ssm.ListCommandInvocationsOutput, error) {
	c.Calls.Add("SSM.ListCommandInvocations")
	return c.Inner.ListCommandInvocations(ctx, in, optFns...)
}

// s3API is what the push Lambda and the agent read the origin with.
type s3API interface {
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// CountingS3 wraps an S3 client and counts its calls.
type CountingS3 struct {
	Inner s3API
	Calls *Calls
}

func (c CountingS3) HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	c.Calls.Add("S3.HeadObject")
	return c.Inner.HeadObject(ctx, in, optFns...)
}

func (c CountingS3) GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.Calls.Add("S3.GetObject")
	return c.Inner.GetObject(ctx, in, optFns...)
}

func (c CountingS3) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	c.Calls.Add("S3.ListObjectsV2")
	return c.Inner.ListObjectsV2(ctx, in, optFns...)
}

func (c CountingEC2) ModifyVolume(ctx context.Context, in *ec2.ModifyVolumeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyVolumeOutput, error) {
	c.Calls.Add("EC2.ModifyVolume")
	defer c.Calls.since(time.Now())
	return c.Inner.ModifyVolume(ctx, in, optFns...)
}

func (c CountingEC2) DescribeVolumesModifications(ctx context.Context, in *ec2.DescribeVolumesModificationsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVolumesModificationsOutput, error) {
	c.Calls.Add("EC2.DescribeVolumesModifications")
	defer c.Calls.since(time.Now())
	return c.Inner.DescribeVolumesModifications(ctx, in, optFns...)
}
