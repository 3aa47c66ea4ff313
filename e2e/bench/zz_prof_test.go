package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/internal/testenv"
)

func TestZZProf(t *testing.T) {
	if os.Getenv("ZZPROF") == "" {
		t.Skip()
	}
	ddb := testenv.Endpoint(t, testenv.EnvDynamoDB)
	res, err := RunApply(context.Background(), ApplyOptions{
		WorkDir: t.TempDir(), Tree: harness.TreeSpec{Files: 10000, TotalBytes: 1 << 30, BigFile: 64 << 20, Seed: 9}, DeltaFiles: 100, Runs: 1, DynamoDBURL: ddb, Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = time.Now
	t.Logf("%+v", res)
}
