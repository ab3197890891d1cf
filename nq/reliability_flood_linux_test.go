package nq_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
)

// floodPlan sizes the handshake flood test.
type floodPlan struct {
	tickers    int           // established clients running the tick workload
	period     time.Duration // tick period of each
	quiet      time.Duration // baseline phase
	flood      time.Duration // flood phase
	rate       int           // garbage and forged packets per second
	sockets    int           // source ports the flood comes from
	handshakes int           // real handshakes during the flood, from fresh clients
	// maxFloodHeap bounds how far the live heap (HeapInuse after a collection) rises above its
	// value before the flood while the flood runs alone; maxHeapGrowth bounds it after the real
	// handshakes, whose server connections stay open until their clients' closes arrive.
	maxFloodHeap, maxHeapGrowth uint64
}

// TestReliabilityHandshakeFlood floods a server with forged QUIC Initials (valid v1 headers,
// random connection IDs, padded to 1200 bytes; from many source ports and, as root, from spoofed
// source addresses), unknown-version and short-header packets and pure garbage, while hundreds
// of fresh clients handshake and established clients run the tick workload (one small call every
// 100 ms each, open loop, latency measured from the scheduled time). It checks that the server
// answers forged Initials with Retry (address validation) once attempts exceed RetryAbove, that
// real clients still connect (through Retry), that the established clients lose no call and their
// p99 stays within the bound, that memory stays bounded, and that Retry stops once the flood has.
//
// The p99 bound, checked separately for the flood alone and for the flood with real handshakes,
// is 2x the quiet p99 of the same run plus 1 ms in soak mode (run it without -race). The reduced
// form, usually under -race on a shared machine, only guards against a collapse: 2x plus 100 ms
// for the flood alone, 2x plus 1 s with the handshakes (whose client side runs in this process
// and competes for the same cores).
func TestReliabilityHandshakeFlood(t *testing.T) {
	plan := pick(
		floodPlan{tickers: 16, period: 100 * time.Millisecond, quiet: 3 * time.Second, flood: 4 * time.Second,
			rate: 3000, sockets: 128, handshakes: 200, maxFloodHeap: 32 * mib, maxHeapGrowth: 64 * mib},
		floodPlan{tickers: 32, period: 100 * time.Millisecond, quiet: 10 * time.Second, flood: 20 * time.Second,
			rate: 10000, sockets: 512, handshakes: 1000, maxFloodHeap: 32 * mib, maxHeapGrowth: 64 * mib},
	)
	e := envs(t)[0](t)
	f := startFixture(t, e, fixtureOptions{})
	server := netip.MustParseAddrPort(f.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)

	// Established clients.
	var tickerCloses atomic.Int32
	conns := make([]*nq.Conn, plan.tickers)
	for i := range conns {
		cl := newClient(t, e, clientOptions{quic: patientQUIC(false), onClose: func(*nq.Conn, error, int) time.Duration {
			tickerCloses.Add(1)
			return 10 * time.Millisecond
		}})
		c, err := cl.Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.RPC("rpc").Call(ctx, mPing, []byte("warm")); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	closesBefore := tickerCloses.Load()

	ticks := newTickLoad(plan.period)
	var tickers sync.WaitGroup
	stopTicks := make(chan struct{})
	for i, c := range conns {
		tickers.Add(1)
		go func() {
			defer tickers.Done()
			ticks.run(ctx, c.RPC("rpc"), time.Duration(i)*plan.period/time.Duration(len(conns)), stopTicks)
		}()
	}
	t.Cleanup(func() {
		select {
		case <-stopTicks:
		default:
			close(stopTicks)
		}
		tickers.Wait()
	})

	// Quiet phase. The phases are timed: the tick workload runs on the clock.
	ticks.setPhase(phaseQuiet)
	time.Sleep(plan.quiet)
	baseHeap := heapInUse()

	// Flood phase.
	ticks.setPhase(phaseFlood)
	fl := startFlood(t, server, plan.sockets)
	floodCtx, floodStop := context.WithTimeout(ctx, plan.flood)
	defer floodStop()
	var senders sync.WaitGroup
	for w := range 2 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			fl.send(floodCtx, plan.rate/2, uint64(w))
		}()
	}
	// First half: the flood alone. Second half: the flood and real handshakes. The live heap
	// (after a collection) is measured at the end of each.
	select {
	case <-time.After(plan.flood / 2):
	case <-floodCtx.Done():
	}
	floodHeap := heapInUse()
	ticks.setPhase(phaseHandshakes)
	hs := runHandshakeWaves(floodCtx, t, f.addr, plan.handshakes, 4, plan.flood*3/8)
	bothHeap := heapInUse()
	<-floodCtx.Done()
	senders.Wait()
	floodTime := plan.flood
	ticks.setPhase(phaseAfter)
	close(stopTicks)
	tickers.Wait()
	if !ticks.drain(30 * time.Second) {
		t.Fatalf("%d tick calls never completed", ticks.outstanding.Load())
	}
	fl.close()

	// Results.
	quiet, flood, both := ticks.samples(phaseQuiet), ticks.samples(phaseFlood), ticks.samples(phaseHandshakes)
	q50, q99 := percentile(quiet, 50), percentile(quiet, 99)
	f50, f99 := percentile(flood, 50), percentile(flood, 99)
	h50, h99 := percentile(both, 50), percentile(both, 99)
	t.Logf("tick workload, %d clients: quiet %d calls p50 %v p99 %v; flood %d calls p50 %v p99 %v; flood+handshakes %d calls p50 %v p99 %v",
		plan.tickers, len(quiet), q50, q99, len(flood), f50, f99, len(both), h50, h99)
	t.Logf("flood: %d packets in %v (%.0f/s) from %d ports (%d from spoofed addresses); replies: %d Retry, %d version negotiation, %d other; server counted %d Retries",
		fl.sent.Load(), floodTime, float64(fl.sent.Load())/floodTime.Seconds(), plan.sockets, fl.spoofed.Load(),
		fl.retries.Load(), fl.vn.Load(), fl.other.Load(), f.srv.Stats().Retries)
	t.Logf("real handshakes: %d of %d connected and answered, %d saw Retry, dial p50 %v p99 %v",
		hs.ok, plan.handshakes, hs.retried, percentile(hs.dial, 50), percentile(hs.dial, 99))
	t.Logf("live heap (HeapInuse after GC): %.1f MiB before the flood, %.1f MiB under the flood alone, %.1f MiB after the handshakes",
		float64(baseHeap)/mib, float64(floodHeap)/mib, float64(bothHeap)/mib)

	if n := ticks.errors.Load(); n != 0 {
		t.Errorf("%d tick calls failed (first: %v)", n, ticks.firstErr())
	}
	if n := tickerCloses.Load() - closesBefore; n != 0 {
		t.Errorf("established clients lost their connection %d times during the flood", n)
	}
	if len(quiet) < plan.tickers || len(flood) < plan.tickers || len(both) < plan.tickers {
		t.Fatalf("too few tick samples: quiet %d, flood %d, flood+handshakes %d", len(quiet), len(flood), len(both))
	}
	// The bound: 2x the quiet p99, plus 1 ms for timer and scheduler granularity. The reduced
	// form runs under -race next to other test packages on 2 cores, where latency is noise; it
	// only guards against a collapse (ticks stalled for seconds), the soak form holds the goal.
	floodBound, bothBound := 2*q99+time.Millisecond, 2*q99+time.Millisecond
	if !soak() {
		floodBound, bothBound = 2*q99+2*time.Second, 2*q99+5*time.Second
	}
	if f99 > floodBound {
		t.Errorf("tick p99 under the flood %v exceeds %v (quiet p99 %v)", f99, floodBound, q99)
	}
	if h99 > bothBound {
		t.Errorf("tick p99 under the flood and %d real handshakes %v exceeds %v (quiet p99 %v)", plan.handshakes, h99, bothBound, q99)
	}
	if fl.retries.Load() == 0 {
		t.Error("the server never answered a forged Initial with Retry")
	}
	if st := f.srv.Stats(); st.Retries < uint64(fl.retries.Load()) {
		t.Errorf("Server.Stats().Retries = %d, but %d Retry packets reached the flood's sockets", st.Retries, fl.retries.Load())
	}
	if hs.retried == 0 {
		t.Error("no real client was asked to Retry during the flood")
	}
	if hs.ok < plan.handshakes*95/100 {
		t.Errorf("only %d of %d real handshakes succeeded during the flood (first error: %v)", hs.ok, plan.handshakes, hs.firstErr)
	}
	if floodHeap > baseHeap+plan.maxFloodHeap {
		t.Errorf("live heap %.1f MiB under the flood alone, more than %d MiB over the %.1f MiB before it",
			float64(floodHeap)/mib, plan.maxFloodHeap/mib, float64(baseHeap)/mib)
	}
	if bothHeap > baseHeap+plan.maxHeapGrowth {
		t.Errorf("live heap %.1f MiB after the handshakes, more than %d MiB over the %.1f MiB before the flood",
			float64(bothHeap)/mib, plan.maxHeapGrowth/mib, float64(baseHeap)/mib)
	}
	if !eventually(20*time.Second, func() bool { return f.srv.NumConns() == plan.tickers }) {
		t.Errorf("server holds %d connections after the flood, want the %d established ones", f.srv.NumConns(), plan.tickers)
	}

	// Once attempts fall below RetryAbove (the rate is measured over one second), new clients
	// connect without the extra round trip.
	time.Sleep(2500 * time.Millisecond)
	after := runHandshakeWaves(ctx, t, f.addr, 1, 1, 0)
	if after.ok != 1 || after.retried != 0 {
		t.Errorf("after the flood: %d of 1 handshakes, %d Retry; want a plain handshake (err %v)", after.ok, after.retried, after.firstErr)
	}
}

// Tick workload phases.
const (
	phaseWarm = iota
	phaseQuiet
	phaseFlood
	phaseHandshakes
	phaseAfter
	numPhases
)

// tickLoad is the open-loop tick workload: each client makes one call per period, on schedule
// whether or not the previous call has returned; latency counts from the scheduled time, so a
// late timer or a queued call shows up in it.
type tickLoad struct {
	period      time.Duration
	phase       atomic.Int32
	outstanding atomic.Int64
	errors      atomic.Int64
	drained     chan struct{}

	mu    sync.Mutex
	lat   [numPhases][]time.Duration
	first error
}

func newTickLoad(period time.Duration) *tickLoad {
	return &tickLoad{period: period, drained: make(chan struct{}, 1)}
}

func (l *tickLoad) setPhase(p int) { l.phase.Store(int32(p)) }

func (l *tickLoad) run(ctx context.Context, rpc *nq.RPC, offset time.Duration, stop <-chan struct{}) {
	next := time.Now().Add(offset)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	payload := be64(0)
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		at, phase := next, int(l.phase.Load())
		l.outstanding.Add(1)
		err := rpc.Go(ctx, mPing, payload, func(_ []byte, err error) { l.record(phase, at, err) })
		if err != nil {
			l.record(phase, at, err)
		}
		next = next.Add(l.period)
		timer.Reset(time.Until(next))
	}
}

func (l *tickLoad) record(phase int, at time.Time, err error) {
	d := time.Since(at)
	l.mu.Lock()
	if err != nil {
		l.errors.Add(1)
		if l.first == nil {
			l.first = err
		}
	} else {
		l.lat[phase] = append(l.lat[phase], d)
	}
	l.mu.Unlock()
	if l.outstanding.Add(-1) == 0 {
		select {
		case l.drained <- struct{}{}:
		default:
		}
	}
}

// drain waits until no call is outstanding (after the tickers stopped).
func (l *tickLoad) drain(d time.Duration) bool {
	deadline := time.After(d)
	for l.outstanding.Load() > 0 {
		select {
		case <-l.drained:
		case <-deadline:
			return false
		}
	}
	return true
}

func (l *tickLoad) samples(phase int) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Duration(nil), l.lat[phase]...)
}

func (l *tickLoad) firstErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// handshakeResult sums up a batch of real handshakes.
type handshakeResult struct {
	ok, retried int
	dial        []time.Duration
	firstErr    error
}

// runHandshakeWaves starts total fresh clients (each its own kernel UDP socket, session cache
// and token store, so each is a first contact, as remote players are) in waves spread over
// span; each dials, makes one call and closes. It returns when all have finished. The clients
// use plain kernel UDP whatever the server's backend: they stand for remote machines, and an
// mmsg socket's 4 MiB of receive buffers each would only measure the test.
func runHandshakeWaves(ctx context.Context, t *testing.T, addr string, total, waves int, span time.Duration) handshakeResult {
	t.Helper()
	var (
		mu  sync.Mutex
		res handshakeResult
		wg  sync.WaitGroup
	)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
		t.Fatal(err)
	}
	per := (total + waves - 1) / waves
	for w := 0; w < waves; w++ {
		if w > 0 {
			select {
			case <-time.After(span / time.Duration(waves)):
			case <-ctx.Done():
			}
		}
		for i := w * per; i < min(total, (w+1)*per); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var retries atomic.Int64
				conf := quic.ClientConfig()
				conf.HandshakeIdleTimeout = 20 * time.Second
				conf.MaxIdleTimeout = 30 * time.Second
				conf.Tracer = func(context.Context, bool, quicgo.ConnectionID) qlogwriter.Trace {
					return retryCounter{&retries}
				}
				cl := &nq.Client{TLS: certs(t).ClientTLS("localhost"), Mux: mux, QUIC: conf,
					OnClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }}
				defer cl.Close()
				dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				start := time.Now()
				c, err := cl.Dial(dctx, addr)
				dial := time.Since(start)
				if err == nil {
					_, err = c.RPC("rpc").Call(dctx, mPing, []byte("hello"))
				}
				mu.Lock()
				defer mu.Unlock()
				if retries.Load() > 0 {
					res.retried++
				}
				if err != nil {
					if res.firstErr == nil {
						res.firstErr = err
					}
					return
				}
				res.ok++
				res.dial = append(res.dial, dial)
			}()
		}
	}
	wg.Wait()
	return res
}

// retryCounter is a qlog trace that counts the Retry packets a client connection receives.
type retryCounter struct{ n *atomic.Int64 }

func (r retryCounter) AddProducer() qlogwriter.Recorder { return r }

func (r retryCounter) RecordEvent(ev qlogwriter.Event) {
	if p, ok := ev.(qlog.PacketReceived); ok && p.Header.PacketType == qlog.PacketTypeRetry {
		r.n.Add(1)
	}
}

func (r retryCounter) Close() error { return nil }

// flood sends forged and garbage packets to a server from many UDP sockets (and, when raw
// sockets are allowed, from spoofed source addresses) and classifies what comes back.
type flood struct {
	t       *testing.T
	server  netip.AddrPort
	socks   []*net.UDPConn
	rawFD   int // -1 without a raw socket
	readers sync.WaitGroup

	sent, spoofed      atomic.Int64
	retries, vn, other atomic.Int64
	closeOnce          sync.Once
}

func startFlood(t *testing.T, server netip.AddrPort, sockets int) *flood {
	fl := &flood{t: t, server: server, rawFD: -1}
	for range sockets {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			fl.close()
			t.Fatalf("flood socket: %v", err)
		}
		fl.socks = append(fl.socks, c)
		fl.readers.Add(1)
		go fl.read(c)
	}
	// A raw socket lets the flood forge source addresses (127.0.0.0/8, all local). Without
	// CAP_NET_RAW the flood comes from the sockets' ports only.
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err == nil {
		fl.rawFD = fd
	} else {
		t.Logf("no raw socket (%v): no spoofed source addresses", err)
	}
	t.Cleanup(fl.close)
	return fl
}

func (fl *flood) close() {
	fl.closeOnce.Do(func() {
		for _, c := range fl.socks {
			c.Close()
		}
		fl.readers.Wait()
		if fl.rawFD >= 0 {
			unix.Close(fl.rawFD)
		}
	})
}

// read classifies the server's answers arriving at one flood socket.
func (fl *flood) read(c *net.UDPConn) {
	defer fl.readers.Done()
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		switch {
		case n >= 5 && buf[0]&0x80 != 0 && binary.BigEndian.Uint32(buf[1:5]) == 0:
			fl.vn.Add(1)
		case n >= 5 && buf[0]&0xf0 == 0xf0 && binary.BigEndian.Uint32(buf[1:5]) == 1:
			fl.retries.Add(1) // long header, fixed bit, type 3: Retry (QUIC v1)
		default:
			fl.other.Add(1)
		}
	}
}

// send paces perSec packets per second until ctx ends.
func (fl *flood) send(ctx context.Context, perSec int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x51ab))
	const step = 5 * time.Millisecond
	tk := time.NewTicker(step)
	defer tk.Stop()
	buf := make([]byte, 0, 1500)
	raw := make([]byte, 0, 1600)
	start, due := time.Now(), 0
	for k := uint64(0); ; {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			want := int(now.Sub(start).Seconds() * float64(perSec))
			for ; due < want; due++ {
				k++
				buf = forgePacket(buf[:0], rng, k)
				if fl.rawFD >= 0 && k%4 == 0 {
					src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(rng.IntN(255) + 1), byte(rng.IntN(256)), byte(rng.IntN(254) + 1)}),
						uint16(rng.IntN(60000)+1024))
					raw = appendIPv4UDP(raw[:0], src, fl.server, buf)
					dst := &unix.SockaddrInet4{Addr: fl.server.Addr().As4()}
					if unix.Sendto(fl.rawFD, raw, 0, dst) == nil {
						fl.spoofed.Add(1)
						fl.sent.Add(1)
					}
					continue
				}
				c := fl.socks[rng.IntN(len(fl.socks))]
				if _, err := c.WriteToUDPAddrPort(buf, fl.server); err == nil {
					fl.sent.Add(1)
				}
			}
		}
	}
}

// forgePacket appends one flood packet to b: half are well-formed QUIC v1 Initials with random
// connection IDs padded to 1200 bytes, the rest Initials with a bogus token, undersized Initials,
// unknown-version long headers, short headers and pure garbage.
func forgePacket(b []byte, rng *rand.Rand, k uint64) []byte {
	randBytes := func(b []byte, n int) []byte {
		for range n {
			b = append(b, byte(rng.Uint32()))
		}
		return b
	}
	longHeader := func(b []byte, version uint32, token int) []byte {
		b = append(b, 0xc3) // long header, fixed bit, type Initial, 4-byte packet number
		b = binary.BigEndian.AppendUint32(b, version)
		dcid := 8 + rng.IntN(13)
		b = append(b, byte(dcid))
		b = randBytes(b, dcid)
		scid := rng.IntN(21)
		b = append(b, byte(scid))
		b = randBytes(b, scid)
		b = append(b, byte(token)) // token length (< 64: a one-byte varint)
		return randBytes(b, token)
	}
	pad := func(b []byte, size int) []byte {
		rest := size - len(b) - 2 // the 2-byte Length field
		b = binary.BigEndian.AppendUint16(b, 0x4000|uint16(rest))
		return randBytes(b, rest)
	}
	switch k % 10 {
	case 0, 1, 2, 3, 4:
		return pad(longHeader(b, 1, 0), 1200)
	case 5:
		return pad(longHeader(b, 1, 16+rng.IntN(40)), 1200)
	case 6:
		return pad(longHeader(b, 1, 0), 200+rng.IntN(900))
	case 7:
		return pad(longHeader(b, 0x1a2a3a4a, 0), 1200)
	case 8:
		b = append(b, 0x40|byte(rng.IntN(64)))
		return randBytes(b, 20+rng.IntN(1180))
	default:
		return randBytes(b, 1+rng.IntN(1400))
	}
}

// appendIPv4UDP appends an IPv4 header and a UDP header (checksum 0: none) around payload. The
// kernel fills in the IP checksum, total length and id.
func appendIPv4UDP(b []byte, src, dst netip.AddrPort, payload []byte) []byte {
	s, d := src.Addr().As4(), dst.Addr().As4()
	b = append(b, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0)
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = binary.BigEndian.AppendUint16(b, 0)
	return append(b, payload...)
}
