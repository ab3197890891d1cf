package wire

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// DefaultReadBufferSize is the initial buffer size of a [Reader] created with bufSize <= 0.
const DefaultReadBufferSize = 4096

// maxEmptyReads is how many consecutive (0, nil) reads a Reader tolerates before giving up with
// io.ErrNoProgress.
const maxEmptyReads = 100

// Reader decodes a stream preamble, RPC frames or records from an io.Reader.
//
// It parses every complete frame already buffered before it calls Read again, so the underlying
// Read is called only when the next frame is not complete in the buffer. A caller that batches
// its output and wants to flush it once it has handled everything from one read can check
// Buffered() == 0 after each frame, or (exactly) wrap the io.Reader it passes to NewReader so that
// its Read flushes first: that Read runs only when no complete frame is left.
//
// The buffer starts at bufSize bytes, is allocated on the first read, and grows as needed up to
// maxPayload plus the largest header, or to MaxPreambleLen bytes if that is more (never
// shrinking); a frame over maxPayload fails with a
// [*FrameTooLargeError] without its payload being read. After any error other than [ErrShort]
// (which a Reader never returns) the Reader is broken and every call returns the same error.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	rd         io.Reader
	buf        []byte
	start, end int   // buf[start:end] is read but not consumed
	size       int   // initial buffer size
	limit      int   // payload limit
	maxBuf     int   // buffer size bound
	rerr       error // error from rd, reported once the buffered bytes are used up
	err        error // sticky error
}

// NewReader returns a Reader decoding from r with an initial buffer of bufSize bytes (<= 0 means
// [DefaultReadBufferSize]) and a payload limit of maxPayload bytes (<= 0 means
// [DefaultMaxPayload]).
func NewReader(r io.Reader, bufSize, maxPayload int) *Reader {
	limit := effectiveLimit(maxPayload)
	maxBuf := MaxPreambleLen
	if limit <= math.MaxInt-MaxFrameHeaderLen {
		maxBuf = max(maxBuf, limit+MaxFrameHeaderLen)
	} else {
		maxBuf = math.MaxInt
	}
	if bufSize <= 0 {
		bufSize = DefaultReadBufferSize
	}
	return &Reader{rd: r, size: min(bufSize, maxBuf), limit: limit, maxBuf: maxBuf}
}

// Buffered returns the number of bytes read from the underlying reader but not yet consumed by
// a Next call. It may be non-zero while the next frame is still incomplete.
func (r *Reader) Buffered() int { return r.end - r.start }

// NextPreamble reads and returns the stream preamble. Bytes that follow it stay buffered for the
// next NextFrame or NextRecord.
func (r *Reader) NextPreamble() (string, error) {
	for r.err == nil {
		name, n, err := ParsePreamble(r.buf[r.start:r.end])
		if err == nil {
			r.consume(n)
			return name, nil
		}
		r.more(err)
	}
	return "", r.err
}

// NextFrame returns the next RPC frame. Its Payload aliases the Reader's buffer and is valid
// until the next call. At a clean end of stream (between frames) it returns io.EOF; an end of
// stream inside a frame is io.ErrUnexpectedEOF. Other errors from the underlying reader are
// returned wrapped ("wire: read: ..."), after every frame read before them.
func (r *Reader) NextFrame() (Frame, error) {
	for r.err == nil {
		f, n, err := ParseFrame(r.buf[r.start:r.end], r.limit)
		if err == nil {
			r.consume(n)
			return f, nil
		}
		r.more(err)
	}
	return Frame{}, r.err
}

// NextRecord returns the next record's payload, which aliases the Reader's buffer and is valid
// until the next call. End of stream is reported as for NextFrame.
func (r *Reader) NextRecord() ([]byte, error) {
	for r.err == nil {
		p, n, err := ParseRecord(r.buf[r.start:r.end], r.limit)
		if err == nil {
			r.consume(n)
			return p, nil
		}
		r.more(err)
	}
	return nil, r.err
}

// consume marks n buffered bytes as used.
func (r *Reader) consume(n int) {
	r.start += n
	if r.start == r.end {
		r.start, r.end = 0, 0
	}
}

// more handles a decoding error: ErrShort leads to one more read (or to the pending read error),
// anything else becomes the sticky error.
func (r *Reader) more(parseErr error) {
	switch {
	case !errors.Is(parseErr, ErrShort):
		r.err = parseErr
	case r.rerr == io.EOF && r.start < r.end:
		r.err = io.ErrUnexpectedEOF
	case r.rerr == io.EOF:
		r.err = io.EOF
	case r.rerr != nil:
		r.err = fmt.Errorf("wire: read: %w", r.rerr)
	default:
		r.fill()
	}
}

// fill makes room in the buffer and reads once into it, recording a read error in r.rerr for
// when the buffered bytes are used up.
func (r *Reader) fill() {
	if r.start > 0 {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	// Every valid unit fits in maxBuf, so the buffer is never full at maxBuf here.
	if n := min(max(2*len(r.buf), r.size), r.maxBuf); r.end == len(r.buf) && n > len(r.buf) {
		buf := make([]byte, n)
		copy(buf, r.buf[:r.end])
		r.buf = buf
	}
	for range maxEmptyReads {
		n, err := r.rd.Read(r.buf[r.end:])
		if n < 0 || n > len(r.buf)-r.end {
			r.err = fmt.Errorf("wire: read: reader returned invalid count %d for %d bytes", n, len(r.buf)-r.end)
			return
		}
		r.end += n
		if err != nil {
			r.rerr = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.err = io.ErrNoProgress
}
