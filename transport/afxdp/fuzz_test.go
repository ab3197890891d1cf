package afxdp

import (
	"bytes"
	"testing"

	"github.com/naquid/naquid/transport"
)

// FuzzParseFrame: parseFrame never panics, and whatever it accepts is consistent: the payload
// lies within the frame, the port is ours, and building a frame from what it read and parsing
// that again gives the same datagram.
func FuzzParseFrame(f *testing.F) {
	f.Add(frame(testV4A, testV4B, transport.ECNCE, []byte("seed ipv4")))
	f.Add(frame(testV6A, testV6B, transport.ECNECT1, []byte("seed ipv6")))
	f.Add(frame(testV4A, testV4B, 0, nil))
	f.Add(append(frame(testV4A, testV4B, 0, []byte{1}), make([]byte, 30)...))
	f.Add([]byte{})
	f.Add(make([]byte, 14))
	f.Fuzz(func(t *testing.T, in []byte) {
		var d datagram
		if parseFrame(in, testPort, &d) != frameOK {
			return
		}
		if d.dst.Port() != testPort || d.src.Port() == 0 || d.ecn > transport.ECNCE {
			t.Fatalf("accepted an inconsistent datagram %+v", d)
		}
		if len(d.payload) > 0 && !bytes.Contains(in, d.payload) {
			t.Fatal("payload is not part of the frame")
		}
		h := frameHeader{dstMAC: testMACB, srcMAC: d.srcMAC, src: d.src, dst: d.dst, ecn: d.ecn}
		if d.src.Addr().Is4() != d.dst.Addr().Is4() {
			t.Fatalf("mixed families %v -> %v", d.src, d.dst)
		}
		buf := make([]byte, h.headerLen()+len(d.payload))
		out := buf[:buildFrame(buf, &h, d.payload)]
		var again datagram
		if r := parseFrame(out, testPort, &again); r != frameOK {
			t.Fatalf("rebuilt frame rejected: %v", r)
		}
		if again.src != d.src || again.dst != d.dst || again.ecn != d.ecn || !bytes.Equal(again.payload, d.payload) {
			t.Fatalf("rebuilt frame reads %+v, want %+v", again, d)
		}
	})
}
