// Package afxdp is naquid's kernel-bypass backend: UDP datagrams for our port travel between the
// network card and the application through AF_XDP sockets, skipping the kernel's IP and UDP stack.
//
// # How it works
//
// New attaches the XDP program of package github.com/naquid/naquid/bpf to one interface. The
// program redirects every IPv4 or IPv6 UDP datagram addressed to the Conn's port (not fragments)
// into the AF_XDP socket of the RX queue it arrived on, and passes every other frame (ARP,
// neighbour discovery, ICMP, other ports, fragments, malformed headers) to the kernel. New binds
// one AF_XDP socket per RX queue (Config.Queues, default all of them), each with its own UMEM
// (packet memory shared with the kernel) and its fill, completion, RX and TX rings. The rings are
// read and written with atomic producer and consumer indices and cached copies, so the hot path
// touches shared memory about once per batch; XDP_USE_NEED_WAKEUP keeps system calls to the
// ones the kernel asks for.
//
// Alongside, a "shadow" kernel UDP socket is bound to the same address and port. It reserves the
// port, it is the Conn's control socket (transport.ControlSocket: quic-go sets and probes options
// on it), and it receives what the program passes to the kernel (IP fragments, IPv6 datagrams
// with extension headers, datagrams from other interfaces such as loopback): ReadBatch delivers
// those too.
//
// The program matches on the port alone: on its interface, the Conn takes over that UDP port for
// every address, so another socket bound to the same port on another address of the interface
// no longer receives (those datagrams are dropped and counted as bad addresses). Datagrams from
// sources the kernel would refuse (loopback, IPv4-mapped IPv6, multicast, broadcast) and to
// multicast or broadcast destinations are dropped. A Conn bound to a wildcard address serves any
// unicast destination that reaches it, including addresses that are not the host's own (a host
// that forwards packets, a promiscuous device): bind a specific address on such hosts.
//
// ReadBatch copies payloads out of the RX rings after checking the Ethernet, IP and UDP headers
// and checksums (a malformed frame is dropped and counted, never trusted; a checksum left
// partial by a kernel on the same host, as veth delivers them, is accepted). It waits through the
// Go netpoller: the AF_XDP sockets and the shadow socket sit in one epoll instance that the
// runtime polls, so a waiting reader parks without a thread and without busy polling, and read
// deadlines and Close wake it.
//
// WriteBatch builds Ethernet, IP and UDP headers with computed checksums (the IPv4 header
// checksum, and the UDP checksum over IPv4 and IPv6) directly in UMEM frames and queues them on
// the TX ring of the first socket. Writes of concurrent goroutines are combined (group commit,
// package internal/batch) so that many connections share ring operations and wake-ups. The
// destination's Ethernet address is the one learned from frames received from it, else the
// kernel's neighbour table entry for the route's next hop (queried over netlink); when neither
// is known, or the route does not leave through this interface (a local address, another
// interface), the datagram goes out through the shadow socket, which also makes the kernel
// resolve the neighbour for the next datagrams.
//
// # Requirements and limits
//
// Linux 5.4 or later, an Ethernet interface, and privileges: CAP_NET_ADMIN (attach XDP, bind
// AF_XDP sockets to a device), CAP_BPF (load the program and its maps; CAP_SYS_ADMIN on kernels
// before 5.8) and CAP_NET_RAW (create AF_XDP sockets), or root; without CAP_IPC_LOCK the UMEM
// counts against RLIMIT_MEMLOCK. Errors name the step and match
// ErrPermission, ErrInterfaceNotFound, ErrQueueRange, ErrInterfaceBusy or ErrUnsupported with
// errors.Is; a *SetupError carries the interface, queue and step.
//
// One Conn per interface (ErrInterfaceBusy otherwise; bind [::] to serve IPv4 and IPv6 with one
// Conn): the program attaches through a BPF link, which the kernel refuses for a second program
// on the same interface, and which it removes by itself when the process dies.
// New resolves the interface in the calling thread's network namespace; the Conn keeps working
// from any goroutine afterwards.
//
// Zero-copy mode needs driver support (ModeAuto falls back to copy mode); veth supports copy mode
// only. The largest datagram (Capabilities.MaxDatagram) is bounded by the interface MTU and by
// the frame size. Segmented writes (Message.SegmentSize) are split in software. Ethernet
// addresses learned from received frames are trusted as they are, as the kernel trusts ARP.
package afxdp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/naquid/naquid/bpf"
	"github.com/naquid/naquid/transport"
)

// Defaults of Config fields left zero.
const (
	// DefaultRXRingSize is the default size of the RX and fill rings: the frames each socket
	// keeps ready for reception.
	DefaultRXRingSize = 2048
	// DefaultTXRingSize is the default size of the TX and completion rings: the frames each
	// socket has for sending.
	DefaultTXRingSize = 1024
	// DefaultFrameSize is the default UMEM frame size in bytes.
	DefaultFrameSize = 2048
)

// Limits of Config fields.
const (
	// MinRingSize and MaxRingSize bound RXRingSize and TXRingSize (which are powers of two).
	MinRingSize = 64
	MaxRingSize = 16384
)

// Mode selects how an AF_XDP socket moves frames.
type Mode int

// Modes.
const (
	// ModeAuto uses zero-copy mode where the driver supports it and copy mode elsewhere.
	ModeAuto Mode = iota
	// ModeCopy makes the kernel copy every frame between the device and UMEM. It works on
	// every device, with either attach mode.
	ModeCopy
	// ModeZeroCopy makes the device read and write UMEM directly. It needs driver support (and
	// driver attach mode); New fails with ErrUnsupported elsewhere (veth, for one).
	ModeZeroCopy
)

// String returns "auto", "copy" or "zerocopy".
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zerocopy"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// AttachMode selects the XDP hook the program is attached to (bpf.AttachMode).
type AttachMode = bpf.AttachMode

// Attach modes.
const (
	// AttachAuto tries driver mode and falls back to generic mode.
	AttachAuto = bpf.AttachAuto
	// AttachDriver runs the program in the driver's receive path (native XDP). Devices
	// without XDP support refuse it (ErrUnsupported).
	AttachDriver = bpf.AttachDriver
	// AttachGeneric runs the program on socket buffers after the driver (SKB mode): slower,
	// copy mode only, but available on every device.
	AttachGeneric = bpf.AttachGeneric
)

// Config configures a Conn. Only Interface is required; the port comes from the local address
// given to New.
type Config struct {
	// Interface is the name of the network interface to attach to, such as "eth0". Required.
	Interface string
	// Queues are the RX queue ids to bind an AF_XDP socket to. nil or empty means every RX
	// queue of the interface. Frames arriving on a queue without a socket reach the Conn
	// through the shadow socket, slowly.
	Queues []int
	// RXRingSize is the size of each socket's RX and fill rings, and the number of UMEM frames
	// reserved for reception: a power of two from MinRingSize to MaxRingSize. 0 means
	// DefaultRXRingSize (2048). Each socket's UMEM is (RXRingSize+TXRingSize)*FrameSize bytes:
	// 6 MiB with the defaults.
	RXRingSize int
	// TXRingSize is the size of each socket's TX and completion rings, and the number of UMEM
	// frames reserved for sending: a power of two from MinRingSize to MaxRingSize. 0 means
	// DefaultTXRingSize (1024).
	TXRingSize int
	// FrameSize is the size of a UMEM frame in bytes: 2048 or 4096. 0 means DefaultFrameSize
	// (2048). A received frame must fit in FrameSize minus 256 bytes of kernel headroom: 2048
	// serves MTUs up to 1778 bytes, 4096 up to 3826 (larger frames need multi-buffer AF_XDP,
	// which this package does not use).
	FrameSize int
	// Mode selects copy or zero-copy mode. The zero value is ModeAuto.
	Mode Mode
	// Attach selects the XDP attach mode. The zero value is AttachAuto.
	Attach AttachMode
}

// withDefaults returns c with zero fields replaced by their defaults, or a *ConfigError naming
// the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.Interface == "" {
		return c, &ConfigError{Field: "Interface", Reason: "an interface name is required"}
	}
	if len(c.Interface) >= 16 {
		return c, &ConfigError{Field: "Interface", Reason: fmt.Sprintf("%q is longer than 15 bytes", c.Interface)}
	}
	for i, q := range c.Queues {
		if q < 0 {
			return c, &ConfigError{Field: fmt.Sprintf("Queues[%d]", i), Reason: fmt.Sprintf("queue id %d is negative", q)}
		}
		for j := range i {
			if c.Queues[j] == q {
				return c, &ConfigError{Field: fmt.Sprintf("Queues[%d]", i), Reason: fmt.Sprintf("queue %d repeats Queues[%d]", q, j)}
			}
		}
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{{"RXRingSize", &c.RXRingSize, DefaultRXRingSize}, {"TXRingSize", &c.TXRingSize, DefaultTXRingSize}} {
		switch v := *f.v; {
		case v == 0:
			*f.v = f.def
		case v < MinRingSize || v > MaxRingSize || v&(v-1) != 0:
			return c, &ConfigError{Field: f.name, Reason: fmt.Sprintf("%d is not a power of two from %d to %d", v, MinRingSize, MaxRingSize)}
		}
	}
	switch c.FrameSize {
	case 0:
		c.FrameSize = DefaultFrameSize
	case 2048, 4096:
	default:
		return c, &ConfigError{Field: "FrameSize", Reason: fmt.Sprintf("%d is neither 2048 nor 4096", c.FrameSize)}
	}
	if c.Mode < ModeAuto || c.Mode > ModeZeroCopy {
		return c, &ConfigError{Field: "Mode", Reason: fmt.Sprintf("unknown mode %d", int(c.Mode))}
	}
	if c.Attach < AttachAuto || c.Attach > AttachGeneric {
		return c, &ConfigError{Field: "Attach", Reason: fmt.Sprintf("unknown attach mode %d", int(c.Attach))}
	}
	if c.Mode == ModeZeroCopy && c.Attach == AttachGeneric {
		return c, &ConfigError{Field: "Mode", Reason: "zero-copy mode needs driver attach mode, not generic"}
	}
	c.Queues = append([]int(nil), c.Queues...)
	return c, nil
}

// Info describes what New set up.
type Info struct {
	// Interface and Ifindex name the interface.
	Interface string
	Ifindex   int
	// Queues are the RX queues with an AF_XDP socket, in the order of Config.Queues.
	Queues []int
	// ZeroCopy reports that the sockets run in zero-copy mode (else copy mode).
	ZeroCopy bool
	// Attach is the attach mode in effect: AttachDriver or AttachGeneric.
	Attach AttachMode
	// MTU is the interface MTU when New ran.
	MTU int
}

// KernelStats are the kernel's AF_XDP counters (XDP_STATISTICS), summed over the sockets.
type KernelStats struct {
	// RXDropped counts frames dropped for lack of a fill-ring frame or because they did not
	// fit a frame.
	RXDropped uint64
	// RXInvalidDescs and TXInvalidDescs count invalid descriptors (a bug if not 0).
	RXInvalidDescs, TXInvalidDescs uint64
	// RXRingFull counts frames dropped because the RX ring was full (the reader is too slow).
	RXRingFull uint64
	// RXFillRingEmpty counts the times the kernel found the fill ring empty.
	RXFillRingEmpty uint64
	// TXRingEmpty counts the times the kernel found the TX ring empty when asked to send.
	TXRingEmpty uint64
}

// Factory returns a transport.Factory that opens Conns with cfg. The factory resolves
// cfg.Interface in the network namespace of the thread that calls it.
func Factory(cfg Config) transport.Factory {
	return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		c, err := New(ctx, local, cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// Errors of this package, matched with errors.Is. Setup errors are *SetupError values that match
// one of the first five (when the cause is known) as well as the underlying system error.
var (
	// ErrInterfaceNotFound: the configured interface does not exist (in the calling thread's
	// network namespace).
	ErrInterfaceNotFound = errors.New("afxdp: interface not found")
	// ErrPermission: the process lacks a privilege: CAP_NET_ADMIN, CAP_BPF (CAP_SYS_ADMIN before
	// Linux 5.8) and CAP_NET_RAW are needed, or root; registering the UMEM also needs
	// CAP_IPC_LOCK or room under RLIMIT_MEMLOCK (the wrapped error says which step failed).
	ErrPermission = errors.New("afxdp: permission denied (needs CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW, or root; and CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK for the UMEM)")
	// ErrQueueRange: a configured queue id is not below the interface's RX queue count.
	ErrQueueRange = errors.New("afxdp: queue out of range")
	// ErrInterfaceBusy: another XDP program is attached to the interface (another Conn, or
	// another application): one Conn per interface.
	ErrInterfaceBusy = errors.New("afxdp: interface busy: another XDP program is attached (one Conn per interface)")
	// ErrUnsupported: XDP or AF_XDP is unavailable here, or not in the chosen mode (zero-copy on
	// a driver without it, driver attach on a device without native XDP, an interface that is
	// not Ethernet, a system other than Linux).
	ErrUnsupported = errors.New("afxdp: unsupported")
	// ErrInvalidAddress: New got an invalid local address, or WriteBatch a destination that is
	// invalid, has port 0, or is of a family the Conn does not serve (an IPv6 destination on a
	// Conn bound to an IPv4 address), or a source (Message.Local) of another family.
	ErrInvalidAddress = errors.New("afxdp: invalid address")
)

// ConfigError reports an invalid Config field. Use errors.As to inspect it.
type ConfigError struct {
	// Field names the bad field, such as "RXRingSize" or "Queues[1]".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error names the field and the problem.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("afxdp: invalid Config.%s: %s", e.Field, e.Reason)
}

// SetupError reports a failed step of New. It matches its Kind (when not nil) and its Err with
// errors.Is, so errors.Is(err, ErrPermission) and errors.Is(err, unix.EPERM) both work.
type SetupError struct {
	// Interface is the interface being set up.
	Interface string
	// Queue is the RX queue the step concerned, or -1.
	Queue int
	// Step names what failed, such as "bind" or "load XDP program".
	Step string
	// Kind is ErrPermission, ErrInterfaceNotFound, ErrQueueRange, ErrInterfaceBusy,
	// ErrUnsupported, or nil when the cause is none of those.
	Kind error
	// Err is the underlying error.
	Err error
}

// Error reads like "afxdp: bind veth0 queue 1: operation not supported".
func (e *SetupError) Error() string {
	where := e.Interface
	if e.Queue >= 0 {
		where += fmt.Sprintf(" queue %d", e.Queue)
	}
	msg := fmt.Sprintf("afxdp: %s %s: %v", e.Step, where, e.Err)
	if e.Kind != nil && !errors.Is(e.Err, e.Kind) {
		msg += " (" + e.Kind.Error() + ")"
	}
	return msg
}

// Unwrap returns Kind (when not nil) and Err.
func (e *SetupError) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}
