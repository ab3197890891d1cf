package nq

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// RPC is a connection's handle on one RPC protocol, from Conn.RPC. It follows reconnects: each
// call goes over the connection's own stream of that protocol in the current generation, opened
// on first use. Calls in flight when a generation ends fail with ErrConnLost; later calls wait
// for the next generation, within their ctx or, when it has no deadline, within the protocol's
// RPCHandler.Timeout (then they fail with ErrTimeout; the call, once sent, has that timeout
// again). Safe for concurrent use.
type RPC struct {
	conn *Conn
	name string

	once sync.Once
	lock chan struct{} // a one-slot semaphore, so waiting for it honours ctx
	cur  atomic.Pointer[RPCStream]
}

// Name returns the protocol name.
func (h *RPC) Name() string { return h.name }

// Stream returns the handle's stream in the current generation, opening it if needed.
func (h *RPC) Stream(ctx context.Context) (*RPCStream, error) {
	if s := h.cur.Load(); s != nil && h.usable(ctx, s) {
		return s, nil
	}
	if !isIdempotent(ctx) {
		// Wait for a confirmed connection before taking the handle's lock, so that a call
		// waiting for a handshake does not hold back idempotent calls that may use 0-RTT.
		if _, err := h.conn.current(ctx); err != nil {
			return nil, err
		}
	}
	h.once.Do(func() { h.lock = make(chan struct{}, 1) })
	select {
	case h.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, h.conn.ctxErr(ctx)
	}
	defer func() { <-h.lock }()
	if s := h.cur.Load(); s != nil && h.usable(ctx, s) {
		return s, nil
	}
	s, err := h.conn.OpenRPC(ctx, h.name)
	if err != nil {
		return nil, err
	}
	h.cur.Store(s)
	return s, nil
}

// usable reports whether the cached stream serves a call made with ctx: it is open, its
// connection is not ending, and it is not a 0-RTT stream still waiting for its handshake while
// the call is not marked Idempotent (such a call gets a stream of the confirmed connection
// instead).
func (h *RPC) usable(ctx context.Context, s *RPCStream) bool {
	g := s.s.gen
	if s.s.isClosed() || g.ending.Load() {
		return false // a new call waits for the next generation
	}
	return !g.early.Load() || g.confirmed() || isIdempotent(ctx)
}

// callStream is Stream for a call: when ctx has no deadline, the wait for a connection and the
// stream's opening are bounded by the protocol's call timeout (the cached stream's, or the
// Mux's handler's), as the call itself then is.
func (h *RPC) callStream(ctx context.Context) (*RPCStream, error) {
	s := h.cur.Load()
	if s != nil && h.usable(ctx, s) {
		return s, nil
	}
	if _, ok := ctx.Deadline(); !ok {
		timeout := DefaultCallTimeout
		if s != nil {
			timeout = s.timeout
		} else if p, _ := h.conn.cfg.mux.lookup(h.name); p != nil {
			if rp, ok := p.(rpcProtocol); ok {
				timeout = rp.h.callTimeout()
			}
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return h.Stream(ctx)
}

// Call is RPCStream.Call on the handle's current stream.
func (h *RPC) Call(ctx context.Context, method uint32, payload []byte) ([]byte, error) {
	s, err := h.callStream(ctx)
	if err != nil {
		return nil, err
	}
	reply, err := s.Call(ctx, method, payload)
	if errors.Is(err, Err0RTTRejected) {
		// The server refused the 0-RTT data the call went in, so it did not run: send it
		// again, once, on the confirmed connection.
		if s, err = h.callStream(ctx); err != nil {
			return nil, err
		}
		return s.Call(ctx, method, payload)
	}
	return reply, err
}

// Go is RPCStream.Go on the handle's current stream. A call marked Idempotent that went in 0-RTT
// data the server refused is sent again, once, on the confirmed connection (its payload is copied
// for that when the call is made).
func (h *RPC) Go(ctx context.Context, method uint32, payload []byte, done func(reply []byte, err error)) error {
	s, err := h.callStream(ctx)
	if err != nil {
		return err
	}
	if done != nil && isIdempotent(ctx) && s.s.gen.early.Load() && !s.s.gen.confirmed() {
		kept := append([]byte(nil), payload...)
		first := done
		done = func(reply []byte, err error) {
			if !errors.Is(err, Err0RTTRejected) {
				first(reply, err)
				return
			}
			// Not on the goroutine that fails the calls of the refused data: the new call
			// waits for the confirmed connection.
			go func() {
				s, err := h.callStream(ctx)
				if err == nil {
					err = s.Go(ctx, method, kept, first)
				}
				if err != nil {
					first(nil, err)
				}
			}()
		}
	}
	return s.Go(ctx, method, payload, done)
}

// Notify is RPCStream.Notify on the handle's current stream; ctx (or, without a deadline, the
// protocol's call timeout) bounds the wait for a connection and the stream's opening.
func (h *RPC) Notify(ctx context.Context, method uint32, payload []byte) error {
	s, err := h.callStream(ctx)
	if err != nil {
		return err
	}
	return s.Notify(method, payload)
}
