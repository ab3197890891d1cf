package nq

import "context"

type idempotentKey struct{}

// Idempotent marks the calls made with ctx as safe to repeat: on a client with Allow0RTT they may
// travel in 0-RTT data while a reconnect's handshake is still running (saving a round trip),
// where an attacker could replay them. Calls without the mark wait for the handshake. When the
// server refuses the 0-RTT data (the calls in it did not run), calls made through a Conn.RPC
// handle are sent again, once, on the confirmed connection; calls made on an RPCStream of the
// refused connection fail with Err0RTTRejected.
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

func isIdempotent(ctx context.Context) bool {
	v, _ := ctx.Value(idempotentKey{}).(bool)
	return v
}

// confirmed reports whether the generation's handshake has completed.
func (g *generation) confirmed() bool {
	select {
	case <-g.qc.HandshakeComplete():
		return true
	default:
		return false
	}
}

// waitConfirmed blocks until the handshake completed, ctx ended or the connection ended.
func (g *generation) waitConfirmed(ctx context.Context) error {
	select {
	case <-g.qc.HandshakeComplete():
		return nil
	case <-ctx.Done():
		return g.conn.ctxErr(ctx)
	case <-g.ctx.Done():
		return g.classify(context.Cause(g.ctx))
	}
}
