package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOptionsZeroValueWorks(t *testing.T) {
	o, err := options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Sizes, defaultSizes) || !slices.Equal(o.Rates, defaultRates) {
		t.Errorf("sizes %v rates %v, want the defaults", o.Sizes, o.Rates)
	}
	if !slices.Equal(o.Receivers, receiverNames) || !slices.Equal(o.Senders, senderNames) {
		t.Errorf("receivers %v senders %v, want all", o.Receivers, o.Senders)
	}
	if o.TXCPU != 0 || o.RXCPU != 1 || o.Step != defaultStep || o.CPURate != 1e6 || o.GSOSize != 1200 {
		t.Errorf("defaults not applied: %+v", o)
	}
	// The defaults are copies: changing them does not change the package's.
	o.Rates[0] = 1
	if defaultRates[0] == 1 {
		t.Error("withDefaults shares the default slice")
	}
}

func TestOptionsValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		o     options
		field string
	}{
		{"size too small", options{Sizes: []int{10}}, "Sizes[0]"},
		{"size too large", options{Sizes: []int{64, 9000}}, "Sizes[1]"},
		{"negative rate", options{Rates: []float64{-1}}, "Rates[0]"},
		{"NaN rate", options{Rates: []float64{math.NaN()}}, "Rates[0]"},
		{"max not last", options{Rates: []float64{0, 100}}, "Rates[0]"},
		{"descending", options{Rates: []float64{200, 100}}, "Rates[1]"},
		{"unknown receiver", options{Receivers: []string{"udp", "dpdk"}}, "Receivers[1]"},
		{"duplicate sender", options{Senders: []string{"udp", "udp"}}, "Senders[1]"},
		{"asavie cannot send", options{Senders: []string{"asavie"}}, "Senders[0]"},
		{"step too short", options{Step: time.Millisecond}, "Step"},
		{"long warmup", options{Warmup: 2 * time.Minute}, "Warmup"},
		{"too many refinements", options{Refine: 50}, "Refine"},
		{"too many retries", options{Retries: 50}, "Retries"},
		{"same cores", options{TXCPU: 1, RXCPU: 1}, "RXCPU"},
		{"negative core", options{TXCPU: -1, RXCPU: 1}, "TXCPU"},
		{"gso size", options{GSOSize: 5}, "GSOSize"},
		{"cpu rate not swept", options{Rates: []float64{100e3, 1.3e6, 0}}, "CPURate"},
		{"overload rate not swept", options{Rates: []float64{100e3, 1e6, 0}}, "OverloadRate"},
		{"cpu rate is max", options{Rates: []float64{100e3, 0}, CPURate: math.NaN()}, "CPURate"},
		{"gso load", options{Load: nameMmsgGSO}, "Load"},
		{"timeout", options{Timeout: time.Millisecond}, "Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.o.withDefaults()
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "options."+tc.field) {
				t.Errorf("error %q does not name options.%s", err, tc.field)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"max", 0, true},
		{"MAX", 0, true},
		{"100k", 100e3, true},
		{"1.3M", 1.3e6, true},
		{" 250000 ", 250000, true},
		{"2K", 2000, true},
		{"", 0, false},
		{"k", 0, false},
		{"-5k", 0, false},
		{"0", 0, false},
		{"fast", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
	} {
		got, err := parseRate(tc.in)
		if (err == nil) != tc.ok || (tc.ok && math.Abs(got-tc.want) > 1e-6) {
			t.Errorf("parseRate(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestFormatRateRoundTrip(t *testing.T) {
	for _, r := range []float64{0, 950, 100e3, 700e3, 1e6, 1.3e6, 2.25e6} {
		s := formatRate(r)
		back, err := parseRate(s)
		if err != nil || math.Abs(back-r) > 1e-6 {
			t.Errorf("formatRate(%v) = %q, parses back as %v, %v", r, s, back, err)
		}
	}
	if got := formatRate(1.3e6); got != "1.3M" {
		t.Errorf("formatRate(1.3e6) = %q, want 1.3M", got)
	}
}

func TestParseLists(t *testing.T) {
	rates, err := parseRates("100k,1M,max")
	if err != nil || !slices.Equal(rates, []float64{100e3, 1e6, 0}) {
		t.Errorf("parseRates = %v, %v", rates, err)
	}
	if _, err := parseRates("100k,,max"); err == nil {
		t.Error("parseRates accepted an empty item")
	}
	ints, err := parseInts("64, 1200")
	if err != nil || !slices.Equal(ints, []int{64, 1200}) {
		t.Errorf("parseInts = %v, %v", ints, err)
	}
	if _, err := parseInts("64,big"); err == nil {
		t.Error("parseInts accepted a word")
	}
	if got := parseNames(" udp, ,mmsg "); !slices.Equal(got, []string{"udp", "mmsg"}) {
		t.Errorf("parseNames = %q", got)
	}
}
