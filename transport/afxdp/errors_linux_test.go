package afxdp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
)

// TestSetupErrorMatching: a *SetupError reads "afxdp: <step> <iface> queue <q>: <cause>" and
// matches both its kind and its cause.
func TestSetupErrorMatching(t *testing.T) {
	e := &SetupError{Interface: "veth0", Queue: 1, Step: "bind", Kind: ErrPermission, Err: unix.EPERM}
	if got := e.Error(); !strings.HasPrefix(got, "afxdp: bind veth0 queue 1: operation not permitted") {
		t.Errorf("Error() = %q", got)
	}
	wrapped := fmt.Errorf("outer: %w", e)
	var se *SetupError
	if !errors.Is(wrapped, ErrPermission) || !errors.Is(wrapped, unix.EPERM) || !errors.As(wrapped, &se) || se.Queue != 1 {
		t.Errorf("%v does not match ErrPermission, EPERM and *SetupError", wrapped)
	}
	if errors.Is(wrapped, ErrUnsupported) {
		t.Error("matches ErrUnsupported too")
	}
	noQueue := &SetupError{Interface: "eth1", Queue: -1, Step: "load XDP program", Err: errors.New("boom")}
	if got := noQueue.Error(); got != "afxdp: load XDP program eth1: boom" {
		t.Errorf("Error() = %q", got)
	}
	for _, tc := range []struct {
		err  error
		kind error
	}{
		{unix.EPERM, ErrPermission}, {unix.EACCES, ErrPermission}, {unix.ENODEV, ErrInterfaceNotFound},
		{unix.EOPNOTSUPP, ErrUnsupported}, {unix.EAFNOSUPPORT, ErrUnsupported}, {unix.EINVAL, nil},
		{unix.EBUSY, nil},
	} {
		if got := classify(fmt.Errorf("x: %w", tc.err)); got != tc.kind {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.kind)
		}
	}
}

// TestSetupErrors: each way New can fail names what is wrong and matches the sentinel users test
// for, on a real veth pair.
func TestSetupErrors(t *testing.T) {
	p := newPair(t)
	for _, tc := range []struct {
		name    string
		cfg     Config
		local   netip.AddrPort
		kind    error
		mention []string
	}{
		{"missing interface", Config{Interface: "nqx-missing"}, p.A.Addr4(0), ErrInterfaceNotFound,
			[]string{"look up interface nqx-missing"}},
		{"loopback is not Ethernet", Config{Interface: "lo"}, p.A.Addr4(0), ErrUnsupported,
			[]string{"lo", "not an Ethernet interface"}},
		{"queue out of range", Config{Queues: []int{3}}, p.A.Addr4(0), ErrQueueRange,
			[]string{"queue 3", "1 RX queues"}},
		{"zero-copy on veth", Config{Mode: ModeZeroCopy}, p.A.Addr4(0), ErrUnsupported,
			[]string{"bind (zero-copy mode)", "queue 0"}},
		{"invalid local address", Config{}, netip.AddrPort{}, ErrInvalidAddress, nil},
		{"address not on the interface", Config{}, netip.MustParseAddrPort("198.51.100.7:0"), nil,
			[]string{"bind shadow UDP socket to 198.51.100.7:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := openXDPErr(p.A, tc.local, tc.cfg)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			t.Logf("New: %v", err)
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("New = %v; want an error matching %v", err, tc.kind)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("New = %q; want it to mention %q", err, m)
				}
			}
			if tc.local.IsValid() {
				var se *SetupError
				if !errors.As(err, &se) {
					t.Errorf("New = %T, want a *SetupError", err)
				}
			}
		})
	}
	// Nothing was left attached by the failures.
	if got := xdpAttachment(t, p.A); got != "" {
		t.Errorf("after failed setups %s shows %q", p.A.Link, got)
	}

	// One Conn per interface.
	openXDP(t, p.A, p.A.Addr4(0), Config{})
	for _, attach := range []AttachMode{AttachAuto, AttachDriver} {
		_, err := openXDPErr(p.A, p.A.Addr4(0), Config{Attach: attach})
		if !errors.Is(err, ErrInterfaceBusy) || !strings.Contains(err.Error(), "attach XDP program") {
			t.Errorf("second Conn on the interface (%v attach) = %v; want ErrInterfaceBusy", attach, err)
		}
	}
}

// TestPermissionError drops the capabilities AF_XDP and BPF need from the thread that calls New
// (capabilities are per thread, and netns.Do locks it) and checks the error.
func TestPermissionError(t *testing.T) {
	p := newPair(t)
	var c *Conn
	err := p.A.Do(func() error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var saved, reduced [2]unix.CapUserData
		if err := unix.Capget(&hdr, &saved[0]); err != nil {
			return fmt.Errorf("capget: %w", err)
		}
		reduced = saved
		for _, c := range []uint{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW, unix.CAP_BPF, unix.CAP_SYS_ADMIN, unix.CAP_PERFMON} {
			reduced[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &reduced[0]); err != nil {
			return fmt.Errorf("capset: %w", err)
		}
		var nerr error
		c, nerr = New(t.Context(), p.A.Addr4(0), Config{Interface: p.A.Link})
		if err := unix.Capset(&hdr, &saved[0]); err != nil {
			return errors.Join(nerr, fmt.Errorf("restore capabilities: %w", err))
		}
		return nerr
	})
	if err == nil {
		c.Close()
		t.Fatal("New without capabilities succeeded")
	}
	if !errors.Is(err, ErrPermission) || !errors.Is(err, unix.EPERM) {
		t.Fatalf("New without capabilities = %v; want ErrPermission and EPERM", err)
	}
	if !strings.Contains(err.Error(), "load XDP program "+p.A.Link) {
		t.Errorf("error %q does not name the step and interface", err)
	}

	// Without CAP_IPC_LOCK the UMEM counts against RLIMIT_MEMLOCK (per process: lowered for the
	// duration of New only; no other test runs meanwhile).
	err = p.A.Do(func() error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var saved [2]unix.CapUserData
		if err := unix.Capget(&hdr, &saved[0]); err != nil {
			return fmt.Errorf("capget: %w", err)
		}
		reduced := saved
		reduced[unix.CAP_IPC_LOCK/32].Effective &^= 1 << (unix.CAP_IPC_LOCK % 32)
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
			return err
		}
		small := lim
		small.Cur = 1 << 20
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &small); err != nil {
			return fmt.Errorf("setrlimit: %w", err)
		}
		if err := unix.Capset(&hdr, &reduced[0]); err != nil {
			return fmt.Errorf("capset: %w", err)
		}
		var nerr error
		c, nerr = New(t.Context(), p.A.Addr4(0), Config{Interface: p.A.Link})
		return errors.Join(nerr, unix.Capset(&hdr, &saved[0]), unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim))
	})
	if err == nil {
		c.Close()
		t.Fatal("New with a 1 MiB RLIMIT_MEMLOCK and no CAP_IPC_LOCK succeeded")
	}
	if !errors.Is(err, ErrPermission) || !errors.Is(err, unix.ENOBUFS) || !strings.Contains(err.Error(), "RLIMIT_MEMLOCK") {
		t.Fatalf("New over RLIMIT_MEMLOCK = %v; want ErrPermission naming RLIMIT_MEMLOCK", err)
	}
}

// TestAttachModes: generic attach works (copy mode) and carries traffic; driver attach on a veth
// with MTU 9000 fails with ErrUnsupported (native XDP needs frames that fit a page), where auto
// falls back to generic.
func TestAttachModes(t *testing.T) {
	p := newPair(t)
	x := openXDP(t, p.A, p.A.Addr4(0), Config{Attach: AttachGeneric})
	if info := x.Info(); info.Attach != AttachGeneric || info.ZeroCopy {
		t.Fatalf("Info = %+v, want generic attach, copy mode", info)
	}
	u := openUDP(t, p.B, p.B.Addr4(0))
	writeAll(t, u, transport.Message{Buf: []byte("generic"), Addr: x.LocalAddr()})
	if got := readN(t, x, 1); string(got[0].Buf) != "generic" {
		t.Fatalf("got %q", got[0].Buf)
	}
	writeAll(t, x, transport.Message{Buf: []byte("back"), Addr: u.LocalAddr()})
	if got := readN(t, u, 1); string(got[0].Buf) != "back" {
		t.Fatalf("got %q", got[0].Buf)
	}

	jumbo := netns.NewPair(t, netns.Config{Prefix: "nqj", MTU: 9000})
	_, err := openXDPErr(jumbo.A, jumbo.A.Addr4(0), Config{Attach: AttachDriver, FrameSize: 4096})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "attach XDP program (driver mode)") {
		t.Fatalf("driver attach with MTU 9000 = %v; want ErrUnsupported naming the step", err)
	}
	j := openXDP(t, jumbo.A, jumbo.A.Addr4(0), Config{FrameSize: 4096})
	if info := j.Info(); info.Attach != AttachGeneric {
		t.Errorf("auto attach with MTU 9000 = %v, want generic", info.Attach)
	}
	if got, want := j.Capabilities().MaxDatagram, 4096-256-14-20-8; got != want {
		t.Errorf("MaxDatagram with 4096-byte frames = %d, want %d", got, want)
	}
}
