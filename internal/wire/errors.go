package wire

import (
	"errors"
	"fmt"
)

// ErrShort is returned by the decoders when the bytes given are a strict prefix of a valid
// frame, record or preamble: the caller should read more and try again with the longer buffer.
// It is returned unwrapped.
var ErrShort = errors.New("wire: need more bytes")

// ErrMalformed is matched (with errors.Is) by every decoding error caused by bytes that no valid
// encoder produces; the wrapping error says what is wrong. A stream that yields it is broken and
// should be reset with [StreamProtocolError].
var ErrMalformed = errors.New("malformed")

// ErrFrameTooLarge is matched (with errors.Is) by [*FrameTooLargeError].
var ErrFrameTooLarge = errors.New("wire: frame too large")

// ErrInvalid is matched (with errors.Is) by encoder errors: the caller asked for something the
// wire format cannot carry (an empty protocol name, a request with msgid 0, an out-of-range code).
var ErrInvalid = errors.New("invalid argument")

// FrameTooLargeError reports a frame or record whose declared payload length exceeds the
// receiver's limit. Decoders return it as soon as the length is known, before the payload has
// arrived. It matches [ErrFrameTooLarge].
type FrameTooLargeError struct {
	Size  uint64 // declared payload length in bytes
	Limit int    // the limit it exceeds
}

// Error implements error.
func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("wire: frame too large: payload of %d bytes exceeds limit of %d", e.Size, e.Limit)
}

// Is reports whether target is [ErrFrameTooLarge].
func (e *FrameTooLargeError) Is(target error) bool { return target == ErrFrameTooLarge }

// errNonMinimal is the cause of a varint written in more bytes than its value needs.
var errNonMinimal = fmt.Errorf("%w: varint not in its shortest encoding", ErrMalformed)

// fieldErr adds the context "wire: <what>: " to a decoding error, leaving ErrShort as it is.
func fieldErr(what string, err error) error {
	if err == ErrShort {
		return ErrShort
	}
	return fmt.Errorf("wire: %s: %w", what, err)
}
