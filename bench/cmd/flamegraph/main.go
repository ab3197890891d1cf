// Command flamegraph turns stack samples into an SVG flame graph: each box is a function, as
// wide as the share of samples whose stack passes through it, stacked on its caller.
//
// Input (-in, read from a file argument or stdin):
//
//	traces  the output of `go tool pprof -traces PROFILE` (CPU, heap, mutex, block profiles)
//	perf    the output of `perf script` (stacks with the leaf first, a blank line after each)
//	folded  "root;caller;leaf VALUE" lines, as Brendan Gregg's stackcollapse scripts write
//
// Usage:
//
//	go tool pprof -traces cpu.pprof | flamegraph -in traces -title "nq pipeline CPU" > cpu.svg
//	perf script -i perf.data | flamegraph -in perf > perf.svg
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "flamegraph:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flamegraph", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "traces", "input format: traces, perf or folded")
	title := fs.String("title", "flame graph", "title drawn above the graph")
	width := fs.Int("width", 1200, "image width in pixels")
	folded := fs.Bool("folded", false, "write folded stacks instead of SVG")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *width < 200 || *width > 20000 {
		return fmt.Errorf("-width %d: want 200..20000", *width)
	}
	r := stdin
	switch fs.NArg() {
	case 0:
	case 1:
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	default:
		return fmt.Errorf("want at most one input file, got %d", fs.NArg())
	}
	var parse func(io.Reader) (*node, string, error)
	switch *in {
	case "traces":
		parse = parseTraces
	case "perf":
		parse = parsePerf
	case "folded":
		parse = parseFolded
	default:
		return fmt.Errorf("-in %q: want traces, perf or folded", *in)
	}
	root, unit, err := parse(bufio.NewReaderSize(r, 1<<20))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	if *folded {
		root.writeFolded(w, nil)
	} else if err := writeSVG(w, root, *title, unit, *width); err != nil {
		return err
	}
	return w.Flush()
}
