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
		w := &pipeliner{cfg: cfg, rpc: c.RPC("rpc"), done: make(chan error, 1), lat: make([]time.Duration, 0, cfg.Calls)}
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

	var frames, packets uint64
	for _, c := range conns {
		st := c.Stats()
		frames += st.FramesSent
		packets += st.PacketsSent
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
	return res, firstErr
}

// pipeliner keeps W calls in flight on one connection: each reply issues the next call from the
// reply callback, on the stream's reader goroutine, so a burst of replies produces a burst of
// calls that leave together in full packets.
type pipeliner struct {
	cfg  config
	rpc  *nq.RPC
	done chan error

	mu   sync.Mutex
	sent int
	lat  []time.Duration
	err  error
}

func (w *pipeliner) run(ctx context.Context) {
	first := min(w.cfg.Window, w.cfg.Calls)
	w.mu.Lock()
	w.sent = first
	w.mu.Unlock()
	for i := range first {
		if err := w.call(ctx, uint64(i)); err != nil {
			w.finish(err)
			break
		}
	}
	var err error
	select {
	case err = <-w.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// call sends call number seq; its reply must echo the sequence number.
func (w *pipeliner) call(ctx context.Context, seq uint64) error {
	payload := make([]byte, w.cfg.Size)
	binary.BigEndian.PutUint64(payload, seq)
	start := time.Now()
	return w.rpc.Go(ctx, methodPing, payload, func(reply []byte, err error) {
		if err == nil && (len(reply) != w.cfg.Size || binary.BigEndian.Uint64(reply) != seq) {
			err = fmt.Errorf("reply to call %d: wrong payload", seq)
		}
		if err != nil {
			w.finish(err)
			return
		}
		w.mu.Lock()
		w.lat = append(w.lat, time.Since(start))
		got := len(w.lat)
		next := -1
		if w.sent < w.cfg.Calls {
			next = w.sent
			w.sent++
		}
		w.mu.Unlock()
		if got == w.cfg.Calls {
			w.finish(nil)
			return
		}
		if next >= 0 {
			if err := w.call(ctx, uint64(next)); err != nil {
				w.finish(err)
			}
		}
	})
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
