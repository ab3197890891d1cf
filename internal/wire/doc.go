// Package wire is naquid's on-stream framing: the stream preamble, RPC frames, records, the
// structured error payload and the QUIC application error codes. This comment is the wire
// specification; the encoders and decoders in this package are its reference implementation.
//
// # Integers
//
// Every integer on the wire is a QUIC variable-length integer (RFC 9000 §16): the two high bits
// of the first byte give the length (00 = 1 byte, 01 = 2, 10 = 4, 11 = 8) and the remaining
// bits hold the value in network byte order, so values range over 0..2^62-1 ([MaxVarint]).
//
//	value        encoding
//	0x25         25
//	0x3f         3f
//	0x40         40 40
//	0x3fff       7f ff
//	0x7fff       80 00 7f ff
//	0x4000_0000  c0 00 00 00 40 00 00 00
//
// naquid requires the shortest encoding: a decoder rejects a value written in more bytes than it
// needs (for example 40 05 for 5) as malformed, so every byte string has at most one meaning and
// re-encoding a decoded frame gives back the same bytes.
//
// # Stream preamble
//
// The first bytes the opener of a named stream writes: the protocol name's length L as a varint,
// then L bytes of name. The name is UTF-8, 1..[MaxNameLen] (255) bytes. Raw-mode streams carry no
// preamble; their first byte is application data.
//
//	+------------+----------------+
//	| L (varint) | name (L bytes) |
//	+------------+----------------+
//
//	"chat"                   04 63 68 61 74
//	a 255-byte name          40 ff <255 bytes>
//
// A length of zero, a length over 255 and a name that is not UTF-8 are malformed.
//
// # RPC frames
//
// An RPC stream carries a sequence of frames in both directions; each end may call, notify and
// answer. Byte 0 holds the frame kind in bits 7..6 and, for requests and notifies, the method in
// bits 5..0:
//
//	bits 7..6  kind        bits 5..0
//	0          request     method 0..62, or 63 = "method follows as a varint"
//	1          reply       must be 0
//	2          error       must be 0
//	3          notify      method 0..62, or 63 = "method follows as a varint"
//
// The rest of the frame, in order:
//
//	method   varint  request and notify, only when bits 5..0 are 63: the method itself (63..2^32-1;
//	                 a value below 63 must be written inline, a value above 2^32-1 is malformed)
//	msgid    varint  request, reply and error: the call's message id (a request's msgid is >= 1;
//	                 0 is malformed); notifies carry no msgid
//	length   varint  payload length in bytes; a length over the receiver's limit (default
//	                 DefaultMaxPayload, 1 MiB) is rejected as soon as this varint is complete,
//	                 before any payload arrives
//	payload  length bytes
//
// Methods are uint32. A reply or error answers the request with the same msgid. A Ping request
// (method 1, msgid 7, payload 01..08) is 11 bytes:
//
//	01 07 08 01 02 03 04 05 06 07 08
//	|  |  |  +-- payload
//	|  |  +-- payload length 8
//	|  +-- msgid 7
//	+-- kind 0 (request) | method 1
//
// Its reply (kind 1, so byte 0 is 0x40) is also 11 bytes:
//
//	40 07 08 01 02 03 04 05 06 07 08
//
// A notify with method 0x7fff and payload "hi":
//
//	ff 80 00 7f ff 02 68 69
//	|  |           |  +-- payload
//	|  |           +-- payload length 2
//	|  +-- method 0x7fff as a 4-byte varint
//	+-- kind 3 (notify) | 63 (method follows)
//
// A frame header is at most 25 bytes (1 + 8 + 8 + 8). A request with a method below 63, a msgid
// below 16384 and a payload under 64 bytes has 3 or 4 header bytes, so a Ping is at most 12 bytes.
//
// # Error payload
//
// The payload of an error frame is structured:
//
//	code     varint  the signed error code, zigzag-encoded: 0, -1, 1, -2, 2 ... become 0, 1, 2, 3,
//	                 4 ...; codes range over MinErrorCode..MaxErrorCode (-2^61..2^61-1)
//	msglen   varint  length of the message; it must fit in the payload
//	message  msglen bytes of UTF-8 (invalid UTF-8 is malformed)
//	data     the rest of the payload, opaque to naquid (may be empty)
//
// An error frame for msgid 9 with code -999, message "test failure reason" and data 01 02:
//
//	80 09 18 47 cd 13 74 65 73 74 20 66 61 69 6c 75 72 65 20 72 65 61 73 6f 6e 01 02
//	|  |  |  |     |  |                                                        +-- data
//	|  |  |  |     |  +-- "test failure reason"
//	|  |  |  |     +-- message length 19
//	|  |  |  +-- zigzag(-999) = 1997 as a 2-byte varint
//	|  |  +-- payload length 24
//	|  +-- msgid 9
//	+-- kind 2 (error)
//
// # Records
//
// A record stream carries records: a varint length, then that many payload bytes. Empty records
// (a single 00 byte) are allowed. A 12-byte record is framed in 13 bytes. The same size limit as
// for RPC frames applies.
//
//	+-----------------+------------------------+
//	| length (varint) | payload (length bytes) |
//	+-----------------+------------------------+
//
// # Application error codes
//
// Codes naquid puts in QUIC RESET_STREAM / STOP_SENDING frames ([StreamCode]) and in
// CONNECTION_CLOSE frames of the application type ([ConnCode]). The two sets use different
// numbers so that a code seen in a log or a packet capture names its meaning on its own.
//
//	connection codes                    stream codes
//	0x00  ConnNoError                   0x10  StreamClosed         normal close by the application
//	0x01  ConnServerShutdown            0x11  StreamCancelled      the reader or writer gave up
//	0x02  ConnClosedByApp               0x12  StreamProtocolError  malformed frame or preamble
//	0x03  ConnRejected                  0x13  StreamUnknownProtocol
//	0x04  ConnInternalError             0x14  StreamRejected       the open hook said no
//	                                    0x15  StreamFrameTooLarge
//	                                    0x16  StreamNotReading     requests held past the budget
//	                                    0x17  StreamTooManyRequests  the same, with requests unanswered
//
// ConnServerShutdown tells clients that the server is going away on purpose (a graceful shutdown),
// so they can tell it apart from a crash or a network failure.
//
// # Decoding incrementally
//
// Every decoder takes the bytes received so far. It returns [ErrShort] while they are a strict
// prefix of a valid frame, so a reader can accumulate more and retry; the split may fall anywhere,
// inside a varint or inside the header. Malformed input yields an error matching [ErrMalformed];
// a declared payload over the limit yields a [*FrameTooLargeError] matching [ErrFrameTooLarge].
// Both are reported as soon as the field that shows them is complete (a length over the limit once
// its whole varint has arrived, before any of the payload). [Reader] does the accumulation over an
// io.Reader.
// No decoder panics on any input.
package wire
