package mmsg

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/naquid/naquid/transport"
)

// Limits of one UDP GSO send.
const (
	// maxGSOSegments is the kernel's UDP_MAX_SEGMENTS on older kernels (newer ones allow 128).
	maxGSOSegments = 64
	// maxGSOBytes is the largest UDP payload of one IPv4 send: 65535 minus the IPv4 and UDP
	// headers. IPv6 allows 20 bytes more; the smaller limit serves both.
	maxGSOBytes = 65535 - 20 - 8
)

// pos is a position in a batch of messages: the message index and, inside a segmented message
// that spans several packets, the byte offset of the next datagram.
type pos struct{ msg, off int }

// packet is one entry of a sendmmsg batch: one datagram, or a run of datagrams to one destination
// sent as one UDP GSO message.
type packet struct {
	start, end pos // first datagram, and the position just past the last
	iov0, iov1 int // payload: bufs[iov0:iov1] of the plan, concatenated
	seg        int // UDP_SEGMENT size; 0 for a single datagram
	size       int // payload bytes
	count      int // datagrams
}

// planLimits parameterise plan.
type planLimits struct {
	gso         bool // coalesce runs into GSO messages and keep segmented messages whole
	noGSOBefore int  // messages with a lower index are planned without GSO
	maxDatagram int  // larger datagrams fail with EMSGSIZE
}

// plan lays out how to send msgs from position p on. It fills pk with packets and bufs with their
// payload slices (no payload is copied) until msgs, pk or bufs run out, and returns the number of
// packets and the position just past the last one. When a datagram of msgs[next.msg] is larger
// than lim.maxDatagram, bad is an error matching syscall.EMSGSIZE and nothing past it is planned.
//
// With GSO, consecutive single datagrams with the same destination, source and ECN, of which all
// but the last have the size of the first, become one packet of up to maxGSOSegments datagrams
// and maxGSOBytes bytes; a segmented message becomes as few packets as those limits allow.
// Without GSO every datagram, including every segment of a segmented message, is a packet.
func plan(msgs []transport.Message, p pos, lim planLimits, pk []packet, bufs [][]byte) (np int, next pos, bad error) {
	nb := 0
	var run *packet // open GSO run that more single datagrams may join
	runFirst := 0   // size of the run's first datagram
	for p.msg < len(msgs) {
		m := &msgs[p.msg]
		seg := m.SegmentSize
		single := seg <= 0 || seg >= len(m.Buf)
		size := seg
		if single {
			size = len(m.Buf)
		}
		if size > lim.maxDatagram {
			return np, p, fmt.Errorf("mmsg: datagram of %d bytes to %s exceeds %d: %w",
				size, m.Addr, lim.maxDatagram, syscall.EMSGSIZE)
		}
		gso := lim.gso && p.msg >= lim.noGSOBefore

		if single {
			n := len(m.Buf)
			if run != nil && gso && nb < len(bufs) && canJoin(msgs, run, runFirst, m) {
				bufs[nb] = m.Buf
				nb++
				run.iov1 = nb
				run.size += n
				run.count++
				run.seg = runFirst
				p = pos{p.msg + 1, 0}
				run.end = p
				if n < runFirst {
					run = nil // a shorter datagram ends the run
				}
				continue
			}
			if np == len(pk) || nb == len(bufs) {
				break
			}
			bufs[nb] = m.Buf
			end := pos{p.msg + 1, 0}
			pk[np] = packet{start: p, end: end, iov0: nb, iov1: nb + 1, size: n, count: 1}
			run = nil
			if gso && n > 0 {
				run, runFirst = &pk[np], n
			}
			nb++
			np++
			p = end
			continue
		}

		run = nil
		if np == len(pk) || nb == len(bufs) {
			break
		}
		chunk := min(seg, len(m.Buf)-p.off)
		if gso {
			// At least one segment a packet: an IPv6 datagram may exceed maxGSOBytes.
			perPacket := max(min(maxGSOSegments, maxGSOBytes/seg), 1)
			chunk = min(perPacket*seg, len(m.Buf)-p.off)
		}
		count := (chunk + seg - 1) / seg
		end := pos{p.msg, p.off + chunk}
		if end.off == len(m.Buf) {
			end = pos{p.msg + 1, 0}
		}
		bufs[nb] = m.Buf[p.off : p.off+chunk]
		pk[np] = packet{start: p, end: end, iov0: nb, iov1: nb + 1, size: chunk, count: count}
		if count > 1 {
			pk[np].seg = seg
		}
		nb++
		np++
		p = end
	}
	return np, p, nil
}

// canJoin reports whether the single datagram m may be appended to the GSO run.
func canJoin(msgs []transport.Message, run *packet, first int, m *transport.Message) bool {
	head := &msgs[run.start.msg]
	n := len(m.Buf)
	return n > 0 && n <= first &&
		run.count < maxGSOSegments && run.size+n <= maxGSOBytes &&
		m.Addr == head.Addr && m.Local == head.Local && m.ECN == head.ECN
}

// datagramCount is the number of datagrams in n received bytes coalesced with segment size seg
// (0 or at least n: one datagram, possibly empty).
func datagramCount(n, seg int) int {
	if seg <= 0 || seg >= n {
		return 1
	}
	return (n + seg - 1) / seg
}

// splitDatagrams delivers the datagrams of one received buffer, starting with datagram k, into
// msgs: data holds datagramCount(len(data), seg) datagrams back to back, seg bytes each but the
// last. Each message gets one datagram, truncated to its Buf, with from, local and ecn. It
// returns the number of messages filled and the index of the first datagram not delivered.
func splitDatagrams(data []byte, seg, k int, msgs []transport.Message, from netip.AddrPort, local netip.Addr, ecn transport.ECN) (filled, next int) {
	total := datagramCount(len(data), seg)
	if seg <= 0 || seg > len(data) {
		seg = len(data)
	}
	for k < total && filled < len(msgs) {
		lo := k * seg
		hi := min(lo+seg, len(data))
		m := &msgs[filled]
		m.N = copy(m.Buf, data[lo:hi])
		m.Addr, m.Local, m.ECN, m.SegmentSize = from, local, ecn, 0
		filled++
		k++
	}
	return filled, k
}
