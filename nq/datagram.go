package nq

import (
	"errors"
	"fmt"

	quicgo "github.com/quic-go/quic-go"
)

// DatagramTooLargeError reports a datagram larger than the current path can carry in one QUIC
// packet. Max may grow as path MTU discovery finds a larger MTU.
type DatagramTooLargeError struct {
	Size, Max int
}

// Error implements error.
func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("nq: datagram of %d bytes over the path's limit of %d", e.Size, e.Max)
}

// ErrDatagramsUnsupported: the peer did not enable RFC 9221 datagrams (or the local QUIC
// configuration disabled them).
var ErrDatagramsUnsupported = errors.New("nq: datagrams not supported on this connection")

// SendDatagram sends p as an unreliable, unordered RFC 9221 datagram on the current generation.
// It never blocks; datagrams are not retransmitted. It fails with ErrConnLost while no generation
// is up, with a *DatagramTooLargeError when p does not fit one packet, and with
// ErrDatagramsUnsupported when the peer has them off.
func (c *Conn) SendDatagram(p []byte) error {
	g := c.live()
	if g == nil {
		return fmt.Errorf("nq: send datagram: %w", ErrConnLost)
	}
	if !g.qc.ConnectionState().SupportsDatagrams.Remote {
		return fmt.Errorf("nq: send datagram: %w", ErrDatagramsUnsupported)
	}
	err := g.qc.SendDatagram(p)
	var tl *quicgo.DatagramTooLargeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tl):
		return &DatagramTooLargeError{Size: len(p), Max: int(tl.MaxDatagramPayloadSize)}
	default:
		return fmt.Errorf("nq: send datagram: %w", g.classify(err))
	}
}

// receiveDatagrams hands every datagram of the generation to the handler, on one goroutine,
// until the connection ends.
func (g *generation) receiveDatagrams(handle func(c *Conn, p []byte)) {
	for {
		p, err := g.qc.ReceiveDatagram(g.ctx)
		if err != nil {
			return
		}
		handle(g.conn, p)
	}
}
