package wire

import (
	"testing"
)

// repeatReader returns block over and over, as many whole copies as fit per Read.
type repeatReader struct{ block []byte }

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for len(p)-n >= len(r.block) {
		n += copy(p[n:], r.block)
	}
	if n == 0 {
		n = copy(p, r.block)
	}
	return n, nil
}

func TestHotPathsDoNotAllocate(t *testing.T) {
	payload := seq(8)
	buf := make([]byte, 0, 256)
	var block []byte
	for range 32 {
		block = AppendNotify(block, 2, payload)
	}
	r := NewReader(&repeatReader{block: block}, 0, 0)
	if _, err := r.NextFrame(); err != nil { // allocates the buffer once
		t.Fatal(err)
	}
	tests := []struct {
		desc string
		fn   func()
	}{
		{"AppendRequest+ParseFrame", func() {
			b, _ := AppendRequest(buf[:0], 1, 7, payload)
			_, _, _ = ParseFrame(b, 0)
		}},
		{"AppendReply+AppendNotify", func() {
			b, _ := AppendReply(buf[:0], 7, payload)
			_ = AppendNotify(b, 0x7FFF, payload)
		}},
		{"AppendError", func() { _, _ = AppendError(buf[:0], 7, -999, "test failure reason", payload) }},
		{"AppendRecord+ParseRecord", func() { _, _, _ = ParseRecord(AppendRecord(buf[:0], payload), 0) }},
		{"Reader.NextFrame", func() { _, _ = r.NextFrame() }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(200, tt.fn); n != 0 {
			t.Errorf("%s: %.1f allocs per run, want 0", tt.desc, n)
		}
	}
}

// BenchmarkPing encodes and decodes one Ping request (method 1, 8-byte payload) per iteration.
func BenchmarkPing(b *testing.B) {
	payload := seq(8)
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	var msgid uint64
	for b.Loop() {
		msgid++
		enc, err := AppendRequest(buf[:0], 1, msgid, payload)
		if err != nil {
			b.Fatal(err)
		}
		f, _, err := ParseFrame(enc, 0)
		if err != nil || f.MsgID != msgid {
			b.Fatal(f, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/frame")
}

// BenchmarkReaderPing decodes Ping requests through a Reader fed 64 frames per Read.
func BenchmarkReaderPing(b *testing.B) {
	var block []byte
	for i := range 64 {
		block, _ = AppendRequest(block, 1, uint64(i+1), seq(8))
	}
	r := NewReader(&repeatReader{block: block}, len(block), 0)
	b.ReportAllocs()
	b.SetBytes(11)
	for b.Loop() {
		if _, err := r.NextFrame(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/frame")
}
