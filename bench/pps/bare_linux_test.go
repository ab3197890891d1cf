package main

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestBareReceiverCounts sends datagrams to a bare receiver on loopback and checks that it
// counts each one, in batches or not, and that Close stops it.
func TestBareReceiverCounts(t *testing.T) {
	r, err := newBareReceiver(netip.MustParseAddrPort("127.0.0.1:0"), time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	to := r.conn.LocalAddr().(*net.UDPAddr)
	c, err := net.DialUDP("udp", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 3*batchSize + 5 // a few full batches and a short one, within the socket buffer
	for i := range n {
		if _, err := c.Write(make([]byte, 64+i%7)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.Count() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the counter the loop bumps: nothing to wait on
	}
	if got := r.Count(); got != n {
		t.Fatalf("counted %d datagrams, sent %d", got, n)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-r.done:
	default:
		t.Fatal("the receive loop still runs after Close")
	}
}
