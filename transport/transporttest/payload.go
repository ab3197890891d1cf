package transporttest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/naquid/naquid/transport"
)

// Test datagrams of headerLen bytes or more start with a header naming the writer, the sequence
// number and the size; the rest is a slice of pattern chosen by writer and sequence number, so a
// corrupted, truncated, merged or misdelivered datagram is recognised. Shorter datagrams (there is
// no room for a header) carry a fixed slice of pattern chosen by their size and are counted by size.
const (
	headerLen   = 16
	headerMagic = 0x6e717474 // "nqtt"
	// maxTestDatagram bounds the datagram sizes the suite sends (and its filler pattern): the
	// largest UDP payload, above every transport's MaxDatagram, so each transport is tested up
	// to its own limit.
	maxTestDatagram = 1<<16 - 1
)

// pattern is deterministic pseudo-random filler (xorshift32), longer than any test datagram plus
// the largest body offset.
var pattern = func() []byte {
	p := make([]byte, maxTestDatagram+1024)
	x := uint32(2463534242)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}()

// bodyOffset picks where in pattern the body of datagram (writer, seq) starts.
func bodyOffset(writer uint16, seq uint32) int {
	return int((seq*7 + uint32(writer)*131) % 251)
}

// smallContent is the content of every datagram shorter than headerLen bytes.
func smallContent(size int) []byte {
	off := 512 + size*headerLen
	return pattern[off : off+size]
}

// fill writes datagram (writer, seq) into all of buf.
func fill(buf []byte, writer uint16, seq uint32) {
	if len(buf) < headerLen {
		copy(buf, smallContent(len(buf)))
		return
	}
	binary.BigEndian.PutUint32(buf[0:4], headerMagic)
	binary.BigEndian.PutUint16(buf[4:6], writer)
	binary.BigEndian.PutUint16(buf[6:8], 0)
	binary.BigEndian.PutUint32(buf[8:12], seq)
	binary.BigEndian.PutUint32(buf[12:16], uint32(len(buf)))
	off := bodyOffset(writer, seq)
	copy(buf[headerLen:], pattern[off:off+len(buf)-headerLen])
}

// fillSegments fills buf as a run of segments of seg bytes (the last possibly shorter), segment i
// being datagram (writer, firstSeq+i). It returns the number of segments.
func fillSegments(buf []byte, seg int, writer uint16, firstSeq uint32) int {
	n := 0
	for off := 0; off < len(buf); off += seg {
		fill(buf[off:min(off+seg, len(buf))], writer, firstSeq+uint32(n))
		n++
	}
	return n
}

// id names one test datagram.
type id struct {
	writer uint16
	seq    uint32
}

func (d id) String() string { return fmt.Sprintf("w%d#%d", d.writer, d.seq) }

// maxProblems bounds how many problems a tracker keeps word for word.
const maxProblems = 12

// tracker checks the datagrams one receiver sees. It is used by the receiving goroutine only,
// and read by the test goroutine after the receiver has finished.
type tracker struct {
	dir        string         // "a->b", for messages
	from       netip.AddrPort // sender's LocalAddr
	to         netip.AddrPort // receiver's LocalAddr
	checkLocal bool           // the receiver reports Message.Local
	seen       [][]uint16     // seen[writer][seq]: arrivals, or noHeader
	ecn        [][]transport.ECN
	order      []id
	smallWant  [headerLen]int
	smallGot   [headerLen]int
	problems   []string
	more       int // problems beyond maxProblems
}

// noHeader marks, in tracker.seen, a datagram too short for a header: it is counted by size.
const noHeader = math.MaxUint16

// expectSmall records that datagram (writer, seq) has size bytes, less than headerLen, and is
// therefore counted by size, not by sequence number.
func (tr *tracker) expectSmall(writer uint16, seq uint32, size int) {
	tr.seen[writer][seq] = noHeader
	tr.smallWant[size]++
}

// newTracker expects writers*perWriter headed datagrams from -> to.
func newTracker(dir string, from, to transport.Conn, writers, perWriter int) *tracker {
	tr := &tracker{
		dir:        dir,
		from:       from.LocalAddr(),
		to:         to.LocalAddr(),
		checkLocal: to.Capabilities().LocalAddr,
		seen:       make([][]uint16, writers),
		ecn:        make([][]transport.ECN, writers),
	}
	for w := range tr.seen {
		tr.seen[w] = make([]uint16, perWriter)
		tr.ecn[w] = make([]transport.ECN, perWriter)
	}
	return tr
}

func (tr *tracker) problem(format string, args ...any) {
	if len(tr.problems) >= maxProblems {
		tr.more++
		return
	}
	tr.problems = append(tr.problems, fmt.Sprintf(format, args...))
}

// observe checks one received message.
func (tr *tracker) observe(m *transport.Message) {
	tr.checkAddresses(m)
	if m.SegmentSize != 0 {
		tr.problem("rule \"ReadBatch returns single datagrams with SegmentSize 0\": got SegmentSize=%d",
			m.SegmentSize)
	}
	if m.ECN > transport.ECNCE {
		tr.problem("rule \"ECN is a 2-bit codepoint\": got ECN=%#x", uint8(m.ECN))
	}
	data := m.Buf[:m.N]
	if len(data) < headerLen {
		if !bytes.Equal(data, smallContent(len(data))) {
			tr.problem("rule \"datagrams arrive intact\": a %d-byte datagram arrived corrupted: % x",
				len(data), data)
			return
		}
		tr.smallGot[len(data)]++
		if tr.smallGot[len(data)] > tr.smallWant[len(data)] {
			tr.problem("rule \"every datagram arrives exactly once\": %d datagrams of %d bytes arrived, "+
				"%d were sent", tr.smallGot[len(data)], len(data), tr.smallWant[len(data)])
		}
		return
	}
	if binary.BigEndian.Uint32(data[0:4]) != headerMagic {
		tr.problem("rule \"datagrams arrive intact\": a %d-byte datagram does not start with the test "+
			"header (corrupted, or a segment boundary was lost): % x", len(data), data[:headerLen])
		return
	}
	d := id{binary.BigEndian.Uint16(data[4:6]), binary.BigEndian.Uint32(data[8:12])}
	size := int(binary.BigEndian.Uint32(data[12:16]))
	if int(d.writer) >= len(tr.seen) || int(d.seq) >= len(tr.seen[d.writer]) {
		tr.problem("rule \"datagrams arrive intact\": datagram %v was never sent (corrupted header)", d)
		return
	}
	if size != len(data) {
		tr.problem("rule \"a datagram is never split, merged or truncated\": datagram %v was sent with "+
			"%d bytes and arrived with %d", d, size, len(data))
		return
	}
	off := bodyOffset(d.writer, d.seq)
	if want := pattern[off : off+size-headerLen]; !bytes.Equal(data[headerLen:], want) {
		i := 0
		for i < len(want) && data[headerLen+i] == want[i] {
			i++
		}
		tr.problem("rule \"datagrams arrive intact\": datagram %v (%d bytes) differs from what was sent "+
			"at byte %d", d, size, headerLen+i)
		return
	}
	if tr.seen[d.writer][d.seq] == noHeader {
		tr.problem("rule \"datagrams arrive intact\": datagram %v was sent with fewer than %d bytes and "+
			"arrived with %d", d, headerLen, size)
		return
	}
	tr.seen[d.writer][d.seq]++
	if tr.seen[d.writer][d.seq] > 1 {
		tr.problem("rule \"every datagram arrives exactly once\": datagram %v arrived %d times", d,
			tr.seen[d.writer][d.seq])
	}
	tr.ecn[d.writer][d.seq] = m.ECN
	tr.order = append(tr.order, d)
}

// checkAddresses checks the source and local addresses of m.
func (tr *tracker) checkAddresses(m *transport.Message) {
	src := m.Addr
	switch {
	case !src.IsValid():
		tr.problem("rule \"ReadBatch fills Addr\": got an invalid source address")
	case src.Addr().Is4In6():
		tr.problem("rule \"IPv4 addresses are plain, never IPv4-mapped\": source address %v", src)
	case !sameEndpoint(src, tr.from):
		tr.problem("rule \"Addr is the sender's address\": got %v, the sender is bound to %v", src, tr.from)
	}
	if !tr.checkLocal {
		return
	}
	local := m.Local
	switch want := tr.to.Addr().Unmap(); {
	case !local.IsValid():
		tr.problem("rule \"Local is filled when Capabilities().LocalAddr\": got the zero address")
	case local.Is4In6():
		tr.problem("rule \"IPv4 addresses are plain, never IPv4-mapped\": Local %v", local)
	case !want.IsUnspecified() && local.WithZone("") != want.WithZone(""):
		tr.problem("rule \"Local is the receiver's address\": got %v, the receiver is bound to %v", local, want)
	}
}

// sameEndpoint reports whether got is the address of a Conn bound to bound: equal ports, and equal
// (unmapped) addresses unless bound is a wildcard address.
func sameEndpoint(got, bound netip.AddrPort) bool {
	if got.Port() != bound.Port() {
		return false
	}
	b := bound.Addr().Unmap()
	return b.IsUnspecified() || got.Addr().Unmap().WithZone("") == b.WithZone("")
}

// missingReport describes the datagrams that have not arrived (yet).
func (tr *tracker) missingReport() string {
	var missing []string
	total := 0
	for w := range tr.seen {
		for seq, n := range tr.seen[w] {
			if n == 0 {
				if total < 10 {
					missing = append(missing, id{uint16(w), uint32(seq)}.String())
				}
				total++
			}
		}
	}
	for size := range tr.smallWant {
		if d := tr.smallWant[size] - tr.smallGot[size]; d > 0 {
			if total < 10 {
				missing = append(missing, fmt.Sprintf("%d of the %d-byte datagrams", d, size))
			}
			total += d
		}
	}
	if total == 0 {
		return "none missing"
	}
	more := ""
	if total > len(missing) {
		more = ", ..."
	}
	return fmt.Sprintf("%d missing (%s%s)", total, strings.Join(missing, ", "), more)
}

// err returns the problems seen, or nil.
func (tr *tracker) err() error {
	if len(tr.problems) == 0 {
		return nil
	}
	more := ""
	if tr.more > 0 {
		more = fmt.Sprintf("\n  ... and %d more problems", tr.more)
	}
	return fmt.Errorf("%s (from %v to %v):\n  %s%s", tr.dir, tr.from, tr.to,
		strings.Join(tr.problems, "\n  "), more)
}
