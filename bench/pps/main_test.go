package main

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseArgsRunDefaults(t *testing.T) {
	cfg, err := parseArgs(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want, err := options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Run
	if cfg.Child.Role != "" || !slices.Equal(o.Sizes, want.Sizes) || !slices.Equal(o.Rates, want.Rates) ||
		!slices.Equal(o.Receivers, want.Receivers) || !slices.Equal(o.Senders, want.Senders) ||
		o.Step != want.Step || o.Warmup != want.Warmup || o.TXCPU != want.TXCPU || o.RXCPU != want.RXCPU ||
		o.CPURate != want.CPURate || o.GSOSize != want.GSOSize || o.Timeout != want.Timeout || o.Load != want.Load || o.Refine != want.Refine ||
		o.Retries != want.Retries || o.OverloadRate != want.OverloadRate {
		t.Errorf("flag defaults %+v differ from options defaults %+v", o, want)
	}
}

func TestParseArgsRun(t *testing.T) {
	cfg, err := parseArgs([]string{"-sizes=64", "-rates=200k,max", "-receivers=afxdp,asavie", "-senders=afxdp",
		"-step=1s", "-txcpu=1", "-rxcpu=0", "-cpu-rate=200k", "-overload-rate=200k"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Run
	if !slices.Equal(o.Sizes, []int{64}) || !slices.Equal(o.Rates, []float64{200e3, 0}) ||
		!slices.Equal(o.Receivers, []string{"afxdp", "asavie"}) || o.Step != time.Second ||
		o.TXCPU != 1 || o.RXCPU != 0 || o.CPURate != 200e3 {
		t.Errorf("parsed %+v", o)
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-sizes=64,x"},
		{"-rates=max,100k"},
		{"-cpu-rate=max"},
		{"-overload-rate=max"},
		{"-receivers=tcp"},
		{"-txcpu=0", "-rxcpu=0"}, // one core for both: refused, not changed
		{"extra"},
		{"-nosuchflag"},
		{"-role=recv", "-transport=udp"}, // no local address
		{"-role=send", "-transport=asavie", "-local=1.2.3.4:5"},               // asavie cannot send
		{"-role=bogus", "-transport=udp", "-local=1.2.3.4:5"},                 // unknown role
		{"-role=recv", "-transport=afxdp", "-local=1.2.3.4:5", "-deadline=1"}, // no device
	} {
		if _, err := parseArgs(args, io.Discard); err == nil {
			t.Errorf("parseArgs(%q) accepted", args)
		}
	}
	if cfg, err := parseArgs([]string{"-warmup=0"}, io.Discard); err != nil || cfg.Run.Warmup >= 0 {
		t.Errorf("parseArgs(-warmup=0): warm-up %v, %v; want none (negative)", cfg.Run.Warmup, err)
	}
	if _, err := parseArgs([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestChildConfigRoundTrip(t *testing.T) {
	deadline := time.Unix(1_900_000_000, 123)
	for _, c := range []childConfig{
		{Role: roleRecv, Transport: nameAsavie, Dev: "ppr42", Local: netip.MustParseAddrPort("198.51.100.2:9001"),
			CPU: 1, Deadline: deadline},
		{Role: roleRecv, Transport: nameUDP, Local: netip.MustParseAddrPort("198.51.100.2:9001"), Deadline: deadline},
		{Role: roleSend, Transport: nameMmsgGSO, Dev: "ppt42", Local: netip.MustParseAddrPort("198.51.100.1:9000"),
			Remote: netip.MustParseAddrPort("198.51.100.2:9001"), Size: 1200, Deadline: deadline},
	} {
		got, err := parseArgs(c.args(), io.Discard)
		if err != nil {
			t.Errorf("%+v: %v", c, err)
			continue
		}
		if !got.Child.Deadline.Equal(c.Deadline) {
			t.Errorf("deadline %v, want %v", got.Child.Deadline, c.Deadline)
		}
		got.Child.Deadline = c.Deadline
		if got.Child != c {
			t.Errorf("round trip %+v, want %+v", got.Child, c)
		}
	}
}

func TestChildConfigValidate(t *testing.T) {
	ok := childConfig{Role: roleSend, Transport: nameAFXDP, Dev: "ppt1", Local: netip.MustParseAddrPort("198.51.100.1:9000"),
		Remote: netip.MustParseAddrPort("198.51.100.2:9001"), Size: 64, Deadline: time.Now()}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*childConfig)
	}{
		{"Transport", func(c *childConfig) { c.Transport = "quic" }},
		{"Remote", func(c *childConfig) { c.Remote = netip.AddrPort{} }},
		{"Size", func(c *childConfig) { c.Size = 1500 }},
		{"Local", func(c *childConfig) { c.Local = netip.MustParseAddrPort("198.51.100.1:0") }},
		{"Dev", func(c *childConfig) { c.Dev = "" }},
		{"CPU", func(c *childConfig) { c.CPU = -1 }},
		{"Deadline", func(c *childConfig) { c.Deadline = time.Time{} }},
		{"Role", func(c *childConfig) { c.Role = "" }},
	} {
		c := ok
		tc.mod(&c)
		err := c.validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v does not name the field", tc.field, err)
		}
	}
}
