package nq

import (
	"context"
	"errors"
	"fmt"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
)

// protocol is a Mux entry: it knows how to run one kind of stream (RPC, records, raw).
type protocol interface {
	// kind names the stream kind in errors ("RPC", "record", "raw").
	kind() string
	// bind attaches a new stream to the protocol.
	bind(st *stream) boundStream
}

// boundStream is a stream of some protocol, about to open.
type boundStream interface {
	// openHook runs the protocol's open hook; an error rejects the stream.
	openHook() error
	// run serves the opened stream; prefix holds bytes already read after the preamble. It runs
	// on the stream's own goroutine.
	run(prefix []byte)
}

type rpcProtocol struct{ h *RPCHandler }

func (rpcProtocol) kind() string { return "RPC" }

func (p rpcProtocol) bind(st *stream) boundStream { return newRPCStream(st, p.h) }

// open opens a new stream of protocol name, of the kind want, on the current generation.
func (c *Conn) open(ctx context.Context, name, want string) (boundStream, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	p, raw := c.cfg.mux.lookup(name)
	if p == nil {
		return nil, fmt.Errorf("nq: open %q: %w", name, ErrUnknownProtocol)
	}
	if p.kind() != want {
		return nil, fmt.Errorf("nq: open %q: registered as a %s protocol, not %s: %w", name, p.kind(), want, ErrUnknownProtocol)
	}
	g, err := c.current(ctx)
	if err != nil {
		return nil, fmt.Errorf("nq: open %q: %w", name, err)
	}
	qs, err := g.qc.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("nq: open %q: %w", name, ctxErrOf(ctx))
		}
		return nil, fmt.Errorf("nq: open %q: %w", name, g.classify(err))
	}
	st := newStream(g, qs, name, true)
	b := p.bind(st)
	if !raw {
		if st.wbuf, err = wire.AppendPreamble(st.wbuf, name); err != nil {
			cancelStream(qs, wire.StreamCancelled)
			return nil, fmt.Errorf("nq: open %q: %w", name, err)
		}
		st.written = int64(len(st.wbuf))
	}
	if !g.addStream(st) {
		cancelStream(qs, wire.StreamCancelled)
		return nil, fmt.Errorf("nq: open %q: %w", name, g.downErr())
	}
	if err := b.openHook(); err != nil {
		st.abort(wire.StreamRejected, ErrRejected)
		return nil, fmt.Errorf("nq: open %q: local open hook: %w: %w", name, ErrRejected, err)
	}
	if err := st.markOpened(); err != nil {
		return nil, fmt.Errorf("nq: open %q: closed while its open hook ran: %w", name, err)
	}
	st.flush()
	go b.run(nil)
	return b, nil
}

// OpenRPC opens a new RPC stream of protocol name on the current generation (waiting for one on
// a client that is reconnecting). The local open hook runs before it returns and may reject the
// stream (ErrRejected). The name must be registered in the local Mux (ErrUnknownProtocol).
func (c *Conn) OpenRPC(ctx context.Context, name string) (*RPCStream, error) {
	b, err := c.open(ctx, name, "RPC")
	if err != nil {
		return nil, err
	}
	return b.(*RPCStream), nil
}

func cancelStream(qs *quicgo.Stream, code wire.StreamCode) {
	qs.CancelRead(quicgo.StreamErrorCode(code))
	qs.CancelWrite(quicgo.StreamErrorCode(code))
}

// serveIncoming reads the preamble of a peer-opened stream (none in raw mode), finds its protocol
// and runs it.
func (g *generation) serveIncoming(qs *quicgo.Stream) {
	name, p, buf, ok := g.identify(qs)
	if !ok {
		return
	}
	st := newStream(g, qs, name, false)
	b := p.bind(st)
	if !g.addStream(st) {
		cancelStream(qs, wire.StreamCancelled)
		return
	}
	if err := b.openHook(); err != nil {
		g.log.Debug("nq: stream rejected by open hook", "stream", qs.StreamID(), "protocol", name, "err", err)
		st.abort(wire.StreamRejected, ErrRejected)
		return
	}
	if st.markOpened() != nil {
		return // closed while its open hook ran: the close hook has run
	}
	b.run(buf)
}

// identify finds the protocol of a peer-opened stream and returns it with the bytes read after
// the preamble. It resets the stream and returns ok false when that fails.
func (g *generation) identify(qs *quicgo.Stream) (name string, p protocol, rest []byte, ok bool) {
	mux := g.conn.cfg.mux
	if p, name := mux.rawProtocol(); name != "" {
		if p == nil {
			g.log.Debug("nq: raw-mode protocol not registered", "protocol", name)
			cancelStream(qs, wire.StreamUnknownProtocol)
			return "", nil, nil, false
		}
		return name, p, nil, true
	}
	_ = qs.SetReadDeadline(time.Now().Add(preambleTimeout))
	buf := make([]byte, 0, 512)
	for {
		n, m := 0, 0
		var err error
		name, n, err = wire.ParsePreamble(buf)
		if err == nil {
			buf = buf[n:]
			break
		}
		if !errors.Is(err, wire.ErrShort) {
			g.log.Debug("nq: bad stream preamble", "stream", qs.StreamID(), "err", err)
			cancelStream(qs, wire.StreamProtocolError)
			return "", nil, nil, false
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		var rerr error
		m, rerr = qs.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if rerr != nil && m == 0 {
			cancelStream(qs, wire.StreamCancelled)
			return "", nil, nil, false
		}
	}
	_ = qs.SetReadDeadline(time.Time{})
	p, _ = mux.lookup(name)
	if p == nil {
		g.log.Debug("nq: unknown protocol", "stream", qs.StreamID(), "protocol", name)
		cancelStream(qs, wire.StreamUnknownProtocol)
		return "", nil, nil, false
	}
	return name, p, buf, true
}
