package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
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

// BenchmarkPushLambdaLiveSet1M measures what the push Lambda holds at its
// peak on a sync of a 1M-entry manifest, after a collection: the new
// manifest's bytes and its entries (ParseManifestOwned) beside the
// previous manifest's compact blob set (ManifestBlobs), as live-MiB; and,
// as copy-live-MiB, the entries of the same manifest parsed with a copy of
// its strings (ParseManifestBytes) without its bytes or a blob set — less
// once the bytes are dropped, but the parse itself then holds bytes and
// copy at once (another 147 MiB at its peak).
func BenchmarkPushLambdaLiveSet1M(b *testing.B) {
	const n = 1000000
	m := Manifest{Version: ManifestVersion, Entries: make([]ManifestEntry, n)}
	for i := range n {
		sum := sha256.Sum256(fmt.Appendf(nil, "%d", i))
		m.Entries[i] = ManifestEntry{Path: fmt.Sprintf("d%03d/e%02d/f%07d.html", i%1000, i%37, i), Type: TypeFile, SHA256: hex.EncodeToString(sum[:]), Size: 7, Mode: 0o644}
	}
	raw, err := m.Canonical()
	if err != nil {
		b.Fatal(err)
	}
	m = Manifest{}
	live := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc) / (1 << 20)
	}
	for b.Loop() {
		base := live()
		prev, err := ManifestBlobs(raw)
		if err != nil {
			b.Fatal(err)
		}
		next := bytes.Clone(raw) // the bytes read from S3
		owned, err := ParseManifestOwned(next)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(live()-base, "live-MiB")
		runtime.KeepAlive(prev)
		runtime.KeepAlive(owned)
		base = live()
		copied, err := ParseManifestBytes(raw)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(live()-base, "copy-live-MiB")
		runtime.KeepAlive(copied)
	}
}
