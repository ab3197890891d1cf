package mmsg

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"syscall"
	"testing"

	"github.com/naquid/naquid/transport"
)

var (
	dstA   = netip.MustParseAddrPort("192.0.2.1:4000")
	dstB   = netip.MustParseAddrPort("192.0.2.2:4000")
	local1 = netip.MustParseAddr("192.0.2.10")
)

// payload returns n bytes that differ from every other payload the test makes.
var payloadSeq byte

func payload(n int) []byte {
	payloadSeq++
	b := make([]byte, n)
	for i := range b {
		b[i] = payloadSeq + byte(i*7)
	}
	return b
}

// wantPacket is the expected shape of one packet: its GSO size and its datagram sizes.
type wantPacket struct {
	seg   int
	sizes []int
}

func TestPlan(t *testing.T) {
	type m = transport.Message
	big := func(n int) []m {
		out := make([]m, n)
		for i := range out {
			out[i] = m{Buf: payload(1200), Addr: dstA}
		}
		return out
	}
	rep := func(n, size int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		msgs   []m
		from   pos
		lim    planLimits
		npk    int // len(pk); default 128
		nbufs  int // len(bufs); default 128
		want   []wantPacket
		next   pos
		bad    bool
		noGSO  bool // run without GSO (lim.gso false)
		before int  // lim.noGSOBefore
	}{
		{name: "same size to one destination coalesce",
			msgs: []m{{Buf: payload(1200), Addr: dstA}, {Buf: payload(1200), Addr: dstA}, {Buf: payload(1200), Addr: dstA}},
			want: []wantPacket{{1200, []int{1200, 1200, 1200}}}},
		{name: "short tail ends the run",
			msgs: []m{{Buf: payload(1200), Addr: dstA}, {Buf: payload(1200), Addr: dstA}, {Buf: payload(500), Addr: dstA}, {Buf: payload(1200), Addr: dstA}},
			want: []wantPacket{{1200, []int{1200, 1200, 500}}, {0, []int{1200}}}},
		{name: "larger datagram does not join",
			msgs: []m{{Buf: payload(500), Addr: dstA}, {Buf: payload(1200), Addr: dstA}},
			want: []wantPacket{{0, []int{500}}, {0, []int{1200}}}},
		{name: "destination, ECN and source split runs",
			msgs: []m{
				{Buf: payload(100), Addr: dstA}, {Buf: payload(100), Addr: dstB},
				{Buf: payload(100), Addr: dstB, ECN: transport.ECNECT0}, {Buf: payload(100), Addr: dstB, ECN: transport.ECNECT0},
				{Buf: payload(100), Addr: dstB, ECN: transport.ECNECT0, Local: local1},
			},
			want: []wantPacket{{0, []int{100}}, {0, []int{100}}, {100, []int{100, 100}}, {0, []int{100}}}},
		{name: "empty datagrams stand alone",
			msgs: []m{{Buf: payload(100), Addr: dstA}, {Buf: nil, Addr: dstA}, {Buf: payload(0), Addr: dstA}, {Buf: payload(100), Addr: dstA}},
			want: []wantPacket{{0, []int{100}}, {0, []int{0}}, {0, []int{0}}, {0, []int{100}}}},
		{name: "byte limit",
			msgs: big(70),
			want: []wantPacket{{1200, rep(54, 1200)}, {1200, rep(16, 1200)}}}, // 54*1200 <= 65507 < 55*1200
		{name: "segment count limit",
			msgs: func() []m {
				out := make([]m, 70)
				for i := range out {
					out[i] = m{Buf: payload(100), Addr: dstA}
				}
				return out
			}(),
			want: []wantPacket{{100, rep(64, 100)}, {100, rep(6, 100)}}},
		{name: "segmented message is one packet",
			msgs: []m{{Buf: payload(5300), Addr: dstA, SegmentSize: 1000}},
			want: []wantPacket{{1000, []int{5300}}}},
		{name: "segmented message over the limits",
			msgs: []m{{Buf: payload(100 * 1000), Addr: dstA, SegmentSize: 1000}},
			want: []wantPacket{{1000, []int{64000}}, {1000, []int{36000}}}},
		{name: "segments over the GSO byte limit go one a packet (IPv6 jumbo-sized datagrams)",
			msgs: []m{{Buf: payload(65510 + 100), Addr: dstA, SegmentSize: 65510}},
			lim:  planLimits{gso: true, maxDatagram: 65527},
			want: []wantPacket{{0, []int{65510}}, {0, []int{100}}}},
		{name: "SegmentSize not below len(Buf) is a single datagram",
			msgs: []m{{Buf: payload(1000), Addr: dstA, SegmentSize: 1000}, {Buf: payload(500), Addr: dstA, SegmentSize: 1200}},
			want: []wantPacket{{1000, []int{1000, 500}}}},
		{name: "segmented message without GSO",
			msgs:  []m{{Buf: payload(2500), Addr: dstA, SegmentSize: 1000}, {Buf: payload(1000), Addr: dstA}},
			noGSO: true,
			want:  []wantPacket{{0, []int{1000}}, {0, []int{1000}}, {0, []int{500}}, {0, []int{1000}}}},
		{name: "no GSO before an index",
			msgs:   []m{{Buf: payload(100), Addr: dstA}, {Buf: payload(100), Addr: dstA}, {Buf: payload(100), Addr: dstA}, {Buf: payload(100), Addr: dstA}},
			before: 2,
			want:   []wantPacket{{0, []int{100}}, {0, []int{100}}, {100, []int{100, 100}}}},
		{name: "resume inside a segmented message",
			msgs: []m{{Buf: payload(5300), Addr: dstA, SegmentSize: 1000}},
			from: pos{0, 3000},
			want: []wantPacket{{1000, []int{2300}}}},
		{name: "oversized datagram stops the plan",
			msgs: []m{{Buf: payload(100), Addr: dstA}, {Buf: payload(2000), Addr: dstA}, {Buf: payload(100), Addr: dstA}},
			lim:  planLimits{maxDatagram: 1500},
			want: []wantPacket{{0, []int{100}}},
			next: pos{1, 0}, bad: true},
		{name: "oversized segment stops the plan",
			msgs: []m{{Buf: payload(4000), Addr: dstA, SegmentSize: 2000}},
			lim:  planLimits{maxDatagram: 1500},
			next: pos{0, 0}, bad: true},
		{name: "packet array full",
			msgs: []m{{Buf: payload(10), Addr: dstA}, {Buf: payload(10), Addr: dstB}, {Buf: payload(10), Addr: dstA}},
			npk:  2,
			want: []wantPacket{{0, []int{10}}, {0, []int{10}}},
			next: pos{2, 0}},
		{name: "buffer array full",
			msgs:  []m{{Buf: payload(10), Addr: dstA}, {Buf: payload(10), Addr: dstA}, {Buf: payload(10), Addr: dstA}},
			nbufs: 2,
			want:  []wantPacket{{10, []int{10, 10}}},
			next:  pos{2, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := tc.lim
			if lim.maxDatagram == 0 {
				lim.maxDatagram = maxGSOBytes
			}
			lim.gso = !tc.noGSO
			lim.noGSOBefore = tc.before
			pk := make([]packet, cmpOr(tc.npk, 128))
			bufs := make([][]byte, cmpOr(tc.nbufs, 128))
			np, next, bad := plan(tc.msgs, tc.from, lim, pk, bufs)
			if bad != nil != tc.bad || bad != nil && !errors.Is(bad, syscall.EMSGSIZE) {
				t.Fatalf("bad = %v, want error: %v", bad, tc.bad)
			}
			wantNext := tc.next
			if !tc.bad && tc.next == (pos{}) {
				wantNext = pos{len(tc.msgs), 0}
			}
			if next != wantNext {
				t.Errorf("next = %+v, want %+v", next, wantNext)
			}
			var got []wantPacket
			for _, p := range pk[:np] {
				var sizes []int
				for _, b := range bufs[p.iov0:p.iov1] {
					sizes = append(sizes, len(b))
				}
				got = append(got, wantPacket{p.seg, sizes})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("packets %v, want %v", got, tc.want)
			}
			checkPlan(t, tc.msgs, tc.from, pk[:np], bufs, next)
		})
	}
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// datagramsOf lists the datagrams msgs describe from position p up to (not including) end.
func datagramsOf(msgs []transport.Message, p, end pos) [][]byte {
	before := func(a, b pos) bool { return a.msg < b.msg || a.msg == b.msg && a.off < b.off }
	var out [][]byte
	for i, m := range msgs {
		seg := m.SegmentSize
		if seg <= 0 || seg >= len(m.Buf) {
			seg = max(len(m.Buf), 1)
		}
		for off := 0; off < len(m.Buf) || off == 0; off += seg {
			at := pos{i, off}
			if !before(at, p) && before(at, end) {
				out = append(out, m.Buf[off:min(off+seg, len(m.Buf))])
			}
		}
	}
	return out
}

// checkPlan checks the invariants of a plan: the packets carry exactly the datagrams from p to
// next, in order, and each packet obeys the GSO rules.
func checkPlan(t *testing.T, msgs []transport.Message, p pos, pks []packet, bufs [][]byte, next pos) {
	t.Helper()
	var got [][]byte
	at := p
	for i, pk := range pks {
		if pk.start != at {
			t.Fatalf("packet %d starts at %+v, want %+v", i, pk.start, at)
		}
		at = pk.end
		var data []byte
		for _, b := range bufs[pk.iov0:pk.iov1] {
			data = append(data, b...)
		}
		if len(data) != pk.size {
			t.Fatalf("packet %d: size %d, payload %d", i, pk.size, len(data))
		}
		head := msgs[pk.start.msg]
		for j := pk.start.msg; j < pk.end.msg; j++ {
			if m := msgs[j]; m.Addr != head.Addr || m.ECN != head.ECN || m.Local != head.Local {
				t.Fatalf("packet %d mixes destinations, sources or ECN", i)
			}
		}
		if pk.seg == 0 {
			if pk.count != 1 {
				t.Fatalf("packet %d: count %d without a segment size", i, pk.count)
			}
			got = append(got, data)
			continue
		}
		if pk.count < 2 || pk.count > maxGSOSegments || pk.size > maxGSOBytes || pk.count != datagramCount(pk.size, pk.seg) {
			t.Fatalf("packet %d breaks GSO limits: %+v", i, pk)
		}
		for off := 0; off < len(data); off += pk.seg {
			got = append(got, data[off:min(off+pk.seg, len(data))])
		}
	}
	if at != next {
		t.Fatalf("last packet ends at %+v, plan says %+v", at, next)
	}
	want := datagramsOf(msgs, p, next)
	if len(got) != len(want) {
		t.Fatalf("%d datagrams planned, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d differs (len %d, want %d)", i, len(got[i]), len(want[i]))
		}
	}
}

// TestPlanRandom plans random batches in small steps, as flush does, and checks the invariants.
func TestPlanRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dsts := []netip.AddrPort{dstA, dstB}
	sizes := []int{0, 1, 100, 1200, 1200, 1200, 1452, 3000}
	for iter := 0; iter < 200; iter++ {
		msgs := make([]transport.Message, 1+rng.IntN(40))
		for i := range msgs {
			m := &msgs[i]
			m.Addr = dsts[rng.IntN(2)]
			m.ECN = transport.ECN(rng.IntN(2))
			if rng.IntN(5) == 0 {
				seg := 1 + rng.IntN(1500)
				m.Buf, m.SegmentSize = payload(seg*(1+rng.IntN(80))-rng.IntN(seg)), seg
			} else {
				m.Buf = payload(sizes[rng.IntN(len(sizes))])
			}
		}
		lim := planLimits{gso: rng.IntN(4) != 0, noGSOBefore: rng.IntN(len(msgs) + 1), maxDatagram: maxGSOBytes}
		pk := make([]packet, 1+rng.IntN(8))
		bufs := make([][]byte, 1+rng.IntN(8))
		p := pos{}
		for steps := 0; p.msg < len(msgs); steps++ {
			if steps > 100000 {
				t.Fatal("plan made no progress")
			}
			np, next, bad := plan(msgs, p, lim, pk, bufs)
			if bad != nil {
				t.Fatalf("unexpected %v", bad)
			}
			if np == 0 {
				t.Fatalf("no packet planned at %+v", p)
			}
			checkPlan(t, msgs, p, pk[:np], bufs, next)
			p = next
		}
	}
}

func TestSplitDatagrams(t *testing.T) {
	from := netip.MustParseAddrPort("192.0.2.7:99")
	for _, tc := range []struct {
		name      string
		n, seg, k int
		nmsgs     int
		bufSize   int
		want      []int // N of each filled message
		next      int
	}{
		{"single datagram", 300, 0, 0, 4, 1500, []int{300}, 1},
		{"empty datagram", 0, 0, 0, 4, 1500, []int{0}, 1},
		{"segment size not below length", 300, 300, 0, 4, 1500, []int{300}, 1},
		{"equal segments", 3600, 1200, 0, 4, 1500, []int{1200, 1200, 1200}, 3},
		{"short tail", 2500, 1000, 0, 4, 1500, []int{1000, 1000, 500}, 3},
		{"more segments than messages", 5000, 1000, 0, 2, 1500, []int{1000, 1000}, 2},
		{"resume", 5000, 1000, 3, 4, 1500, []int{1000, 1000}, 5},
		{"truncated into small buffers", 2500, 1000, 0, 4, 600, []int{600, 600, 500}, 3},
		{"nothing left", 2500, 1000, 3, 4, 1500, nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := payload(tc.n)
			msgs := make([]transport.Message, tc.nmsgs)
			for i := range msgs {
				msgs[i] = transport.Message{Buf: make([]byte, tc.bufSize), N: -1, SegmentSize: 9}
			}
			filled, next := splitDatagrams(data, tc.seg, tc.k, msgs, from, local1, transport.ECNCE)
			if next != tc.next || filled != len(tc.want) {
				t.Fatalf("filled %d next %d, want %d and %d", filled, next, len(tc.want), tc.next)
			}
			seg := tc.seg
			if seg <= 0 || seg > tc.n {
				seg = tc.n
			}
			for i, n := range tc.want {
				m := msgs[i]
				off := (tc.k + i) * seg
				if m.N != n || !bytes.Equal(m.Buf[:m.N], data[off:off+n]) {
					t.Errorf("message %d: N=%d, want %d, or content differs", i, m.N, n)
				}
				if m.Addr != from || m.Local != local1 || m.ECN != transport.ECNCE || m.SegmentSize != 0 {
					t.Errorf("message %d: metadata %+v", i, m)
				}
			}
		})
	}
}

// FuzzSplitDatagrams checks that splitting never panics and, delivered in several calls,
// yields exactly the datagrams of the buffer.
func FuzzSplitDatagrams(f *testing.F) {
	f.Add(2500, 1000, 2, 1500)
	f.Add(0, 0, 1, 0)
	f.Add(65535, 1, 64, 2)
	f.Add(100, -5, 3, 10)
	f.Fuzz(func(t *testing.T, n, seg, nmsgs, bufSize int) {
		if n < 0 || n > 1<<16 || nmsgs < 1 || nmsgs > 128 || bufSize < 0 || bufSize > 1<<16 {
			t.Skip()
		}
		data := payload(n)
		msgs := make([]transport.Message, nmsgs)
		for i := range msgs {
			msgs[i].Buf = make([]byte, bufSize)
		}
		total := datagramCount(n, seg)
		var got []byte
		count := 0
		for k := 0; k < total; {
			filled, next := splitDatagrams(data, seg, k, msgs, dstA, netip.Addr{}, 0)
			if filled == 0 || next != k+filled || next > total {
				t.Fatalf("k=%d: filled %d next %d of %d", k, filled, next, total)
			}
			for _, m := range msgs[:filled] {
				if m.N < 0 || m.N > len(m.Buf) {
					t.Fatalf("N=%d out of range", m.N)
				}
				got = append(got, m.Buf[:m.N]...)
			}
			count += filled
			k = next
		}
		if count != total {
			t.Fatalf("%d datagrams delivered, want %d", count, total)
		}
		if s := seg; bufSize >= n || s > 0 && s < n && bufSize >= s {
			if !bytes.Equal(got, data) {
				t.Fatal("reassembled datagrams differ from the buffer")
			}
		}
	})
}

func TestDatagramCount(t *testing.T) {
	for _, tc := range []struct{ n, seg, want int }{
		{0, 0, 1}, {100, 0, 1}, {100, 100, 1}, {100, 200, 1}, {100, 30, 4}, {90, 30, 3}, {100, -1, 1},
	} {
		if got := datagramCount(tc.n, tc.seg); got != tc.want {
			t.Errorf("datagramCount(%d, %d) = %d, want %d", tc.n, tc.seg, got, tc.want)
		}
	}
}
