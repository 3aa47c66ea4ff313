package bench

import "github.com/volsd/volsd/e2e/harness"

// Sizes scale every benchmark: the sizes, and a quick set to
// iterate on and to smoke-test the benchmark code in `make test`.
type Sizes struct {
	Apply      harness.TreeSpec
	DeltaFiles int
	ApplyRuns  int
	// AgentGoBench is the iterations of the agent package's own
	// benchmarks (0: not run).
	AgentGoBench int

	TTCContents []TTCContent
	TTCEntries  int
	TTCRuns     int

	ScaleOutInstances int

	FanoutPools []int
	FanoutRuns  int

	ReconcileRecords []int
	ReconcileJournal int
	ReconcileRuns    int

	LambdaRuns int

	// PushTree is pushed by the push-cost part (relative: under the Go
	// distribution, `go env GOROOT`; "": its src); PushLambdaEntries sizes the push Lambda's big manifest.
	PushTree          string
	PushRuns          int
	PushLambdaEntries int

	// ConvergeTree is the content of the converge part's pool; each run
	// changes one file of it.
	ConvergeTree harness.TreeSpec
	ConvergeRuns int
}

// FullSizes are the sizes.
func FullSizes() Sizes {
	return Sizes{
		Apply:        harness.TreeSpec{Files: 10000, TotalBytes: 1 << 30, BigFile: 64 << 20, Seed: 9},
		DeltaFiles:   100, // 1%
		ApplyRuns:    5,
		AgentGoBench: 3,

		TTCContents: []TTCContent{
			{Label: "100MiB", Tree: harness.TreeSpec{Files: 1000, TotalBytes: 100 << 20, BigFile: 20 << 20, Seed: 11}},
			{Label: "2GiB", Tree: harness.TreeSpec{Files: 4000, TotalBytes: 2 << 30, BigFile: 256 << 20, Seed: 12}},
		},
		TTCEntries: 20,
		TTCRuns:    3,

		ScaleOutInstances: 500,

		FanoutPools: []int{1, 10, 100, 1000},
		FanoutRuns:  5,

		ReconcileRecords: []int{100, 1000, 10000},
		ReconcileJournal: 1000,
		ReconcileRuns:    5,

		LambdaRuns: 10,

		PushRuns:          3,
		PushLambdaEntries: 1000000,

		ConvergeTree: harness.TreeSpec{Files: 1000, TotalBytes: 50 << 20, BigFile: 8 << 20, Seed: 13},
		ConvergeRuns: 7,
	}
}

// QuickSizes are small enough to run in seconds (VOLSD_BENCH_QUICK=1).
func QuickSizes() Sizes {
	return Sizes{
		Apply:      harness.TreeSpec{Files: 500, TotalBytes: 32 << 20, BigFile: 4 << 20, Seed: 9},
		DeltaFiles: 5,
		ApplyRuns:  2,

		TTCContents: []TTCContent{
			{Label: "4MiB", Tree: harness.TreeSpec{Files: 60, TotalBytes: 4 << 20, BigFile: 1 << 20, Seed: 11}},
			{Label: "32MiB", Tree: harness.TreeSpec{Files: 200, TotalBytes: 32 << 20, BigFile: 8 << 20, Seed: 12}},
		},
		TTCEntries: 3,
		TTCRuns:    2,

		ScaleOutInstances: 50,

		FanoutPools: []int{1, 10, 50},
		FanoutRuns:  2,

		ReconcileRecords: []int{20, 100},
		ReconcileJournal: 50,
		ReconcileRuns:    2,

		LambdaRuns: 3,

		PushTree:          "src/encoding",
		PushRuns:          2,
		PushLambdaEntries: 10000,

		ConvergeTree: harness.TreeSpec{Files: 50, TotalBytes: 1 << 20, BigFile: 256 << 10, Seed: 13},
		ConvergeRuns: 2,
	}
}
