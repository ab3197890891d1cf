package quic

import (
	"errors"
	"fmt"
	"net"

	"github.com/naquid/naquid/transport"
)

// PacketConn returns the net.PacketConn that quic-go (a quicgo.Transport's Conn field) should use
// for c.
//
// When c implements transport.KernelUDP, the result is c's own *net.UDPConn: quic-go then runs its
// native recvmmsg/GSO/ECN code on it. Close c, not the returned conn, when done.
//
// Otherwise the result is an adapter owning c (closing it closes c). quic-go sees it as a
// quicgo.OOBCapablePacketConn with a ReadBatch method, so it reads in batches, writes GSO runs
// (Message.SegmentSize) and ECN codepoints through c, and runs path MTU discovery against c's
// EMSGSIZE errors. Socket options quic-go sets and probes go to c's control socket
// (transport.ControlSocket) or, if c has none, to a private UDP socket bound to 127.0.0.1:0 that
// is never read or written and is closed with the adapter. The adapter:
//
//   - hands quic-go cached *net.UDPAddr values (one per remote address, never mutated) and
//     allocates nothing per datagram once the peers are known (up to 16,384 active peers; past
//     that, some datagrams allocate an address again);
//   - reports the received ECN codepoint (IP_TOS / IPV6_TCLASS control message) when c's
//     Capabilities.ECN is set, and the local address (IP_PKTINFO / IPV6_PKTINFO) when
//     Capabilities.LocalAddr is set and c reported one;
//   - translates UDP_SEGMENT, IP_TOS / IPV6_TCLASS and IP_PKTINFO / IPV6_PKTINFO control messages
//     of writes into Message.SegmentSize, Message.ECN and Message.Local;
//   - returns errors that keep c's error matchable (errors.Is(err, syscall.EMSGSIZE),
//     os.ErrDeadlineExceeded, net.ErrClosed after Close) and implement net.Error.
//
// Reads (ReadBatch, ReadFrom, ReadMsgUDP) have one caller at a time, as quic-go does; writes are
// safe for concurrent use. Transports have no write deadlines: SetWriteDeadline (and the write
// half of SetDeadline) with a non-zero time fails with an error matching errors.ErrUnsupported.
//
// On error c is left open: the caller still owns it. On platforms other than Linux only
// transport.KernelUDP backends are supported; for others the error matches errors.ErrUnsupported.
func PacketConn(c transport.Conn) (net.PacketConn, error) {
	if c == nil {
		return nil, errors.New("quic: PacketConn: nil transport.Conn")
	}
	if k, ok := c.(transport.KernelUDP); ok {
		if uc := k.UDPConn(); uc != nil {
			return uc, nil
		}
	}
	a, err := newAdapter(c)
	if err != nil {
		return nil, fmt.Errorf("quic: adapt transport %s: %w", c.LocalAddr(), err)
	}
	return a, nil
}
