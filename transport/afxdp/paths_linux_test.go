package afxdp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
)

// listenIn opens a plain *net.UDPConn inside ns (closed at cleanup).
func listenIn(t *testing.T, ns *netns.NS, network string, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestShadowDelivery: datagrams the XDP program passes to the kernel reach ReadBatch through the
// shadow socket: IPv4 and IPv6 datagrams larger than the MTU (they travel as fragments, which the
// program passes and the kernel reassembles) and datagrams from the namespace itself (loopback).
// Writes to a local address go out through the shadow socket too.
func TestShadowDelivery(t *testing.T) {
	p := newPair(t)
	x := openXDP(t, p.A, netip.MustParseAddrPort("[::]:0"), Config{})
	port := x.LocalAddr().Port()
	big := bytes.Repeat([]byte("fragmented "), 300) // 3300 bytes: three fragments at MTU 1500
	for _, tc := range []struct {
		name    string
		from    *net.UDPConn
		to      netip.AddrPort
		payload []byte
	}{
		{"ipv4 fragments", listenIn(t, p.B, "udp4", p.B.Addr4(0)), p.A.Addr4(port), big},
		{"ipv6 fragments", listenIn(t, p.B, "udp6", p.B.Addr6(0)), p.A.Addr6(port), big},
		{"ipv4 loopback", listenIn(t, p.A, "udp4", p.A.Addr4(0)), p.A.Addr4(port), []byte("over lo")},
		{"ipv6 loopback", listenIn(t, p.A, "udp6", netip.MustParseAddrPort("[::1]:0")),
			netip.AddrPortFrom(netip.IPv6Loopback(), port), []byte("over lo6")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := x.shadowReads.Load()
			if _, err := tc.from.WriteToUDPAddrPort(tc.payload, tc.to); err != nil {
				t.Fatal(err)
			}
			got := readN(t, x, 1)[0]
			from := tc.from.LocalAddr().(*net.UDPAddr).AddrPort()
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if !bytes.Equal(got.Buf, tc.payload) || got.Addr != from || got.Local != tc.to.Addr() {
				t.Fatalf("got %d bytes from %v to %v; want %d bytes from %v to %v", len(got.Buf), got.Addr,
					got.Local, len(tc.payload), from, tc.to.Addr())
			}
			if x.shadowReads.Load() != before+1 {
				t.Errorf("the datagram did not come through the shadow socket")
			}
			// The answer to a local address leaves through the shadow socket as well.
			writeAll(t, x, transport.Message{Buf: []byte("answer"), Addr: from, ECN: transport.ECNECT0})
			if tc.name == "ipv4 loopback" || tc.name == "ipv6 loopback" {
				buf := make([]byte, 100)
				_ = tc.from.SetReadDeadline(time.Now().Add(ioTimeout))
				n, src, err := tc.from.ReadFromUDPAddrPort(buf)
				if err != nil || string(buf[:n]) != "answer" || src.Port() != port {
					t.Fatalf("answer: %q from %v, %v", buf[:n], src, err)
				}
			}
		})
	}
	if x.shadowWrites.Load() < 2 {
		t.Errorf("%d writes went through the shadow socket, want the answers to local addresses", x.shadowWrites.Load())
	}
	if c, err := x.ProgramCounters(); err != nil || c.PassFragment == 0 {
		t.Errorf("program counters %+v, %v: want fragments passed", c, err)
	}
}

// TestNextHop: the destination's Ethernet address comes from the kernel's neighbour table, from
// frames received from the destination, or, while neither knows it, the datagram goes through
// the shadow socket (and the kernel resolves the neighbour meanwhile).
func TestNextHop(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, p *netns.Pair, x *Conn, u *net.UDPConn)
		// shadowFirst: the first write goes through the shadow socket.
		shadowFirst bool
	}{
		{"unknown, then resolved by the kernel", func(*testing.T, *netns.Pair, *Conn, *net.UDPConn) {}, true},
		{"neighbour table", func(t *testing.T, p *netns.Pair, _ *Conn, _ *net.UDPConn) {
			if _, err := p.A.Run("ip", "neigh", "replace", p.B.IPv4.Addr().String(), "lladdr", p.B.MAC.String(),
				"dev", p.A.Link, "nud", "permanent"); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"learned from received frames", func(t *testing.T, p *netns.Pair, x *Conn, u *net.UDPConn) {
			if _, err := u.WriteToUDPAddrPort([]byte("hello"), x.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			readN(t, x, 1)
			// Forget what the kernel learned from the peer's ARP: only our table knows it now.
			if _, err := p.A.Run("ip", "neigh", "flush", "dev", p.A.Link); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t)
			x := openXDP(t, p.A, p.A.Addr4(0), Config{})
			u := listenIn(t, p.B, "udp4", p.B.Addr4(0))
			tc.setup(t, p, x, u)
			dst := u.LocalAddr().(*net.UDPAddr).AddrPort()
			buf := make([]byte, 100)
			deadline := time.Now().Add(ioTimeout)
			_ = u.SetReadDeadline(deadline)
			for i := 0; ; i++ {
				before := x.shadowWrites.Load()
				writeAll(t, x, transport.Message{Buf: fmt.Appendf(nil, "%d", i), Addr: dst})
				n, _, err := u.ReadFromUDPAddrPort(buf)
				if err != nil || string(buf[:n]) != fmt.Sprint(i) {
					t.Fatalf("datagram %d: %q, %v", i, buf[:n], err)
				}
				viaShadow := x.shadowWrites.Load() > before
				if i == 0 && viaShadow != tc.shadowFirst {
					t.Fatalf("first datagram through the shadow socket: %v, want %v", viaShadow, tc.shadowFirst)
				}
				if !viaShadow {
					break // through the TX ring: the next hop is known
				}
				if time.Now().After(deadline) {
					t.Fatalf("after %d datagrams the next hop is still unknown", i+1)
				}
				// The kernel resolves the neighbour in the background and says nothing when it
				// is done; the cache asks it again after missTTL. Pace the retries.
				time.Sleep(missTTL / 4)
			}
		})
	}
}

// TestMultiQueue: with two RX queues on each veth end, a default Conn binds a socket to each,
// and datagrams of many flows (spread over both queues by the sender's veth) all arrive. With a
// socket on queue 1 only, what arrives on queue 0 still reaches the Conn, through the kernel and
// the shadow socket.
func TestMultiQueue(t *testing.T) {
	p := newPair(t)
	for _, ns := range []*netns.NS{p.A, p.B} {
		if _, err := ns.Run("ethtool", "-L", ns.Link, "rx", "2", "tx", "2"); err != nil {
			t.Fatalf("set 2 queues: %v", err)
		}
	}
	for _, tc := range []struct {
		name   string
		queues []int
	}{{"all queues", nil}, {"queue 1 only", []int{1}}} {
		t.Run(tc.name, func(t *testing.T) {
			x := openXDP(t, p.A, p.A.Addr4(0), Config{Queues: tc.queues})
			wantQueues := tc.queues
			if wantQueues == nil {
				wantQueues = []int{0, 1}
			}
			if got := x.Info().Queues; fmt.Sprint(got) != fmt.Sprint(wantQueues) {
				t.Fatalf("Info().Queues = %v, want %v", got, wantQueues)
			}
			const flows, perFlow = 16, 8
			for f := range flows {
				u := listenIn(t, p.B, "udp4", p.B.Addr4(0))
				for i := range perFlow {
					if _, err := u.WriteToUDPAddrPort(fmt.Appendf(nil, "flow %d #%d", f, i), x.LocalAddr()); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := readN(t, x, flows*perFlow)
			seen := map[string]bool{}
			for _, m := range got {
				seen[string(m.Buf)] = true
			}
			if len(seen) != flows*perFlow {
				t.Fatalf("%d distinct datagrams of %d", len(seen), flows*perFlow)
			}
			c, err := x.ProgramCounters()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("program: %d redirected, %d to queues without a socket; %d read through the shadow socket",
				c.RedirectV4, c.NoSocket, x.shadowReads.Load())
			if tc.queues == nil && c.NoSocket != 0 {
				t.Errorf("%d datagrams found no socket with every queue bound", c.NoSocket)
			}
			if c.NoSocket != x.shadowReads.Load() {
				t.Errorf("%d datagrams went to queues without a socket but %d came through the shadow socket",
					c.NoSocket, x.shadowReads.Load())
			}
		})
	}
}

// TestTXRingFull: one WriteBatch carrying many more datagrams than the TX ring holds waits for
// the kernel to complete earlier frames instead of failing: every datagram arrives, and the full
// ring is counted.
func TestTXRingFull(t *testing.T) {
	p := newPair(t)
	x := openXDP(t, p.A, p.A.Addr4(0), Config{TXRingSize: MinRingSize})
	u := openUDP(t, p.B, p.B.Addr4(0))
	writeAll(t, u, transport.Message{Buf: []byte("learn me"), Addr: x.LocalAddr()})
	readN(t, x, 1)

	const segments, size = 10 * MinRingSize, 100
	buf := make([]byte, segments*size)
	for i := range segments {
		copy(buf[i*size:], fmt.Appendf(nil, "segment %04d", i))
	}
	writeAll(t, x, transport.Message{Buf: buf, SegmentSize: size, Addr: u.LocalAddr()})
	got := readN(t, u, segments)
	for i, m := range got {
		if want := fmt.Sprintf("segment %04d", i); len(m.Buf) != size || string(m.Buf[:len(want)]) != want {
			t.Fatalf("datagram %d: %q...", i, m.Buf[:min(len(m.Buf), 12)])
		}
	}
	st := x.Stats()
	if st.RingFull == 0 || st.Drops != 0 || st.PacketsWritten != segments {
		t.Errorf("Stats = %+v; want RingFull > 0, no drops, %d written", st, segments)
	}
}
