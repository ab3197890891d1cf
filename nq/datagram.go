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
// never wait should send from a goroutine of its own. It fails with ErrClosed once this side's
// application closed the Conn, with ErrConnLost while no generation is up otherwise (and on a
// server Conn that its peer or the network ended), with a *DatagramTooLargeError when p does not
// fit one packet, and with ErrDatagramsUnsupported when the peer or the local QUIC configuration
// has them off. A nil error means the datagram was queued, not that it arrived: on a path that
// died, sends succeed (or wait, as above) until the connection's idle timeout ends it.
func (c *Conn) SendDatagram(p []byte) error {
	if c.closeReq.Load() {
		return fmt.Errorf("nq: send datagram: %w", ErrClosed)
	}
	g := c.live()
	if g == nil {
		c.mu.Lock()
		ended, last := c.ended, c.lastErr
		c.mu.Unlock()
		if ended {
			return fmt.Errorf("nq: send datagram: %w", c.endedErr(last))
		}
		return fmt.Errorf("nq: send datagram: %w", ErrConnLost)
	}
	if st := g.qc.ConnectionState().SupportsDatagrams; !st.Remote || !st.Local {
		return fmt.Errorf("nq: send datagram: %w", ErrDatagramsUnsupported)
	}
	err := g.qc.SendDatagram(p)
	var tl *quicgo.DatagramTooLargeError
	switch {
	case err == nil:
		g.datagramBytes.Add(uint64(len(p)))
		return nil
	case errors.As(err, &tl):
		return &DatagramTooLargeError{Size: len(p), Max: int(tl.MaxDatagramPayloadSize)}
	default:
		return fmt.Errorf("nq: send datagram: %w", g.classify(err))
	}
}

// receiveDatagrams starts handing every datagram of the generation to handle, on one goroutine,
// until the connection ends (datagrams still queued then are dropped). The goroutine hands over
// nothing before after (the previous generation's datagramsDone, or nil) is closed, so the hook
// never runs concurrently with itself across reconnects. A server connection's teardown waits for
// it (its hook returns before the close hook); a client Conn's next generation and its finalize
// do (its hook may still run while the close hook runs, as a call it makes may wait for the next
// connection, which the close hook precedes).
func (g *generation) receiveDatagrams(handle func(c *Conn, p []byte), after <-chan struct{}) {
	g.datagramsDone = make(chan struct{})
	go func() {
		defer close(g.datagramsDone)
		if after != nil {
			// Even when this generation has ended first: done must mean that every earlier
			// hook has returned, or the next generation (or finalize) would not wait for them.
			<-after
		}
		for {
			p, err := g.qc.ReceiveDatagram(g.ctx)
			if err != nil || g.ctx.Err() != nil {
				return
			}
			handle(g.conn, p)
		}
	}()
}
