package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/. Run a target with, for example,
// go test -run '^$' -fuzz '^FuzzParseFrame$' -fuzztime 30s ./internal/wire

// checkDecodeErr fails unless err is one of the documented decoding errors.
func checkDecodeErr(t *testing.T, err error) {
	t.Helper()
	if err != ErrShort && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("undocumented error %v", err)
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, limit uint16) {
		fr, n, err := ParseFrame(b, int(limit))
		if err != nil {
			checkDecodeErr(t, err)
			return
		}
		if n <= 0 || n > len(b) || len(fr.Payload) > effectiveLimit(int(limit)) {
			t.Fatalf("n = %d of %d, payload %d bytes", n, len(b), len(fr.Payload))
		}
		enc, err := AppendFrame(nil, fr)
		if err != nil || !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoded % x, %v; decoded from % x", enc, err, b[:n])
		}
		reused := Frame{Kind: KindRequest, Method: 77, MsgID: 9, Payload: []byte{1}}
		if m, err := reused.Decode(b, int(limit)); err != nil || m != n || !equalFrame(reused, fr) {
			t.Fatalf("Decode into a used Frame: %+v, %d, %v; ParseFrame gave %+v, %d", reused, m, err, fr, n)
		}
		for cut := range n {
			if _, _, err := ParseFrame(b[:cut], int(limit)); err != ErrShort {
				t.Fatalf("prefix of %d/%d bytes: %v, want ErrShort", cut, n, err)
			}
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, limit uint16) {
		p, n, err := ParseRecord(b, int(limit))
		if err != nil {
			checkDecodeErr(t, err)
			return
		}
		if n <= 0 || n > len(b) || len(p) > effectiveLimit(int(limit)) || n != RecordHeaderLen(len(p))+len(p) {
			t.Fatalf("n = %d of %d, payload %d bytes", n, len(b), len(p))
		}
		if enc := AppendRecord(nil, p); !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoded % x; decoded from % x", enc, b[:n])
		}
		for cut := range n {
			if _, _, err := ParseRecord(b[:cut], int(limit)); err != ErrShort {
				t.Fatalf("prefix of %d/%d bytes: %v, want ErrShort", cut, n, err)
			}
		}
	})
}

func FuzzParsePreamble(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		name, n, err := ParsePreamble(b)
		if err != nil {
			checkDecodeErr(t, err)
			return
		}
		enc, err := AppendPreamble(nil, name)
		if err != nil || !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoded % x, %v; decoded from % x", enc, err, b[:n])
		}
		for cut := range n {
			if _, _, err := ParsePreamble(b[:cut]); err != ErrShort {
				t.Fatalf("prefix of %d/%d bytes: %v, want ErrShort", cut, n, err)
			}
		}
	})
}

func FuzzParseErrorPayload(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		code, msg, data, err := ParseErrorPayload(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		enc, err := AppendErrorPayload(nil, code, msg, data)
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded % x, %v; decoded from % x", enc, err, b)
		}
	})
}

// sizedReader returns at most size bytes per Read.
type sizedReader struct {
	data []byte
	size int
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), s.size)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// FuzzReader checks the Reader against the stand-alone decoders: the same units come out
// whatever the read sizes and buffer size, they re-encode to the input, and the final error
// matches what is left over.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, mode, chunk, bufSize uint8, limit uint16) {
		r := NewReader(&sizedReader{data: data, size: int(chunk) + 1}, int(bufSize), int(limit))
		var enc []byte
		var err error
		if mode%3 == 2 { // preamble, then frames
			var name string
			if name, err = r.NextPreamble(); err == nil {
				enc, _ = AppendPreamble(enc, name)
			}
		}
		for i := 0; err == nil && i <= len(data); i++ {
			if mode%3 == 1 {
				var p []byte
				if p, err = r.NextRecord(); err == nil {
					enc = AppendRecord(enc, p)
				}
				continue
			}
			var fr Frame
			if fr, err = r.NextFrame(); err == nil {
				var aerr error
				if enc, aerr = AppendFrame(enc, fr); aerr != nil {
					t.Fatalf("decoded frame %+v does not encode: %v", fr, aerr)
				}
			}
		}
		if !bytes.HasPrefix(data, enc) {
			t.Fatalf("re-encoded % x is not a prefix of the input % x", enc, data)
		}
		rest := data[len(enc):]
		// What the stand-alone decoder says about the rest decides the Reader's final error.
		var perr error
		switch {
		case mode%3 == 1:
			_, _, perr = ParseRecord(rest, int(limit))
		case mode%3 == 2 && len(enc) == 0:
			_, _, perr = ParsePreamble(rest)
		default:
			_, _, perr = ParseFrame(rest, int(limit))
		}
		switch {
		case len(rest) == 0:
			if err != io.EOF {
				t.Fatalf("all input consumed, error %v, want io.EOF", err)
			}
		case perr == ErrShort:
			if err != io.ErrUnexpectedEOF {
				t.Fatalf("incomplete rest % x, error %v, want io.ErrUnexpectedEOF", rest, err)
			}
		case perr == nil:
			t.Fatalf("Reader stopped with %v before a complete unit % x", err, rest)
		default:
			if err.Error() != perr.Error() {
				t.Fatalf("Reader error %v, decoder error %v", err, perr)
			}
		}
	})
}
