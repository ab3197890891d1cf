// Command pps measures datagram rates of naquid's packet-I/O backends over a veth pair between two
// network namespaces it creates (`make bench-pps`; root needed).
//
// Method. The sender and the receiver are separate processes (this program, re-executed with -role
// inside each namespace by `ip netns exec`), pinned with taskset to separate cores (-txcpu,
// -rxcpu). The receiver's kernel work is pinned to the receiver's core too: RPS on the receiving
// veth's RX queue for kernel receivers, and threaded NAPI with its kernel thread pinned when an XDP
// program is attached; without that, veth does the receiver's work on the sender's core and
// receivers look twice as fast. Addresses are TEST-NET-2 (198.51.100.1 and .2), with permanent
// neighbour entries both ways.
//
// Receive tests: an AF_XDP sender (transport/afxdp WriteBatch, the fastest sender here; -load picks
// another) offers paced rates (-rates, default 100k to 1.3M), then as much as it can ("max"), to
// each receiver: udp (one datagram per ReadBatch, i.e. per system call), mmsg (recvmmsg, batch 64),
// bare (the reference: a plain socket read with recvmmsg, batch 64, and no control messages or
// other work per datagram, which no recvmmsg receiver can undercut; mmsg asks for the destination
// address and ECN bits of each datagram, which a QUIC server needs and which make the receiver
// core's work per datagram ~10% larger here), udp and mmsg again as udp-napi and mmsg-napi with
// GRO turned on on the receiving veth, afxdp (copy
// mode on veth), and asavie (github.com/asavie/xdp v0.3.3 with its own XDP program attached
// through a BPF link). veth's default receive path (no XDP program, GRO off) hands each frame to
// the stack's backlog on its own; a NIC driver instead polls in NAPI and runs GRO, which gives a
// socket that asked for UDP_GRO (mmsg does) a run of datagrams of one flow as one buffer. GRO on
// the veth gives it NAPI too (threaded and pinned to the receiver's core, as for XDP), so the
// -napi receivers see the receive path a server on a NIC sees; the sender's veth has TSO off,
// without which veth bypasses NAPI for frames it considers not worth aggregating. Paced rates above two consecutive lossy ones are skipped, except
// the reference rates (-cpu-rate, -overload-rate); then up to three steps (-refine) bisect between
// the highest rate received without loss and the lowest lossy one. A paced step that lost 1-50% is
// measured once more and the better kept (-retries): other load on a shared machine only ever adds
// loss. Reported: receive capacity (the highest achieved offered rate received with < 1% loss), the
// rate received under overload (at 1.3M offered, -overload-rate, the same for every receiver; the
// sweep also shows "max"), and CPU per received datagram at 1M offered: the receiver process plus
// its pinned NAPI thread ("rx CPU"), the receiver process alone ("of which app": on veth the
// NAPI thread's copy-mode work is most of an XDP receiver's cost and the same for afxdp and
// asavie), and everything the receiver's core did ("rx core": softirq work included, but also
// any other load on that core).
//
// Send tests: each sender sends unpaced to an afxdp receiver: udp (one datagram per WriteBatch),
// mmsg (sendmmsg batches of 64, GSO off), afxdp (TX ring, batches of 64), and mmsg-gso (the same
// 64-datagram same-destination runs with UDP GSO; with XDP on the peer, veth segments them in
// software on the sender's core). Reported: send rate, Gbit/s of payload, sender CPU per datagram,
// and the rate delivered to the receiver.
//
// Output: Markdown tables on stdout, then, last, lines such as "ratio mmsg/udp rx-64 1.43".
// Progress and per-step drop counters (where datagrams were lost) go to stderr. A default run takes
// about 6.5 minutes (6m13s here): 2 s per measured step (-step), about 10 steps and a few retries
// x 7 receivers x 2 payload sizes, 7 send tests, warm-ups and process start-ups; -timeout (10m)
// bounds it. Other load on the two cores distorts the results (XDP receivers on veth most:
// their 256-frame veth ring overflows whenever the pinned NAPI thread waits for the CPU), so run it
// on otherwise idle cores; the report notes the load seen before the run and each step's "rx core
// busy". Everything created (namespaces, veth pair, XDP programs) is removed at exit, also after
// errors and on SIGINT, SIGTERM or SIGHUP; namespaces of an earlier run that was killed (SIGKILL)
// are deleted at the next start.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Roles of a child process.
const (
	roleRecv = "recv"
	roleSend = "send"
)

// childConfig is what a child process is told on its command line.
type childConfig struct {
	// Role is roleRecv or roleSend.
	Role string
	// Transport names the backend (a receiver or sender name).
	Transport string
	// Dev is the veth end in the child's namespace (needed by afxdp and asavie).
	Dev string
	// Local is the address to bind (the receiver's port is also what asavie filters on);
	// Remote is where a sender sends.
	Local, Remote netip.AddrPort
	// Size is a sender's payload size.
	Size int
	// CPU is the core the child is pinned to (its NAPI thread goes there too).
	CPU int
	// Deadline is when the child gives up and exits.
	Deadline time.Time
}

// validate names the first invalid field.
func (c childConfig) validate() error {
	switch c.Role {
	case roleRecv:
		if err := checkNames("Transport", []string{c.Transport}, receiverNames); err != nil {
			return err
		}
	case roleSend:
		if err := checkNames("Transport", []string{c.Transport}, senderNames); err != nil {
			return err
		}
		if !c.Remote.IsValid() || c.Remote.Port() == 0 {
			return fmt.Errorf("pps: child Remote %v: want an address and a port", c.Remote)
		}
		if c.Size < minPayload || c.Size > maxPayload {
			return fmt.Errorf("pps: child Size %d: want %d..%d", c.Size, minPayload, maxPayload)
		}
	default:
		return fmt.Errorf("pps: child Role %q: want %q or %q", c.Role, roleRecv, roleSend)
	}
	switch {
	case !c.Local.IsValid() || c.Local.Port() == 0:
		return fmt.Errorf("pps: child Local %v: want an address and a port", c.Local)
	case (c.Transport == nameAFXDP || c.Transport == nameAsavie || onNAPILink(c.Transport)) && c.Dev == "":
		return fmt.Errorf("pps: child Dev: %s needs an interface", c.Transport)
	case c.CPU < 0:
		return fmt.Errorf("pps: child CPU %d: negative", c.CPU)
	case c.Deadline.IsZero():
		return errors.New("pps: child Deadline: not set")
	}
	return nil
}

// args returns the command line that makes a child with this configuration.
func (c childConfig) args() []string {
	a := []string{"-role=" + c.Role, "-transport=" + c.Transport, "-local=" + c.Local.String(),
		"-cpu=" + strconv.Itoa(c.CPU), "-deadline=" + strconv.FormatInt(c.Deadline.UnixNano(), 10)}
	if c.Dev != "" {
		a = append(a, "-dev="+c.Dev)
	}
	if c.Role == roleSend {
		a = append(a, "-remote="+c.Remote.String(), "-size="+strconv.Itoa(c.Size))
	}
	return a
}

// config is a parsed command line: a run (Child.Role empty) or a child.
type config struct {
	Run   options
	Child childConfig
}

// parseArgs reads the command line (without the program name).
func parseArgs(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("pps", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		sizes     = fs.String("sizes", "64,1200", "UDP payload sizes in bytes, comma-separated")
		rates     = fs.String("rates", "100k,200k,400k,700k,1M,1.3M,max", "offered rates of the receive sweep (pps, k/M suffix; max = unpaced, last)")
		receivers = fs.String("receivers", strings.Join(receiverNames, ","), "receivers to measure")
		load      = fs.String("load", nameAFXDP, "sender offering load to the receivers: afxdp, mmsg or udp")
		senders   = fs.String("senders", strings.Join(senderNames, ","), "senders to measure (mmsg-gso only at -gso-size)")
		step      = fs.Duration("step", defaultStep, "duration of each measured step")
		warmup    = fs.Duration("warmup", defaultWarmup, "unmeasured traffic before each new receiver or sender (0: none)")
		refine    = fs.Int("refine", defaultRefine, "extra steps bisecting each receiver's capacity (negative: none)")
		retries   = fs.Int("retries", defaultRetries, "re-measurements of a paced step that lost 1-50%, best kept (negative: none)")
		txCPU     = fs.Int("txcpu", 0, "core of the sender")
		rxCPU     = fs.Int("rxcpu", defaultRXCPU, "core of the receiver and its kernel work")
		cpuRate   = fs.String("cpu-rate", "1M", "offered rate at which receivers' CPU per packet is compared")
		overload  = fs.String("overload-rate", "1.3M", "offered rate at which receivers' overload behaviour is compared")
		gsoSize   = fs.Int("gso-size", defaultGSOSize, "payload size of the mmsg-gso send test")
		timeout   = fs.Duration("timeout", defaultTimeout, "bound on the whole run")

		role      = fs.String("role", "", "internal: run as a child (recv or send)")
		transport = fs.String("transport", "", "internal: the child's backend")
		dev       = fs.String("dev", "", "internal: the child's interface")
		local     = fs.String("local", "", "internal: the child's local address")
		remote    = fs.String("remote", "", "internal: the sender's destination")
		size      = fs.Int("size", 0, "internal: the sender's payload size")
		cpu       = fs.Int("cpu", 0, "internal: the child's core")
		deadline  = fs.Int64("deadline", 0, "internal: the child's deadline (Unix ns)")
	)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("pps: unexpected arguments %q", fs.Args())
	}
	if *role != "" {
		c := childConfig{Role: *role, Transport: *transport, Dev: *dev, Size: *size, CPU: *cpu,
			Deadline: time.Unix(0, *deadline)}
		if *deadline == 0 {
			c.Deadline = time.Time{}
		}
		var err error
		if c.Local, err = parseAddrPort("local", *local); err != nil {
			return config{}, err
		}
		if *remote != "" {
			if c.Remote, err = parseAddrPort("remote", *remote); err != nil {
				return config{}, err
			}
		}
		return config{Child: c}, c.validate()
	}
	if *warmup == 0 {
		*warmup = -1 // none (in options, 0 is the default)
	}
	if *txCPU == *rxCPU {
		return config{}, fmt.Errorf("pps: -txcpu and -rxcpu are both %d: sender and receiver need separate cores", *txCPU)
	}
	o := options{Step: *step, Warmup: *warmup, Refine: *refine, Retries: *retries, TXCPU: *txCPU, RXCPU: *rxCPU, GSOSize: *gsoSize, Timeout: *timeout,
		Receivers: parseNames(*receivers), Senders: parseNames(*senders), Load: *load}
	var err error
	if o.Sizes, err = parseInts(*sizes); err != nil {
		return config{}, fmt.Errorf("pps: -sizes: %w", err)
	}
	if o.Rates, err = parseRates(*rates); err != nil {
		return config{}, fmt.Errorf("pps: -rates: %w", err)
	}
	if o.CPURate, err = parseRate(*cpuRate); err != nil || o.CPURate == 0 {
		return config{}, fmt.Errorf("pps: -cpu-rate %q: want a paced rate", *cpuRate)
	}
	if o.OverloadRate, err = parseRate(*overload); err != nil || o.OverloadRate == 0 {
		return config{}, fmt.Errorf("pps: -overload-rate %q: want a paced rate", *overload)
	}
	o, err = o.withDefaults()
	return config{Run: o}, err
}

func parseAddrPort(name, s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("pps: -%s: %w", name, err)
	}
	return ap, nil
}

func main() {
	cfg, err := parseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if cfg.Child.Role != "" {
		if runChild(cfg.Child) != nil {
			os.Exit(1)
		}
		return
	}
	if err := runBench(cfg.Run, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
