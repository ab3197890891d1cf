// Package xdpnet is the network nqbench runs nq's afxdp transport on. AF_XDP needs a real
// interface, so New builds one: two network namespaces joined by a veth pair with TEST-NET-1
// addresses (made by the repository's internal/netns helper), the server's end 192.0.2.1 and
// the clients' end 192.0.2.2. The nq server's socket runs on AF_XDP on the server's veth end
// (ServerFactory); the clients' sockets are kernel UDP sockets in the other namespace
// (ClientFactory).
//
// The clients use kernel UDP because that is what a game server's players run (AF_XDP is a
// server-side deployment), and because one AF_XDP Conn owns its interface: the XDP program
// attaches through a BPF link and a second Conn on the same interface fails with
// afxdp.ErrInterfaceBusy, so a fleet of client sockets cannot all be AF_XDP sockets.
//
// The kernel traps of AF_XDP on veth (see the repository's shared notes) and how they are met:
// veth has no zero-copy mode, so the Conn runs in copy mode (afxdp.ModeAuto falls back); a
// frame redirected into an AF_XDP socket and an AF_XDP transmission need no XDP program on the
// veth peer, so the clients' end has none; frames the clients' kernel sends may carry partial
// UDP checksums, which package afxdp accepts; the MTU stays 1500 (native XDP on veth refuses
// 9000). Threaded NAPI is deliberately left off: its kernel thread's CPU time would not be
// charged to the benchmark process, and CPU per request must cover the receive path.
//
// Close (also on an error of New) deletes both namespaces; nqbench calls it on every exit path,
// including SIGINT and SIGTERM. A process killed with SIGKILL leaves them behind: `ip netns
// list` shows them as nqbA-... and nqbB-..., and `ip netns del` removes them.
package xdpnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/afxdp"
	"github.com/naquid/naquid/transport/udp"
)

// ErrUnavailable reports that this process cannot run nq over AF_XDP here: not root (or
// missing capabilities), no network namespaces, no iproute2, or a kernel without AF_XDP
// sockets. Available and New wrap it with the reason.
var ErrUnavailable = errors.New("xdpnet: afxdp unavailable")

// prefix starts the names of the namespaces and veth devices New creates.
const prefix = "nqb"

// Net is a veth pair between a server namespace and a client namespace. Its methods are safe
// for concurrent use.
type Net struct {
	pair *netns.Pair
	h    *harness

	mu    sync.Mutex
	conns []*afxdp.Conn // every server Conn ServerFactory opened, for Summary
}

// New creates the namespaces and the veth pair, and returns when both ends are up. It fails
// with an error matching ErrUnavailable when Available does.
func New() (*Net, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	h := &harness{}
	var pair *netns.Pair
	done := make(chan struct{})
	go func() {
		defer close(done)
		pair = netns.NewPair(h, netns.Config{Prefix: prefix})
	}()
	<-done
	n := &Net{pair: pair, h: h}
	if err := h.failure(); err != nil || pair == nil {
		if err == nil {
			err = errors.New("netns.NewPair returned no pair")
		}
		return nil, errors.Join(fmt.Errorf("xdpnet: create namespaces: %w", err), n.Close())
	}
	return n, nil
}

// Close deletes the namespaces (the devices go with them). Sockets opened in them keep working
// until they are closed. Close is idempotent.
func (n *Net) Close() error {
	if err := n.h.runCleanups(); err != nil {
		return fmt.Errorf("xdpnet: delete namespaces: %w", err)
	}
	return nil
}

// ServerNamespace and ClientNamespace name the namespaces (as `ip netns` knows them).
func (n *Net) ServerNamespace() string { return n.pair.A.Name }

// ClientNamespace names the clients' namespace; ClientFactoryIn opens sockets in it from
// another process.
func (n *Net) ClientNamespace() string { return n.pair.B.Name }

// ServerFactory opens afxdp Conns on the server namespace's veth end. A loopback or
// unspecified local address is replaced by the server end's address of the same family,
// keeping the port, so a server told to listen on 127.0.0.1:0 (as nqbench's workloads do)
// listens on 192.0.2.1 and reports that address to its clients.
func (n *Net) ServerFactory() transport.Factory {
	ns := n.pair.A
	open := afxdp.Factory(afxdp.Config{Interface: ns.Link})
	return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		local = serverAddr(ns, local)
		var c transport.Conn
		err := ns.Do(func() (err error) {
			c, err = open(ctx, local)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("xdpnet: afxdp on %s in namespace %s: %w", ns.Link, ns.Name, err)
		}
		if xc, ok := c.(*afxdp.Conn); ok {
			n.mu.Lock()
			n.conns = append(n.conns, xc)
			n.mu.Unlock()
		}
		return c, nil
	}
}

// serverAddr maps a loopback or unspecified address to ns's address of the same family.
func serverAddr(ns *netns.NS, local netip.AddrPort) netip.AddrPort {
	ip := local.Addr()
	if !ip.IsLoopback() && !ip.IsUnspecified() {
		return local
	}
	if ip.Is4() || ip.Is4In6() {
		return ns.Addr4(local.Port())
	}
	return ns.Addr6(local.Port())
}

// ClientFactory opens kernel UDP sockets in the client namespace.
func (n *Net) ClientFactory() transport.Factory { return inNamespace(n.pair.B) }

// ClientFactoryIn opens kernel UDP sockets in the namespace named name (a Net's
// ClientNamespace, from another process of the same run).
func ClientFactoryIn(name string) transport.Factory { return inNamespace(&netns.NS{Name: name}) }

func inNamespace(ns *netns.NS) transport.Factory {
	open := udp.Factory(udp.Config{})
	return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		var c transport.Conn
		err := ns.Do(func() (err error) {
			c, err = open(ctx, local)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("xdpnet: udp socket in namespace %s: %w", ns.Name, err)
		}
		return c, nil
	}
}

// Summary describes the network and what the server's AF_XDP Conns did over the Net's life
// (counts summed over every Conn ServerFactory opened, closed ones included: a storm run's
// servers before and after each restart), for a result's note.
func (n *Net) Summary() string {
	n.mu.Lock()
	conns := n.conns
	n.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "server on AF_XDP on veth %s (%s, namespace %s)", n.pair.A.Link, n.pair.A.IPv4.Addr(), n.pair.A.Name)
	if len(conns) > 0 {
		info := conns[0].Info()
		mode := "copy"
		if info.ZeroCopy {
			mode = "zero-copy"
		}
		var sum transport.Counters
		for _, c := range conns {
			sum.Add(c.Stats())
		}
		fmt.Fprintf(&b, ", %s attach, %s mode", attachName(info.Attach), mode)
		fmt.Fprintf(&b, ", over the run %d datagrams in, %d out, %d dropped, %d dropped by the kernel",
			sum.PacketsRead, sum.PacketsWritten, sum.Drops, sum.KernelDrops)
	}
	fmt.Fprintf(&b, "; clients on kernel UDP across the veth pair (namespace %s)", n.pair.B.Name)
	return b.String()
}

func attachName(m afxdp.AttachMode) string {
	switch m {
	case afxdp.AttachDriver:
		return "driver (native XDP)"
	case afxdp.AttachGeneric:
		return "generic (SKB) XDP"
	}
	return fmt.Sprintf("attach mode %d", int(m))
}
