package volsd

import (
	"strings"
	"testing"
)

func TestPropsValidation(t *testing.T) {
	neg := -1
	ok := PoolProps{PoolName: "web", AutoScalingGroupName: "web-asg"}
	for _, c := range []struct {
		name   string
		change func(*PoolProps)
		want   string // substring of the error; "" = valid
	}{
		{"minimal", func(p *PoolProps) {}, ""},
		{"empty pool", func(p *PoolProps) { p.PoolName = "" }, "PoolName"},
		{"pool with space", func(p *PoolProps) { p.PoolName = "my pool" }, "PoolName"},
		{"pool too long", func(p *PoolProps) { p.PoolName = strings.Repeat("a", 65) }, "PoolName"},
		{"no group", func(p *PoolProps) { p.AutoScalingGroupName = "" }, "AutoScalingGroupName"},
		{"negative idle", func(p *PoolProps) { p.IdlePerAZ = &neg }, "IdlePerAZ"},
		{"bad volume type", func(p *PoolProps) { p.VolumeType = "st1" }, "VolumeType"},
		{"huge volume", func(p *PoolProps) { p.VolumeSizeGiB = 70000 }, "VolumeSizeGiB"},
		{"bad snapshot", func(p *PoolProps) { p.SourceSnapshotID = "vol-123" }, "SourceSnapshotID"},
		{"bad release", func(p *PoolProps) { p.ReleasePolicy = "keep" }, "ReleasePolicy"},
		{"bad filesystem", func(p *PoolProps) { p.Filesystem = "btrfs" }, "Filesystem"},
		{"relative mount", func(p *PoolProps) { p.MountPath = "srv/volsd" }, "MountPath"},
		{"mount with dots", func(p *PoolProps) { p.MountPath = "/srv/../etc" }, ""}, // plain segments; ".." is rejected below
		{"reserved doc prefix", func(p *PoolProps) { p.DocumentPrefix = "AWS-" }, "DocumentPrefix"},
		{"bad log level", func(p *PoolProps) { p.LogLevel = "trace" }, "LogLevel"},
		{"bad concurrency", func(p *PoolProps) { p.SSMMaxConcurrency = "lots" }, "SSMMaxConcurrency"},
		{"freeze too long", func(p *PoolProps) { p.FreezeSeconds = 10000 }, "FreezeSeconds"},
		{"freeze beyond the agent's bound", func(p *PoolProps) { p.FreezeSeconds = 901 }, "FreezeSeconds"},
		{"io1 without IOPS", func(p *PoolProps) { p.VolumeType = "io1" }, "VolumeIops"},
		{"gp2 beyond 16 TiB", func(p *PoolProps) { p.VolumeType, p.VolumeSizeGiB = "gp2", 16385 }, "VolumeSizeGiB"},
		{"init rate below 100", func(p *PoolProps) { p.VolumeInitRate = 50 }, "VolumeInitRate"},
	} {
		p := ok
		c.change(&p)
		got, err := p.withDefaults()
		switch {
		case c.name == "mount with dots":
			if err == nil {
				t.Errorf("%s: MountPath %q accepted", c.name, p.MountPath)
			}
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.want)
		case c.want == "" && (got.VolumeType != "gp3" || got.ReleasePolicy != ReleaseRecycle || *got.IdlePerAZ != 1 || got.DocumentPrefix != "volsd-"):
			t.Errorf("%s: defaults not applied: %+v", c.name, got)
		}
	}
}
