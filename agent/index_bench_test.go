package agent

import (
	"fmt"
	"testing"
)

func BenchmarkIndexCodec(b *testing.B) {
	var m []indexRecord
	for i := range 10000 {
		p := fmt.Sprintf("site/d%02d/e%d/f%05d.html", i%50, i%7, i)
		m = append(m, indexRecord{path: p, ino: uint64(i), size: 100, mtime: 1, ctime: 2, mode: 0o100644, sha: fmt.Sprintf("%064x", i)})
	}
	data := encodeIndex(m)
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			encodeIndex(m)
		}
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			decodeIndex(data)
		}
	})
	b.Run("decode+map", func(b *testing.B) {
		for b.Loop() {
			x := &treeIndex{}
			x.recs, _ = decodeIndex(data)
			x.ready()
		}
	})
}
