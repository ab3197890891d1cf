package nq

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Sentinel errors. Test for them with errors.Is; the errors nq returns wrap them with context.
var (
	// ErrTimeout: a call got no answer before its deadline (the ctx deadline or the handler's
	// default timeout). It also matches context.DeadlineExceeded and reports Timeout() true.
	ErrTimeout error = timeoutError{}
	// ErrConnLost: the connection ended (network loss, idle timeout, the peer's close, a reset)
	// while the call was in flight or before the stream could be used. A close by this side's
	// application gives ErrClosed instead.
	ErrConnLost = errors.New("nq: connection lost")
	// ErrClosed: the Conn, stream, server or client was closed by the application. It also
	// matches net.ErrClosed.
	ErrClosed error = closedError{}
	// ErrRejected: the peer's (or the local) open hook refused the stream or the connection.
	ErrRejected = errors.New("nq: rejected by open hook")
	// ErrUnknownProtocol: the protocol name is not registered in the peer's (or the local) Mux.
	ErrUnknownProtocol = errors.New("nq: unknown protocol")
	// ErrFrameTooLarge: a frame or record exceeded the configured size limit.
	ErrFrameTooLarge = errors.New("nq: frame too large")
	// ErrProtocol: the peer broke the wire protocol (malformed frame); the stream was closed.
	ErrProtocol = errors.New("nq: protocol violation")
	// ErrPeerNotReading: an RPC stream was reset because the peer kept sending requests without
	// reading the answers. Past 256 KiB of output unsent on a stream, its new requests (and the
	// notifications behind them) are held back until the peer has read enough; once what the
	// connection's streams hold passes 4 MiB (or twice the frame limit), the stream that would
	// hold more is reset. A peer that reads its answers, however slowly its link carries them,
	// does not get there unless it pipelines that much.
	ErrPeerNotReading = errors.New("nq: peer does not read its answers")
	// ErrTooManyRequests: an RPC stream was reset because the peer kept sending requests while
	// the handler held RPCHandler.MaxUnanswered of the stream's requests unanswered. Past that
	// bound, new requests (and the notifications behind them) are held back until an answer is
	// given; once what the connection's streams hold passes 4 MiB (or twice the frame limit),
	// the stream that would hold more is reset.
	ErrTooManyRequests = errors.New("nq: peer has too many requests unanswered")
	// ErrBacklogFull: a Notify or record send was refused, and nothing sent, because the
	// stream's output waiting for the peer to read (Unsent) has reached its bound
	// (RPCHandler.MaxUnsent, RecordHandler.MaxUnsent). The stream stays open: skip the update
	// for that peer, or retry once it has caught up.
	ErrBacklogFull = errors.New("nq: stream backlog full")
	// ErrServerShutdown: the server is shutting down gracefully. A client's close hook sees it
	// when the server closed the connection while draining, and calls refused while the server
	// drains fail with a *RemoteError that matches it.
	ErrServerShutdown = errors.New("nq: server shutting down")
	// ErrResolve: the host name could not be resolved.
	ErrResolve = errors.New("nq: cannot resolve host")
	// ErrAnswered: Reply or Fail was called on a request that was already answered.
	ErrAnswered = errors.New("nq: request already answered")
	// Err0RTTRejected: the server refused the 0-RTT data of a reconnect (it no longer allows
	// 0-RTT, or could not resume the session): the calls sent in it (marked Idempotent) did not
	// run. Calls made through a Conn.RPC handle are sent again once by nq; those made on an
	// RPCStream of the refused connection fail with it (it also matches ErrConnLost) and may be
	// made again at once: the connection itself is up.
	Err0RTTRejected = errors.New("nq: 0-RTT data refused by the server")
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "nq: call timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded
}

type closedError struct{}

func (closedError) Error() string { return "nq: closed" }
func (closedError) Is(target error) bool {
	return target == net.ErrClosed
}

// Error codes carried by RemoteError that nq itself produces. Application codes should avoid
// the range -1000 < code <= -900, which nq reserves.
const (
	// CodeUnhandled: the handler returned an error that was not a *RemoteError.
	CodeUnhandled int64 = -900
	// CodeNoHandler: the stream's protocol has no request handler.
	CodeNoHandler int64 = -901
	// CodeShuttingDown: the server refused the call because it is draining.
	CodeShuttingDown int64 = -902
)

// RemoteError is an error answer from the peer's handler (Request.Fail). Code, Message and
// Data travel intact.
type RemoteError struct {
	Code    int64
	Message string
	Data    []byte
}

// Error implements error.
func (e *RemoteError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("nq: remote error %d", e.Code)
	}
	return fmt.Sprintf("nq: remote error %d: %s", e.Code, e.Message)
}

// Is reports whether the remote error stands for one of nq's sentinels (a call refused by a
// draining server matches ErrServerShutdown).
func (e *RemoteError) Is(target error) bool {
	return target == ErrServerShutdown && e.Code == CodeShuttingDown
}

// CloseError says why a connection ended. It is what the close hooks receive. A close caused by
// the local application (Close) matches ErrClosed; every other close (a Reset included) matches
// ErrConnLost and, when the cause is known, one of ErrServerShutdown (the server drained and
// closed), ErrRejected (the server's open hook or MaxConns refused the connection) or ErrResolve
// (the host name did not resolve). A server closed or shut down in the instant between a
// client's handshake and the server's accepting it refuses it with QUIC's CONNECTION_REFUSED:
// that client sees a plain ErrConnLost.
type CloseError struct {
	// Remote is true when the peer closed the connection.
	Remote bool
	// Code is the application close code when the connection was closed by an application
	// (either end), 0 otherwise.
	Code uint64
	// Reason is the close reason text sent by the closing application, if any.
	Reason string
	// Err is the underlying error (from quic-go, the resolver or the dialer), if any.
	Err error

	kind error
}

// Error implements error.
func (e *CloseError) Error() string {
	who := "local"
	if e.Remote {
		who = "remote"
	}
	msg := fmt.Sprintf("nq: connection closed (%s", who)
	if e.Code != 0 {
		msg += fmt.Sprintf(", code %d", e.Code)
	}
	if e.Reason != "" {
		msg += ", " + e.Reason
	}
	msg += ")"
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is matches the sentinel that classifies the close.
func (e *CloseError) Is(target error) bool {
	if e.kind == ErrClosed {
		return target == ErrClosed || target == net.ErrClosed
	}
	return target == ErrConnLost || (e.kind != nil && target == e.kind)
}

// Unwrap returns the underlying error.
func (e *CloseError) Unwrap() error { return e.Err }

// ctxErrOf returns ctx's error, ErrTimeout (which also matches context.DeadlineExceeded) in
// place of a passed deadline.
func ctxErrOf(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return err
}
