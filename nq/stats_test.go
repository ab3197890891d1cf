package nq_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/naquid/naquid/transport/memconn"
)

// TestConnStats: Conn.Stats reports the current generation's RTT estimates and packet and byte
// counters, the frames of the Conn's whole life, and, once the Conn has ended, no QUIC figures.
// Over memconn the link's delay shows in the RTT and its loss in PacketsLost.
func TestConnStats(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		const delay, jitter = 5 * time.Millisecond, 2 * time.Millisecond
		server, client := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
		if e.net != nil {
			link := memconn.LinkConfig{Latency: delay, Jitter: jitter}
			if err := e.net.SetLink(client, server, link); err != nil {
				t.Fatal(err)
			}
			if err := e.net.SetLink(server, client, link); err != nil {
				t.Fatal(err)
			}
		}
		f := startFixture(t, e, fixtureOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := newClient(t, e, clientOptions{}).Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		if st := conn.Stats(); !st.Open || st.Generation != 1 {
			t.Fatalf("after Dial: Open %v, Generation %d; want true, 1", st.Open, st.Generation)
		}
		rpc := conn.RPC("rpc")
		const calls = 20
		for i := range calls {
			if _, err := rpc.Call(ctx, mPing, be64(uint64(i))); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		// The reader counts the frames of a handler pass when the pass ends, just after it has
		// delivered the last reply.
		eventually(5*time.Second, func() bool { return conn.Stats().FramesReceived >= calls })
		st := conn.Stats()
		if st.MinRTT <= 0 || st.LatestRTT <= 0 || st.SmoothedRTT <= 0 {
			t.Errorf("RTTs min %v, latest %v, smoothed %v: want > 0", st.MinRTT, st.LatestRTT, st.SmoothedRTT)
		}
		if st.PacketsSent < calls || st.PacketsReceived < calls {
			t.Errorf("packets sent %d, received %d: want >= %d each", st.PacketsSent, st.PacketsReceived, calls)
		}
		if st.BytesSent < st.PacketsSent || st.BytesReceived < st.PacketsReceived {
			t.Errorf("bytes sent %d, received %d: fewer than the %d and %d packets", st.BytesSent, st.BytesReceived, st.PacketsSent, st.PacketsReceived)
		}
		if st.FramesSent < calls || st.FramesReceived < calls {
			t.Errorf("frames sent %d, received %d: want >= %d each", st.FramesSent, st.FramesReceived, calls)
		}
		if e.net != nil {
			if st.MinRTT < 2*delay || st.SmoothedRTT < 2*delay {
				t.Errorf("min RTT %v, smoothed %v over a link with %v each way", st.MinRTT, st.SmoothedRTT, delay)
			}
			if st.RTTVar <= 0 {
				t.Errorf("RTT variation %v over a link with %v of jitter", st.RTTVar, jitter)
			}
			if st.PacketsLost != 0 || st.BytesLost != 0 {
				t.Errorf("%d packets (%d bytes) lost on a lossless link", st.PacketsLost, st.BytesLost)
			}
			// Now lose a third of what the client sends, until QUIC has declared a loss.
			if err := e.net.SetLink(client, server, memconn.LinkConfig{Latency: delay, Loss: 0.3}); err != nil {
				t.Fatal(err)
			}
			for i := 0; conn.Stats().PacketsLost == 0; i++ {
				if i == 200 {
					t.Fatalf("no loss counted after 200 calls at 30%% loss: %+v", conn.Stats())
				}
				if _, err := rpc.Call(ctx, mPing, be64(uint64(i))); err != nil {
					t.Fatalf("call %d at 30%% loss: %v", i, err)
				}
			}
			if st := conn.Stats(); st.BytesLost == 0 {
				t.Errorf("%d packets lost but 0 bytes", st.PacketsLost)
			}
			e.net.ClearLink(client, server)
		}

		before := conn.Stats()
		conn.Close()
		waitFor(t, conn.Done(), 5*time.Second, "the Conn to end")
		after := conn.Stats()
		if after.Open || after.Generation != 1 || after.PacketsSent != 0 || after.SmoothedRTT != 0 {
			t.Errorf("after Close: %+v; want Open false, Generation 1, no QUIC figures", after)
		}
		if after.FramesSent < before.FramesSent || after.FramesReceived < before.FramesReceived {
			t.Errorf("frame counts went back after Close: %+v before, %+v after", before, after)
		}
	})
}
