package transporttest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

var (
	pipeA = netip.MustParseAddrPort("192.0.2.1:0")
	pipeB = netip.MustParseAddrPort("192.0.2.2:0")
)

// TestRunOnCorrectTransport: a correct in-memory transport passes the whole suite.
func TestRunOnCorrectTransport(t *testing.T) {
	Run(t, FactoryPair(newPipeNet(0).factory, pipeA, pipeB))
}

// TestLossIsReported: datagram loss makes the Datagrams check fail quickly, naming what is
// missing, instead of hanging.
func TestLossIsReported(t *testing.T) {
	e := newEnv(t, FactoryPair(newPipeNet(97).factory, pipeA, pipeB))
	start := time.Now()
	errs := runDatagrams(e, 1000, 200*time.Millisecond)
	if len(errs) == 0 {
		t.Fatal("a transport that drops every 97th datagram passed the Datagrams check")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the loss was reported after %v, want well under 5s", d)
	}
	var all strings.Builder
	for _, err := range errs {
		all.WriteString(err.Error() + "\n")
	}
	for _, want := range []string{"missing (w0#", "no datagram is lost"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("the failure report does not mention %q:\n%s", want, all.String())
		}
	}
}

// TestTrackerFindsBrokenDatagrams: each kind of damage is reported with the rule it breaks.
func TestTrackerFindsBrokenDatagrams(t *testing.T) {
	from := netip.MustParseAddrPort("127.0.0.1:1000")
	to := netip.MustParseAddrPort("127.0.0.1:2000")
	good := func(seq uint32, size int) transport.Message {
		buf := make([]byte, size)
		fill(buf, 0, seq)
		return transport.Message{Buf: buf, N: size, Addr: from, Local: to.Addr()}
	}
	tests := []struct {
		name  string
		msgs  func() []transport.Message
		local bool
		want  string // "" means no problem
	}{
		{"intact", func() []transport.Message { return []transport.Message{good(0, 100), good(1, 5)} },
			true, ""},
		{"corrupt body", func() []transport.Message {
			m := good(0, 100)
			m.Buf[50] ^= 1
			return []transport.Message{m}
		}, false, "differs from what was sent at byte 50"},
		{"corrupt small datagram", func() []transport.Message {
			m := good(0, 5)
			m.Buf[2] ^= 1
			return []transport.Message{m}
		}, false, "5-byte datagram arrived corrupted"},
		{"truncated", func() []transport.Message {
			m := good(0, 100)
			m.N = 60
			return []transport.Message{m}
		}, false, "sent with 100 bytes and arrived with 60"},
		{"merged segments", func() []transport.Message {
			buf := make([]byte, 200)
			fillSegments(buf, 100, 0, 0)
			return []transport.Message{{Buf: buf, N: 200, Addr: from}}
		}, false, "sent with 100 bytes and arrived with 200"},
		{"duplicate", func() []transport.Message { return []transport.Message{good(1, 100), good(1, 100)} },
			false, "arrived 2 times"},
		{"unknown sequence", func() []transport.Message { return []transport.Message{good(9, 100)} },
			false, "was never sent"},
		{"IPv4-mapped source", func() []transport.Message {
			m := good(0, 100)
			m.Addr = netip.AddrPortFrom(netip.AddrFrom16(from.Addr().As16()), from.Port())
			return []transport.Message{m}
		}, false, "never IPv4-mapped"},
		{"wrong source port", func() []transport.Message {
			m := good(0, 100)
			m.Addr = netip.AddrPortFrom(from.Addr(), 1001)
			return []transport.Message{m}
		}, false, "Addr is the sender's address"},
		{"wrong local", func() []transport.Message {
			m := good(0, 100)
			m.Local = netip.MustParseAddr("127.0.0.2")
			return []transport.Message{m}
		}, true, "Local is the receiver's address"},
		{"segment size on read", func() []transport.Message {
			m := good(0, 100)
			m.SegmentSize = 100
			return []transport.Message{m}
		}, false, "SegmentSize 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &tracker{dir: "test", from: from, to: to, checkLocal: tc.local,
				seen: [][]uint16{make([]uint16, 4)}, ecn: [][]transport.ECN{make([]transport.ECN, 4)}}
			tr.expectSmall(0, 3, 5)
			for _, m := range tc.msgs() {
				tr.observe(&m)
			}
			err := tr.err()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected problem: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want a problem mentioning %q", err, tc.want)
			}
		})
	}
}

// TestSizeCycle: sizes cover 0..max when the count allows and start with 0 and max.
func TestSizeCycle(t *testing.T) {
	for _, tc := range []struct{ count, max int }{{10000, 1452}, {10000, 65000}, {10, 7}, {3, 0}} {
		sizes := sizeCycle(tc.count, tc.max)
		seen := map[int]bool{}
		for _, s := range sizes {
			if s < 0 || s > tc.max {
				t.Fatalf("count=%d max=%d: size %d out of range", tc.count, tc.max, s)
			}
			seen[s] = true
		}
		if tc.count > 1 && (sizes[0] != 0 || sizes[1] != tc.max) {
			t.Errorf("count=%d max=%d: first sizes %v, want 0 and %d", tc.count, tc.max, sizes[:2], tc.max)
		}
		if tc.count >= 2*(tc.max+1) && len(seen) != tc.max+1 {
			t.Errorf("count=%d max=%d: %d distinct sizes, want all %d", tc.count, tc.max, len(seen), tc.max+1)
		}
	}
}
