package assembly

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
)

// NagRow is one line of a cdk-nag report (AwsSolutions-<stack>-NagReport.csv).
type NagRow struct {
	Rule, Resource, Compliance, Reason, Level string
}

// NagReport reads the AwsSolutions report cdk-nag wrote for stack. Its
// presence proves the checks ran; Findings lists what they left unsuppressed.
func (a *Assembly) NagReport(stack string) ([]NagRow, error) {
	matches, err := filepath.Glob(filepath.Join(a.Dir, "AwsSolutions-*"+stack+"-NagReport.csv"))
	if err != nil {
		return nil, err
	}
	if len(matches) != 1 {
		return nil, fmt.Errorf("cloud assembly %s: want one AwsSolutions report for %s, found %v", a.Dir, stack, matches)
	}
	f, err := os.Open(matches[0])
	if err != nil {
		return nil, err
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", matches[0], err)
	}
	var rows []NagRow
	for i, r := range records {
		if i == 0 {
			continue // header
		}
		if len(r) < 5 {
			return nil, fmt.Errorf("%s line %d: %d fields", matches[0], i+1, len(r))
		}
		rows = append(rows, NagRow{Rule: r[0], Resource: r[1], Compliance: r[2], Reason: r[3], Level: r[4]})
	}
	return rows, nil
}
