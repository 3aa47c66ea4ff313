package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// pathWithout makes a directory of links to every program of progs but
// the ones named in without, found on this machine's PATH, and returns it
// as a PATH.
func pathWithout(t *testing.T, progs []Program, without ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range progs {
		if strings.Contains(" "+strings.Join(without, " ")+" ", " "+p.Name+" ") {
			continue
		}
		real, err := lookProgram(p.Name)
		if err != nil {
			t.Fatalf("%s is not installed here (`make deps` installs %s)", p.Name, p.Package)
		}
		if err := os.Symlink(real, filepath.Join(dir, p.Name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// countingIMDS counts identity lookups: a preflight failure must come
// before the agent touches the instance.
type countingIMDS struct{ calls atomic.Int32 }

func (c *countingIMDS) GetInstanceIdentityDocument(context.Context, *imds.GetInstanceIdentityDocumentInput, ...func(*imds.Options)) (*imds.GetInstanceIdentityDocumentOutput, error) {
	c.calls.Add(1)
	return &imds.GetInstanceIdentityDocumentOutput{InstanceIdentityDocument: imds.InstanceIdentityDocument{InstanceID: "i-0123456789abcdef0"}}, nil
}

func TestUpNamesMissingProgramsFirst(t *testing.T) {
	for _, tc := range []struct {
		fsType, missing string
		want            []string
	}{
		{"ext4", "rsync", []string{"rsync is not installed", "the rsync package", "apt-get install -y rsync"}},
		{"xfs", "mkfs.xfs xfs_growfs", []string{"mkfs.xfs, xfs_growfs are not installed", "the xfsprogs package", "dnf install -y xfsprogs"}},
		{"ext4", "rsync blkid", []string{"rsync, blkid are not installed", "the rsync, util-linux packages", "apt-get install -y rsync util-linux"}},
	} {
		t.Run(tc.fsType+" without "+tc.missing, func(t *testing.T) {
			t.Setenv("PATH", pathWithout(t, Programs(tc.fsType), strings.Fields(tc.missing)...))
			md := &countingIMDS{}
			a := New(Config{Pool: "web", ASG: "web-asg", FSType: tc.fsType, MountPath: "/srv/volsd"}, Deps{IMDS: md})
			var r Report
			err := a.Up(context.Background(), &r)
			if err == nil {
				t.Fatal("up succeeded without the programs it needs")
			}
			if KindOf(err) != KindNotReady {
				t.Errorf("kind %s, want %s (the unit restarts up; installing the package heals it)", KindOf(err), KindNotReady)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if n := md.calls.Load(); n != 0 {
				t.Errorf("up asked IMDS %d times before its preflight failed", n)
			}
		})
	}
}

func TestApplyWithoutRsyncNamesThePackage(t *testing.T) {
	t.Setenv("PATH", pathWithout(t, Programs("ext4"), "rsync"))
	a := New(Config{Pool: "web", FSType: "ext4", MountPath: t.TempDir(), RunDir: t.TempDir()}, Deps{})
	var r Report
	err := a.Apply(context.Background(), 0, false, &r)
	if err == nil || !strings.Contains(err.Error(), "rsync is not installed (install the rsync package") {
		t.Fatalf("apply without rsync: %v", err)
	}
}
