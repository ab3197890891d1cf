package nq

import (
	"testing"
	"time"
)

func TestHandshakePatienceValues(t *testing.T) {
	const s = time.Second
	tests := []struct {
		base     time.Duration
		timeouts int
		want     time.Duration
	}{
		{3 * s, 0, 3 * s},
		{3 * s, 1, 6 * s},
		{3 * s, 2, 12 * s},
		{3 * s, 9, 12 * s},
		{3 * s, -1, 3 * s},
		{0, 0, 5 * s}, // quic-go's default
		{0, 1, 10 * s},
	}
	for _, tt := range tests {
		if got := handshakePatience(tt.base, tt.timeouts); got != tt.want {
			t.Errorf("handshakePatience(%v, %d) = %v, want %v", tt.base, tt.timeouts, got, tt.want)
		}
	}
}
