package quic

import (
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Game-tuned defaults shared by ServerConfig and ClientConfig.
const (
	// gameIdleTimeout is how long a connection may hear nothing before it is declared dead. quic-go
	// takes the smaller of the two peers' values, at nanosecond precision (no whole seconds). 5.5 s
	// spans three missed client keep-alives plus an RTT of jitter: a vanished player is noticed in
	// seconds (the game can free the slot, the client reconnects), while a short mobile dropout
	// (a tunnel, a Wi-Fi/cellular hand-over) is bridged. quic-go's default is 30 s.
	gameIdleTimeout = 5500 * time.Millisecond
	// gameHandshakeTimeout bounds a handshake with no packet from the peer (twice this in total).
	// 3 s instead of 5 s: a client fails over and retries sooner, and a server holds half-open
	// handshakes (floods, lost clients) for less time.
	gameHandshakeTimeout = 3 * time.Second
)

// ServerConfig returns a quic-go configuration for a game server carrying thousands of mostly
// small, latency-sensitive connections on few cores. Each call returns a new Config the caller
// may change. The choices:
//
//   - MaxIdleTimeout 5.5 s: dead peers are found in seconds (see the client's KeepAlivePeriod).
//   - KeepAlivePeriod 0: the server sends no keep-alives of its own; clients send them. With 10 000
//     connections this saves 10 000 timers and thousands of packets per second, and the client side
//     is the one behind a NAT whose mapping must be kept warm.
//   - HandshakeIdleTimeout 3 s: half-open handshakes are dropped quickly.
//   - Windows: a stream starts at 64 KiB and may grow to 1 MiB (naquid's largest frame by
//     default), a connection at 128 KiB up to 2 MiB. Windows cost nothing until data is buffered,
//     but the maximum is what a client that the game stops reading can pin: 10 000 x 2 MiB bounds
//     it to 20 GiB in theory, against quic-go's 15 MiB per connection (150 GiB). Game uplinks
//     (inputs, RPCs) are small; bulk uploads are rare and still reach ~2 MiB per RTT.
//   - MaxIncomingStreams 64, MaxIncomingUniStreams 16: naquid opens a few long-lived named streams
//     per connection, not a stream per request; lower limits cap what a misbehaving client makes the
//     server allocate, and 64 leaves room for bursts of short raw streams.
//   - EnableDatagrams: RFC 9221 datagrams for state snapshots and other unreliable traffic.
//   - Allow0RTT false: 0-RTT data can be replayed, and game requests (buy, trade, move) are rarely
//     idempotent. Turn it on per server only for idempotent first requests.
//   - Path MTU discovery stays on (the default): larger packets mean fewer per-packet costs.
func ServerConfig() *quicgo.Config {
	return &quicgo.Config{
		HandshakeIdleTimeout:           gameHandshakeTimeout,
		MaxIdleTimeout:                 gameIdleTimeout,
		KeepAlivePeriod:                0,
		InitialStreamReceiveWindow:     64 << 10,
		MaxStreamReceiveWindow:         1 << 20,
		InitialConnectionReceiveWindow: 128 << 10,
		MaxConnectionReceiveWindow:     2 << 20,
		MaxIncomingStreams:             64,
		MaxIncomingUniStreams:          16,
		EnableDatagrams:                true,
		Allow0RTT:                      false,
	}
}

// ClientConfig returns a quic-go configuration for a game client: one or a few connections per
// process, on networks that may be lossy and behind NATs. Each call returns a new Config the
// caller may change. The choices:
//
//   - MaxIdleTimeout 5.5 s, as the server.
//   - KeepAlivePeriod 1.5 s: the client keeps its NAT mapping and the idle timer fresh. Three
//     keep-alives fit in the idle timeout, so one or two lost ones do not end the connection. Cost:
//     one small packet (and an ACK) per 1.5 s per player.
//   - HandshakeIdleTimeout 3 s: a dead server or path is reported (and retried) quickly.
//   - Windows: a stream starts at 256 KiB and may grow to 4 MiB, a connection at 512 KiB up to
//     8 MiB: downloads (asset bundles, world state) arrive at full speed, and a client has the
//     memory for it.
//   - MaxIncomingStreams 16, MaxIncomingUniStreams 16: servers open few streams towards a client.
//   - EnableDatagrams: RFC 9221 datagrams, as the server.
//   - TokenStore: an LRU store of address-validation tokens (4 servers, 4 tokens each), so a
//     reconnect to a server that validates addresses skips the Retry round trip.
//   - Path MTU discovery stays on (the default).
func ClientConfig() *quicgo.Config {
	return &quicgo.Config{
		HandshakeIdleTimeout:           gameHandshakeTimeout,
		MaxIdleTimeout:                 gameIdleTimeout,
		KeepAlivePeriod:                1500 * time.Millisecond,
		InitialStreamReceiveWindow:     256 << 10,
		MaxStreamReceiveWindow:         4 << 20,
		InitialConnectionReceiveWindow: 512 << 10,
		MaxConnectionReceiveWindow:     8 << 20,
		MaxIncomingStreams:             16,
		MaxIncomingUniStreams:          16,
		EnableDatagrams:                true,
		TokenStore:                     quicgo.NewLRUTokenStore(4, 4),
	}
}
