// Package bpf is naquid's XDP redirect program: it steers the UDP datagrams addressed to our ports
// into AF_XDP sockets and passes every other frame to the kernel.
//
// The program is assembled in Go with github.com/cilium/ebpf/asm (no C toolchain) and attached
// through a BPF link, so it detaches by itself when the process dies. It is used by
// transport/afxdp, which binds one AF_XDP socket per RX queue and registers it with
// [Program.SetSocket].
//
// # What is redirected
//
// An Ethernet frame is redirected with bpf_redirect_map(xsks, rx_queue_index, XDP_PASS) when it
// is an untagged IPv4 or IPv6 packet carrying a complete UDP header whose destination port is one
// of [Config.Ports], and the packet is not a fragment. The XDP_PASS fallback means a queue
// without a socket hands its frames to the kernel instead of dropping them (they are counted in
// [Counters.NoSocket]); the destination address is not checked.
//
// Everything else goes to the kernel (XDP_PASS), counted by reason in [Counters]:
//
//   - frames shorter than their headers, an IPv4 version other than 4 or IHL below 5, an IPv4
//     total length shorter than its header or longer than the frame, an IPv6 version other
//     than 6 or a payload length longer than the frame, a UDP length below 8 or longer than
//     the IP payload: PassMalformed;
//   - VLAN (802.1Q) and QinQ (802.1ad) tagged frames: PassVLAN;
//   - other EtherTypes (ARP, LLDP, ...): PassNotIP;
//   - IP packets that are not UDP (TCP, ICMP, ICMPv6 including neighbour discovery, ...):
//     PassNotUDP;
//   - IPv4 packets with MF set or a non-zero fragment offset, IPv6 packets whose next header is
//     a Fragment header: PassFragment;
//   - IPv6 packets whose next header is another extension header (hop-by-hop, routing,
//     destination options, AH, mobility, HIP, shim6): PassIPv6Ext. The program does not walk
//     extension header chains; such datagrams reach the kernel's UDP socket on the same port;
//   - UDP datagrams to any other port: PassOtherPort.
//
// IPv4 options are allowed: the UDP header is found from the IHL. Checksums are not verified:
// that is left to the socket's reader (or the NIC).
package bpf

import (
	"errors"
	"fmt"
)

// Limits of a [Config].
const (
	// MaxPorts is the largest number of ports a program matches. Ports are compiled into the
	// program as immediates, one comparison each.
	MaxPorts = 16
	// MaxQueues is the largest QueueCount: the size of the XSKMAP.
	MaxQueues = 1024
)

// Config describes the program to load. Only Ports is required.
type Config struct {
	// Ports are the UDP destination ports to redirect: 1 to MaxPorts distinct, non-zero ports.
	Ports []uint16
	// QueueCount is the number of RX queues that may have a socket: the XSKMAP holds queues
	// 0 to QueueCount-1. Frames from higher queues go to the kernel (counted in NoSocket).
	// 0 means 1; at most MaxQueues.
	QueueCount int
}

// ConfigError reports an invalid [Config] field. Load returns it; use errors.As to inspect it.
type ConfigError struct {
	// Field names the bad field, such as "Ports" or "Ports[2]".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error names the field and the problem.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("bpf: invalid Config.%s: %s", e.Field, e.Reason)
}

// withDefaults returns c with zero fields replaced by their defaults, or an error naming the first
// invalid field.
func (c Config) withDefaults() (Config, error) {
	if len(c.Ports) == 0 {
		return c, &ConfigError{Field: "Ports", Reason: "at least one port is required"}
	}
	if len(c.Ports) > MaxPorts {
		return c, &ConfigError{Field: "Ports", Reason: fmt.Sprintf("%d ports, at most %d are supported", len(c.Ports), MaxPorts)}
	}
	for i, p := range c.Ports {
		if p == 0 {
			return c, &ConfigError{Field: fmt.Sprintf("Ports[%d]", i), Reason: "port 0 is not a destination port"}
		}
		for j := range i {
			if c.Ports[j] == p {
				return c, &ConfigError{Field: fmt.Sprintf("Ports[%d]", i), Reason: fmt.Sprintf("port %d repeats Ports[%d]", p, j)}
			}
		}
	}
	switch {
	case c.QueueCount < 0 || c.QueueCount > MaxQueues:
		return c, &ConfigError{Field: "QueueCount", Reason: fmt.Sprintf("%d is outside 0..%d", c.QueueCount, MaxQueues)}
	case c.QueueCount == 0:
		c.QueueCount = 1
	}
	c.Ports = append([]uint16(nil), c.Ports...)
	return c, nil
}

// AttachMode selects the XDP hook a program is attached to.
type AttachMode int

// Attach modes.
const (
	// AttachAuto tries driver mode and falls back to generic mode if the driver refuses.
	AttachAuto AttachMode = iota
	// AttachDriver runs the program in the driver's receive path (native XDP). It fails on
	// devices without XDP support, such as loopback.
	AttachDriver
	// AttachGeneric runs the program on socket buffers after the driver (SKB mode). It works on
	// every device, more slowly, and only AF_XDP copy mode is possible.
	AttachGeneric
)

// String returns "auto", "driver" or "generic".
func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachDriver:
		return "driver"
	case AttachGeneric:
		return "generic"
	default:
		return fmt.Sprintf("AttachMode(%d)", int(m))
	}
}

// Errors returned by [Program] methods, wrapped with context; test them with errors.Is.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("bpf: program closed")
	// ErrAttached is returned by Attach when the program is already attached: one program serves
	// one interface, because the XSKMAP is indexed by that interface's RX queues.
	ErrAttached = errors.New("bpf: program already attached")
	// ErrQueueRange is returned by SetSocket and DeleteSocket for a queue outside
	// 0..QueueCount-1.
	ErrQueueRange = errors.New("bpf: queue out of range")
	// ErrUnsupported is returned by Load on systems without XDP (anything but Linux).
	ErrUnsupported = errors.New("bpf: XDP is supported only on Linux")
)

// Counters are the program's per-reason frame counts since Load, summed over all CPUs. Every frame
// the program sees is counted in exactly one field other than NoSocket.
type Counters struct {
	// RedirectV4 and RedirectV6 count UDP datagrams to our ports that were handed to
	// bpf_redirect_map: delivered to the queue's socket, or, if that queue has none, to the
	// kernel (and also counted in NoSocket).
	RedirectV4, RedirectV6 uint64
	// NoSocket counts the part of RedirectV4+RedirectV6 that arrived on a queue without a socket
	// in the XSKMAP and so went to the kernel.
	NoSocket uint64
	// PassNotIP counts frames whose EtherType is neither IPv4 nor IPv6 (ARP, LLDP, ...).
	PassNotIP uint64
	// PassVLAN counts 802.1Q and 802.1ad tagged frames.
	PassVLAN uint64
	// PassNotUDP counts IPv4 and IPv6 packets carrying another protocol (TCP, ICMP, ICMPv6, ...).
	PassNotUDP uint64
	// PassOtherPort counts UDP datagrams to ports not in Config.Ports.
	PassOtherPort uint64
	// PassFragment counts IPv4 UDP fragments and IPv6 packets with a Fragment header.
	PassFragment uint64
	// PassIPv6Ext counts IPv6 packets whose next header is an extension header other than
	// Fragment.
	PassIPv6Ext uint64
	// PassMalformed counts truncated frames and inconsistent IP or UDP headers.
	PassMalformed uint64
}

// Total is the number of frames the program has seen: the sum of every field except NoSocket.
func (c Counters) Total() uint64 {
	return c.RedirectV4 + c.RedirectV6 + c.PassNotIP + c.PassVLAN + c.PassNotUDP +
		c.PassOtherPort + c.PassFragment + c.PassIPv6Ext + c.PassMalformed
}

// Sub returns c - old, field by field: the counts between two snapshots.
func (c Counters) Sub(old Counters) Counters {
	return Counters{
		RedirectV4:    c.RedirectV4 - old.RedirectV4,
		RedirectV6:    c.RedirectV6 - old.RedirectV6,
		NoSocket:      c.NoSocket - old.NoSocket,
		PassNotIP:     c.PassNotIP - old.PassNotIP,
		PassVLAN:      c.PassVLAN - old.PassVLAN,
		PassNotUDP:    c.PassNotUDP - old.PassNotUDP,
		PassOtherPort: c.PassOtherPort - old.PassOtherPort,
		PassFragment:  c.PassFragment - old.PassFragment,
		PassIPv6Ext:   c.PassIPv6Ext - old.PassIPv6Ext,
		PassMalformed: c.PassMalformed - old.PassMalformed,
	}
}
