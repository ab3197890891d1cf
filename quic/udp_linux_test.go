package quic

import (
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/udp"
)

func init() {
	transports = append(transports,
		namedPair{"udp", udpPair},
		namedPair{"udp-through-adapter", udpAdapterPair},
	)
}

// openUDP opens a kernel UDP transport on 127.0.0.1, closed at cleanup.
func openUDP(t testing.TB) *udp.Conn {
	t.Helper()
	c, err := udp.Listen(testContext(t), netip.MustParseAddrPort("127.0.0.1:0"), udp.Config{})
	if err != nil {
		t.Fatalf("udp.Listen: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpPair opens two kernel UDP transports: quic-go gets their sockets directly.
func udpPair(t testing.TB) (server, client transport.Conn) {
	return openUDP(t), openUDP(t)
}

// controlOnly hides a udp.Conn's KernelUDP capability but keeps its control socket, so quic-go
// reaches the kernel socket through the adapter (ReadBatch/WriteBatch) while probing and setting
// options on the real socket.
type controlOnly struct {
	transport.Conn
	ctl transport.ControlSocket
}

func (c controlOnly) SyscallConn() (syscall.RawConn, error) { return c.ctl.SyscallConn() }

func udpAdapterPair(t testing.TB) (server, client transport.Conn) {
	s, c := openUDP(t), openUDP(t)
	return controlOnly{s, s}, controlOnly{c, c}
}

func TestPacketConnUDPIsTheKernelSocket(t *testing.T) {
	c := openUDP(t)
	pc, err := PacketConn(c)
	if err != nil {
		t.Fatal(err)
	}
	if uc, ok := pc.(*net.UDPConn); !ok || uc != c.UDPConn() {
		t.Fatalf("PacketConn(udp) = %T, want the transport's own *net.UDPConn", pc)
	}
}

func TestAdapterOverKernelUDP(t *testing.T) {
	s, c := openUDP(t), openUDP(t)
	server, client := &observedConn{Conn: s}, &observedConn{Conn: c}
	_, cli := connect(t, controlOnly{server, s}, controlOnly{client, c})
	echoStream(t, cli, 1<<20)
	for name, o := range map[string]*observedConn{"server": server, "client": client} {
		t.Logf("%s: %d datagrams written (%d GSO runs), %d ECT(0); %d read in %d calls, %d ECT(0)", name,
			o.writes.Load(), o.gsoWrites.Load(), o.ecnWrites[transport.ECNECT0].Load(),
			o.readMsgs.Load(), o.readCalls.Load(), o.ecnReads[transport.ECNECT0].Load())
		if o.gsoWrites.Load() == 0 {
			t.Errorf("%s: no GSO run reached the kernel socket", name)
		}
		if o.ecnReads[transport.ECNECT0].Load() < 100 {
			t.Errorf("%s: ECN codepoints not passed through", name)
		}
	}
}
