// Package nq is naquid's public API: encrypted QUIC connections (quic-go) carrying named stream
// protocols between game servers and clients that reconnect by themselves.
//
// A Mux maps protocol names to handlers: RPC (HandleRPC: request, reply and notify in both
// directions), typed records (HandleRecords with a Codec) and raw byte streams (HandleRaw). A
// Server accepts connections and serves the streams their peers open with its Mux; a Client
// dials Conns that survive reconnects (the close hook returns how long to wait before the next
// attempt, or NoReconnect). Either end opens streams of any protocol the other end's Mux knows.
//
// Calls are multiplexed on one long-lived QUIC stream per protocol and complete exactly once:
// with the reply, a *RemoteError, ErrTimeout, ErrConnLost, ErrClosed, ErrRejected, or the
// reset of a peer that bounds what it holds (ErrPeerNotReading, ErrTooManyRequests). RPC.Call
// blocks; RPC.Go calls back, for game loops. Frames produced while handling one received chunk
// leave together (Flush forces them out), and a lone call from an idle stream leaves at once. A
// Request is answered with Reply or Fail, from its handler or later from any goroutine. A peer
// that sends requests without reading the answers, or faster than a handler that answers later
// answers them (RPCHandler.MaxUnanswered), gets its requests held back, then its stream reset
// (ErrPeerNotReading, ErrTooManyRequests), so what waits for it stays bounded.
//
// The packet I/O under QUIC is a transport.Factory (Server.Transport, Client.Transport): kernel
// UDP by default, or transport/mmsg, transport/afxdp and transport/memconn. Every blocking call
// takes a context; errors match the sentinels of this package with errors.Is.
package nq
