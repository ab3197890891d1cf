package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

const traces = `File: nqbench
Type: cpu
Duration: 1s, Total samples = 40ms (4%)
-----------+-------------------------------------------------------
      20ms   runtime.memmove
             main.copy (inline)
             main.main
-----------+-------------------------------------------------------
      10ms   main.work
             main.main
-----------+-------------------------------------------------------
     bytes:  56kB
      10ms   main.main
-----------+-------------------------------------------------------
`

const perfScript = `nqbench 19185  2779.862769:    2000 cpu-clock: 
	ffffffff821f5127 exc_page_fault+0xd7 ([kernel.kallsyms])
	           82867 main.work+0x97 (/tmp/nqbench)
	           57770 runtime.main+0x270 (/tmp/nqbench)

nqbench 19186  2779.870792:    1000 cpu-clock: 
	           12345 [unknown] (/usr/lib/libc.so.6)
	           57770 runtime.main+0x270 (/tmp/nqbench)

`

func TestFolded(t *testing.T) {
	for _, tc := range []struct {
		in, input, want string
	}{
		{"traces", traces, "main.main 10000000\nmain.main;main.copy;runtime.memmove 20000000\nmain.main;main.work 10000000\n"},
		{"perf", perfScript, "nqbench;runtime.main;/usr/lib/libc.so.6 1000\nnqbench;runtime.main;main.work;exc_page_fault 2000\n"},
		{"perf without periods", "nqbench 12345 123.456789: cpu-clock:\n\t4a1 main.a+0x1 (/x)\n\nnqbench 7 123.5: cpu-clock:\n\t4a2 main.b+0x1 (/x)\n\n",
			"nqbench;main.a 1\nnqbench;main.b 1\n"}, // not weighed by the thread ids
		{"folded", "a;b 3\na;c 1\na 2\n", "a 2\na;b 3\na;c 1\n"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var out bytes.Buffer
			in := strings.Fields(tc.in)[0] // "perf without periods" reads as perf
			if err := run([]string{"-in", in, "-folded"}, strings.NewReader(tc.input), &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("folded:\n%s\nwant:\n%s", out.String(), tc.want)
			}
		})
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-title", "a <test> & more"}, strings.NewReader(traces), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&out)
	rects := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// background + all, main.main, main.copy, runtime.memmove, main.work
	if rects != 6 {
		t.Errorf("%d rects, want 6", rects)
	}
}

func TestRejects(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		input string
	}{
		{[]string{"-in", "dtrace"}, ""},
		{[]string{"-width", "10"}, ""},
		{nil, "File: x\n"},                         // no samples
		{[]string{"-in", "folded"}, "a;b three\n"}, // bad value
		{nil, "-----------+---\n      12zz   main.main\n"},
		{[]string{"a", "b"}, ""},
	} {
		if err := run(tc.args, strings.NewReader(tc.input), io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) with %q succeeded", tc.args, tc.input)
		}
	}
}

func TestShortName(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/quic-go/quic-go.(*Conn).run": "quic-go.(*Conn).run",
		"runtime.main":                           "runtime.main",
		"odd/":                                   "odd/",
	} {
		if got := shortName(in); got != want {
			t.Errorf("shortName(%q) = %q, want %q", in, got, want)
		}
	}
}
