package main

import (
	"errors"
	"fmt"
	"hash/fnv"
	"html"
	"io"
	"strings"
)

const (
	frameHeight = 16
	fontSize    = 11
	charWidth   = 6.6 // average glyph width at fontSize, to truncate labels
	margin      = 10
	titleHeight = 32
	minWidth    = 0.3 // frames narrower than this many pixels are left out
)

// writeSVG draws root as a flame graph, the root at the bottom.
func writeSVG(w io.Writer, root *node, title, unit string, width int) error {
	if root.value <= 0 {
		return errors.New("no samples")
	}
	depth := root.depth()
	height := titleHeight + depth*frameHeight + 2*margin
	fmt.Fprintf(w, `<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">
<rect width="100%%" height="100%%" fill="#f8f8f8"/>
<style>text{font-family:monospace;font-size:%dpx}</style>
<text x="%d" y="%d" style="font-size:16px">%s</text>
<text x="%d" y="%d">%s; total %s</text>
`, width, height, width, height, fontSize, margin, margin+14, html.EscapeString(title),
		margin, margin+28, html.EscapeString(unit), formatValue(root.value, unit))
	scale := float64(width-2*margin) / root.value
	var draw func(n *node, x float64, level int)
	draw = func(n *node, x float64, level int) {
		wpx := n.value * scale
		if wpx < minWidth {
			return
		}
		y := height - margin - (level+1)*frameHeight
		label := fmt.Sprintf("%s (%s, %.2f%%)", n.name, formatValue(n.value, unit), 100*n.value/root.value)
		fmt.Fprintf(w, `<g><title>%s</title><rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" rx="2"/>`,
			html.EscapeString(label), x, y, wpx, frameHeight-1, color(n.name))
		if chars := int((wpx - 4) / charWidth); chars >= 3 {
			text := shortName(n.name)
			if len(text) > chars {
				text = text[:chars-2] + ".."
			}
			fmt.Fprintf(w, `<text x="%.1f" y="%d">%s</text>`, x+2, y+fontSize+1, html.EscapeString(text))
		}
		fmt.Fprintln(w, "</g>")
		cx := x
		for _, c := range n.sorted() {
			draw(c, cx, level+1)
			cx += c.value * scale
		}
	}
	draw(root, margin, 0)
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}

// shortName drops the package path: "github.com/quic-go/quic-go.(*Conn).run" is drawn as
// "quic-go.(*Conn).run" (the tooltip keeps the full name).
func shortName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 && i < len(name)-1 {
		return name[i+1:]
	}
	return name
}

func (n *node) depth() int {
	d := 0
	for _, c := range n.children {
		d = max(d, c.depth())
	}
	return d + 1
}

// color picks a warm colour from the frame's name, so a function keeps its colour across graphs.
func color(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	v := h.Sum32()
	return fmt.Sprintf("rgb(%d,%d,%d)", 205+v%50, 80+(v>>8)%120, 30+(v>>16)%50)
}

// formatValue formats v in the profile's base unit: nanoseconds for CPU and delay profiles,
// bytes for space, plain counts otherwise.
func formatValue(v float64, unit string) string {
	switch unit {
	case "cpu", "delay", "contentions/delay":
		switch {
		case v >= 1e9:
			return fmt.Sprintf("%.2fs", v/1e9)
		case v >= 1e6:
			return fmt.Sprintf("%.1fms", v/1e6)
		default:
			return fmt.Sprintf("%.0fµs", v/1e3)
		}
	case "inuse_space", "alloc_space", "space":
		switch {
		case v >= 1<<20:
			return fmt.Sprintf("%.1fMiB", v/(1<<20))
		default:
			return fmt.Sprintf("%.1fKiB", v/(1<<10))
		}
	}
	return fmt.Sprintf("%.0f", v)
}
