package main

import (
	"io"
	"sync"
)

// prefixWriter prefixes every line written through it.
type prefixWriter struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  string
	partial bool // the last write ended inside a line
}

// Write implements io.Writer.
func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, ch := range b {
		if !p.partial {
			out = append(out, p.prefix...)
			p.partial = true
		}
		out = append(out, ch)
		if ch == '\n' {
			p.partial = false
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}
