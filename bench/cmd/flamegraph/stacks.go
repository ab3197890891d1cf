package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// node is one frame of the merged call tree; value counts the samples through it.
type node struct {
	name     string
	value    float64
	children map[string]*node
}

func newRoot() *node { return &node{name: "all"} }

// add records a sample of value v with stack, root first.
func (n *node) add(stack []string, v float64) {
	if v <= 0 || len(stack) == 0 {
		return
	}
	n.value += v
	for _, f := range stack {
		if n.children == nil {
			n.children = make(map[string]*node)
		}
		c := n.children[f]
		if c == nil {
			c = &node{name: f}
			n.children[f] = c
		}
		c.value += v
		n = c
	}
}

// sorted returns the children by name, so output is deterministic.
func (n *node) sorted() []*node {
	out := make([]*node, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *node) int { return strings.Compare(a.name, b.name) })
	return out
}

// writeFolded writes the tree as folded stacks (the self value of each frame).
func (n *node) writeFolded(w io.Writer, prefix []string) {
	self := n.value
	for _, c := range n.children {
		self -= c.value
	}
	if len(prefix) > 0 && self > 0 {
		fmt.Fprintf(w, "%s %s\n", strings.Join(prefix, ";"), strconv.FormatFloat(self, 'f', -1, 64))
	}
	for _, c := range n.sorted() {
		c.writeFolded(w, append(prefix, c.name))
	}
}

// parseTraces reads `go tool pprof -traces` output: blocks separated by "-----------+---"
// lines, each with the sample's value and leaf function on its first line and the callers
// below; "bytes:" lines are labels.
func parseTraces(r io.Reader) (*node, string, error) {
	root := newRoot()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	unit := ""
	var (
		stack []string // leaf first
		value float64
		in    bool
	)
	flush := func() {
		if in && len(stack) > 0 {
			slices.Reverse(stack)
			root.add(stack, value)
		}
		stack, value, in = stack[:0], 0, false
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "-----------+"):
			flush()
			in = true
			continue
		case strings.HasPrefix(line, "Type:"):
			unit = strings.TrimSpace(strings.TrimPrefix(line, "Type:"))
			continue
		case !in:
			continue
		}
		f := strings.TrimSpace(line)
		if f == "" || strings.HasSuffix(strings.Fields(f)[0], ":") {
			continue // a label line ("bytes:  56kB")
		}
		if len(stack) == 0 {
			v, fn, ok := splitValue(f)
			if !ok {
				return nil, "", fmt.Errorf("traces: cannot read the value of %q", line)
			}
			value = v
			f = fn
		}
		stack = append(stack, strings.TrimSuffix(f, " (inline)"))
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	return root, unit, nil
}

// splitValue splits "281.78ms   sync.(*Mutex).Unlock" into the value in base units
// (nanoseconds, bytes or a count) and the function.
func splitValue(s string) (float64, string, bool) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return 0, "", false
	}
	tok, rest := s[:i], strings.TrimSpace(s[i:])
	j := strings.IndexFunc(tok, func(r rune) bool { return !unicode.IsDigit(r) && r != '.' })
	num, suffix := tok, ""
	if j >= 0 {
		num, suffix = tok[:j], tok[j:]
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || rest == "" {
		return 0, "", false
	}
	mult := map[string]float64{
		"": 1, "ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "mins": 60e9, "hrs": 3600e9,
		"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40,
	}
	m, ok := mult[suffix]
	if !ok {
		return 0, "", false
	}
	return v * m, rest, true
}

// parsePerf reads `perf script` output: a header line per sample ("comm pid time: period
// event:"), then frames leaf first ("addr symbol+off (dso)"), then a blank line. Each sample
// counts its period when the header has one, else 1.
func parsePerf(r io.Reader) (*node, string, error) {
	root := newRoot()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var (
		stack []string
		value float64
		comm  string
	)
	flush := func() {
		if comm != "" {
			stack = append(stack, comm)
			slices.Reverse(stack)
			root.add(stack, value)
		}
		stack, value, comm = stack[:0], 0, ""
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			fields := strings.Fields(line)
			comm = fields[0]
			value = 1
			// "comm pid time: [period] event:": the period, when present, is the number right
			// after the time (the first field ending in ':') and right before the event.
			for i := 1; i < len(fields); i++ {
				if !strings.HasSuffix(fields[i], ":") {
					continue
				}
				if i+2 < len(fields) && strings.HasSuffix(fields[i+2], ":") {
					if v, err := strconv.ParseFloat(fields[i+1], 64); err == nil {
						value = v
					}
				}
				break
			}
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		sym := strings.Join(fields[1:len(fields)-1], " ")
		if len(fields) == 2 {
			sym = fields[1]
		}
		if k := strings.LastIndex(sym, "+0x"); k > 0 {
			sym = sym[:k]
		}
		if sym == "[unknown]" || sym == "" {
			sym = strings.Trim(fields[len(fields)-1], "()") // the dso
		}
		stack = append(stack, sym)
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	return root, "event period", nil
}

// parseFolded reads "a;b;c 123" lines.
func parseFolded(r io.Reader) (*node, string, error) {
	root := newRoot()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, "", fmt.Errorf("folded: line %d has no value", n)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, "", fmt.Errorf("folded: line %d: %w", n, err)
		}
		root.add(strings.Split(line[:i], ";"), v)
	}
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	return root, "samples", nil
}
