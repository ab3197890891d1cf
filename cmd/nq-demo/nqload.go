package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/tools/certs/devcert"
	"github.com/naquid/naquid/transport"
)

const methodPing = 1

// runNQ runs the workload on naquid: an nq.Server echoing Ping, and one nq.Client carrying every
// connection on one socket. When ms is not nil, the server's and client's metrics are registered
// on it.
func runNQ(ctx context.Context, cfg config, ms *metricsServer) (*result, error) {
	res := &result{name: "nq"}
	var cl closers
	defer cl.run()

	factory, err := transportFactory(cfg.Transport, &cl)
	if err != nil {
		return res, err
	}
	certs, err := devcert.New(devcert.Options{})
	if err != nil {
		return res, fmt.Errorf("certificates: %w", err)
	}

	smux := nq.NewMux()
	if err := smux.HandleRPC("rpc", nq.RPCHandler{
		OnRequest: func(req *nq.Request) { req.Reply(req.Payload) },
		// The handler answers before it returns and keeps nothing: its Requests may be reused.
		ReuseRequests: true,
	}); err != nil {
		return res, err
	}
	srv := &nq.Server{TLS: certs.ServerTLS(), Mux: smux, Transport: factory}
	if err := srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		return res, err
	}
	cl.add(func() { srv.Close() })

	cmux := nq.NewMux()
	if err := cmux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
		return res, err
	}
	client := &nq.Client{
		TLS:       certs.ClientTLS("localhost"),
		Mux:       cmux,
		Transport: factory,
		LocalAddr: netip.MustParseAddrPort("127.0.0.1:0"),
	}
	cl.add(func() { client.Close() })
	if ms != nil {
		if err := ms.register(srv, client); err != nil {
			return res, err
		}
	}

	conns := make([]*nq.Conn, cfg.Conns)
	for i := range conns {
		c, err := client.Dial(ctx, srv.Addr().String())
		if err != nil {
			return res, fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
	}

	workers := make([]*pipeliner, cfg.Conns)
	sock0 := socketCounters(srv, client)
	stop, err := res.start(cfg)
	if err != nil {
		return res, err
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		w := newPipeliner(cfg, c.RPC("rpc"))
		workers[i] = w
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	stop()
	if d := socketCounters(srv, client); d.PacketsRead+d.PacketsWritten > sock0.PacketsRead+sock0.PacketsWritten {
		calls := d.ReadCalls + d.WriteCalls - sock0.ReadCalls - sock0.WriteCalls
		pkts := d.PacketsRead + d.PacketsWritten - sock0.PacketsRead - sock0.PacketsWritten
		res.syscalls = float64(calls) / float64(pkts)
	}
	if cfg.afterLoad != nil {
		cfg.afterLoad()
	}

	var frames, packets, received uint64
	for _, c := range conns {
		st := c.Stats()
		frames += st.FramesSent
		packets += st.PacketsSent
		received += st.PacketsReceived
	}
	if packets > 0 {
		res.frames = float64(frames) / float64(packets)
	}
	var firstErr error
	for i, w := range workers {
		res.latencies = append(res.latencies, w.lat...)
		if w.err != nil && firstErr == nil {
			firstErr = fmt.Errorf("connection %d: %w", i, w.err)
		}
	}
	if n := len(res.latencies); n > 0 {
		res.packets = float64(packets+received) / float64(n) // per completed call
	}
	return res, firstErr
}

// pipeliner keeps W calls in flight on one connection: each reply issues the next call from the
// reply callback, on the stream's reader goroutine, so a burst of replies produces a burst of
// calls that leave together in full packets. Like the raw quic-go client it allocates nothing per
// call: one payload buffer (nq copies a payload when the call is made), one callback for every
// call (the reply carries the call's sequence number), and, like the raw client's channel of send
// times, a ring of the send times of the calls in flight; replies must come in call order (one
// stream, answered inline), which reply checks, as the raw client does.
type pipeliner struct {
	cfg  config
	rpc  *nq.RPC
	done chan error
	ctx  context.Context

	mu      sync.Mutex
	sent    int
	payload []byte
	started []time.Duration // send time of call seq at seq % Window, since base
	base    time.Time
	lat     []time.Duration
	err     error
	ended   bool                          // run returned: replies still arriving (after a timeout) are ignored
	onReply func(reply []byte, err error) // w.reply, made once
}

func newPipeliner(cfg config, rpc *nq.RPC) *pipeliner {
	w := &pipeliner{
		cfg:     cfg,
		rpc:     rpc,
		done:    make(chan error, 1),
		payload: make([]byte, cfg.Size),
		started: make([]time.Duration, cfg.Window),
		base:    time.Now(),
		lat:     make([]time.Duration, 0, cfg.Calls),
	}
	w.onReply = w.reply
	return w
}

func (w *pipeliner) run(ctx context.Context) {
	w.ctx = ctx
	first := min(w.cfg.Window, w.cfg.Calls)
	w.mu.Lock()
	w.sent = first
	var err error
	for i := range first {
		if err = w.call(uint64(i)); err != nil {
			break
		}
	}
	w.mu.Unlock()
	if err != nil {
		w.finish(err)
	}
	select {
	case err = <-w.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.ended = true // lat and err are the caller's from here on
	w.mu.Unlock()
}

// call sends call number seq; its reply must echo the sequence number. w.mu is held.
func (w *pipeliner) call(seq uint64) error {
	binary.BigEndian.PutUint64(w.payload, seq)
	w.started[seq%uint64(len(w.started))] = time.Since(w.base)
	return w.rpc.Go(w.ctx, methodPing, w.payload, w.onReply)
}

// reply checks a reply, records its latency and sends the next call.
func (w *pipeliner) reply(reply []byte, err error) {
	now := time.Since(w.base)
	if err == nil && len(reply) != w.cfg.Size {
		err = fmt.Errorf("reply of %d bytes, want %d", len(reply), w.cfg.Size)
	}
	if err != nil {
		w.finish(err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	seq := binary.BigEndian.Uint64(reply)
	if want := uint64(len(w.lat)); seq != want {
		w.finish(fmt.Errorf("reply to call %d, want the reply to call %d", seq, want))
		return
	}
	w.lat = append(w.lat, now-w.started[seq%uint64(len(w.started))])
	if len(w.lat) == w.cfg.Calls {
		w.finish(nil)
		return
	}
	if w.sent < w.cfg.Calls {
		next := w.sent
		w.sent++
		if err := w.call(uint64(next)); err != nil {
			w.finish(err)
		}
	}
}

func (w *pipeliner) finish(err error) {
	select {
	case w.done <- err:
	default:
	}
}

// socketCounters sums the server's and the client's transport counters (zero for backends that
// keep none, such as kernel UDP, whose socket quic-go drives itself).
func socketCounters(srv *nq.Server, client *nq.Client) transport.Counters {
	var sum transport.Counters
	if st, ok := srv.TransportStats(); ok {
		sum.Add(st)
	}
	if st, ok := client.TransportStats(); ok {
		sum.Add(st)
	}
	return sum
}
