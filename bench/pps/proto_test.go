package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReplyRoundTrip(t *testing.T) {
	line := formatReply(msgSent, 1, 0, 1234567890123)
	if line != "sent 1 0 1234567890123" {
		t.Errorf("formatReply = %q", line)
	}
	vals, err := parseReply(line, msgSent, 3)
	if err != nil || !slices.Equal(vals, []int64{1, 0, 1234567890123}) {
		t.Errorf("parseReply = %v, %v", vals, err)
	}
}

func TestParseReplyErrors(t *testing.T) {
	for _, tc := range []struct {
		line, word string
		n          int
		child      bool // the error reports the child's failure
	}{
		{"error afxdp: bind ppr1 queue 0: device busy", msgRecv, 4, true},
		{"recv 1 2 3", msgRecv, 4, false},
		{"recv 1 2 3 4 5", msgRecv, 4, false},
		{"sent 1 2 3", msgRecv, 2, false},
		{"recv 1 x 3 4", msgRecv, 4, false},
		{"recv 1 -2 3 4", msgRecv, 4, false},
		{"", msgReady, 0, false},
	} {
		_, err := parseReply(tc.line, tc.word, tc.n)
		if err == nil {
			t.Errorf("parseReply(%q) accepted", tc.line)
			continue
		}
		if errors.Is(err, errChild) != tc.child {
			t.Errorf("parseReply(%q) = %v; child error: %v", tc.line, err, tc.child)
		}
	}
	if _, err := parseReply(msgReady, msgReady, 0); err != nil {
		t.Errorf("parseReply(ready) = %v", err)
	}
}

func TestRunCommand(t *testing.T) {
	rate, d, err := parseRun(formatRun(1.3e6, 2*time.Second))
	if err != nil || rate != 1.3e6 || d != 2*time.Second {
		t.Errorf("round trip = %v, %v, %v", rate, d, err)
	}
	rate, _, err = parseRun(formatRun(0, time.Second))
	if err != nil || rate != 0 {
		t.Errorf("unpaced round trip = %v, %v", rate, err)
	}
	for _, bad := range []string{"run", "run 1", "go 1 2", "run -1 1000", "run x 1000", "run 1 0", "run 1 -5",
		"run NaN 1000", "run 1 99999999999999999"} {
		if _, _, err := parseRun(bad); err == nil {
			t.Errorf("parseRun(%q) accepted", bad)
		}
	}
}

const procStat = `cpu  245273 0 56528 286305 1059 0 3390 97 0 0
cpu0 121721 0 28186 144423 184 0 1716 49 0 0
cpu1 123552 7 28342 141882 875 11 1674 48 0 0
intr 1 2 3
`

func TestParseCPUBusy(t *testing.T) {
	got, err := parseCPUBusy(procStat, 1)
	want := time.Duration(123552+7+28342+11+1674) * 10 * time.Millisecond
	if err != nil || got != want {
		t.Errorf("cpu1 busy = %v, %v; want %v", got, err, want)
	}
	if _, err := parseCPUBusy(procStat, 2); err == nil {
		t.Error("cpu2 found in a 2-CPU stat")
	}
	if _, err := parseCPUBusy("cpu0 1 2 3 4 5 x 7 8", 0); err == nil {
		t.Error("non-numeric field accepted")
	}
}

func TestParseSchedstat(t *testing.T) {
	d, err := parseSchedstat("123456789 42 7\n")
	if err != nil || d != 123456789 {
		t.Errorf("parseSchedstat = %v, %v", d, err)
	}
	for _, bad := range []string{"", "x 1 2", "-1 2 3"} {
		if _, err := parseSchedstat(bad); err == nil {
			t.Errorf("parseSchedstat(%q) accepted", bad)
		}
	}
}

func TestSoftnetDrops(t *testing.T) {
	const withIDs = "018324cc 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n" +
		"0174b136 0000002a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00006e53 00000000 00000000 00000001 00000000 00000000\n"
	const old = "00000010 00000003 00000000\n00000020 00000005 00000000\n"
	for _, tc := range []struct {
		stat string
		cpu  int
		want uint64
		ok   bool
	}{
		{withIDs, 1, 42, true},
		{withIDs, 0, 0, true},
		{withIDs, 2, 0, false},
		{old, 1, 5, true},
		{"", 0, 0, false},
	} {
		got, ok := parseSoftnetDrops(tc.stat, tc.cpu)
		if got != tc.want || ok != tc.ok {
			t.Errorf("cpu %d: %d, %v; want %d, %v", tc.cpu, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFormatDiag(t *testing.T) {
	before := map[string]uint64{"b": 5, "a": 1, "same": 3}
	after := map[string]uint64{"b": 7, "a": 4, "same": 3, "new": 2}
	if got := formatDiag(before, after); got != "a=3 b=2 new=2" {
		t.Errorf("formatDiag = %q", got)
	}
	if got := formatDiag(before, before); got != "no drops counted" {
		t.Errorf("formatDiag without change = %q", got)
	}
}

func TestNAPIPrefix(t *testing.T) {
	for _, tc := range []struct{ dev, want string }{
		{"ppr1234", "napi/ppr1234-"},
		{"ppr12345678", "napi/ppr1234567"},
	} {
		if got := napiPrefix(tc.dev); got != tc.want || len(got) > 15 {
			t.Errorf("napiPrefix(%q) = %q, want %q", tc.dev, got, tc.want)
		}
	}
}

func TestCPUMask(t *testing.T) {
	for _, tc := range []struct {
		cpu  int
		want string
	}{
		{0, "00000001"},
		{1, "00000002"},
		{31, "80000000"},
		{33, "00000002,00000000"},
	} {
		if got := cpuMask(tc.cpu); got != tc.want {
			t.Errorf("cpuMask(%d) = %q, want %q", tc.cpu, got, tc.want)
		}
	}
}

func TestPrefixWriter(t *testing.T) {
	var b strings.Builder
	w := &prefixWriter{w: &b, prefix: "[rx] "}
	for _, s := range []string{"one\ntw", "o\n", "", "three\nfour"} {
		if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if want := "[rx] one\n[rx] two\n[rx] three\n[rx] four"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestStaleNamespaces(t *testing.T) {
	list := "nqpps-tx-100 (id: 3)\nnqpps-rx-100 (id: 4)\nnqpps-tx-200\nnqA-1234 (id: 1)\nnqpps-rx-x\nnqpps-rx-0\n\n"
	alive := func(pid int) bool { return pid == 200 }
	got := staleNamespaces(list, alive)
	if want := []string{"nqpps-tx-100", "nqpps-rx-100"}; !slices.Equal(got, want) {
		t.Errorf("stale = %q, want %q", got, want)
	}
}
