package cli_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/volsd/volsd/internal/cli"
)

func benchTree(iter int) map[string]string {
	files := map[string]string{}
	for i := 0; i < 200; i++ {
		files[fmt.Sprintf("d%d/f%03d.txt", i%10, i)] = fmt.Sprintf("%04d-%06d-", iter, i) + strings.Repeat("x", 4096-12)
	}
	return files
}

// BenchmarkPushTree pushes a tree of 200 files of 4 KiB to moto: "first"
// uploads every blob and the manifest (new content each iteration),
// "again" pushes an unchanged tree (one HeadObject per blob, nothing
// written): the common case content addressing is for.
func BenchmarkPushTree(b *testing.B) {
	ctx := context.Background()
	w := newWorld(b)
	a := &cli.App{Cfg: w.cfg, S3: w.s3, SQS: w.sqs, State: w.st}
	b.Run("first", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			dir := writeTree(b, benchTree(i))
			b.StartTimer()
			s, err := a.Push(ctx, dir, "site")
			if err != nil || s.UploadedBlobs != 200 {
				b.Fatalf("%+v %v", s, err)
			}
		}
	})
	b.Run("again", func(b *testing.B) {
		dir := writeTree(b, benchTree(-1))
		if _, err := a.Push(ctx, dir, "site"); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			s, err := a.Push(ctx, dir, "site")
			if err != nil || s.UploadedBlobs != 0 {
				b.Fatalf("%+v %v", s, err)
			}
		}
	})
}
