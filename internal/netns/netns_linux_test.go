package netns

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string // "" when valid
	}{
		{"zero", Config{}, ""},
		{"mtu", Config{MTU: 9000, Prefix: "x1"}, ""},
		{"negative mtu", Config{MTU: -1}, "MTU"},
		{"huge mtu", Config{MTU: 70000}, "MTU"},
		{"long prefix", Config{Prefix: "toolong"}, "Prefix"},
		{"bad prefix", Config{Prefix: "a-b"}, "Prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
				t.Fatalf("validate = %v, want an error naming Config.%s", err, tc.field)
			}
		})
	}
}

// TestPair builds a pair and checks addressing, link facts, UDP over IPv4 and IPv6 across the
// veth, and that Do leaves the caller's namespace alone.
func TestPair(t *testing.T) {
	p := NewPair(t, Config{MTU: 1400})
	for _, n := range []*NS{p.A, p.B} {
		if n.Index <= 0 || len(n.MAC) != 6 || n.Peer == nil || n.Peer.Peer != n {
			t.Fatalf("%s: incomplete handle %+v", n.Name, n)
		}
		out, err := n.Run("ip", "-o", "link", "show", "dev", n.Link)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "mtu 1400") || !strings.Contains(out, "UP") {
			t.Fatalf("%s: link not up with mtu 1400: %s", n.Link, out)
		}
	}
	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		network  string
		src, dst netip.AddrPort
	}{
		{"ipv4", "udp4", p.A.Addr4(0), p.B.Addr4(0)},
		{"ipv6", "udp6", p.A.Addr6(0), p.B.Addr6(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recv := listenIn(t, p.B, tc.network, tc.dst)
			send := listenIn(t, p.A, tc.network, tc.src)
			msg := []byte("across the veth " + tc.name)
			if _, err := send.WriteToUDPAddrPort(msg, recv.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			if err := recv.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			n, from, err := recv.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], msg) || from.Addr() != tc.src.Addr() {
				t.Fatalf("got %q from %v, want %q from %v", buf[:n], from, msg, tc.src.Addr())
			}
		})
	}
	after, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Fatalf("test goroutine's namespace changed: %s -> %s", before, after)
	}
}

// TestDoError checks that f's error comes back and that a missing namespace is reported.
func TestDoError(t *testing.T) {
	p := NewPair(t, Config{})
	want := errors.New("boom")
	if err := p.A.Do(func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("Do = %v, want %v", err, want)
	}
	gone := &NS{Name: "nq-does-not-exist"}
	if err := gone.Do(func() error { return nil }); err == nil {
		t.Fatal("Do in a missing namespace succeeded")
	}
}

// TestCleanupRemoves checks that the namespaces disappear when the test that made them ends.
func TestCleanupRemoves(t *testing.T) {
	var names []string
	t.Run("inner", func(t *testing.T) {
		p := NewPair(t, Config{})
		names = []string{p.A.Name, p.B.Name}
	})
	if len(names) == 0 {
		t.Skip("inner test skipped")
	}
	for _, name := range names {
		if _, err := os.Stat(runDir + name); !os.IsNotExist(err) {
			t.Errorf("namespace %s still present after cleanup (stat: %v)", name, err)
		}
	}
}

func listenIn(t *testing.T, n *NS, network string, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
