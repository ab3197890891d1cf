package afxdp

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"net/netip"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/udp"
)

// ioTimeout bounds every wait for a datagram in these tests.
const ioTimeout = 5 * time.Second

// newPair creates two namespaces joined by a veth pair, or skips the test when namespaces or
// AF_XDP are unavailable.
func newPair(t testing.TB) *netns.Pair {
	t.Helper()
	requireXDP(t)
	return netns.NewPair(t, netns.Config{Prefix: "nqx"})
}

// requireXDP skips the test when the kernel has no AF_XDP sockets (the only case in which these
// tests may skip besides missing namespace privileges, which netns reports).
func requireXDP(t testing.TB) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/proc/sys/net/core/bpf_jit_enable"); err != nil {
		t.Skipf("kernel without BPF: %v", err)
	}
}

// openXDP opens an afxdp Conn inside ns on its veth end and closes it at cleanup.
func openXDP(t testing.TB, ns *netns.NS, local netip.AddrPort, cfg Config) *Conn {
	t.Helper()
	c, err := openXDPErr(ns, local, cfg)
	if err != nil {
		t.Fatalf("afxdp.New(%s) in %s: %v", local, ns.Name, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

func openXDPErr(ns *netns.NS, local netip.AddrPort, cfg Config) (*Conn, error) {
	if cfg.Interface == "" {
		cfg.Interface = ns.Link
	}
	var c *Conn
	err := ns.Do(func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		c, err = New(ctx, local, cfg)
		return err
	})
	return c, err
}

// openUDP opens a kernel UDP Conn inside ns and closes it at cleanup.
func openUDP(t testing.TB, ns *netns.NS, local netip.AddrPort) *udp.Conn {
	t.Helper()
	var c *udp.Conn
	if err := ns.Do(func() (err error) {
		c, err = udp.Listen(context.Background(), local, udp.Config{})
		return err
	}); err != nil {
		t.Fatalf("udp.Listen(%s) in %s: %v", local, ns.Name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readN reads until want datagrams have arrived or ioTimeout passed, and returns them (payload
// copies, source addresses).
func readN(t testing.TB, c transport.Conn, want int) []transport.Message {
	t.Helper()
	var out []transport.Message
	msgs := make([]transport.Message, 8)
	deadline := time.Now().Add(ioTimeout)
	if err := c.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for len(out) < want {
		for i := range msgs {
			msgs[i] = transport.Message{Buf: make([]byte, 1<<16)}
		}
		n, err := c.ReadBatch(msgs)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(out), want, err)
		}
		for _, m := range msgs[:n] {
			m.Buf = m.Buf[:m.N]
			out = append(out, m)
		}
	}
	return out
}

// writeAll writes msgs, failing the test on error.
func writeAll(t testing.TB, c transport.Conn, msgs ...transport.Message) {
	t.Helper()
	n, err := c.WriteBatch(msgs)
	if err != nil || n != len(msgs) {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(msgs))
	}
}

// xdpAttachment returns what `ip -o link show` says about the XDP program on ns's veth end:
// "" when none is attached, else the mode and program words ("xdp ... prog/xdp id 42").
func xdpAttachment(t testing.TB, ns *netns.NS) string {
	t.Helper()
	out, err := ns.Run("ip", "-o", "link", "show", "dev", ns.Link)
	if err != nil {
		t.Fatalf("ip link show: %v", err)
	}
	var found []string
	f := strings.Fields(out)
	for i, w := range f {
		if strings.HasPrefix(w, "xdp") || w == "prog/xdp" {
			found = append(found, strings.Join(f[i:min(i+3, len(f))], " "))
		}
	}
	return strings.Join(found, "; ")
}
