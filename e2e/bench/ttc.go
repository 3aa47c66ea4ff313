package bench

import (
	"context"
	"errors"

	"github.com/volsd/volsd/e2e/harness"
)

// TTCContent is one content size of the time-to-content benchmark.
type TTCContent struct {
	Label string
	Tree  harness.TreeSpec
}

// TTCOptions size the time-to-content benchmark.
type TTCOptions struct {
	Root, WorkDir        string
	Contents             []TTCContent
	Entries              int
	Runs                 int
	DynamoDBURL, MotoURL string
	Log                  func(format string, args ...any)
}

// TTCCase is one content size.
type TTCCase struct {
	Label   string `json:"label"`
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
	Volsd   Sample `json:"volsdSeconds"`
	Copy    Sample `json:"copyBaselineSeconds"`
	Applied Sample `json:"entriesApplied"`
}

// TTCResult is the time-to-content benchmark.
type TTCResult struct {
	Cases   []TTCCase `json:"cases"`
	Entries int       `json:"entriesSinceSnapshot"`
	Runs    int       `json:"runs"`
	Setup   string    `json:"setup"`
}

// RunTTC is not written yet.
func RunTTC(ctx context.Context, o TTCOptions) (*TTCResult, error) {
	return nil, errors.New("not implemented yet")
}
