package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/volsd/volsd/events"
)

func writeOutputs(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cdk-outputs.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const oneStack = `{"VolsdWeb": {"PoolName": "web", "TableName": "volsd-web", "BucketName": "origin-web", "QueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/push", "DeadLetterQueueUrl": "https://sqs/dlq", "Region": "eu-west-1"}, "Other": {"Unrelated": "x"}}`

func TestResolvePrecedence(t *testing.T) {
	file := writeOutputs(t, oneStack)
	env := map[string]string{EnvTable: "from-env", EnvRegion: "us-east-2"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := Resolve(Config{Pool: "from-flag"}, file, "", lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Pool: "from-flag", Table: "from-env", Bucket: "origin-web", QueueURL: "https://sqs.eu-west-1.amazonaws.com/1/push", Region: "us-east-2",
		DeadLetterQueueURL: "https://sqs/dlq"}
	if cfg != want {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
	env[EnvOutputs] = file
	if cfg, err := Resolve(Config{}, "", "", lookup); err != nil || cfg.Bucket != "origin-web" {
		t.Fatalf("outputs from %s: %+v %v", EnvOutputs, cfg, err)
	}
}

func TestReadOutputs(t *testing.T) {
	two := writeOutputs(t, `{"A": {"PoolName": "a", "TableName": "ta"}, "B": {"PoolName": "b", "TableName": "tb"}}`)
	if _, err := ReadOutputs(two, ""); err == nil || !strings.Contains(err.Error(), "--stack") || !strings.Contains(err.Error(), "A, B") {
		t.Fatalf("two stacks without --stack: %v", err)
	}
	if cfg, err := ReadOutputs(two, "B"); err != nil || cfg.Pool != "b" || cfg.Table != "tb" {
		t.Fatalf("stack B: %+v %v", cfg, err)
	}
	if _, err := ReadOutputs(two, "C"); err == nil || !strings.Contains(err.Error(), `no stack "C"`) {
		t.Fatalf("stack C: %v", err)
	}
	if _, err := ReadOutputs(writeOutputs(t, `[1]`), ""); err == nil {
		t.Fatal("a JSON array was accepted")
	}
	if _, err := ReadOutputs(filepath.Join(t.TempDir(), "absent.json"), ""); err == nil {
		t.Fatal("a missing file was accepted")
	}
}

func TestCheckNamesWhatIsMissing(t *testing.T) {
	err := Config{Pool: "web"}.Check(NeedPool | NeedTable | NeedQueue)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--table") || !strings.Contains(err.Error(), "VOLSD_QUEUE_URL") || strings.Contains(err.Error(), "pool (") {
		t.Fatalf("%v", err)
	}
	if err := (Config{Pool: "web/../x", Table: "t"}).Check(NeedPool | NeedTable); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad pool name: %v", err)
	}
	if err := (Config{Bucket: "b", QueueURL: "q"}).Check(NeedBucket | NeedQueue); err != nil {
		t.Fatal(err)
	}
}

// TestDestRule: the root is a target only when written as "/"; every
// other spelling of the root is refused naming the rule, for push (put and
// sync) and delete alike.
func TestDestRule(t *testing.T) {
	cases := []struct {
		dest  string
		op    events.Op
		want  string
		fails string
	}{
		{"site", events.OpSync, "site", ""},
		{"/site/", events.OpSync, "site", ""},
		{"/", events.OpSync, ".", ""},
		{"www/", events.OpPut, "www/index.html", ""},
		{"/", events.OpPut, "index.html", ""},
		{"www/home.html", events.OpPut, "www/home.html", ""},
		{"www/", events.OpDelete, "www", ""},
		{"/", events.OpDelete, "", "cannot be deleted"},
		{"../etc", events.OpSync, "", `".."`},
		{"a/../b", events.OpPut, "", `".."`},
		{".volsd/state.json", events.OpPut, "", "reserved"},
		{"a\nb", events.OpPut, "", "control"},
		{"a//b", events.OpSync, "", "clean"},
		{"www//", events.OpSync, "", "clean"},
	}
	for _, root := range []string{"", ".", "./", "//", "///", "/.", "/./", "./.", "a/..", "a/../", "/a/../."} {
		for _, op := range []events.Op{events.OpSync, events.OpPut, events.OpDelete} {
			cases = append(cases, struct {
				dest  string
				op    events.Op
				want  string
				fails string
			}{root, op, "", `the root is a target only when written as "/"`})
		}
	}
	for _, c := range cases {
		d, err := parseDest(c.dest)
		got := ""
		if err == nil {
			got, err = d.target(c.op, "index.html")
		}
		switch {
		case c.fails == "" && (err != nil || got != c.want):
			t.Errorf("%q %s: %q %v, want %q", c.dest, c.op, got, err, c.want)
		case c.fails != "" && (!errors.Is(err, ErrInput) || !strings.Contains(err.Error(), c.fails)):
			t.Errorf("%q %s: %v, want an input error about %s", c.dest, c.op, err, c.fails)
		}
	}
}

func TestScanRefusesWhatVolsdCannotHold(t *testing.T) {
	mk := func(t *testing.T) string {
		d := t.TempDir()
		if err := os.MkdirAll(filepath.Join(d, "a", "b"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"a/b/c.txt", "top.txt"} {
			if err := os.WriteFile(filepath.Join(d, f), []byte(f), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	t.Run("tree", func(t *testing.T) {
		d := mk(t)
		op, files, _, err := scan(d, false)
		if err != nil || op != events.OpSync || len(files) != 2 {
			t.Fatalf("%s %d %v", op, len(files), err)
		}
		for _, f := range files {
			if f.rel != "a/b/c.txt" && f.rel != "top.txt" || f.mode != 0o640 {
				t.Errorf("file %+v", f)
			}
		}
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(d, link); err != nil {
			t.Fatal(err)
		}
		if _, files, _, err := scan(link, false); err != nil || len(files) != 2 {
			t.Fatalf("a symlink given as LOCAL is followed: %d %v", len(files), err)
		}
	})
	for name, spoil := range map[string]func(d string) error{
		"absolute symlink": func(d string) error { return os.Symlink("/etc/passwd", filepath.Join(d, "a", "passwd")) },
		"escaping symlink": func(d string) error { return os.Symlink("../../../x", filepath.Join(d, "a", "up")) },
		"fifo":             func(d string) error { return syscall.Mkfifo(filepath.Join(d, "pipe"), 0o600) },
		"reserved":         func(d string) error { return os.Mkdir(filepath.Join(d, ".volsd"), 0o755) },
		"newline":          func(d string) error { return os.WriteFile(filepath.Join(d, "evil\nname"), nil, 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			d := mk(t)
			if err := spoil(d); err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := scan(d, false); !errors.Is(err, ErrInput) {
				t.Fatalf("scan accepted a tree with a %s: %v", name, err)
			}
		})
	}
}
