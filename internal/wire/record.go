package wire

// MaxRecordHeaderLen is the longest record header: one length varint.
const MaxRecordHeaderLen = 8

// AppendRecord appends a record carrying payload (which may be empty) to dst and returns the
// extended slice.
func AppendRecord(dst []byte, payload []byte) []byte {
	dst = appendVarint(dst, uint64(len(payload)))
	return append(dst, payload...)
}

// RecordHeaderLen returns the bytes of framing a record with an n-byte payload needs: 1 for
// n < 64, 2 for n < 16384, 4 for n < 2^30, else 8. A 12-byte record is framed in 13 bytes.
// A negative n counts as 0.
func RecordHeaderLen(n int) int {
	if n < 0 {
		n = 0
	}
	return varintLen(uint64(n))
}

// ParseRecord decodes the record at the start of b and returns its payload (aliasing b) and the
// number of bytes it occupies. maxPayload bounds the payload length (<= 0 means
// [DefaultMaxPayload]). Like [ParseFrame] it returns [ErrShort] for a strict prefix, a
// [*FrameTooLargeError] as soon as the length is known to exceed maxPayload, and an error
// matching [ErrMalformed] for a length varint not in its shortest encoding.
func ParseRecord(b []byte, maxPayload int) (payload []byte, n int, err error) {
	return parsePayload(b, maxPayload, "record")
}
