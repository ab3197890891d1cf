// Package transport is the contract every naquid packet-I/O backend implements.
//
// A backend moves UDP datagrams between the network and the QUIC stack (quic-go, through package
// github.com/naquid/naquid/quic). It is deliberately small: one interface, [Conn], with batch reads
// and writes of [Message] values, plus optional capabilities found by type assertion
// ([KernelUDP], [ControlSocket], [Stats]). This package holds no OS code; the backends live in
// sub-packages:
//
//   - transport/udp: plain kernel UDP; its *net.UDPConn goes to quic-go untouched.
//   - transport/mmsg: recvmmsg/sendmmsg batching with UDP GSO/GRO.
//   - transport/afxdp: AF_XDP kernel bypass.
//   - transport/memconn: an in-memory network with fault injection.
//
// The conformance suite in transport/transporttest checks every rule below; a new backend runs
// transporttest.Run in its own tests.
//
// # Rules every Conn obeys
//
// quic-go depends on these; breaking one breaks connections in ways that are hard to trace.
//
//   - A read error that is not temporary closes the whole QUIC transport (every connection on it).
//     ReadBatch therefore returns an error only for deadlines, Close, or a truly broken socket.
//   - A write error other than EMSGSIZE destroys the QUIC connection that wrote. Back-pressure
//     (ENOBUFS, a full TX ring, a full queue) is absorbed by waiting or by dropping the datagram and
//     counting it, never returned.
//   - A datagram larger than Capabilities.MaxDatagram (or than the path allows) fails with an error
//     matching syscall.EMSGSIZE; path MTU discovery relies on it. Later writes still work.
//   - SetReadDeadline wakes a blocked ReadBatch, which returns an error matching
//     os.ErrDeadlineExceeded. quic-go's Transport.Close hangs otherwise.
//   - After Close, every call fails with an error matching net.ErrClosed; Close wakes a blocked
//     reader; a second Close returns nil or an error matching net.ErrClosed, and does no harm.
//   - A datagram is never split or merged: each Message written arrives as exactly the datagrams it
//     describes (one, or one per segment when SegmentSize is set).
package transport

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// ECN is the Explicit Congestion Notification codepoint of a datagram (RFC 3168): the two low bits
// of the IPv4 TOS / IPv6 traffic class byte.
type ECN uint8

// ECN codepoints.
const (
	ECNNotECT ECN = 0b00 // not ECN-capable transport
	ECNECT1   ECN = 0b01 // ECN-capable transport (1)
	ECNECT0   ECN = 0b10 // ECN-capable transport (0)
	ECNCE     ECN = 0b11 // congestion experienced
)

// String returns the RFC 3168 name of the codepoint.
func (e ECN) String() string {
	switch e & 0b11 {
	case ECNECT1:
		return "ECT(1)"
	case ECNECT0:
		return "ECT(0)"
	case ECNCE:
		return "CE"
	default:
		return "Not-ECT"
	}
}

// Message is one datagram (or, on write, one run of equal-size datagrams to one destination) in a
// batch. Messages are values so that a batch allocates nothing per packet.
type Message struct {
	// Buf is, on ReadBatch, the buffer to receive into (its length is the capacity offered) and, on
	// WriteBatch, the payload to send: all of Buf, not Buf[:N].
	Buf []byte
	// N is, on ReadBatch, the number of bytes received into Buf. WriteBatch ignores it.
	N int
	// Addr is the remote address: the source on ReadBatch, the destination on WriteBatch.
	// IPv4 addresses are plain 4-byte addresses (never IPv4-mapped IPv6).
	Addr netip.AddrPort
	// Local is, on ReadBatch, the local address the datagram was sent to when the backend knows it
	// (the zero Addr otherwise) and, on WriteBatch, the source address to use (the zero Addr lets
	// the backend choose).
	Local netip.Addr
	// SegmentSize, on WriteBatch, when > 0 and < len(Buf), says Buf holds several datagrams of
	// SegmentSize bytes each, the last one possibly shorter (UDP GSO). Every backend accepts it:
	// those that cannot segment natively split the run themselves. ReadBatch always returns single
	// datagrams and sets it to 0.
	SegmentSize int
	// ECN is the ECN codepoint: received (when Capabilities.ECN) or to send.
	ECN ECN
}

// Capabilities describes what a Conn can do. The zero value describes a backend with no
// offloads whose maximum datagram is unknown (callers then assume 1452 bytes).
type Capabilities struct {
	// MaxDatagram is the largest UDP payload one datagram may carry. Larger writes fail with
	// EMSGSIZE.
	MaxDatagram int
	// GSO reports that WriteBatch hands segmented messages (SegmentSize > 0) to the kernel or
	// device in one piece instead of splitting them in software.
	GSO bool
	// ECN reports that ReadBatch fills Message.ECN from the received packet and WriteBatch sets
	// the codepoint of sent packets.
	ECN bool
	// LocalAddr reports that ReadBatch fills Message.Local.
	LocalAddr bool
	// BatchSize is the number of messages the backend moves per system call or ring operation at
	// most; callers size their batches by it. 0 means 1.
	BatchSize int
}

// Conn is a packet-I/O endpoint bound to one local address.
//
// ReadBatch has one caller at a time; WriteBatch, LocalAddr, Capabilities, SetReadDeadline and
// Close are safe for concurrent use.
type Conn interface {
	// ReadBatch blocks until at least one datagram has arrived, then fills msgs[0:n] (Buf, N,
	// Addr, and Local/ECN where supported) and returns n, with 1 <= n <= len(msgs). A datagram
	// longer than its Buf is truncated to len(Buf). It returns an error only when the read
	// deadline passed (matching os.ErrDeadlineExceeded), the Conn was closed (matching
	// net.ErrClosed) or the socket is broken.
	ReadBatch(msgs []Message) (n int, err error)
	// WriteBatch sends msgs in order and returns how many were sent. It keeps no reference to any
	// buffer after it returns, so callers may reuse them at once. Back-pressure is absorbed
	// (waiting, or dropping and counting), never returned. A message too large fails with an error
	// matching syscall.EMSGSIZE; the returned n then counts the messages sent before it.
	WriteBatch(msgs []Message) (n int, err error)
	// LocalAddr returns the bound local address (with the port chosen by the system when bound to
	// port 0).
	LocalAddr() netip.AddrPort
	// Capabilities reports what this Conn supports. It does not change after the Conn is created.
	Capabilities() Capabilities
	// SetReadDeadline sets the deadline for ReadBatch; a deadline in the past wakes a blocked
	// reader at once. The zero time means no deadline.
	SetReadDeadline(t time.Time) error
	// Close releases every resource of the Conn and wakes a blocked reader. Later calls fail with
	// an error matching net.ErrClosed.
	Close() error
}

// Factory opens a Conn bound to local (port 0 picks a free port). It is how the nq package is
// told which backend to use. ctx bounds the setup only, not the life of the Conn.
type Factory func(ctx context.Context, local netip.AddrPort) (Conn, error)

// KernelUDP is implemented by backends that are a plain kernel UDP socket. The quic adapter hands
// the *net.UDPConn to quic-go directly, so quic-go's own batching, GSO and ECN code runs untouched.
// Callers must not close the returned conn: Close the Conn instead.
type KernelUDP interface {
	UDPConn() *net.UDPConn
}

// ControlSocket is implemented by backends that own a real UDP socket on which socket options can
// be set and probed (DF/PMTU, ECN, GSO support). quic-go probes it; it never reads or writes it.
type ControlSocket interface {
	SyscallConn() (syscall.RawConn, error)
}

// Stats is implemented by backends that count what they do.
type Stats interface {
	Stats() Counters
}

// Counters are cumulative counts since a Conn was created. Fields a backend does not track stay 0.
type Counters struct {
	// PacketsRead and PacketsWritten count datagrams (segments count one each).
	PacketsRead, PacketsWritten uint64
	// BytesRead and BytesWritten count UDP payload bytes.
	BytesRead, BytesWritten uint64
	// ReadCalls and WriteCalls count system calls or ring operations.
	ReadCalls, WriteCalls uint64
	// Drops counts datagrams the backend itself dropped (back-pressure, malformed frames, faults).
	Drops uint64
	// KernelDrops counts datagrams the kernel dropped before the backend saw them (SO_RXQ_OVFL,
	// XDP ring overflows).
	KernelDrops uint64
	// RingFull and RingEmpty count the times a ring or queue was found full on produce or empty
	// on consume (AF_XDP).
	RingFull, RingEmpty uint64
}

// Add adds o's counts to c.
func (c *Counters) Add(o Counters) {
	c.PacketsRead += o.PacketsRead
	c.PacketsWritten += o.PacketsWritten
	c.BytesRead += o.BytesRead
	c.BytesWritten += o.BytesWritten
	c.ReadCalls += o.ReadCalls
	c.WriteCalls += o.WriteCalls
	c.Drops += o.Drops
	c.KernelDrops += o.KernelDrops
	c.RingFull += o.RingFull
	c.RingEmpty += o.RingEmpty
}
