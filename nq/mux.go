package nq

import (
	"fmt"
	"sync"
	"time"

	"github.com/naquid/naquid/internal/wire"
)

// DefaultCallTimeout is the per-call timeout used when neither the ctx nor the handler sets one.
const DefaultCallTimeout = 30 * time.Second

// RPCHandler handles one RPC protocol on a connection. Every field is optional.
//
// OnRequest and OnNotify run on the stream's reader goroutine, one at a time per stream, so they
// must not block for long: a handler that needs time answers later (Request.Reply and
// Request.Fail may be called from any goroutine, at any time). OnOpen runs before them. OnClose
// runs once, on the goroutine that closes the stream: when that is not the reader (Close from
// elsewhere, the connection ending), it may overlap a handler still running.
//
// A peer that asks faster than it reads cannot make a stream buffer answers without bound:
// while more than 256 KiB of the stream's output waits for the peer to read, its new requests
// are held back (with the notifications that follow them, to keep the order), and their
// handlers run once the peer has caught up, also after the peer finished its side; a
// Server.Shutdown waits for them (until its ctx ends). Answers to the stream's own calls are
// still delivered meanwhile; Stats.FramesHeld counts what was held. A peer whose streams hold
// more than 4 MiB in all (or twice the frame limit) has the stream that would hold more reset
// with ErrPeerNotReading. Requests a handler keeps to answer later count too: while
// MaxUnanswered of a stream's requests wait for their answer, its next requests are held the
// same way (reset: ErrTooManyRequests), so what the application keeps, and the answers it
// writes for a peer that does not read, stay bounded per stream. When the peer finishes its
// side (FIN) but still reads, the stream stays open (its Context live, OnClose not run) until
// the handler has answered every request it was given, and its FIN follows the last answer; a
// peer that also stops reading (STOP_SENDING, as RPCStream.Close does) ends the stream at once.
type RPCHandler struct {
	// OnRequest handles a request. It answers with req.Reply or req.Fail, now or later. A nil
	// OnRequest answers every request with a *RemoteError of code CodeNoHandler.
	OnRequest func(req *Request)
	// OnNotify handles a one-way message. The payload is valid only during the call.
	OnNotify func(s *RPCStream, method uint32, payload []byte)
	// OnOpen runs when a stream of this protocol opens, on either end (locally opened streams
	// included). Returning an error rejects the stream: the opener's calls fail with ErrRejected.
	OnOpen func(s *RPCStream) error
	// OnClose runs once when the stream closes, before its pending calls fail; err says why.
	OnClose func(s *RPCStream, err error)
	// Timeout is the per-call timeout of calls made on streams of this protocol whose ctx has no
	// deadline (a ctx deadline replaces it). Zero means DefaultCallTimeout.
	Timeout time.Duration
	// ReuseRequests lets nq hand a Request that OnRequest answered before returning to OnRequest
	// again for a later request of the stream, instead of allocating a new one: in the
	// pipelined demo that is about a tenth more requests per second. Set it only if OnRequest
	// never uses a Request (nor lets another goroutine use it) once it has both answered it and
	// returned: a stale Reply would answer the later request. A Request still unanswered when
	// OnRequest returns is never reused, so answering later from another goroutine stays safe.
	// Default false: every request gets its own Request.
	ReuseRequests bool
	// MaxUnanswered bounds the requests of one stream that OnRequest may leave unanswered at
	// once (answering later, from a game tick say). While that many wait for their answer, the
	// stream's next requests are held back (with the notifications behind them), and run as
	// answers are given; a peer that sends more than the connection may hold (4 MiB in all, or
	// twice the frame limit) meanwhile has the stream reset with ErrTooManyRequests. Every
	// request must be answered: one never answered keeps its place for the stream's lifetime.
	// A handler that answers only after a call of its own whose handler on the other side calls
	// back on this stream can stall at the bound (the call back is held until an answer comes):
	// raise the bound, or make such calls on another stream. 0 means DefaultMaxUnanswered; a
	// negative value means no bound.
	MaxUnanswered int
	// MaxUnsent bounds, in bytes, the stream's output waiting for the peer to read it
	// (RPCStream.Unsent): once that much waits (the last Notify accepted may pass it by one
	// frame), Notify fails with ErrBacklogFull and sends nothing, until the peer catches up, so a server pushing state to a client that stopped
	// reading does not queue it without bound (a client's notifications are bounded the same
	// way). Calls are not refused (each has its deadline; a caller pipelining large calls paces
	// with their answers), nor are answers (the hold above bounds them). 0 means
	// DefaultMaxUnsent; a negative value means no bound.
	MaxUnsent int
}

// DefaultMaxUnsent is the RPCHandler.MaxUnsent and RecordHandler.MaxUnsent used when it is 0.
const DefaultMaxUnsent = 4 << 20

// unsentBound is the stream's bound for a MaxUnsent setting; 0 means none.
func unsentBound(n int) int64 {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return DefaultMaxUnsent
	}
	return int64(n)
}

// DefaultMaxUnanswered is the RPCHandler.MaxUnanswered used when it is 0.
const DefaultMaxUnanswered = 1024

// maxUnanswered is the handler's bound on unanswered requests per stream; 0 means none.
func (h *RPCHandler) maxUnanswered() int64 {
	switch {
	case h.MaxUnanswered < 0:
		return 0
	case h.MaxUnanswered == 0:
		return DefaultMaxUnanswered
	}
	return int64(h.MaxUnanswered)
}

// Mux maps protocol names to handlers. Both ends of a connection have one: a stream opened by
// the peer is served by the handler its name selects in the local Mux. The zero value is an empty
// Mux ready to use; it is safe for concurrent use, and handlers may be added while serving.
type Mux struct {
	mu     sync.RWMutex
	protos map[string]protocol
	raw    string // raw mode: every stream runs this protocol and carries no name preamble
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{} }

// callTimeout is the handler's per-call timeout: Timeout, or DefaultCallTimeout when it is zero.
func (h *RPCHandler) callTimeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return DefaultCallTimeout
}

// HandleRPC registers (or replaces) the RPC protocol name. Names are 1 to 255 bytes.
func (m *Mux) HandleRPC(name string, h RPCHandler) error {
	if err := validName(name); err != nil {
		return err
	}
	if h.Timeout < 0 {
		return fmt.Errorf("nq: HandleRPC %q: RPCHandler.Timeout %v is negative", name, h.Timeout)
	}
	hc := h
	m.handle(name, rpcProtocol{&hc})
	return nil
}

// SetRawMode switches the Mux to raw mode: every stream, in both directions, runs the protocol
// name (registered with HandleRPC, HandleRecords or HandleRaw) and carries no name preamble at
// all. Both ends of a connection must agree; opening any other name fails with
// ErrUnknownProtocol. An empty name switches raw mode off.
func (m *Mux) SetRawMode(name string) error {
	if name != "" {
		if err := validName(name); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.raw = name
	return nil
}

func (m *Mux) handle(name string, p protocol) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.protos == nil {
		m.protos = make(map[string]protocol)
	}
	m.protos[name] = p
}

// lookup returns the protocol of name, and whether the Mux is in raw mode.
func (m *Mux) lookup(name string) (p protocol, raw bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.raw != "" && name != m.raw {
		return nil, true
	}
	return m.protos[name], m.raw != ""
}

// rawProtocol returns the raw-mode protocol and its name, or nil when not in raw mode.
func (m *Mux) rawProtocol() (protocol, string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.raw == "" {
		return nil, ""
	}
	return m.protos[m.raw], m.raw
}

func validName(name string) error {
	if len(name) == 0 || len(name) > wire.MaxNameLen {
		return fmt.Errorf("nq: protocol name %q: length %d not in 1..%d", name, len(name), wire.MaxNameLen)
	}
	return nil
}
