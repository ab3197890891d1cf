package wire

import "strconv"

// StreamCode is an application error code naquid puts in QUIC RESET_STREAM and STOP_SENDING
// frames (quic-go's StreamErrorCode). Stream codes start at 0x10 so they never collide with
// [ConnCode] values.
type StreamCode uint64

// Stream error codes.
const (
	// StreamClosed: the application closed the stream normally.
	StreamClosed StreamCode = 0x10
	// StreamCancelled: the reader or writer gave up on the stream (a cancelled context, a
	// handler that stopped reading).
	StreamCancelled StreamCode = 0x11
	// StreamProtocolError: a malformed frame, record or preamble arrived on the stream.
	StreamProtocolError StreamCode = 0x12
	// StreamUnknownProtocol: the preamble names a protocol the receiver does not serve.
	StreamUnknownProtocol StreamCode = 0x13
	// StreamRejected: the receiver's stream open hook refused the stream.
	StreamRejected StreamCode = 0x14
	// StreamFrameTooLarge: a frame or record declared a payload over the receiver's limit.
	StreamFrameTooLarge StreamCode = 0x15
	// StreamNotReading: the peer kept sending requests without reading the answers, past the
	// receiver's bounds on unsent answers and on requests held back meanwhile.
	StreamNotReading StreamCode = 0x16
	// StreamTooManyRequests: the peer kept sending requests while the receiver's handler held
	// its bound of the stream's requests unanswered, past the receiver's bound on requests held
	// back meanwhile.
	StreamTooManyRequests StreamCode = 0x17
)

// String returns the code's name ("StreamProtocolError"), or "StreamCode(0x..)" for a code
// naquid does not define.
func (c StreamCode) String() string {
	switch c {
	case StreamClosed:
		return "StreamClosed"
	case StreamCancelled:
		return "StreamCancelled"
	case StreamProtocolError:
		return "StreamProtocolError"
	case StreamUnknownProtocol:
		return "StreamUnknownProtocol"
	case StreamRejected:
		return "StreamRejected"
	case StreamFrameTooLarge:
		return "StreamFrameTooLarge"
	case StreamNotReading:
		return "StreamNotReading"
	case StreamTooManyRequests:
		return "StreamTooManyRequests"
	}
	return "StreamCode(0x" + strconv.FormatUint(uint64(c), 16) + ")"
}

// ConnCode is an application error code naquid puts in QUIC CONNECTION_CLOSE frames (quic-go's
// ApplicationErrorCode).
type ConnCode uint64

// Connection error codes.
const (
	// ConnNoError: the connection ended without a reason worth reporting.
	ConnNoError ConnCode = 0x00
	// ConnServerShutdown: the server is going away on purpose (graceful shutdown); clients can
	// tell this apart from a crash and reconnect elsewhere or later.
	ConnServerShutdown ConnCode = 0x01
	// ConnClosedByApp: the application at the closing end called Close.
	ConnClosedByApp ConnCode = 0x02
	// ConnRejected: the receiver's connection open hook refused the connection.
	ConnRejected ConnCode = 0x03
	// ConnInternalError: the closing end hit an internal error.
	ConnInternalError ConnCode = 0x04
)

// String returns the code's name ("ConnServerShutdown"), or "ConnCode(0x..)" for a code naquid
// does not define.
func (c ConnCode) String() string {
	switch c {
	case ConnNoError:
		return "ConnNoError"
	case ConnServerShutdown:
		return "ConnServerShutdown"
	case ConnClosedByApp:
		return "ConnClosedByApp"
	case ConnRejected:
		return "ConnRejected"
	case ConnInternalError:
		return "ConnInternalError"
	}
	return "ConnCode(0x" + strconv.FormatUint(uint64(c), 16) + ")"
}
