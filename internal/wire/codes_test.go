package wire

import "testing"

func TestCodes(t *testing.T) {
	seen := map[uint64]string{}
	streams := map[StreamCode]string{
		StreamClosed: "StreamClosed", StreamCancelled: "StreamCancelled",
		StreamProtocolError: "StreamProtocolError", StreamUnknownProtocol: "StreamUnknownProtocol",
		StreamRejected: "StreamRejected", StreamFrameTooLarge: "StreamFrameTooLarge",
		StreamNotReading:      "StreamNotReading",
		StreamTooManyRequests: "StreamTooManyRequests",
		0x99:                  "StreamCode(0x99)",
	}
	for c, want := range streams {
		if got := c.String(); got != want {
			t.Errorf("StreamCode(%#x).String() = %q, want %q", uint64(c), got, want)
		}
		if c != 0x99 {
			seen[uint64(c)] = want
		}
	}
	conns := map[ConnCode]string{
		ConnNoError: "ConnNoError", ConnServerShutdown: "ConnServerShutdown",
		ConnClosedByApp: "ConnClosedByApp", ConnRejected: "ConnRejected",
		ConnInternalError: "ConnInternalError", 0x99: "ConnCode(0x99)",
	}
	for c, want := range conns {
		if got := c.String(); got != want {
			t.Errorf("ConnCode(%#x).String() = %q, want %q", uint64(c), got, want)
		}
		if c == 0x99 {
			continue
		}
		if other, dup := seen[uint64(c)]; dup {
			t.Errorf("%s and %s share the value %#x", want, other, uint64(c))
		}
		seen[uint64(c)] = want
	}
	if len(seen) != 13 {
		t.Errorf("%d distinct codes, want 13", len(seen))
	}
}
