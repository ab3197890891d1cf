package nq

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// ErrAcksDisabled: a send asked for a delivery ack on a connection whose Server or Client does
// not have DeliveryAcks set.
var ErrAcksDisabled = errors.New("nq: delivery acks are off for this connection (set DeliveryAcks)")

// tracer returns the quic-go Tracer for the delivery-ack and qlog options, or nil when both are
// off: connections that ask for neither pay nothing.
func tracer(acks bool, qlogDir string) func(context.Context, bool, quicgo.ConnectionID) qlogwriter.Trace {
	if !acks && qlogDir == "" {
		return nil
	}
	return func(_ context.Context, isClient bool, id quicgo.ConnectionID) qlogwriter.Trace {
		var file qlogwriter.Trace
		if qlogDir != "" {
			file = qlogFile(qlogDir, isClient, id)
		}
		if !acks {
			return file
		}
		return newAckTracker(file)
	}
}

// qlogFile writes a connection's qlog to dir/<odcid>_<client|server>.sqlog, or returns nil when
// the file cannot be created.
func qlogFile(dir string, isClient bool, id quicgo.ConnectionID) qlogwriter.Trace {
	side := "server"
	if isClient {
		side = "client"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s_%s.sqlog", id, side)))
	if err != nil {
		return nil
	}
	seq := qlogwriter.NewConnectionFileSeq(bufferedFile{bufio.NewWriter(f), f}, isClient, id)
	go seq.Run()
	return seq
}

type bufferedFile struct {
	*bufio.Writer
	f *os.File
}

func (b bufferedFile) Close() error {
	return errors.Join(b.Flush(), b.f.Close())
}

// ackTracker derives delivery acks from quic-go's qlog events: it remembers which stream bytes
// each 1-RTT packet carried and, when ACK frames acknowledge packets, marks those bytes
// delivered. A byte range counts as delivered once every byte of it has been acknowledged in
// some packet (a lost packet is never acknowledged; its bytes are, once retransmitted). Only
// streams with a pending ack are tracked. Events arrive on the connection's run loop.
type ackTracker struct {
	file qlogwriter.Trace // an optional qlog file the events are forwarded to

	mu      sync.Mutex
	sent    []sentPacket // in packet-number order
	streams map[quicgo.StreamID]*ackStream
	resets  map[quicgo.StreamID]int64 // streams whose send side was reset: their reliable size
	err     error                     // set when the connection ended: later waiters fail at once
}

type sentPacket struct {
	pn     qlog.PacketNumber
	ranges []byteRange
}

type byteRange struct {
	stream     quicgo.StreamID
	start, end int64
}

type ackStream struct {
	acked   []span // delivered byte ranges, sorted and merged
	waiters []*ackWaiter
}

type span struct{ start, end int64 }

type ackWaiter struct {
	start, end int64
	f          func(n int, err error)
}

func newAckTracker(file qlogwriter.Trace) *ackTracker {
	return &ackTracker{file: file, streams: make(map[quicgo.StreamID]*ackStream), resets: make(map[quicgo.StreamID]int64)}
}

// AddProducer implements qlogwriter.Trace.
func (t *ackTracker) AddProducer() qlogwriter.Recorder {
	r := &ackRecorder{t: t}
	if t.file != nil {
		r.file = t.file.AddProducer()
	}
	return r
}

type ackRecorder struct {
	t    *ackTracker
	file qlogwriter.Recorder
}

func (r *ackRecorder) RecordEvent(ev qlogwriter.Event) {
	switch e := ev.(type) {
	case qlog.PacketSent:
		r.t.packetSent(e.Header, e.Frames)
	case *qlog.PacketSent:
		r.t.packetSent(e.Header, e.Frames)
	case qlog.PacketReceived:
		r.t.packetReceived(e.Header, e.Frames)
	case *qlog.PacketReceived:
		r.t.packetReceived(e.Header, e.Frames)
	case qlog.PacketLost:
		r.t.packetLost(e.Header)
	case *qlog.PacketLost:
		r.t.packetLost(e.Header)
	}
	if r.file != nil {
		r.file.RecordEvent(ev)
	}
}

func (r *ackRecorder) Close() error {
	if r.file != nil {
		return r.file.Close()
	}
	return nil
}

// wait registers f to run once bytes [start, end) of stream id are delivered, or with an error
// when the connection ends first. It returns the connection's error, without registering, when
// it has already ended.
func (t *ackTracker) wait(id quicgo.StreamID, start, end int64, f func(int, error)) error {
	t.mu.Lock()
	if err := t.err; err != nil {
		t.mu.Unlock()
		return fmt.Errorf("nq: delivery ack: %w", err)
	}
	if reliable, ok := t.resets[id]; ok && end > reliable {
		// Written after the reset went out (before the stream noticed): never delivered.
		t.mu.Unlock()
		return fmt.Errorf("nq: delivery ack: %w", errSendReset)
	}
	st := t.streams[id]
	if st == nil {
		st = &ackStream{}
		t.streams[id] = st
	}
	st.waiters = append(st.waiters, &ackWaiter{start: start, end: end, f: f})
	t.mu.Unlock()
	return nil
}

func isAppData(h qlog.PacketHeader) bool {
	return h.PacketType == qlog.PacketType1RTT || h.PacketType == qlog.PacketType0RTT
}

func (t *ackTracker) packetSent(h qlog.PacketHeader, frames []qlog.Frame) {
	if !isAppData(h) {
		return
	}
	var reset []*ackWaiter
	t.mu.Lock()
	var ranges []byteRange
	for _, f := range frames {
		switch sf := f.Frame.(type) {
		case *qlog.StreamFrame:
			if sf.Length == 0 {
				continue
			}
			if st := t.streams[sf.StreamID]; st != nil && len(st.waiters) > 0 {
				ranges = append(ranges, byteRange{sf.StreamID, sf.Offset, sf.Offset + sf.Length})
			}
		case *qlog.ResetStreamFrame:
			// The send side is reset (this side cancelled it, or the peer asked with
			// STOP_SENDING, which a graceful close of its side does): bytes past the reliable
			// size will never be delivered.
			reset = t.resetLocked(sf.StreamID, int64(sf.ReliableSize), reset)
		}
	}
	if len(ranges) > 0 {
		t.sent = append(t.sent, sentPacket{pn: h.PacketNumber, ranges: ranges})
	}
	t.mu.Unlock()
	for _, w := range reset {
		w.f(0, fmt.Errorf("nq: delivery ack: %w", errSendReset))
	}
}

// errSendReset ends the delivery waits of bytes a stream reset abandoned.
var errSendReset error = sendReset{}

type sendReset struct{}

func (sendReset) Error() string { return "the stream was reset before the peer had the bytes" }

// Is makes errSendReset match ErrClosed: the stream is closed.
func (sendReset) Is(target error) bool { return target == ErrClosed || target == net.ErrClosed }

// resetLocked records that stream id was reset, and takes its waiters that wait for bytes past
// reliable (the part of the stream a reset still delivers) out of the table, appending them to
// out.
func (t *ackTracker) resetLocked(id quicgo.StreamID, reliable int64, out []*ackWaiter) []*ackWaiter {
	if t.err == nil {
		t.resets[id] = reliable
	}
	st := t.streams[id]
	if st == nil {
		return out
	}
	kept := st.waiters[:0]
	for _, w := range st.waiters {
		if w.end > reliable {
			out = append(out, w)
		} else {
			kept = append(kept, w)
		}
	}
	st.waiters = kept
	if len(kept) == 0 {
		delete(t.streams, id)
	}
	return out
}

func (t *ackTracker) packetLost(h qlog.PacketHeader) {
	if !isAppData(h) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.find(h.PacketNumber); ok {
		t.sent = slices.Delete(t.sent, i, i+1)
	}
}

func (t *ackTracker) find(pn qlog.PacketNumber) (int, bool) {
	return slices.BinarySearchFunc(t.sent, pn, func(p sentPacket, pn qlog.PacketNumber) int {
		return int(p.pn - pn)
	})
}

func (t *ackTracker) packetReceived(h qlog.PacketHeader, frames []qlog.Frame) {
	if !isAppData(h) {
		return
	}
	var fire []func()
	t.mu.Lock()
	for _, f := range frames {
		af, ok := f.Frame.(*qlog.AckFrame)
		if !ok {
			continue
		}
		for _, r := range af.AckRanges {
			lo, _ := t.find(r.Smallest)
			hi := lo
			for hi < len(t.sent) && t.sent[hi].pn <= r.Largest {
				for _, br := range t.sent[hi].ranges {
					if st := t.streams[br.stream]; st != nil {
						st.acked = addSpan(st.acked, span{br.start, br.end})
					}
				}
				hi++
			}
			t.sent = slices.Delete(t.sent, lo, hi)
		}
	}
	for id, st := range t.streams {
		kept := st.waiters[:0]
		for _, w := range st.waiters {
			if covered(st.acked, span{w.start, w.end}) {
				n, f := int(w.end-w.start), w.f
				fire = append(fire, func() { f(n, nil) })
			} else {
				kept = append(kept, w)
			}
		}
		st.waiters = kept
		if len(kept) == 0 {
			delete(t.streams, id) // nothing to wait for: stop tracking the stream
		}
	}
	t.mu.Unlock()
	for _, f := range fire {
		f()
	}
}

// forget drops what the tracker remembers of stream id's reset; the stream has closed, so no
// wait on it can start any more.
func (t *ackTracker) forget(id quicgo.StreamID) {
	t.mu.Lock()
	delete(t.resets, id)
	t.mu.Unlock()
}

// fail ends every pending wait with err (the connection ended before the peer had the bytes).
func (t *ackTracker) fail(err error) {
	t.mu.Lock()
	t.err = err
	var waiters []*ackWaiter
	for _, st := range t.streams {
		waiters = append(waiters, st.waiters...)
	}
	clear(t.streams)
	clear(t.resets)
	t.sent = nil
	t.mu.Unlock()
	for _, w := range waiters {
		w.f(0, fmt.Errorf("nq: delivery ack: %w", err))
	}
}

// failStream ends the pending waits of one stream, which was reset.
func (t *ackTracker) failStream(id quicgo.StreamID, err error) {
	t.mu.Lock()
	var waiters []*ackWaiter
	if st := t.streams[id]; st != nil {
		waiters = st.waiters
		delete(t.streams, id)
	}
	t.mu.Unlock()
	for _, w := range waiters {
		w.f(0, fmt.Errorf("nq: delivery ack: %w", err))
	}
}

// addSpan merges s into the sorted, disjoint spans.
func addSpan(spans []span, s span) []span {
	i, _ := slices.BinarySearchFunc(spans, s.start, func(x span, v int64) int {
		switch {
		case x.end < v:
			return -1
		case x.start > v:
			return 1
		}
		return 0
	})
	j := i
	for j < len(spans) && spans[j].start <= s.end {
		s.start = min(s.start, spans[j].start)
		s.end = max(s.end, spans[j].end)
		j++
	}
	return slices.Replace(spans, i, j, s)
}

// covered reports whether the spans contain every byte of s.
func covered(spans []span, s span) bool {
	for _, x := range spans {
		if x.start <= s.start && x.end >= s.end {
			return true
		}
	}
	return s.start == s.end
}
