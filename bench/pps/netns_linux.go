package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Addresses of the two ends of the veth pair (TEST-NET-2) and their Ethernet addresses (locally
// administered, so they are set rather than read back).
var (
	txPrefix = netip.MustParsePrefix("198.51.100.1/24")
	rxPrefix = netip.MustParsePrefix("198.51.100.2/24")
)

const (
	txMAC = "02:00:5e:64:00:01"
	rxMAC = "02:00:5e:64:00:02"
	// cmdTimeout bounds every ip/sh command.
	cmdTimeout = 20 * time.Second
	// linkUpTimeout bounds the wait for the veth pair to come up.
	linkUpTimeout = 5 * time.Second
)

// end is one side of the topology: a namespace and its veth end.
type end struct {
	NS, Dev string
	Addr    netip.Prefix
	MAC     string
}

// topology is two namespaces joined by a veth pair: the sender's (tx) and the receiver's (rx).
type topology struct {
	TX, RX end
}

// newTopology creates the namespaces and the veth pair, addresses them, installs permanent
// neighbour entries both ways (the asavie program redirects ARP too), turns IPv6 off on them
// (no neighbour discovery chatter), and steers each side's receive work to its core with RPS.
// On failure it deletes what it created.
func newTopology(ctx context.Context, id string, txCPU, rxCPU int) (_ *topology, err error) {
	t := &topology{
		TX: end{NS: nsPrefix + "tx-" + id, Dev: "ppt" + id, Addr: txPrefix, MAC: txMAC},
		RX: end{NS: nsPrefix + "rx-" + id, Dev: "ppr" + id, Addr: rxPrefix, MAC: rxMAC},
	}
	if len(t.TX.Dev) > 15 {
		return nil, fmt.Errorf("pps: id %q makes interface names longer than 15 bytes", id)
	}
	created := 0
	defer func() {
		if err != nil && created > 0 {
			err = errors.Join(err, t.deleteNamespaces(created))
		}
	}()
	for _, e := range []end{t.TX, t.RX} {
		if err := run(ctx, "ip", "netns", "add", e.NS); err != nil {
			return nil, err
		}
		created++
	}
	// Distinct interface indexes: twin indexes delay the carrier coming up by up to a second.
	if err := run(ctx, "ip", "link", "add", "name", t.TX.Dev, "index", "2", "address", t.TX.MAC, "netns", t.TX.NS,
		"type", "veth", "peer", "name", t.RX.Dev, "index", "3", "address", t.RX.MAC, "netns", t.RX.NS); err != nil {
		return nil, err
	}
	for _, pair := range [][2]end{{t.TX, t.RX}, {t.RX, t.TX}} {
		e, peer := pair[0], pair[1]
		steps := [][]string{
			{"ip", "-n", e.NS, "link", "set", "lo", "up"},
			{"ip", "-n", e.NS, "addr", "add", e.Addr.String(), "dev", e.Dev},
			{"ip", "-n", e.NS, "neigh", "replace", peer.Addr.Addr().String(), "lladdr", peer.MAC, "dev", e.Dev, "nud", "permanent"},
		}
		for _, s := range steps {
			if err := run(ctx, s[0], s[1:]...); err != nil {
				return nil, err
			}
		}
	}
	cpus := map[string]int{t.TX.NS: txCPU, t.RX.NS: rxCPU}
	for _, e := range []end{t.TX, t.RX} {
		// Written from inside the namespace: `ip netns exec` mounts that namespace's /sys, and
		// /proc/sys/net is per namespace. The IPv6 sysctls are absent without IPv6 support.
		script := fmt.Sprintf("echo %s > /sys/class/net/%s/queues/rx-0/rps_cpus && "+
			"for f in all default %s; do p=/proc/sys/net/ipv6/conf/$f/disable_ipv6; [ ! -e $p ] || echo 1 > $p; done",
			cpuMask(cpus[e.NS]), e.Dev, e.Dev)
		if err := run(ctx, "ip", "netns", "exec", e.NS, "sh", "-c", script); err != nil {
			return nil, err
		}
		if err := run(ctx, "ip", "-n", e.NS, "link", "set", e.Dev, "up"); err != nil {
			return nil, err
		}
	}
	// veth passes a frame through the receiver's NAPI (where GRO runs) only when the sending
	// device has TSO off or an XDP program is attached to the receiver (veth_xmit,
	// veth_skb_is_eligible_for_gro). TSO concerns TCP only, and no TCP crosses this link.
	if err := run(ctx, "ip", "netns", "exec", t.TX.NS, "ethtool", "-K", t.TX.Dev, "tso", "off"); err != nil {
		return nil, err
	}
	if err := t.waitUp(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// setGRO turns GRO on or off on the receiving veth end. With GRO on, veth runs a NAPI poll
// loop for it (as a NIC driver does) that aggregates runs of datagrams of one flow for sockets
// that asked for UDP_GRO; with it off (veth's default) and no XDP program, veth hands each
// frame to the stack's backlog on its own.
func (t *topology) setGRO(ctx context.Context, on bool) error {
	state := "off"
	if on {
		state = "on"
	}
	return run(ctx, "ip", "netns", "exec", t.RX.NS, "ethtool", "-K", t.RX.Dev, "gro", state)
}

// waitUp polls until both veth ends report state UP (bounded by linkUpTimeout).
func (t *topology) waitUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, linkUpTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		up := 0
		for _, e := range []end{t.TX, t.RX} {
			out, err := output(ctx, "ip", "-n", e.NS, "-br", "link", "show", "dev", e.Dev)
			if err == nil && len(strings.Fields(out)) > 1 && strings.Fields(out)[1] == "UP" {
				up++
			}
		}
		if up == 2 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pps: veth %s/%s not up after %v: %w", t.TX.Dev, t.RX.Dev, linkUpTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// close deletes both namespaces (which deletes the veth pair) and checks that they are gone.
// It works even when ctx is already cancelled (after a signal).
func (t *topology) close() error {
	err := t.deleteNamespaces(2)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, lerr := output(ctx, "ip", "netns", "list")
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	for _, e := range []end{t.TX, t.RX} {
		for line := range strings.SplitSeq(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == e.NS {
				err = errors.Join(err, fmt.Errorf("pps: namespace %s still listed after delete", e.NS))
			}
		}
	}
	return err
}

// deleteNamespaces deletes the first n namespaces of t (creation order).
func (t *topology) deleteNamespaces(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var errs []error
	for _, e := range []end{t.TX, t.RX}[:n] {
		errs = append(errs, run(ctx, "ip", "netns", "del", e.NS))
	}
	return errors.Join(errs...)
}

// removeStale deletes namespaces left by earlier runs that were killed before they could clean
// up (SIGKILL): those named after a process that no longer runs this program. It returns the
// names it deleted.
func removeStale(ctx context.Context) ([]string, error) {
	list, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	self, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return nil, fmt.Errorf("pps: %w", err)
	}
	alive := func(pid int) bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return err == nil && bytes.Equal(comm, self)
	}
	stale := staleNamespaces(list, alive)
	var errs []error
	for _, ns := range stale {
		errs = append(errs, run(ctx, "ip", "netns", "del", ns))
	}
	return stale, errors.Join(errs...)
}

// run runs a command and returns an error carrying its output when it fails.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

// output runs a command (bounded by cmdTimeout) and returns its standard output.
func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pps: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
