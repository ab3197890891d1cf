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
// Datagrams are not retransmitted. It returns at once while the path takes datagrams; when
// quic-go's queue of 32 unsent datagrams is full (the congestion window is used up, as on a path
// that stopped answering) it waits until one leaves or the connection ends, so a loop that must
// never wait should send from a goroutine of its own. It fails with ErrConnLost while no generation
// is up, with a *DatagramTooLargeError when p does not fit one packet, and with
// ErrDatagramsUnsupported when the peer or the local QUIC configuration has them off.
func (c *Conn) SendDatagram(p []byte) error {
	g := c.live()
	if g == nil {
		return fmt.Errorf("nq: send datagram: %w", ErrConnLost)
	}
	if st := g.qc.ConnectionState().SupportsDatagrams; !st.Remote || !st.Local {
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

// receiveDatagrams starts handing every datagram of the generation to handle, on one goroutine,
// until the connection ends (datagrams still queued then are dropped). teardown waits for that
// goroutine, so the hook never runs concurrently with itself across reconnects, nor after the
// connection's close hook.
func (g *generation) receiveDatagrams(handle func(c *Conn, p []byte)) {
	g.datagramsDone = make(chan struct{})
	go func() {
		defer close(g.datagramsDone)
		for {
			p, err := g.qc.ReceiveDatagram(g.ctx)
			if err != nil || g.ctx.Err() != nil {
				return
			}
			handle(g.conn, p)
		}
	}()
}
