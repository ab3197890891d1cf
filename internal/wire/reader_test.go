package wire

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"
	"testing/iotest"

	"github.com/quic-go/quic-go/quicvarint"
)

// encodeFrames concatenates the encodings of fs.
func encodeFrames(t *testing.T, fs ...Frame) []byte {
	t.Helper()
	var b []byte
	for _, f := range fs {
		var err error
		if b, err = AppendFrame(b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// readAllFrames reads frames until an error and returns them (payloads copied) with the error.
func readAllFrames(r *Reader) ([]Frame, error) {
	var out []Frame
	for range 10000 {
		f, err := r.NextFrame()
		if err != nil {
			return out, err
		}
		f.Payload = append([]byte{}, f.Payload...)
		out = append(out, f)
	}
	return out, errors.New("too many frames")
}

func checkFrames(t *testing.T, got []Frame, err error, want []Frame, wantErr error) {
	t.Helper()
	if !errors.Is(err, wantErr) {
		t.Fatalf("error = %v, want %v", err, wantErr)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !equalFrame(got[i], want[i]) {
			t.Fatalf("frame %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func allFrameCases() []Frame {
	fs := make([]Frame, len(frameCases))
	for i, c := range frameCases {
		fs[i] = c.f
	}
	return fs
}

func TestReaderIotestReaders(t *testing.T) {
	want := allFrameCases()
	data := encodeFrames(t, want...)
	tests := []struct {
		desc string
		r    io.Reader
		buf  int
	}{
		{"one byte per read", iotest.OneByteReader(bytes.NewReader(data)), 0},
		{"half reads", iotest.HalfReader(bytes.NewReader(data)), 0},
		{"EOF with the last data", iotest.DataErrReader(bytes.NewReader(data)), 0},
		{"one byte per read, 1-byte buffer", iotest.OneByteReader(bytes.NewReader(data)), 1},
		{"whole, 7-byte buffer", bytes.NewReader(data), 7},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, err := readAllFrames(NewReader(tt.r, tt.buf, 0))
			checkFrames(t, got, err, want, io.EOF)
		})
	}
}

func TestReaderEverySplitOfTwoFrames(t *testing.T) {
	pairs := [][2]Frame{
		{{Kind: KindRequest, Method: 1, MsgID: 7, Payload: seq(8)}, {Kind: KindNotify, Method: 0x7FFF, Payload: []byte("hi")}},
		{{Kind: KindRequest, Method: math.MaxUint32, MsgID: quicvarint.Max, Payload: []byte{}}, {Kind: KindReply, MsgID: quicvarint.Max, Payload: seq(70)}},
		{{Kind: KindError, MsgID: 300, Payload: seq(3)}, {Kind: KindNotify, Payload: []byte{}}},
	}
	for _, pair := range pairs {
		data := encodeFrames(t, pair[0], pair[1])
		for i := 0; i <= len(data); i++ {
			for _, bufSize := range []int{1, 4096} {
				cr := &chunkReader{chunks: splitAt(bytes.Clone(data), i)}
				got, err := readAllFrames(NewReader(cr, bufSize, 0))
				if !errors.Is(err, io.EOF) || len(got) != 2 || !equalFrame(got[0], pair[0]) || !equalFrame(got[1], pair[1]) {
					t.Fatalf("split at %d/%d, buffer %d: %+v, %v", i, len(data), bufSize, got, err)
				}
			}
		}
	}
}

func TestReaderParsesBufferedFramesBeforeReading(t *testing.T) {
	f1 := Frame{Kind: KindRequest, Method: 1, MsgID: 1, Payload: seq(8)}
	f2 := Frame{Kind: KindReply, MsgID: 2, Payload: seq(3)}
	f3 := Frame{Kind: KindNotify, Method: 4, Payload: nil}
	whole := encodeFrames(t, f1, f2, f3)
	tail := encodeFrames(t, f1)
	cr := &chunkReader{chunks: [][]byte{whole, tail[:4], tail[4:]}}
	r := NewReader(cr, 0, 0)
	if r.Buffered() != 0 {
		t.Fatalf("Buffered before any read = %d", r.Buffered())
	}

	// One read delivers three frames; they come out without another Read.
	for i, want := range []Frame{f1, f2, f3} {
		f, err := r.NextFrame()
		if err != nil || !equalFrame(f, want) {
			t.Fatalf("frame %d: %+v, %v", i, f, err)
		}
		if cr.reads != 1 {
			t.Fatalf("after frame %d: %d reads, want 1", i, cr.reads)
		}
		wantBuffered := len(whole) - len(encodeFrames(t, []Frame{f1, f2, f3}[:i+1]...))
		if r.Buffered() != wantBuffered {
			t.Fatalf("after frame %d: Buffered = %d, want %d", i, r.Buffered(), wantBuffered)
		}
	}
	if r.Buffered() != 0 {
		t.Fatalf("everything from the read handled, but Buffered = %d", r.Buffered())
	}

	// A frame split over two reads: the partial bytes stay buffered until the rest arrives.
	f, err := r.NextFrame()
	if err != nil || !equalFrame(f, f1) || cr.reads != 3 || r.Buffered() != 0 {
		t.Fatalf("split frame: %+v, %v, reads %d, buffered %d", f, err, cr.reads, r.Buffered())
	}
	if _, err := r.NextFrame(); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestReaderBufferedPartialFrame(t *testing.T) {
	f1 := Frame{Kind: KindNotify, Method: 2, Payload: seq(5)}
	data := encodeFrames(t, f1, f1)
	cr := &chunkReader{chunks: [][]byte{data[:len(data)-3]}}
	r := NewReader(cr, 0, 0)
	if _, err := r.NextFrame(); err != nil {
		t.Fatal(err)
	}
	if want := len(data)/2 - 3; r.Buffered() != want {
		t.Fatalf("Buffered = %d, want %d (an incomplete frame)", r.Buffered(), want)
	}
	if _, err := r.NextFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("EOF mid-frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReaderOversizedFrameNotRead(t *testing.T) {
	const limit = 1000
	big := encodeFrames(t, Frame{Kind: KindRequest, Method: 1, MsgID: 1, Payload: make([]byte, 50000)})
	hdr := len(big) - 50000
	for _, tt := range []struct {
		desc   string
		chunks [][]byte
	}{
		{"header alone", [][]byte{big[:hdr], big[hdr:]}},
		{"header split", [][]byte{big[:1], big[1:hdr], big[hdr:]}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			cr := &chunkReader{chunks: tt.chunks}
			r := NewReader(cr, 16, limit)
			_, err := r.NextFrame()
			var tl *FrameTooLargeError
			if !errors.As(err, &tl) || tl.Size != 50000 || tl.Limit != limit {
				t.Fatalf("error = %v, want FrameTooLargeError{50000, %d}", err, limit)
			}
			reads := cr.reads
			if reads != len(tt.chunks)-1 {
				t.Fatalf("%d reads, want %d: the payload must not be read", reads, len(tt.chunks)-1)
			}
			if _, err2 := r.NextFrame(); err2 != err || cr.reads != reads {
				t.Fatalf("second call: %v (reads %d), want the same sticky error", err2, cr.reads)
			}
		})
	}
}

func TestReaderLargestFrameFitsBuffer(t *testing.T) {
	const limit = 1000
	want := []Frame{
		{Kind: KindRequest, Method: math.MaxUint32, MsgID: quicvarint.Max, Payload: seq(limit)}, // 25-byte header
		{Kind: KindNotify, Method: 3, Payload: seq(limit)},
	}
	data := encodeFrames(t, want...)
	got, err := readAllFrames(NewReader(iotest.HalfReader(bytes.NewReader(data)), 1, limit))
	checkFrames(t, got, err, want, io.EOF)
	// Growth from a tiny buffer to the largest frame with an unlimited-looking limit.
	huge := []Frame{{Kind: KindReply, MsgID: 1, Payload: seq(200000)}}
	got, err = readAllFrames(NewReader(bytes.NewReader(encodeFrames(t, huge...)), 3, math.MaxInt))
	checkFrames(t, got, err, huge, io.EOF)
}

func TestReaderEOF(t *testing.T) {
	f := Frame{Kind: KindReply, MsgID: 300, Payload: seq(10)}
	one := encodeFrames(t, f)
	tests := []struct {
		desc    string
		data    []byte
		want    int
		wantErr error
	}{
		{"empty stream", nil, 0, io.EOF},
		{"clean end", one, 1, io.EOF},
		{"end inside the header", append(bytes.Clone(one), one[:2]...), 1, io.ErrUnexpectedEOF},
		{"end inside the payload", append(bytes.Clone(one), one[:len(one)-1]...), 1, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := NewReader(iotest.OneByteReader(bytes.NewReader(tt.data)), 0, 0)
			got, err := readAllFrames(r)
			if len(got) != tt.want || err != tt.wantErr {
				t.Fatalf("%d frames, %v; want %d, %v", len(got), err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestReaderReadError(t *testing.T) {
	boom := errors.New("stream reset")
	f := Frame{Kind: KindNotify, Method: 1, Payload: seq(3)}
	data := encodeFrames(t, f)
	// The frame read before the error is delivered first.
	r := NewReader(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)), 0, 0)
	got, err := readAllFrames(r)
	checkFrames(t, got, err, []Frame{f}, boom)

	r = NewReader(readerFunc(func([]byte) (int, error) { return 0, nil }), 0, 0)
	if _, err := r.NextFrame(); err != io.ErrNoProgress {
		t.Fatalf("reader without progress: %v, want io.ErrNoProgress", err)
	}
	r = NewReader(readerFunc(func(p []byte) (int, error) { return len(p) + 1, nil }), 0, 0)
	if _, err := r.NextFrame(); err == nil {
		t.Fatal("reader claiming more bytes than asked: no error")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestReaderMalformedIsSticky(t *testing.T) {
	good := Frame{Kind: KindNotify, Method: 1, Payload: seq(2)}
	data := append(encodeFrames(t, good), 0x41, 0x01, 0x00) // a reply with method bits
	cr := &chunkReader{chunks: [][]byte{data}}
	r := NewReader(cr, 0, 0)
	got, err := readAllFrames(r)
	checkFrames(t, got, err, []Frame{good}, ErrMalformed)
	if _, err2 := r.NextRecord(); err2 != err {
		t.Fatalf("after a malformed frame: %v, want the same error", err2)
	}
}

func TestReaderPreambleThenFrames(t *testing.T) {
	pre, err := AppendPreamble(nil, "game/rpc")
	if err != nil {
		t.Fatal(err)
	}
	want := []Frame{{Kind: KindRequest, Method: 1, MsgID: 1, Payload: seq(8)}, {Kind: KindNotify, Payload: []byte{}}}
	data := append(pre, encodeFrames(t, want...)...)
	for i := 0; i <= len(data); i++ {
		r := NewReader(&chunkReader{chunks: splitAt(bytes.Clone(data), i)}, 0, 0)
		name, err := r.NextPreamble()
		if err != nil || name != "game/rpc" {
			t.Fatalf("split at %d: preamble %q, %v", i, name, err)
		}
		got, err := readAllFrames(r)
		checkFrames(t, got, err, want, io.EOF)
	}
	// A bad preamble is malformed; an empty stream is io.EOF.
	r := NewReader(bytes.NewReader([]byte{0x00}), 0, 0)
	if _, err := r.NextPreamble(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("zero-length preamble: %v, want ErrMalformed", err)
	}
	r = NewReader(bytes.NewReader(nil), 0, 0)
	if _, err := r.NextPreamble(); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
	// The longest preamble fits even with the smallest buffer and limit.
	long, err := AppendPreamble(nil, string(bytes.Repeat([]byte("p"), MaxNameLen)))
	if err != nil {
		t.Fatal(err)
	}
	r = NewReader(iotest.OneByteReader(bytes.NewReader(long)), 1, 1)
	if name, err := r.NextPreamble(); err != nil || len(name) != MaxNameLen {
		t.Fatalf("longest preamble: %d bytes, %v", len(name), err)
	}
}

func TestReaderRecords(t *testing.T) {
	payloads := [][]byte{{}, seq(1), seq(12), {}, {}, seq(64), seq(20000), {}}
	var data []byte
	for _, p := range payloads {
		data = AppendRecord(data, p)
	}
	for _, rd := range []io.Reader{iotest.OneByteReader(bytes.NewReader(data)), bytes.NewReader(data)} {
		r := NewReader(rd, 8, 0)
		for i, want := range payloads {
			got, err := r.NextRecord()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("record %d: %d bytes, %v; want %d", i, len(got), err, len(want))
			}
		}
		if _, err := r.NextRecord(); err != io.EOF {
			t.Fatalf("at end: %v, want io.EOF", err)
		}
	}
	r := NewReader(bytes.NewReader(AppendRecord(nil, seq(101))), 0, 100)
	if _, err := r.NextRecord(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized record: %v, want ErrFrameTooLarge", err)
	}
}
