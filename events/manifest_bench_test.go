package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
)

// BenchmarkParseManifest parses and validates a canonical manifest of
// 10,000 files in 350 directories, the size of the agent's sync benchmark.
func BenchmarkParseManifest(b *testing.B) {
	m := Manifest{Version: ManifestVersion}
	for i := range 10000 {
		h := sha256.Sum256(fmt.Append(nil, i))
		m.Entries = append(m.Entries, ManifestEntry{
			Path: fmt.Sprintf("d%02d/e%d/f%05d.html", i%50, i%7, i), Type: TypeFile, SHA256: hex.EncodeToString(h[:]), Size: int64(100 + i), Mode: 0o644, Mtime: 1700000000 + int64(i),
		})
	}
	raw, err := m.Canonical()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := ParseManifest(bytes.NewReader(raw)); err != nil {
			b.Fatal(err)
		}
	}
}
