// Package udp is the plain kernel UDP backend of naquid: one UDP socket, one system call per
// datagram.
//
// A *Conn implements transport.Conn and the optional transport.KernelUDP, transport.ControlSocket
// and transport.Stats. The quic adapter hands its *net.UDPConn (UDPConn) to quic-go, which then
// runs its own batching, GSO and ECN code on the socket untouched; ReadBatch and WriteBatch serve
// every other caller. Do not mix the two on one Conn: once quic-go owns the socket it sets its own
// options on it (ECN and packet-info control messages, path MTU discovery) and reads it itself.
//
// The socket gets large buffers (Config), reports the ECN codepoint and local address of every
// datagram it reads (parsed from control messages without allocating), sends ECN and source
// address as control messages, and sends segmented messages (Message.SegmentSize) with UDP GSO
// when the kernel supports it, splitting them in software otherwise. IPv4, IPv6 and dual-stack
// sockets (bound to [::]) are supported; addresses handed out are never IPv4-mapped.
//
// Only Linux is supported; Listen fails with errors.ErrUnsupported elsewhere.
package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/naquid/naquid/transport"
)

// Compile-time checks of the interfaces a *Conn implements.
var (
	_ transport.Conn          = (*Conn)(nil)
	_ transport.KernelUDP     = (*Conn)(nil)
	_ transport.ControlSocket = (*Conn)(nil)
	_ transport.Stats         = (*Conn)(nil)
)

// Errors returned by this package, matched with errors.Is.
var (
	// ErrInvalidAddress is returned for an address that cannot be used: the zero netip.AddrPort
	// given to Listen, a destination that is not valid, or a source address (Message.Local) of
	// another family than the destination.
	ErrInvalidAddress = errors.New("invalid address")
	// ErrInvalidConfig is returned by Listen for a Config field out of range; the message names
	// the field.
	ErrInvalidConfig = errors.New("invalid config")
)

// DefaultBufferSize is the socket receive and send buffer size used when Config leaves it 0.
const DefaultBufferSize = 4 << 20

// maxBufferSize bounds Config.ReadBuffer and Config.WriteBuffer.
const maxBufferSize = 1 << 30

// Config configures a Conn. The zero value is ready to use.
type Config struct {
	// ReadBuffer is the socket receive buffer (SO_RCVBUF) in bytes. 0 means DefaultBufferSize
	// (4 MiB). Root (CAP_NET_ADMIN) gets the size asked for through SO_RCVBUFFORCE; otherwise the
	// kernel caps it at net.core.rmem_max. At most 1 GiB. Under nq, quic-go takes the socket
	// and raises a buffer smaller than 7 MiB to 7 MiB (forced, as root), so smaller sizes hold
	// only for other users of the Conn.
	ReadBuffer int
	// WriteBuffer is the socket send buffer (SO_SNDBUF) in bytes. 0 means DefaultBufferSize
	// (4 MiB). Root gets it through SO_SNDBUFFORCE; otherwise the kernel caps it at
	// net.core.wmem_max. At most 1 GiB. quic-go raises it as it does ReadBuffer.
	WriteBuffer int
	// DisableGSO makes WriteBatch split segmented messages into single datagrams in software even
	// when the kernel supports UDP GSO. The zero value uses GSO when available. Under nq,
	// quic-go writes to this transport's socket itself and decides on GSO alone: quic-go's
	// QUIC_GO_DISABLE_GSO=1 environment variable turns it off there (NQ_DISABLE_GSO, this
	// option's switch for the mmsg transport, does not).
	DisableGSO bool
}

// validate reports the first field out of range.
func (c Config) validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"ReadBuffer", c.ReadBuffer}, {"WriteBuffer", c.WriteBuffer}} {
		if f.v < 0 || f.v > maxBufferSize {
			return fmt.Errorf("udp: Config.%s is %d, want 0 (default) to %d: %w", f.name, f.v,
				maxBufferSize, ErrInvalidConfig)
		}
	}
	return nil
}

// Factory returns a transport.Factory that opens Conns with cfg.
func Factory(cfg Config) transport.Factory {
	return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		c, err := Listen(ctx, local, cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// Listen opens a UDP socket bound to local (port 0 picks a free port). An IPv4 address (or an
// IPv4-mapped one, which is unmapped) opens an IPv4 socket; [::] opens a dual-stack socket that
// also carries IPv4; any other IPv6 address opens an IPv6-only socket. ctx bounds the setup only.
func Listen(ctx context.Context, local netip.AddrPort, cfg Config) (*Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !local.IsValid() {
		return nil, fmt.Errorf("udp: listen %v: %w", local, ErrInvalidAddress)
	}
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("udp: listen %s: %w", local, err)
	}
	return listen(ctx, local, cfg)
}

// Conn is a kernel UDP socket implementing transport.Conn. ReadBatch has one caller at a time;
// every other method is safe for concurrent use.
type Conn struct {
	uc     *net.UDPConn
	local  netip.AddrPort
	caps   transport.Capabilities
	sys    sysState // platform-specific state
	closed atomic.Bool

	packetsRead, packetsWritten atomic.Uint64
	bytesRead, bytesWritten     atomic.Uint64
	readCalls, writeCalls       atomic.Uint64
	drops, kernelDrops          atomic.Uint64
}

// LocalAddr returns the bound address (with the port the system chose when bound to port 0).
// A socket bound to [::] reports [::].
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Capabilities reports MaxDatagram (65507 bytes for IPv4 and dual-stack sockets, 65527 for
// IPv6-only ones), ECN and LocalAddr support, GSO when the kernel segments for us, and a batch
// size of 1.
func (c *Conn) Capabilities() transport.Capabilities { return c.caps }

// UDPConn returns the socket, for quic-go to use directly. Do not close it: Close the Conn.
func (c *Conn) UDPConn() *net.UDPConn { return c.uc }

// SyscallConn returns the socket's raw connection, on which socket options may be set and probed.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udp: %s: syscall conn: %w", c.local, err)
	}
	return rc, nil
}

// SetReadDeadline sets the deadline for ReadBatch; a deadline in the past wakes a blocked reader,
// which fails with an error matching os.ErrDeadlineExceeded. The zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return fmt.Errorf("udp: %s: set read deadline: %w", c.local, net.ErrClosed)
	}
	if err := c.uc.SetReadDeadline(t); err != nil {
		return fmt.Errorf("udp: %s: set read deadline: %w", c.local, err)
	}
	return nil
}

// Close closes the socket and wakes a blocked reader. Later calls, a second Close included, fail
// with an error matching net.ErrClosed.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return fmt.Errorf("udp: %s: close: %w", c.local, net.ErrClosed)
	}
	if err := c.uc.Close(); err != nil {
		return fmt.Errorf("udp: %s: close: %w", c.local, err)
	}
	return nil
}

// Stats returns the counts since the Conn was opened. WriteCalls counts sendmsg calls (a GSO
// message is one), Drops the datagrams dropped because the kernel had no buffer for them
// (ENOBUFS), KernelDrops the datagrams the kernel dropped because the receive buffer was full
// (SO_RXQ_OVFL, counted once ReadBatch has been called).
func (c *Conn) Stats() transport.Counters {
	return transport.Counters{
		PacketsRead:    c.packetsRead.Load(),
		PacketsWritten: c.packetsWritten.Load(),
		BytesRead:      c.bytesRead.Load(),
		BytesWritten:   c.bytesWritten.Load(),
		ReadCalls:      c.readCalls.Load(),
		WriteCalls:     c.writeCalls.Load(),
		Drops:          c.drops.Load(),
		KernelDrops:    c.kernelDrops.Load(),
	}
}
