// Package quic adapts naquid transports to quic-go and holds game-tuned quic-go configurations.
//
// quic-go reads and writes UDP datagrams through a net.PacketConn. [PacketConn] turns any
// transport.Conn into one: a kernel UDP backend (transport.KernelUDP) is handed to quic-go as its
// own *net.UDPConn, so quic-go's recvmmsg, GSO and ECN code runs untouched; every other backend is
// wrapped in an adapter that quic-go recognises as an OOB-capable, batch-reading socket, so quic-go
// keeps batched reads, GSO (the backend splits segments it cannot offload), ECN and path MTU
// discovery on every backend.
//
// [ServerConfig] and [ClientConfig] return quic-go configurations tuned for real-time games: many
// small connections per process, fast detection of vanished players, datagrams on.
//
// quic-go is imported as quicgo wherever this package is also in scope:
//
//	import (
//		quicgo "github.com/quic-go/quic-go"
//		"github.com/naquid/naquid/quic"
//	)
package quic

// ALPN is the TLS application-layer protocol name naquid peers negotiate ("nq/1"). Put it in
// tls.Config.NextProtos on both ends; a peer that offers anything else fails the handshake.
const ALPN = "nq/1"
