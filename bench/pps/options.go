package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names of the packet-I/O backends the benchmark knows.
const (
	nameUDP     = "udp"      // transport/udp: one datagram per system call
	nameMmsg    = "mmsg"     // transport/mmsg: recvmmsg/sendmmsg, batch 64 (GSO off when sending)
	nameMmsgGSO = "mmsg-gso" // transport/mmsg sending same-destination runs with UDP GSO
	nameBare    = "bare"     // the reference kernel receiver: bare recvmmsg, nothing per datagram
	nameAFXDP   = "afxdp"    // transport/afxdp: AF_XDP, copy mode on veth
	nameAsavie  = "asavie"   // github.com/asavie/xdp v0.3.3, the peer (receive only)

	// napiSuffix marks a kernel receiver measured with GRO on the receiving veth, which gives
	// veth a NAPI poll loop that runs GRO, as a NIC driver's does ("udp-napi", "mmsg-napi").
	// Without it veth hands every datagram to the stack one at a time (netif_rx), a path a NIC
	// does not take; with it, a socket that asked for UDP_GRO (mmsg does) receives runs of
	// datagrams of one flow as one.
	napiSuffix   = "-napi"
	nameUDPNAPI  = nameUDP + napiSuffix
	nameMmsgNAPI = nameMmsg + napiSuffix
)

// baseName returns the backend of a receiver name: "udp" for "udp-napi".
func baseName(name string) string { return strings.TrimSuffix(name, napiSuffix) }

// onNAPILink reports whether the named receiver is measured with GRO on the receiving veth.
func onNAPILink(name string) bool { return strings.HasSuffix(name, napiSuffix) }

// nsPrefix starts the names of the namespaces this program creates.
const nsPrefix = "nqpps-"

// receiverNames and senderNames are the backends each side accepts, in report order.
var (
	receiverNames = []string{nameUDP, nameMmsg, nameBare, nameUDPNAPI, nameMmsgNAPI, nameAFXDP, nameAsavie}
	senderNames   = []string{nameUDP, nameMmsg, nameAFXDP, nameMmsgGSO}
	loadNames     = []string{nameAFXDP, nameMmsg, nameUDP}
)

// options configures a whole run. The zero value of every field means its default.
type options struct {
	// Sizes are the UDP payload sizes in bytes, each from 18 to 1472. Default 64 and 1200.
	Sizes []int
	// Rates are the offered rates of the receive sweep in packets per second, ascending; 0 means
	// "as fast as the sender can" and may only come last. Default 100k, 200k, 400k, 700k, 1M,
	// 1.3M, max.
	Rates []float64
	// Receivers are the receive backends measured. Default udp, mmsg, bare, udp-napi,
	// mmsg-napi, afxdp, asavie (see napiSuffix).
	Receivers []string
	// Load is the sender that offers load to the receivers: afxdp (the default, the fastest
	// sender here), mmsg or udp. (mmsg-gso is refused: veth would hand its GSO runs to kernel
	// receivers unsegmented, which favours receivers with UDP GRO.)
	Load string
	// Senders are the send backends measured. Default udp, mmsg, afxdp, mmsg-gso (the last only
	// at GSOSize).
	Senders []string
	// Step is how long the sender sends at each offered rate, and in each send test. Default 2s.
	Step time.Duration
	// Refine is the number of extra steps that bisect between the highest rate received without
	// loss and the lowest lossy rate above it, to pin the capacity down between the swept
	// rates. 0 means the default, 3; negative means none.
	Refine int
	// Retries is how many times a paced step that lost between 1% and 50% is measured again,
	// keeping the measurement with the least loss: other load on the machine only ever adds
	// loss, so the best of a few tries is the receiver's own. (Heavier loss is the receiver's
	// limit and is not retried.) 0 means the default, 1; negative means none.
	Retries int
	// Warmup is how long traffic flows, unmeasured, before a new receiver or sender is measured.
	// 0 means the default, 500ms; negative means none.
	Warmup time.Duration
	// TXCPU and RXCPU are the cores the sender and the receiver (with its kernel work) are
	// pinned to. They must differ. Default 0 and 1.
	TXCPU, RXCPU int
	// CPURate is the offered rate at which receivers' CPU per packet is compared: one of the
	// paced Rates, always measured, even when the sweep skips rates around it. Default 1M.
	CPURate float64
	// OverloadRate is the offered rate at which receivers' overload behaviour is compared (the
	// rate received there): one of the paced Rates, always measured. The same offered rate for
	// every receiver, unlike "max", whose rate depends on how fast the sender happens to be.
	// Default 1.3M.
	OverloadRate float64
	// GSOSize is the payload size of the mmsg-gso send test. Default 1200.
	GSOSize int
	// Timeout bounds the whole run. Default 10m.
	Timeout time.Duration
}

// Defaults of options fields left zero.
var (
	defaultSizes = []int{64, 1200}
	defaultRates = []float64{100e3, 200e3, 400e3, 700e3, 1e6, 1.3e6, 0}
)

const (
	defaultStep     = 2 * time.Second
	defaultRefine   = 3
	defaultRetries  = 1
	maxRetries      = 5
	maxRefine       = 10
	defaultWarmup   = 500 * time.Millisecond
	defaultCPURate  = 1e6
	defaultOverload = 1.3e6
	defaultGSOSize  = 1200
	defaultTimeout  = 10 * time.Minute
	defaultRXCPU    = 1

	// minPayload leaves room for nothing in particular but keeps frames above the Ethernet
	// minimum (14+20+8+18 = 60 bytes); maxPayload fills a 1500-byte MTU.
	minPayload = 18
	maxPayload = 1472
	// maxRate bounds offered rates to something a veth can carry.
	maxRate = 100e6
)

// withDefaults returns o with zero fields set to their defaults, or an error naming the first
// invalid field.
func (o options) withDefaults() (options, error) {
	if len(o.Sizes) == 0 {
		o.Sizes = slices.Clone(defaultSizes)
	}
	if len(o.Rates) == 0 {
		o.Rates = slices.Clone(defaultRates)
	}
	if len(o.Receivers) == 0 {
		o.Receivers = slices.Clone(receiverNames)
	}
	if len(o.Senders) == 0 {
		o.Senders = slices.Clone(senderNames)
	}
	if o.Load == "" {
		o.Load = nameAFXDP
	}
	if o.Step == 0 {
		o.Step = defaultStep
	}
	if o.Warmup == 0 {
		o.Warmup = defaultWarmup
	}
	if o.Refine == 0 {
		o.Refine = defaultRefine
	}
	if o.Retries == 0 {
		o.Retries = defaultRetries
	}
	if o.TXCPU == 0 && o.RXCPU == 0 {
		o.RXCPU = defaultRXCPU
	}
	if o.CPURate == 0 {
		o.CPURate = defaultCPURate
	}
	if o.OverloadRate == 0 {
		o.OverloadRate = defaultOverload
	}
	if o.GSOSize == 0 {
		o.GSOSize = defaultGSOSize
	}
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout
	}
	return o, o.validate()
}

// validate names the first invalid field.
func (o options) validate() error {
	for i, s := range o.Sizes {
		if s < minPayload || s > maxPayload {
			return fmt.Errorf("pps: options.Sizes[%d] = %d: want %d..%d bytes", i, s, minPayload, maxPayload)
		}
	}
	for i, r := range o.Rates {
		switch {
		case math.IsNaN(r) || r < 0 || r > maxRate:
			return fmt.Errorf("pps: options.Rates[%d] = %v: want 0 (max) or 1..%g pps", i, r, maxRate)
		case r == 0 && i != len(o.Rates)-1:
			return fmt.Errorf("pps: options.Rates[%d]: max (0) may only be the last rate", i)
		case i > 0 && r != 0 && r <= o.Rates[i-1]:
			return fmt.Errorf("pps: options.Rates[%d] = %v: rates must ascend", i, r)
		}
	}
	if err := checkNames("Receivers", o.Receivers, receiverNames); err != nil {
		return err
	}
	if err := checkNames("Senders", o.Senders, senderNames); err != nil {
		return err
	}
	if err := checkNames("Load", []string{o.Load}, loadNames); err != nil {
		return err
	}
	switch {
	case o.Step < 100*time.Millisecond || o.Step > time.Minute:
		return fmt.Errorf("pps: options.Step = %v: want 100ms..1m", o.Step)
	case o.Retries > maxRetries:
		return fmt.Errorf("pps: options.Retries = %d: want at most %d", o.Retries, maxRetries)
	case o.Refine > maxRefine:
		return fmt.Errorf("pps: options.Refine = %d: want at most %d", o.Refine, maxRefine)
	case o.Warmup > time.Minute:
		return fmt.Errorf("pps: options.Warmup = %v: want at most 1m", o.Warmup)
	case o.TXCPU < 0 || o.TXCPU >= 1024:
		return fmt.Errorf("pps: options.TXCPU = %d: want 0..1023", o.TXCPU)
	case o.RXCPU < 0 || o.RXCPU >= 1024:
		return fmt.Errorf("pps: options.RXCPU = %d: want 0..1023", o.RXCPU)
	case o.TXCPU == o.RXCPU:
		return fmt.Errorf("pps: options.RXCPU = options.TXCPU = %d: sender and receiver need separate cores", o.RXCPU)
	case !slices.Contains(o.Rates, o.CPURate):
		return fmt.Errorf("pps: options.CPURate = %s: not one of the paced rates %v", formatRate(o.CPURate), o.Rates)
	case !slices.Contains(o.Rates, o.OverloadRate):
		return fmt.Errorf("pps: options.OverloadRate = %s: not one of the paced rates %v", formatRate(o.OverloadRate), o.Rates)
	case o.GSOSize < minPayload || o.GSOSize > maxPayload:
		return fmt.Errorf("pps: options.GSOSize = %d: want %d..%d bytes", o.GSOSize, minPayload, maxPayload)
	case o.Timeout < time.Second:
		return fmt.Errorf("pps: options.Timeout = %v: want at least 1s", o.Timeout)
	}
	return nil
}

func checkNames(field string, names, known []string) error {
	for i, n := range names {
		if !slices.Contains(known, n) {
			return fmt.Errorf("pps: options.%s[%d] = %q: want one of %s", field, i, n, strings.Join(known, ", "))
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("pps: options.%s[%d] = %q: listed twice", field, i, n)
		}
	}
	return nil
}

// parseRate reads a rate in packets per second: a number with an optional k or M suffix
// ("700k", "1.3M", "250000"), or "max" (returned as 0).
func parseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "max") {
		return 0, nil
	}
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1e6, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		return 0, fmt.Errorf("pps: rate %q: want a positive number with an optional k or M suffix, or max", s)
	}
	return v * mult, nil
}

// formatRate writes a rate the way parseRate reads it: "max", "1.3M", "700k" or "950".
func formatRate(r float64) string {
	switch {
	case r == 0:
		return "max"
	case r >= 1e6:
		return strconv.FormatFloat(r/1e6, 'f', -1, 64) + "M"
	case r >= 1e3:
		return strconv.FormatFloat(r/1e3, 'f', -1, 64) + "k"
	default:
		return strconv.FormatFloat(r, 'f', -1, 64)
	}
}

// parseRates reads a comma-separated list of rates.
func parseRates(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		r, err := parseRate(f)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// parseInts reads a comma-separated list of integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("pps: %q: not an integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseNames reads a comma-separated list of names.
func parseNames(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
