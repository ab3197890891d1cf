package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runDir is where `ip netns add` bind-mounts named namespaces.
const runDir = "/run/netns/"

// cmdTimeout bounds every external command, so a wedged `ip` fails the test instead of hanging it.
const cmdTimeout = 30 * time.Second

// linkUpTimeout bounds the wait for a new veth pair to come up; linkPoll is the polling step.
const (
	linkUpTimeout = 5 * time.Second
	linkPoll      = 2 * time.Millisecond
)

// Addresses of the two ends of every Pair (TEST-NET-1 and the IPv6 documentation prefix).
var (
	addrA4 = netip.MustParsePrefix("192.0.2.1/24")
	addrB4 = netip.MustParsePrefix("192.0.2.2/24")
	addrA6 = netip.MustParsePrefix("2001:db8::1/64")
	addrB6 = netip.MustParsePrefix("2001:db8::2/64")
)

var (
	availOnce sync.Once
	availErr  error
)

// Available reports whether this process can create network namespaces and veth pairs. The
// error, when not nil, matches ErrUnsupported and says what is missing.
func Available() error {
	availOnce.Do(func() { availErr = probe() })
	return availErr
}

func probe() error {
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("%w: kernel without network namespaces (/proc/self/ns/net: %v)", ErrUnsupported, err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: iproute2 `ip` not in PATH (make setup installs iproute2)", ErrUnsupported)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("%w: capget: %v", ErrUnsupported, err)
	}
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			return fmt.Errorf("%w: process lacks %s (run the tests as root)", ErrUnsupported, c.name)
		}
	}
	return nil
}

// NewPair creates two namespaces joined by a veth pair (see Pair) and registers their deletion
// with t.Cleanup. It skips the test when Available fails and fails it on any other error.
func NewPair(t testing.TB, cfg Config) *Pair {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "nq"
	}
	var rb [4]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatalf("netns: random suffix: %v", err)
	}
	suffix := hex.EncodeToString(rb[:])
	a := &NS{Name: prefix + "A-" + suffix, Link: prefix + "a" + suffix, IPv4: addrA4, IPv6: addrA6}
	b := &NS{Name: prefix + "B-" + suffix, Link: prefix + "b" + suffix, IPv4: addrB4, IPv6: addrB6}
	a.Peer, b.Peer = b, a

	for _, n := range []*NS{a, b} {
		if out, err := run("ip", "netns", "add", n.Name); err != nil {
			if strings.Contains(out, "Operation not permitted") {
				t.Skipf("netns: ip netns add %s not permitted here: %s", n.Name, out)
			}
			t.Fatalf("netns: ip netns add %s: %v: %s", n.Name, err, out)
		}
		name := n.Name
		t.Cleanup(func() {
			if out, err := run("ip", "netns", "del", name); err != nil {
				t.Errorf("netns: ip netns del %s: %v: %s", name, err, out)
			}
		})
	}
	// Distinct interface indexes: a veth end whose index equals its peer's (both would be 2 in
	// fresh namespaces) has its carrier changes deferred by the kernel's link watcher for up to
	// a second instead of handled at once.
	if out, err := run("ip", "link", "add", "name", a.Link, "index", "2", "netns", a.Name, "type", "veth",
		"peer", "name", b.Link, "index", "3", "netns", b.Name); err != nil {
		t.Fatalf("netns: create veth %s/%s: %v: %s", a.Link, b.Link, err, out)
	}
	for _, n := range []*NS{a, b} {
		var script strings.Builder
		if cfg.MTU > 0 {
			fmt.Fprintf(&script, "link set dev %s mtu %d\n", n.Link, cfg.MTU)
		}
		fmt.Fprintf(&script, "addr add %s dev %s\n", n.IPv4, n.Link)
		fmt.Fprintf(&script, "addr add %s dev %s nodad\n", n.IPv6, n.Link)
		fmt.Fprintf(&script, "link set dev lo up\n")
		fmt.Fprintf(&script, "link set dev %s up\n", n.Link)
		if out, err := runInput(script.String(), "ip", "-n", n.Name, "-batch", "-"); err != nil {
			t.Fatalf("netns: configure %s in %s: %v: %s", n.Link, n.Name, err, out)
		}
	}
	for _, n := range []*NS{a, b} {
		if err := n.waitRunning(); err != nil {
			t.Fatal(err)
		}
	}
	return &Pair{A: a, B: b}
}

// waitRunning waits until the kernel has brought the namespace's veth end fully up and fills
// Index and MAC. Until the link watcher has processed the carrier change (it may defer that by up
// to a second), the device drops what it is given and IPv6 has no multicast route, so a first
// neighbour solicitation would be lost and retried only a second later. There is no cheap
// notification for "processed", so this polls the interface flags, briefly and bounded.
func (n *NS) waitRunning() error {
	deadline := time.Now().Add(linkUpTimeout)
	for {
		var ifi *net.Interface
		if err := n.Do(func() (err error) {
			ifi, err = net.InterfaceByName(n.Link)
			return err
		}); err != nil {
			return fmt.Errorf("netns: look up %s in %s: %w", n.Link, n.Name, err)
		}
		if ifi.Flags&net.FlagRunning != 0 {
			n.Index, n.MAC = ifi.Index, ifi.HardwareAddr
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: %s in %s not running after %v (flags %v)", n.Link, n.Name, linkUpTimeout, ifi.Flags)
		}
		time.Sleep(linkPoll)
	}
}

// Do runs f on an OS thread that has entered the namespace, and returns f's error. Sockets f
// opens belong to the namespace for their whole life and may be used from any goroutine
// afterwards.
//
// f runs on a goroutine of its own, locked to its thread, so the caller's thread never changes
// namespace: f must not call t.Fatal (return an error instead). The thread returns to its
// original namespace afterwards; if that fails, the thread stays locked and is discarded when
// the goroutine ends, so no other goroutine ever runs in the wrong namespace.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(runDir+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open namespace %s: %w", n.Name, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter namespace %s: %w", n.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime ends this thread with the goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("netns: leave namespace %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Run runs a command inside the namespace (`ip netns exec`), for tools such as ethtool or sysctl,
// and returns its combined output.
func (n *NS) Run(name string, args ...string) (string, error) {
	out, err := run("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	if err != nil {
		return out, fmt.Errorf("netns: %s in %s: %w: %s", name, n.Name, err, strings.TrimSpace(out))
	}
	return out, nil
}

func (c Config) validate() error {
	if c.MTU < 0 || c.MTU > 65535 {
		return fmt.Errorf("netns: Config.MTU %d out of range 0..65535", c.MTU)
	}
	if len(c.Prefix) > 6 {
		return fmt.Errorf("netns: Config.Prefix %q longer than 6 bytes", c.Prefix)
	}
	for _, r := range c.Prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return fmt.Errorf("netns: Config.Prefix %q: only letters and digits allowed", c.Prefix)
		}
	}
	return nil
}

func run(name string, args ...string) (string, error) {
	return runInput("", name, args...)
}

func runInput(stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
