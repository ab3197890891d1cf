package xdpnet

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/naquid/naquid/internal/netns"
)

// call runs f on its own goroutine, as New runs netns.NewPair, and reports whether f returned
// (false: it ended the goroutine through Fatal, FailNow or Skip).
func call(f func()) (returned bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
		returned = true
	}()
	<-done
	return returned
}

func TestHarness(t *testing.T) {
	for _, tc := range []struct {
		name        string
		f           func(h *harness)
		returned    bool
		want        string
		unavailable bool
	}{
		{"clean", func(h *harness) { h.Helper(); h.Logf("x %d", 1) }, true, "", false},
		{"fatal", func(h *harness) { h.Fatalf("ip failed: %d", 2) }, false, "ip failed: 2", false},
		{"fatal args", func(h *harness) { h.Fatal("no ", "veth") }, false, "no veth", false},
		{"fail now", func(h *harness) { h.FailNow() }, false, "failed", false},
		{"error goes on", func(h *harness) { h.Errorf("del %s", "ns") }, true, "del ns", false},
		{"skip", func(h *harness) { h.Skip("not root") }, false, "not root", true},
		{"skipf", func(h *harness) { h.Skipf("no %s", "ip") }, false, "no ip", true},
		{"test-only method", func(h *harness) { _ = h.TempDir() }, false, "TempDir is not available", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{}
			if got := call(func() { tc.f(h) }); got != tc.returned {
				t.Errorf("returned = %v, want %v", got, tc.returned)
			}
			err := h.failure()
			if tc.want == "" {
				if err != nil || h.Failed() {
					t.Errorf("failure = %v, Failed = %v; want none", err, h.Failed())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !h.Failed() {
				t.Fatalf("failure = %v, want one mentioning %q", err, tc.want)
			}
			if errors.Is(err, ErrUnavailable) != tc.unavailable || h.Skipped() != tc.unavailable {
				t.Errorf("failure %v: matches ErrUnavailable = %v, Skipped = %v; want %v", err, errors.Is(err, ErrUnavailable), h.Skipped(), tc.unavailable)
			}
		})
	}
}

// TestHarnessCleanups checks that cleanups run last first, once, and that the errors they
// report (and only those) come back from runCleanups.
func TestHarnessCleanups(t *testing.T) {
	h := &harness{}
	var order []int
	call(func() {
		h.Cleanup(func() { order = append(order, 1) })
		h.Cleanup(func() { order = append(order, 2); h.Errorf("ip netns del: busy") })
		h.Fatal("setup failed") // recorded, but not a cleanup error
	})
	err := h.runCleanups()
	if !slices.Equal(order, []int{2, 1}) {
		t.Errorf("cleanups ran in order %v, want [2 1]", order)
	}
	if err == nil || !strings.Contains(err.Error(), "busy") || strings.Contains(err.Error(), "setup failed") {
		t.Errorf("runCleanups = %v, want only the cleanup's error", err)
	}
	if err := h.runCleanups(); err != nil || len(order) != 2 {
		t.Errorf("second runCleanups = %v after %d cleanups, want nil and no new runs", err, len(order))
	}
}

func TestServerAddr(t *testing.T) {
	ns := &netns.NS{IPv4: netip.MustParsePrefix("192.0.2.1/24"), IPv6: netip.MustParsePrefix("2001:db8::1/64")}
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:0", "192.0.2.1:0"},
		{"127.0.0.1:4433", "192.0.2.1:4433"},
		{"0.0.0.0:9", "192.0.2.1:9"},
		{"[::1]:7", "[2001:db8::1]:7"},
		{"[::]:0", "[2001:db8::1]:0"},
		{"192.0.2.1:5", "192.0.2.1:5"},
		{"198.51.100.7:5", "198.51.100.7:5"},
	} {
		if got := serverAddr(ns, netip.MustParseAddrPort(tc.in)); got.String() != tc.want {
			t.Errorf("serverAddr(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
