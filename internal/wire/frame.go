package wire

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultMaxPayload is the payload limit decoders apply when given a limit <= 0: 1 MiB.
const DefaultMaxPayload = 1 << 20

// MaxFrameHeaderLen is the longest RPC frame header: kind byte, method, msgid and length varints.
const MaxFrameHeaderLen = 1 + 8 + 8 + 8

// Kind is the kind of an RPC frame, carried in bits 7..6 of its first byte.
type Kind uint8

// RPC frame kinds. Every 2-bit value is assigned, so any first byte has a valid kind.
const (
	KindRequest Kind = 0 // a call expecting a reply or an error with the same msgid
	KindReply   Kind = 1 // the successful answer to a request
	KindError   Kind = 2 // the failed answer to a request; the payload is an error payload
	KindNotify  Kind = 3 // a one-way message: no msgid, no answer
)

// String returns the kind's lower-case name, or "Kind(n)" for a value outside the four kinds.
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindReply:
		return "reply"
	case KindError:
		return "error"
	case KindNotify:
		return "notify"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

const (
	methodBits = 0x3f // bits 5..0 of byte 0
	methodExt  = 63   // method bits meaning "method follows as a varint"
)

// Frame is one decoded RPC frame.
type Frame struct {
	Kind   Kind
	Method uint32 // request and notify only; 0 otherwise
	MsgID  uint64 // request (>= 1), reply and error; 0 for notify
	// Payload is the frame's payload. For an error frame it is the structured error payload (see
	// ParseErrorPayload). A decoded Payload aliases the input buffer, with its capacity cut at its
	// length so appending to it never overwrites the next frame.
	Payload []byte
}

// AppendFrame appends f, encoded, to dst and returns the extended slice. It returns dst unchanged
// and an error matching [ErrInvalid] when f cannot be encoded: an unknown kind, a request with
// MsgID 0, a MsgID over [MaxVarint], a Method on a reply or error, or a MsgID on a notify.
// An error frame's Payload is written as given; [AppendError] builds it from its parts.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if err := f.check(); err != nil {
		return dst, fmt.Errorf("wire: %s frame: %w: %w", f.Kind, ErrInvalid, err)
	}
	return appendFrame(dst, f.Kind, f.Method, f.MsgID, len(f.Payload), f.Payload), nil
}

// check reports why f cannot be encoded, or nil.
func (f *Frame) check() error {
	switch f.Kind {
	case KindRequest:
		if f.MsgID == 0 {
			return fmt.Errorf("request msgid must be >= 1")
		}
	case KindReply, KindError:
		if f.Method != 0 {
			return fmt.Errorf("method %d on a %s", f.Method, f.Kind)
		}
	case KindNotify:
		if f.MsgID != 0 {
			return fmt.Errorf("msgid %d on a notify", f.MsgID)
		}
	default:
		return fmt.Errorf("unknown kind %d", uint8(f.Kind))
	}
	if f.MsgID > MaxVarint {
		return fmt.Errorf("msgid %d over %d", f.MsgID, uint64(MaxVarint))
	}
	return nil
}

// appendFrame appends a frame header declaring size payload bytes, then payload (which may be
// shorter than size when the caller appends the rest itself). Arguments are already checked.
func appendFrame(dst []byte, k Kind, method uint32, msgid uint64, size int, payload []byte) []byte {
	first := byte(k) << 6
	if k == KindRequest || k == KindNotify {
		if method < methodExt {
			first |= byte(method)
		} else {
			first |= methodExt
		}
	}
	dst = append(dst, first)
	if first&methodBits == methodExt {
		dst = appendVarint(dst, uint64(method))
	}
	if k != KindNotify {
		dst = appendVarint(dst, msgid)
	}
	dst = appendVarint(dst, uint64(size))
	return append(dst, payload...)
}

// AppendRequest appends a request frame calling method with the given msgid and payload. It
// returns dst unchanged and an error matching [ErrInvalid] if msgid is 0 or over [MaxVarint].
func AppendRequest(dst []byte, method uint32, msgid uint64, payload []byte) ([]byte, error) {
	if msgid == 0 || msgid > MaxVarint {
		return AppendFrame(dst, Frame{Kind: KindRequest, Method: method, MsgID: msgid, Payload: payload}) // the error
	}
	return appendFrame(dst, KindRequest, method, msgid, len(payload), payload), nil
}

// AppendReply appends a reply frame answering msgid. It returns dst unchanged and an error
// matching [ErrInvalid] if msgid is over [MaxVarint].
func AppendReply(dst []byte, msgid uint64, payload []byte) ([]byte, error) {
	if msgid > MaxVarint {
		return AppendFrame(dst, Frame{Kind: KindReply, MsgID: msgid, Payload: payload}) // the error
	}
	return appendFrame(dst, KindReply, 0, msgid, len(payload), payload), nil
}

// AppendNotify appends a notify frame for method. It cannot fail.
func AppendNotify(dst []byte, method uint32, payload []byte) []byte {
	return appendFrame(dst, KindNotify, method, 0, len(payload), payload)
}

// AppendError appends an error frame answering msgid, whose payload carries code, msg and data
// as described by [AppendErrorPayload]. It returns dst unchanged and an error matching
// [ErrInvalid] if msgid is over [MaxVarint] or code is outside [MinErrorCode, MaxErrorCode].
func AppendError(dst []byte, msgid uint64, code int64, msg string, data []byte) ([]byte, error) {
	if msgid > MaxVarint {
		return dst, fmt.Errorf("wire: error frame: %w: msgid %d over %d", ErrInvalid, msgid, uint64(MaxVarint))
	}
	if err := checkCode(code); err != nil {
		return dst, fmt.Errorf("wire: error frame: %w", err)
	}
	msg = validUTF8(msg)
	size := errorPayloadLen(code, msg, data)
	dst = appendFrame(dst, KindError, 0, msgid, size, nil)
	return appendErrorPayload(dst, code, msg, data), nil
}

// ParseFrame decodes the RPC frame at the start of b and returns it with the number of bytes it
// occupies. maxPayload bounds the payload length (<= 0 means [DefaultMaxPayload]).
//
// It returns [ErrShort] while b is a strict prefix of a valid frame, wherever b ends; a
// [*FrameTooLargeError] as soon as the length varint is complete and exceeds maxPayload; and an
// error matching [ErrMalformed] for method bits on a reply or error, an extended method below 63
// or over 2^32-1, a request with msgid 0, or a varint not in its shortest encoding.
func ParseFrame(b []byte, maxPayload int) (Frame, int, error) {
	var f Frame
	n, err := f.Decode(b, maxPayload)
	if err != nil {
		return Frame{}, 0, err
	}
	return f, n, nil
}

// Decode is [ParseFrame] writing into f, for decoding loops that reuse one Frame: it sets f to
// the frame at the start of b and returns the number of bytes the frame occupies, or returns
// ParseFrame's errors and leaves f unspecified.
func (f *Frame) Decode(b []byte, maxPayload int) (int, error) {
	if len(b) == 0 {
		return 0, ErrShort
	}
	f.Kind = Kind(b[0] >> 6)
	f.Method, f.MsgID = 0, 0
	bits := b[0] & methodBits
	pos := 1
	switch f.Kind {
	case KindRequest, KindNotify:
		if bits < methodExt {
			f.Method = uint32(bits)
			break
		}
		m, n, err := parseVarint(b[pos:])
		if err != nil {
			return 0, fieldErr("frame method", err)
		}
		if m < methodExt || m > math.MaxUint32 {
			return 0, fmt.Errorf("wire: frame: %w: extended method %d outside 63..%d", ErrMalformed, m, uint32(math.MaxUint32))
		}
		f.Method = uint32(m)
		pos += n
	default:
		if bits != 0 {
			return 0, fmt.Errorf("wire: frame: %w: %s carries method bits %#x", ErrMalformed, f.Kind, bits)
		}
	}
	if f.Kind != KindNotify {
		id, n, err := parseVarint(b[pos:])
		if err != nil {
			return 0, fieldErr("frame msgid", err)
		}
		if id == 0 && f.Kind == KindRequest {
			return 0, fmt.Errorf("wire: frame: %w: request with msgid 0", ErrMalformed)
		}
		f.MsgID = id
		pos += n
	}
	payload, n, err := parsePayload(b[pos:], maxPayload, "frame")
	if err != nil {
		return 0, err
	}
	f.Payload = payload
	return pos + n, nil
}

// parsePayload decodes a varint length and that many bytes at the start of b.
func parsePayload(b []byte, maxPayload int, what string) ([]byte, int, error) {
	size, k, err := parseVarint(b)
	if err != nil {
		return nil, 0, fieldErr(what+" length", err)
	}
	limit := effectiveLimit(maxPayload)
	if size > uint64(limit) {
		return nil, 0, &FrameTooLargeError{Size: size, Limit: limit}
	}
	if uint64(len(b)-k) < size {
		return nil, 0, ErrShort
	}
	end := k + int(size)
	return b[k:end:end], end, nil
}

// effectiveLimit applies the DefaultMaxPayload default.
func effectiveLimit(maxPayload int) int {
	if maxPayload <= 0 {
		return DefaultMaxPayload
	}
	return maxPayload
}

// Error codes carried by an error payload are zigzag-encoded varints, so they range over
// [MinErrorCode, MaxErrorCode].
const (
	MinErrorCode = -(1 << 61) // the smallest code an error payload carries
	MaxErrorCode = 1<<61 - 1  // the largest code an error payload carries
)

// checkCode reports a code outside [MinErrorCode, MaxErrorCode].
func checkCode(code int64) error {
	if code < MinErrorCode || code > MaxErrorCode {
		return fmt.Errorf("%w: error code %d outside %d..%d", ErrInvalid, code, int64(MinErrorCode), int64(MaxErrorCode))
	}
	return nil
}

// validUTF8 returns s with invalid UTF-8 sequences replaced by U+FFFD; it allocates only when s
// is not valid UTF-8.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// ErrorPayloadLen returns the length of the error payload [AppendErrorPayload] would append for
// code, msg and data (msg as sent: invalid UTF-8 replaced).
func ErrorPayloadLen(code int64, msg string, data []byte) int {
	return errorPayloadLen(code, validUTF8(msg), data)
}

// errorPayloadLen returns the encoded length of an error payload whose msg is valid UTF-8.
func errorPayloadLen(code int64, msg string, data []byte) int {
	return varintLen(zigzag(code)) + varintLen(uint64(len(msg))) + len(msg) + len(data)
}

// appendErrorPayload appends an error payload whose arguments are already checked.
func appendErrorPayload(dst []byte, code int64, msg string, data []byte) []byte {
	dst = appendVarint(dst, zigzag(code))
	dst = appendVarint(dst, uint64(len(msg)))
	dst = append(dst, msg...)
	return append(dst, data...)
}

// AppendErrorPayload appends the payload of an error frame: code (zigzag-encoded), the message
// and opaque data. A msg that is not valid UTF-8 is sent with each invalid sequence replaced by
// U+FFFD. It returns dst unchanged and an error matching [ErrInvalid] if code is outside
// [MinErrorCode, MaxErrorCode].
func AppendErrorPayload(dst []byte, code int64, msg string, data []byte) ([]byte, error) {
	if err := checkCode(code); err != nil {
		return dst, fmt.Errorf("wire: error payload: %w", err)
	}
	return appendErrorPayload(dst, code, validUTF8(msg), data), nil
}

// ParseErrorPayload decodes the payload of an error frame. data aliases p. The payload is
// complete, so truncation is malformed: every error matches [ErrMalformed].
func ParseErrorPayload(p []byte) (code int64, msg string, data []byte, err error) {
	zz, n, err := parseVarint(p)
	if err != nil {
		return 0, "", nil, errorPayloadErr("code", err)
	}
	p = p[n:]
	size, n, err := parseVarint(p)
	if err != nil {
		return 0, "", nil, errorPayloadErr("message length", err)
	}
	p = p[n:]
	if size > uint64(len(p)) {
		return 0, "", nil, fmt.Errorf("wire: error payload: %w: message length %d exceeds the %d bytes left", ErrMalformed, size, len(p))
	}
	raw := p[:size]
	if !utf8.Valid(raw) {
		return 0, "", nil, fmt.Errorf("wire: error payload: %w: message is not UTF-8", ErrMalformed)
	}
	return unzigzag(zz), string(raw), p[size:], nil
}

// errorPayloadErr turns a varint decoding error inside a complete error payload into a malformed
// error: a truncated varint cannot be completed later.
func errorPayloadErr(field string, err error) error {
	if err == ErrShort {
		return fmt.Errorf("wire: error payload: %w: truncated %s", ErrMalformed, field)
	}
	return fmt.Errorf("wire: error payload %s: %w", field, err)
}
