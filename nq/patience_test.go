package nq_test

import (
	"errors"
	"net"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/nq"
)

// TestHandshakePatience: each connection attempt whose handshake timed out makes the next one
// wait twice as long, up to 4 times the configured HandshakeIdleTimeout.
func TestHandshakePatience(t *testing.T) {
	e := envs(t)[0](t) // kernel sockets: a bound socket that never answers is a silent server
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()

	const base = 150 * time.Millisecond
	const attempts = 4
	type end struct {
		at  time.Time
		err error
	}
	ends := make(chan end, attempts)
	quicConf := patientQUIC(false)
	quicConf.HandshakeIdleTimeout = base
	cl := newClient(t, e, clientOptions{
		quic: quicConf,
		onClose: func(_ *nq.Conn, err error, attempt int) time.Duration {
			ends <- end{time.Now(), err}
			if attempt >= attempts {
				return nq.NoReconnect
			}
			return 0
		},
	})
	start := time.Now()
	if _, err := cl.Connect(hole.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	prev := start
	for i := range attempts {
		ev := waitFor(t, ends, 10*time.Second, "a connection attempt to time out")
		var idle *quicgo.IdleTimeoutError
		var hs *quicgo.HandshakeTimeoutError
		if !errors.As(ev.err, &idle) && !errors.As(ev.err, &hs) {
			t.Fatalf("attempt %d ended with %v, want a handshake timeout", i+1, ev.err)
		}
		// Lower bounds only: a loaded machine makes attempts longer, never shorter.
		want := base << min(i, 2)
		if took := ev.at.Sub(prev); took < want*9/10 {
			t.Fatalf("attempt %d timed out after %v, want about %v (base %v doubled per timeout, 4x at most)", i+1, took, want, base)
		}
		prev = ev.at
	}
}
