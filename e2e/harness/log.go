package harness

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// prefixWriter writes each line with a prefix to w (shared log file).
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    bytes.Buffer
}

// NewPrefixWriter returns a writer that prefixes every line; writers that
// share mu never interleave lines.
func NewPrefixWriter(w io.Writer, mu *sync.Mutex, prefix string) io.Writer {
	return &prefixWriter{mu: mu, w: w, prefix: prefix}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadBytes('\n')
		if err != nil {
			p.buf.Write(line) // keep the partial line
			return len(b), nil
		}
		if _, err := fmt.Fprintf(p.w, "%s %s", p.prefix, line); err != nil {
			return 0, err
		}
	}
}
