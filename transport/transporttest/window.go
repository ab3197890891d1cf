package transporttest

import (
	"fmt"
	"sync"
	"time"

	"github.com/naquid/naquid/transport"
)

// window paces senders by receipts: at most maxCount datagrams and maxBytes payload bytes are in
// flight; the receiver returns credit as datagrams arrive. A lost datagram never returns its
// credit, so a sender that waits idle for credit reports loss instead of overflowing a buffer.
type window struct {
	mu                 sync.Mutex
	count, bytes       int
	maxCount, maxBytes int
	idle               time.Duration // how long acquire waits without progress
	progress           chan struct{} // closed and replaced on every release
}

// Default window: small enough for any socket buffer of a few hundred KiB, large enough to keep
// loopback busy.
const (
	windowCount = 64
	windowBytes = 256 << 10
)

func newWindow(maxCount, maxBytes int, idle time.Duration) *window {
	return &window{maxCount: maxCount, maxBytes: maxBytes, idle: idle, progress: make(chan struct{})}
}

// acquire waits until n datagrams of size bytes in total fit in the window (a batch always fits
// an empty window). It fails when no credit came back for w.idle.
func (w *window) acquire(n, size int) error {
	idle := w.idle
	var timer *time.Timer
	for {
		w.mu.Lock()
		if w.count == 0 || (w.count+n <= w.maxCount && w.bytes+size <= w.maxBytes) {
			w.count += n
			w.bytes += size
			w.mu.Unlock()
			return nil
		}
		count, bytes, progress := w.count, w.bytes, w.progress
		w.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(idle)
			defer timer.Stop()
		}
		select {
		case <-progress:
			timer.Reset(idle)
		case <-timer.C:
			return fmt.Errorf("rule \"no datagram is lost on an unloaded path\": %d datagrams (%d bytes) "+
				"written long ago have not arrived after %v without progress: lost (a socket buffer too "+
				"small?) or stuck", count, bytes, idle)
		}
	}
}

// release returns the credit of n received datagrams of size bytes in total.
func (w *window) release(n, size int) {
	w.mu.Lock()
	w.count = max(w.count-n, 0)
	w.bytes = max(w.bytes-size, 0)
	close(w.progress)
	w.progress = make(chan struct{})
	w.mu.Unlock()
}

// datagrams returns how many datagrams and payload bytes msgs describe.
func datagrams(msgs []transport.Message) (count, bytes int) {
	for _, m := range msgs {
		bytes += len(m.Buf)
		if m.SegmentSize > 0 && m.SegmentSize < len(m.Buf) {
			count += (len(m.Buf) + m.SegmentSize - 1) / m.SegmentSize
		} else {
			count++
		}
	}
	return count, bytes
}

// send waits for window credit (if w is not nil), then writes all of msgs with one WriteBatch.
func send(c transport.Conn, msgs []transport.Message, w *window) error {
	if w != nil {
		count, bytes := datagrams(msgs)
		if err := w.acquire(count, bytes); err != nil {
			return err
		}
	}
	n, err := c.WriteBatch(msgs)
	if err != nil {
		return fmt.Errorf("rule \"WriteBatch returns an error only for EMSGSIZE or Close\": WriteBatch of %d "+
			"messages (sent %d): %v", len(msgs), n, err)
	}
	if n != len(msgs) {
		return fmt.Errorf("rule \"WriteBatch sends every message or returns an error\": WriteBatch of %d "+
			"messages returned n=%d and a nil error", len(msgs), n)
	}
	return nil
}
