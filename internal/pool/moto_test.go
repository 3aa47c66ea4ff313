package pool_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/infra/documents"
	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/pool"
	"github.com/volsd/volsd/internal/store"
	"github.com/volsd/volsd/internal/testenv"
)

// motoASG describes groups in moto and fills moto's gap, lifecycle
// actions, with the fake.
type motoASG struct {
	*autoscaling.Client
	hooks *awsfake.AutoScaling
}

func (m motoASG) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, o ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	return m.hooks.CompleteLifecycleAction(ctx, in, o...)
}

// motoPool is a pool whose EC2, Auto Scaling groups and SSM are moto's.
type motoPool struct {
	*env
	mec2 *ec2.Client
	masg *autoscaling.Client
	ami  string
}

func newMotoPool(t *testing.T) *motoPool {
	cfg := testenv.Moto(t)
	m := &motoPool{env: newEnv(t, awsfake.EC2Config{}), mec2: ec2.NewFromConfig(cfg), masg: autoscaling.NewFromConfig(cfg)}
	e := m.env
	e.cfg.Pool = testenv.UniqueName(t, "pool")
	e.cfg.Group = testenv.UniqueName(t, "asg")
	e.cfg.DocRelease = testenv.UniqueName(t, "volsd-Release")
	e.timing.OrphanGrace, e.timing.GoneGrace = 0, 0
	m.ami = "ami-03cf127a" // one of moto's built-in images
	lt := testenv.UniqueName(t, "lt")
	if _, err := m.mec2.CreateLaunchTemplate(bg, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: &lt,
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: &m.ami, InstanceType: types.InstanceTypeT3Micro}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.masg.CreateAutoScalingGroup(bg, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &e.cfg.Group, MinSize: aws.Int32(0), MaxSize: aws.Int32(40), DesiredCapacity: aws.Int32(0),
		AvailabilityZones: testAZs, LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: &lt},
	}); err != nil {
		t.Fatal(err)
	}
	src, err := documents.Source("Release")
	if err != nil {
		t.Fatal(err)
	}
	mssm := ssm.NewFromConfig(cfg)
	if _, err := mssm.CreateDocument(bg, &ssm.CreateDocumentInput{Name: &e.cfg.DocRelease, Content: aws.String(string(src)),
		DocumentType: ssmtypes.DocumentTypeCommand, DocumentFormat: ssmtypes.DocumentFormatYaml}); err != nil {
		t.Fatal(err)
	}
	// The fake only holds the group's lifecycle hooks.
	e.asg = awsfake.NewAutoScaling(awsfake.AutoScalingConfig{})
	e.asg.AddGroup(awsfake.GroupSpec{Name: e.cfg.Group, AZs: testAZs, MaxSize: 40, Hooks: []awsfake.HookSpec{
		{Name: "volsd-launch", Transition: events.TransitionLaunching, HeartbeatTimeout: time.Hour},
		{Name: "volsd-terminate", Transition: events.TransitionTerminating, HeartbeatTimeout: time.Hour, DefaultResult: "CONTINUE"},
	}})
	m.pool = pool.New(e.cfg, pool.Deps{Store: e.store, EC2: m.mec2, AutoScaling: motoASG{m.masg, e.asg}, SSM: mssm,
		Log: e.logger(slog.LevelDebug), Timing: e.timing})
	return m
}

// run starts an instance of the pool in az in moto and returns its launch event.
func (m *motoPool) run(az string) (string, []byte) {
	m.t.Helper()
	out, err := m.mec2.RunInstances(bg, &ec2.RunInstancesInput{ImageId: &m.ami, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceType: types.InstanceTypeT3Micro, Placement: &types.Placement{AvailabilityZone: &az},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance,
			Tags: []types.Tag{{Key: aws.String(events.TagPool), Value: &m.cfg.Pool}}}}})
	if err != nil {
		m.t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	raw, err := m.asg.LaunchExisting(m.cfg.Group, id, az, "")
	if err != nil {
		m.t.Fatal(err)
	}
	return id, raw
}

// view returns moto's pool-tagged volumes.
func (m *motoPool) view() map[string]types.Volume {
	m.t.Helper()
	out, err := m.mec2.DescribeVolumes(bg, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("tag:" + events.TagPool), Values: []string{m.cfg.Pool}}}})
	if err != nil {
		m.t.Fatal(err)
	}
	res := map[string]types.Volume{}
	for _, v := range out.Volumes {
		res[*v.VolumeId] = v
	}
	return res
}

// checkTargets asserts every zone has exactly its target of idle volumes,
// each available in moto.
func (m *motoPool) checkTargets() {
	m.t.Helper()
	view := m.view()
	idle := map[string]int{}
	for _, v := range m.volumes() {
		if v.State == store.VolumeIdle {
			idle[v.AZ]++
			if mv, ok := view[v.VolumeID]; !ok || mv.State != types.VolumeStateAvailable {
				m.t.Fatalf("idle volume %s in moto: %+v", v.VolumeID, mv)
			}
		}
	}
	for _, az := range testAZs {
		if idle[az] != m.cfg.IdlePerAZ {
			m.t.Fatalf("idle %v, want %d per zone", idle, m.cfg.IdlePerAZ)
		}
	}
}

func (m *motoPool) terminate(id string) {
	if _, err := m.mec2.TerminateInstances(bg, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		m.t.Fatal(err)
	}
}

func TestAgainstMoto(t *testing.T) {
	m := newMotoPool(t)
	e := m.env
	m.reconcile()
	m.checkTargets()

	// 30 launches over 3 zones, delivered concurrently.
	type launched struct {
		id, az string
		raw    []byte
	}
	var insts []launched
	for i := 0; i < 30; i++ {
		az := testAZs[i%3]
		id, raw := m.run(az)
		insts = append(insts, launched{id, az, raw})
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(insts))
	sem := make(chan struct{}, 8)
	for _, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- e.pool.HandleLifecycle(bg, in.raw)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	view := m.view()
	owner := map[string]string{}
	for _, in := range insts {
		held := e.held(in.id)
		if len(held) != 1 || held[0].State != store.VolumeInUse || held[0].AZ != in.az {
			t.Fatalf("instance %s (%s) holds %+v", in.id, in.az, held)
		}
		v := held[0]
		if prev, dup := owner[v.VolumeID]; dup {
			t.Fatalf("volume %s given to %s and %s", v.VolumeID, prev, in.id)
		}
		owner[v.VolumeID] = in.id
		mv := view[v.VolumeID]
		if len(mv.Attachments) != 1 || aws.ToString(mv.Attachments[0].InstanceId) != in.id || aws.ToString(mv.AvailabilityZone) != in.az {
			t.Fatalf("moto view of %s: %+v", v.VolumeID, mv)
		}
		if !aws.ToBool(mv.Encrypted) {
			t.Fatalf("volume %s not encrypted", v.VolumeID)
		}
	}
	rep := m.reconcile()
	if rep.Created != 6 || len(m.view()) != 36 {
		t.Fatalf("after 30 launches (6 claimed, 24 created on demand) reconcile created %d; moto has %d pool volumes, want 36", rep.Created, len(m.view()))
	}
	m.checkTargets()

	// Terminate with recycle (agent reported seq 4) and with delete.
	for i, policy := range []string{pool.PolicyRecycle, pool.PolicyDelete} {
		e.cfg.ReleasePolicy = policy
		m.pool = pool.New(e.cfg, pool.Deps{Store: e.store, EC2: m.mec2, AutoScaling: motoASG{m.masg, e.asg},
			SSM: ssm.NewFromConfig(testenv.Moto(t)), Log: e.logger(slog.LevelDebug), Timing: e.timing})
		in := insts[i]
		vol := e.held(in.id)[0]
		e.agentUp(in.raw, 4)
		traw, err := e.asg.Terminate(e.cfg.Group, in.id, "")
		if err != nil {
			t.Fatal(err)
		}
		e.mustHandle(traw)
		if a := e.action(traw); a.Result != "CONTINUE" {
			t.Fatalf("%s: terminate action %+v", policy, a)
		}
		m.terminate(in.id)
		rec, err := e.store.GetVolume(bg, e.cfg.Pool, vol.VolumeID)
		mv, inMoto := m.view()[vol.VolumeID]
		switch policy {
		case pool.PolicyRecycle:
			if err != nil || rec.State != store.VolumeIdle || rec.Seq != 4 || !inMoto || len(mv.Attachments) != 0 {
				t.Fatalf("recycled: %+v %v; moto %+v", rec, err, mv)
			}
		case pool.PolicyDelete:
			if !errors.Is(err, store.ErrNotFound) || inMoto {
				t.Fatalf("deleted: %+v %v; in moto %v", rec, err, inMoto)
			}
		}
	}

	// A hookless termination (Spot) is cleaned up by reconcile.
	e.cfg.ReleasePolicy = pool.PolicyRecycle
	m.pool = pool.New(e.cfg, pool.Deps{Store: e.store, EC2: m.mec2, AutoScaling: motoASG{m.masg, e.asg},
		Log: e.logger(slog.LevelDebug), Timing: e.timing})
	spot := insts[2]
	spotVol := e.held(spot.id)[0]
	e.agentUp(spot.raw, 6)
	m.terminate(spot.id)
	m.reconcile()
	if rec, err := e.store.GetVolume(bg, e.cfg.Pool, spotVol.VolumeID); err != nil || rec.State != store.VolumeIdle || rec.Seq != 6 {
		t.Fatalf("volume of the vanished instance: %+v %v", rec, err)
	}
	if in := e.instance(spot.id); in.VolumeID != "" || in.State != store.InstanceGone {
		t.Fatalf("vanished instance record %+v", in)
	}

	// An orphan tagged volume (a crash between CreateVolume and the
	// record) is adopted when its zone needs one, else deleted.
	var orphans []string
	for i := 0; i < 2; i++ {
		out, err := m.mec2.CreateVolume(bg, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1c"), Size: aws.Int32(e.cfg.SizeGiB),
			VolumeType: types.VolumeTypeGp3, Encrypted: aws.Bool(true), TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume,
				Tags: []types.Tag{{Key: aws.String(events.TagPool), Value: &e.cfg.Pool}}}}})
		if err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, *out.VolumeId)
	}
	// Make room for exactly one in us-east-1c.
	for _, v := range e.volumes() {
		if v.AZ == "us-east-1c" && v.State == store.VolumeIdle {
			if _, err := m.mec2.DeleteVolume(bg, &ec2.DeleteVolumeInput{VolumeId: &v.VolumeID}); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	rep = m.reconcile()
	if rep.Adopted != 1 || rep.Dropped != 1 {
		t.Fatalf("orphans: %+v", rep)
	}
	adopted := 0
	for _, id := range orphans {
		if _, err := e.store.GetVolume(bg, e.cfg.Pool, id); err == nil {
			adopted++
		} else if _, still := m.view()[id]; still {
			t.Fatalf("orphan %s neither adopted nor deleted", id)
		}
	}
	if adopted != 1 {
		t.Fatalf("%d orphans adopted", adopted)
	}

	// A stuck claim (its launch died) is healed.
	e.timing.StuckAfter = 0
	m.pool = pool.New(e.cfg, pool.Deps{Store: e.store, EC2: m.mec2, AutoScaling: motoASG{m.masg, e.asg},
		Log: e.logger(slog.LevelDebug), Timing: e.timing})
	stuckInst, _ := m.run("us-east-1a")
	claimed, err := e.store.ClaimIdle(bg, e.cfg.Pool, "us-east-1a", stuckInst)
	if err != nil {
		t.Fatal(err)
	}
	rep = m.reconcile()
	if rep.Healed != 1 {
		t.Fatalf("stuck claim: %+v", rep)
	}
	if v, _ := e.store.GetVolume(bg, e.cfg.Pool, claimed.VolumeID); v.State != store.VolumeIdle || v.InstanceID != "" {
		t.Fatalf("healed claim %+v", v)
	}
	m.reconcile()
	m.checkTargets()
	for _, in := range insts[3:] {
		if held := e.held(in.id); len(held) != 1 {
			t.Fatalf("instance %s lost its volume: %+v", in.id, held)
		}
	}
}
