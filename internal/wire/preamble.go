package wire

import (
	"fmt"
	"unicode/utf8"
)

// MaxNameLen is the longest protocol name a stream preamble carries, in bytes.
const MaxNameLen = 255

// MaxPreambleLen is the longest stream preamble: a 2-byte length and a MaxNameLen-byte name.
const MaxPreambleLen = 2 + MaxNameLen

// AppendPreamble appends the stream preamble naming protocol name to dst and returns the
// extended slice. The name must be 1..MaxNameLen bytes of UTF-8; otherwise AppendPreamble returns
// dst unchanged and an error matching [ErrInvalid].
func AppendPreamble(dst []byte, name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return dst, fmt.Errorf("wire: preamble: %w: %w", ErrInvalid, err)
	}
	dst = appendVarint(dst, uint64(len(name)))
	return append(dst, name...), nil
}

// ParsePreamble decodes the stream preamble at the start of b and returns the protocol name and
// the number of bytes it occupies. It returns [ErrShort] while b is a strict prefix of a valid
// preamble, and an error matching [ErrMalformed] for a length of zero or over MaxNameLen (as soon
// as the length is complete) or a name that is not UTF-8.
func ParsePreamble(b []byte) (name string, n int, err error) {
	size, k, err := parseVarint(b)
	if err != nil {
		return "", 0, fieldErr("preamble length", err)
	}
	if size == 0 || size > MaxNameLen {
		return "", 0, fmt.Errorf("wire: preamble: %w: name length %d outside 1..%d", ErrMalformed, size, MaxNameLen)
	}
	end := k + int(size)
	if len(b) < end {
		return "", 0, ErrShort
	}
	raw := b[k:end]
	if !utf8.Valid(raw) {
		return "", 0, fmt.Errorf("wire: preamble: %w: name is not UTF-8", ErrMalformed)
	}
	return string(raw), end, nil
}

// checkName reports why name cannot be a protocol name, or nil.
func checkName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("name length %d outside 1..%d", len(name), MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("name %q is not UTF-8", name)
	}
	return nil
}
