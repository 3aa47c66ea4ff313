package envconfig

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestReaderCollectsEveryProblem(t *testing.T) {
	r := FromMap(map[string]string{
		"POOL": "bad pool!", "N": "x", "BIG": "99", "D": "soon", "P": "keep", "L": " a, ,b ",
	})
	r.Match("POOL", "", true, PoolName, "letters, digits, - and _")
	r.String("MISSING", "", true)
	r.Int("N", 0, true, 0, 10)
	r.Int("BIG", 0, true, 0, 10)
	r.Duration("D", time.Second, false, 0, time.Hour)
	r.OneOf("P", "", true, "recycle", "delete")
	if got := r.List("L"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("List = %q", got)
	}
	err := r.Err()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`POOL: must be letters, digits, - and _ (got "bad pool!")`,
		"MISSING: is required",
		`N: must be an integer (got "x")`,
		"BIG: must be between 0 and 10 (got 99)",
		`D: must be a duration`,
		`P: must be one of recycle, delete (got "keep")`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestReaderDefaults(t *testing.T) {
	r := FromMap(map[string]string{"N": "7"})
	if r.Int("N", 1, true, 0, 10) != 7 || r.Int("M", 3, false, 0, 10) != 3 || r.String("S", "d", false) != "d" ||
		r.Duration("D", time.Minute, false, 0, time.Hour) != time.Minute {
		t.Error("defaults or values wrong")
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestLogLevel(t *testing.T) {
	r := FromMap(map[string]string{"A": "debug", "B": "error", "C": "loud"})
	if r.LogLevel("A") != slog.LevelDebug || r.LogLevel("B") != slog.LevelError || r.LogLevel("UNSET") != slog.LevelInfo {
		t.Error("levels")
	}
	r.LogLevel("C")
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), `C: must be one of debug, info, warn, error (got "loud")`) {
		t.Errorf("bad level: %v", err)
	}
}
