package bench

import (
	"encoding/json"
	"math"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{9, 1, 1, 1, 100}, 1},
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
	s := NewSample("s", []float64{2, 9, 1})
	if s.Median != 2 || s.Min != 1 || s.Max != 9 || len(s.Values) != 3 {
		t.Errorf("NewSample: %+v", s)
	}
}

func TestNumJSON(t *testing.T) {
	b, err := json.Marshal(map[string]Num{"a": 1.23456789, "b": Num(math.NaN()), "c": 12058786})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"a":1.2346,"b":null,"c":12058786}` {
		t.Errorf("got %s", b)
	}
	var back map[string]Num
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["a"] != 1.2346 || !math.IsNaN(float64(back["b"])) || back["c"] != 12058786 {
		t.Errorf("round trip: %v", back)
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkSyncFull-2            	       3	8877696434 ns/op	 120.95 MB/s	         8.878 agent-s/op	         2.266 agent/rsync+syncfs
--- BENCH: BenchmarkSyncFull-2
    bench_test.go:319: tree: 10000 files, 1024.0 MiB
BenchmarkSyncDelta1Percent-2   	       3	 296327517 ns/op	         0.2965 agent-s/op
PASS
`
	got := ParseGoBench(out)
	if len(got) != 2 || got[0].Name != "BenchmarkSyncFull-2" || got[0].N != 3 || got[0].Metrics["agent/rsync+syncfs"] != 2.266 ||
		got[0].Metrics["MB/s"] != 120.95 || got[1].Metrics["agent-s/op"] != 0.2965 {
		t.Errorf("ParseGoBench: %+v", got)
	}
}

func TestCalls(t *testing.T) {
	var u DynamoDBUse
	for _, op := range []string{"DynamoDB.Query", "DynamoDB.Query(gsi1)", "DynamoDB.GetItem", "DynamoDB.PutItem"} {
		u.Calls.Add(op)
	}
	if u.Reads() != 3 || u.Writes() != 1 {
		t.Errorf("reads %d, writes %d; want 3 and 1", u.Reads(), u.Writes())
	}
}
