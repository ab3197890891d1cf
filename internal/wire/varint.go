package wire

import "encoding/binary"

// QUIC variable-length integers (RFC 9000 §16), shortest encoding only.

// MaxVarint is the largest value a QUIC variable-length integer carries: 2^62-1.
const MaxVarint = 1<<62 - 1

const (
	maxVarint1 = 1<<6 - 1
	maxVarint2 = 1<<14 - 1
	maxVarint4 = 1<<30 - 1
)

// varintLen returns the length of the shortest encoding of v. Values above MaxVarint (which the
// callers never pass) count as 8 bytes.
func varintLen(v uint64) int {
	switch {
	case v <= maxVarint1:
		return 1
	case v <= maxVarint2:
		return 2
	case v <= maxVarint4:
		return 4
	default:
		return 8
	}
}

// appendVarint appends the shortest encoding of v. Callers check v <= MaxVarint first; bits
// above 62 would be dropped.
func appendVarint(dst []byte, v uint64) []byte {
	switch {
	case v <= maxVarint1:
		return append(dst, byte(v))
	case v <= maxVarint2:
		return append(dst, 0x40|byte(v>>8), byte(v))
	case v <= maxVarint4:
		return append(dst, 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return append(dst, 0xc0|byte(v>>56)&0x3f, byte(v>>48), byte(v>>40), byte(v>>32),
			byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

// parseVarint decodes the varint at the start of b and returns it with its length. It returns
// ErrShort when b ends inside the varint and errNonMinimal when the value has a shorter encoding.
func parseVarint(b []byte) (uint64, int, error) {
	if len(b) == 0 {
		return 0, 0, ErrShort
	}
	var v uint64
	switch b[0] >> 6 {
	case 0:
		return uint64(b[0]), 1, nil
	case 1:
		if len(b) < 2 {
			return 0, 0, ErrShort
		}
		if v = uint64(b[0]&0x3f)<<8 | uint64(b[1]); v <= maxVarint1 {
			return 0, 0, errNonMinimal
		}
		return v, 2, nil
	case 2:
		if len(b) < 4 {
			return 0, 0, ErrShort
		}
		if v = uint64(binary.BigEndian.Uint32(b) & 0x3fffffff); v <= maxVarint2 {
			return 0, 0, errNonMinimal
		}
		return v, 4, nil
	default:
		if len(b) < 8 {
			return 0, 0, ErrShort
		}
		if v = binary.BigEndian.Uint64(b) & MaxVarint; v <= maxVarint4 {
			return 0, 0, errNonMinimal
		}
		return v, 8, nil
	}
}

// zigzag maps a signed integer to an unsigned one so that small magnitudes stay small:
// 0, -1, 1, -2, 2 ... become 0, 1, 2, 3, 4 ...
func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

// unzigzag inverts zigzag.
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }
