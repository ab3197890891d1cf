package quic

import (
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

func TestPresets(t *testing.T) {
	tests := []struct {
		name   string
		get    func() *quicgo.Config
		server bool
	}{
		{"server", ServerConfig, true},
		{"client", ClientConfig, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.get()
			if c2 := tt.get(); c2 == c {
				t.Fatal("two calls returned the same *Config")
			}
			if !c.EnableDatagrams {
				t.Error("datagrams off")
			}
			if c.Allow0RTT {
				t.Error("0-RTT allowed by default")
			}
			if c.MaxIdleTimeout <= 0 || c.MaxIdleTimeout%time.Second == 0 || c.MaxIdleTimeout > 10*time.Second {
				t.Errorf("MaxIdleTimeout %v: want a sub-second-precision value of a few seconds", c.MaxIdleTimeout)
			}
			if c.HandshakeIdleTimeout <= 0 || c.HandshakeIdleTimeout > 5*time.Second {
				t.Errorf("HandshakeIdleTimeout %v", c.HandshakeIdleTimeout)
			}
			if tt.server && c.KeepAlivePeriod != 0 {
				t.Errorf("server KeepAlivePeriod %v, want 0 (clients keep connections alive)", c.KeepAlivePeriod)
			}
			if !tt.server && (c.KeepAlivePeriod <= 0 || 3*c.KeepAlivePeriod > c.MaxIdleTimeout) {
				t.Errorf("client KeepAlivePeriod %v: want three keep-alives within MaxIdleTimeout %v", c.KeepAlivePeriod, c.MaxIdleTimeout)
			}
			if c.InitialStreamReceiveWindow == 0 || c.InitialStreamReceiveWindow > c.MaxStreamReceiveWindow {
				t.Errorf("stream window %d..%d", c.InitialStreamReceiveWindow, c.MaxStreamReceiveWindow)
			}
			if c.InitialConnectionReceiveWindow < c.InitialStreamReceiveWindow || c.InitialConnectionReceiveWindow > c.MaxConnectionReceiveWindow ||
				c.MaxConnectionReceiveWindow < c.MaxStreamReceiveWindow {
				t.Errorf("connection window %d..%d", c.InitialConnectionReceiveWindow, c.MaxConnectionReceiveWindow)
			}
			if c.MaxIncomingStreams <= 0 || c.MaxIncomingUniStreams <= 0 {
				t.Errorf("incoming stream limits %d/%d", c.MaxIncomingStreams, c.MaxIncomingUniStreams)
			}
		})
	}
}
