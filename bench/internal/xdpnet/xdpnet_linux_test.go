package xdpnet

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/afxdp"
)

// newNet builds a Net, or skips the test (with the reason) where afxdp cannot run: not root,
// or a kernel without AF_XDP. On this project's machines it runs.
func newNet(t *testing.T) *Net {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	n, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// namespaces lists the network namespaces `ip netns list` shows.
func namespaces(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

// TestNet sends datagrams from a client socket to a server socket of a Net, both ways, checks
// that the server's went through AF_XDP, and that Close deletes the namespaces.
func TestNet(t *testing.T) {
	n := newNet(t)
	if list := namespaces(t); !strings.Contains(list, n.ServerNamespace()) || !strings.Contains(list, n.ClientNamespace()) {
		t.Fatalf("ip netns list lacks %s or %s:\n%s", n.ServerNamespace(), n.ClientNamespace(), list)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	srv, err := n.ServerFactory()(ctx, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if a := srv.LocalAddr(); a.Addr() != netip.MustParseAddr("192.0.2.1") || a.Port() == 0 {
		t.Fatalf("server address %s, want 192.0.2.1 and a port", a)
	}
	cl, err := n.ClientFactory()(ctx, netip.MustParseAddrPort("0.0.0.0:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	// The same through ClientFactoryIn, as the idle workload's client process opens its sockets.
	cl2, err := ClientFactoryIn(n.ClientNamespace())(ctx, netip.MustParseAddrPort("0.0.0.0:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl2.Close() })

	for i, c := range []transport.Conn{cl, cl2} {
		msg := []byte{'h', 'i', byte('0' + i)}
		if _, err := c.WriteBatch([]transport.Message{{Buf: msg, N: len(msg), Addr: srv.LocalAddr()}}); err != nil {
			t.Fatal(err)
		}
		got := read(t, srv)
		if string(got.Buf[:got.N]) != string(msg) || got.Addr.Addr() != netip.MustParseAddr("192.0.2.2") {
			t.Fatalf("server read %q from %s, want %q from 192.0.2.2", got.Buf[:got.N], got.Addr, msg)
		}
		if _, err := srv.WriteBatch([]transport.Message{{Buf: []byte("ok"), N: 2, Addr: got.Addr}}); err != nil {
			t.Fatal(err)
		}
		if back := read(t, c); string(back.Buf[:back.N]) != "ok" {
			t.Fatalf("client read %q, want ok", back.Buf[:back.N])
		}
	}
	if pc, err := srv.(*afxdp.Conn).ProgramCounters(); err != nil || pc.RedirectV4 < 2 || pc.NoSocket != 0 {
		t.Errorf("XDP program counters %+v, %v: want both datagrams redirected to the AF_XDP socket", pc, err)
	}
	sum := n.Summary()
	for _, want := range []string{"AF_XDP on veth", "2 datagrams in, 2 out", "copy mode", n.ClientNamespace()} {
		if !strings.Contains(sum, want) {
			t.Errorf("Summary %q lacks %q", sum, want)
		}
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if list := namespaces(t); strings.Contains(list, n.ServerNamespace()) || strings.Contains(list, n.ClientNamespace()) {
		t.Errorf("namespaces left after Close:\n%s", list)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ClientFactoryIn(n.ClientNamespace())(ctx, netip.MustParseAddrPort("0.0.0.0:0")); err == nil {
		t.Error("a socket opened in a deleted namespace")
	}
}

func read(t *testing.T, c transport.Conn) transport.Message {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	msgs := []transport.Message{{Buf: make([]byte, 2048)}}
	if _, err := c.ReadBatch(msgs); err != nil {
		t.Fatalf("ReadBatch on %s: %v", c.LocalAddr(), err)
	}
	return msgs[0]
}
