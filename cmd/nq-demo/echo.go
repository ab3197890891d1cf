package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/quic"
	"github.com/naquid/naquid/tools/certs/devcert"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/memconn"
	"github.com/naquid/naquid/transport/mmsg"
	"github.com/naquid/naquid/transport/udp"
)

// bufSize is the bufio buffer size on both ends of the echo stream.
const bufSize = 16 << 10

// closers runs cleanup functions in reverse order of registration.
type closers []func()

func (c *closers) add(f func()) { *c = append(*c, f) }

func (c *closers) run() {
	for _, f := range slices.Backward(*c) {
		f()
	}
}

// transportFactory returns the factory of the packet-I/O backend kind ("udp", "mmsg" or
// "memconn"); an in-memory network is closed by cl.
func transportFactory(kind string, cl *closers) (transport.Factory, error) {
	switch kind {
	case "udp":
		return udp.Factory(udp.Config{}), nil
	case "mmsg":
		return mmsg.Factory(mmsg.Config{}), nil
	case "memconn":
		nw, err := memconn.NewNetwork(memconn.Config{})
		if err != nil {
			return nil, fmt.Errorf("memconn network: %w", err)
		}
		cl.add(func() { nw.Close() })
		return nw.Factory(), nil
	}
	return nil, fmt.Errorf("unknown transport %q", kind)
}

// openTransports opens the server and client packet-I/O endpoints on 127.0.0.1.
func openTransports(ctx context.Context, kind string, cl *closers) (server, client transport.Conn, err error) {
	factory, err := transportFactory(kind, cl)
	if err != nil {
		return nil, nil, err
	}
	local := netip.MustParseAddrPort("127.0.0.1:0")
	if server, err = factory(ctx, local); err != nil {
		return nil, nil, fmt.Errorf("server transport: %w", err)
	}
	cl.add(func() { server.Close() })
	if client, err = factory(ctx, local); err != nil {
		return nil, nil, fmt.Errorf("client transport: %w", err)
	}
	cl.add(func() { client.Close() })
	return server, client, nil
}

// quicTransport puts c under a quic-go Transport through quic.PacketConn.
func quicTransport(c transport.Conn, cl *closers) (*quicgo.Transport, error) {
	pc, err := quic.PacketConn(c)
	if err != nil {
		return nil, err
	}
	if _, kernel := c.(transport.KernelUDP); !kernel {
		cl.add(func() { pc.Close() }) // the adapter owns c
	}
	tr := &quicgo.Transport{Conn: pc}
	cl.add(func() { tr.Close() })
	return tr, nil
}

// runEcho is the peer: the same workload as a hand-written pipelined echo on raw quic-go, one
// long-lived stream per connection, 2-byte length-prefixed frames, bufio on both ends (the
// server flushes when its read buffer is drained, the client when its window is full).
func runEcho(ctx context.Context, cfg config) (*result, error) {
	res := &result{name: "quic-go echo"}
	var cl closers
	defer cl.run()
	var serverWG sync.WaitGroup
	cl.add(serverWG.Wait) // last: closing the transports ends every server connection

	certs, err := devcert.New(devcert.Options{})
	if err != nil {
		return res, fmt.Errorf("certificates: %w", err)
	}
	serverTLS, clientTLS := certs.ServerTLS(), certs.ClientTLS("localhost")
	serverTLS.NextProtos = []string{quic.ALPN}
	clientTLS.NextProtos = []string{quic.ALPN}

	serverConn, clientConn, err := openTransports(ctx, cfg.Transport, &cl)
	if err != nil {
		return res, err
	}
	str, err := quicTransport(serverConn, &cl)
	if err != nil {
		return res, err
	}
	ctr, err := quicTransport(clientConn, &cl)
	if err != nil {
		return res, err
	}
	ln, err := str.Listen(serverTLS, quic.ServerConfig())
	if err != nil {
		return res, fmt.Errorf("listen: %w", err)
	}
	cl.add(func() { ln.Close() })
	serverWG.Go(func() { acceptLoop(ln, &serverWG) })

	return runClients(ctx, cfg, ctr, net.UDPAddrFromAddrPort(serverConn.LocalAddr()), clientTLS, res)
}

// acceptLoop serves every accepted connection until ln closes.
func acceptLoop(ln *quicgo.Listener, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		wg.Go(func() { serveConn(c) })
	}
}

// serveConn echoes length-prefixed frames on the first stream the client opens, until the client
// finishes the stream or the connection ends. The client closes the connection: closing it here
// could discard replies quic-go has not sent yet.
func serveConn(c *quicgo.Conn) {
	defer func() { <-c.Context().Done() }()
	s, err := c.AcceptStream(c.Context())
	if err != nil {
		return
	}
	r, w := bufio.NewReaderSize(s, bufSize), bufio.NewWriterSize(s, bufSize)
	frame := make([]byte, 2+maxSize)
	for {
		if _, err := io.ReadFull(r, frame[:2]); err != nil {
			if errors.Is(err, io.EOF) && w.Flush() == nil {
				s.Close()
			}
			return
		}
		n := 2 + int(binary.BigEndian.Uint16(frame))
		if _, err := io.ReadFull(r, frame[2:n]); err != nil {
			return
		}
		if _, err := w.Write(frame[:n]); err != nil {
			return
		}
		if r.Buffered() == 0 { // nothing more to answer right now: send the replies
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// runClients dials cfg.Conns connections, runs the echo on all of them and collects latencies.
func runClients(ctx context.Context, cfg config, tr *quicgo.Transport, addr net.Addr, tlsConf *tls.Config, res *result) (*result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Dial one connection at a time, as the nq workload does: concurrent dials can overflow
	// quic-go's accept queue (32 connections), which refuses the excess.
	conns := make([]*quicgo.Conn, cfg.Conns)
	for i := range conns {
		c, err := tr.Dial(ctx, addr, tlsConf, quic.ClientConfig())
		if err != nil {
			cancel(fmt.Errorf("dial connection %d: %w", i, err))
			break
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseWithError(0, "")
			}
		}
	}()
	if err := context.Cause(ctx); err != nil {
		return res, err
	}

	lat := make([][]time.Duration, cfg.Conns)
	stop, err := res.start(cfg)
	if err != nil {
		return res, err
	}
	for i, c := range conns {
		wg.Go(func() {
			var err error
			lat[i], err = echoConn(ctx, c, cfg.Calls, cfg)
			if err != nil {
				cancel(fmt.Errorf("connection %d: %w", i, err))
			}
		})
	}
	wg.Wait()
	stop()
	var packets uint64
	for _, c := range conns {
		st := c.ConnectionStats()
		packets += st.PacketsSent + st.PacketsReceived
	}
	for _, l := range lat {
		res.latencies = append(res.latencies, l...)
	}
	if n := len(res.latencies); n > 0 {
		res.packets = float64(packets) / float64(n) // per completed call
	}
	return res, context.Cause(ctx)
}

// echoConn sends n frames of cfg.Size bytes on one new stream of c, keeping cfg.Window in flight,
// and checks each echo. It returns the latency of every completed request; ctx ending aborts it.
func echoConn(ctx context.Context, c *quicgo.Conn, n int, cfg config) ([]time.Duration, error) {
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { s.CancelRead(1); s.CancelWrite(1) })
	defer stop()

	// window holds one token per request in flight; sent holds their send times, in order.
	window := make(chan struct{}, cfg.Window)
	sent := make(chan time.Time, cfg.Window)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wdone := make(chan error, 1)
	go func() { wdone <- writeFrames(wctx, s, n, cfg.Size, window, sent) }()

	lats := make([]time.Duration, 0, n)
	r := bufio.NewReaderSize(s, bufSize)
	frame := make([]byte, 2+cfg.Size)
	var rerr error
	for i := range n {
		if _, err := io.ReadFull(r, frame); err != nil {
			rerr = fmt.Errorf("read reply %d: %w", i, err)
			break
		}
		t0 := <-sent
		lats = append(lats, time.Since(t0))
		<-window
		if l := int(binary.BigEndian.Uint16(frame)); l != cfg.Size || binary.BigEndian.Uint64(frame[2:]) != uint64(i) {
			rerr = fmt.Errorf("reply %d: wrong length %d or sequence %d", i, l, binary.BigEndian.Uint64(frame[2:]))
			break
		}
	}
	if rerr != nil {
		s.CancelRead(1)
		s.CancelWrite(1) // a writer in Write or Flush fails at once
		wcancel()        // a writer waiting for room in the window gives up
		<-wdone
		return lats, rerr
	}
	if err := <-wdone; err != nil {
		return lats, err
	}
	return lats, nil
}

// writeFrames writes n frames of size bytes with their sequence numbers. Before each it takes a
// token from window (flushing first when the window is full, then waiting) and records the send
// time in sent; the reader returns the token when the reply arrives.
func writeFrames(ctx context.Context, s *quicgo.Stream, n, size int, window chan<- struct{}, sent chan<- time.Time) error {
	w := bufio.NewWriterSize(s, bufSize)
	frame := make([]byte, 2+size)
	binary.BigEndian.PutUint16(frame, uint16(size))
	for i := range n {
		select {
		case window <- struct{}{}:
		default:
			if err := w.Flush(); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		sent <- time.Now() // never blocks: window bounds it
		binary.BigEndian.PutUint64(frame[2:], uint64(i))
		if _, err := w.Write(frame); err != nil {
			return fmt.Errorf("write request %d: %w", i, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return s.Close()
}
