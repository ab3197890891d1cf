// Package mmsg is a Linux UDP transport that moves datagrams in batches: recvmmsg reads up to
// Config.BatchSize datagrams per system call, and sendmmsg writes the datagrams of many
// concurrent writers (many QUIC connections) in one call, through a group-commit combiner
// (internal/batch).
//
// On top of batching it uses the kernel's UDP segmentation offloads where the kernel has them:
//
//   - GSO on send: consecutive datagrams to the same destination with the same size (the last one
//     may be shorter) travel as one UDP_SEGMENT message, up to 64 segments and 64 KiB, and a
//     Message that already carries SegmentSize goes out as one such message. When a GSO send
//     fails with EIO (a device that cannot checksum), GSO is turned off for the Conn, logged once
//     (see GSODisabledError), and the batch is sent again without it.
//   - GRO on receive (UDP_GRO, kernel 5.12 or newer): the kernel may hand over several datagrams
//     of one flow as one; ReadBatch splits them again, so callers always see single datagrams.
//     The kernel coalesces where the device's receive path runs GRO: a NIC driver's NAPI poll
//     (GRO is on by default there), a veth only with GRO turned on (ethtool -K dev gro on), and
//     GSO sends over loopback. It cuts the kernel's per-datagram receive work most: bench/pps
//     measures mmsg over a veth with GRO on at several times plain UDP's receive capacity.
//
// The environment variables NQ_DISABLE_GSO and NQ_DISABLE_GRO (any value strconv.ParseBool
// reads as true) turn the offloads off, like Config.DisableGSO and Config.DisableGRO.
//
// ReadBatch and WriteBatch wait through the Go netpoller, so read deadlines and Close wake them,
// and send back-pressure (EAGAIN, ENOBUFS) is waited out rather than returned. A steady stream
// of reads and writes allocates nothing per datagram. Conn also implements
// transport.ControlSocket (the socket itself, for quic-go's option probing) and transport.Stats.
//
// IPv6 link-local peers are not supported: addresses are read and written without their zone
// (scope id), so replies to an fe80:: peer fail; use transport/udp for those.
//
// On systems other than Linux, Listen fails with ErrUnsupported.
package mmsg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/naquid/naquid/transport"
)

// Defaults and limits of Config fields.
const (
	// DefaultBatchSize is the number of datagrams moved per system call when Config.BatchSize
	// is 0.
	DefaultBatchSize = 64
	// MaxBatchSize is the largest Config.BatchSize (the kernel's UIO_MAXIOV).
	MaxBatchSize = 1024
	// DefaultSocketBuffer is the receive and send buffer size asked for when
	// Config.ReadBuffer or Config.WriteBuffer is 0.
	DefaultSocketBuffer = 7 << 20
)

// ErrUnsupported is returned by Listen on systems without recvmmsg/sendmmsg.
var ErrUnsupported = errors.New("mmsg: recvmmsg/sendmmsg transport needs Linux")

// Config tunes a Conn. The zero value is ready to use.
type Config struct {
	// BatchSize is the largest number of datagrams read by one recvmmsg and of messages
	// combined into one flush of writes. Default DefaultBatchSize (64), at most MaxBatchSize.
	BatchSize int
	// ReadBuffer and WriteBuffer are the socket buffer sizes in bytes. Default
	// DefaultSocketBuffer (7 MiB). With CAP_NET_ADMIN the size is forced past the system
	// limits (SO_RCVBUFFORCE / SO_SNDBUFFORCE); otherwise the kernel caps it at
	// net.core.rmem_max / wmem_max. Under nq, quic-go raises a smaller size to 7 MiB when it
	// sets the socket up.
	ReadBuffer, WriteBuffer int
	// DisableGSO turns UDP segmentation offload off for sends: every datagram is its own
	// message in the sendmmsg batch. Default false (GSO used when the kernel has it).
	DisableGSO bool
	// DisableGRO turns UDP receive coalescing off. With GRO on (the default, on kernels 5.12
	// and newer), every read slot is 64 KiB, so a Conn holds BatchSize x 64 KiB of receive
	// buffers (4 MiB at the default batch size), and datagrams are copied into the caller's
	// buffers; with GRO off they are received into the caller's buffers directly.
	DisableGRO bool
	// Logger receives the one-time notice that GSO was turned off after an EIO. Default
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) validate() error {
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		return fmt.Errorf("mmsg: Config.BatchSize %d out of range 0..%d", c.BatchSize, MaxBatchSize)
	}
	if c.ReadBuffer < 0 {
		return fmt.Errorf("mmsg: Config.ReadBuffer %d is negative", c.ReadBuffer)
	}
	if c.WriteBuffer < 0 {
		return fmt.Errorf("mmsg: Config.WriteBuffer %d is negative", c.WriteBuffer)
	}
	return nil
}

// GSODisabledError reports that a send with UDP GSO failed with Err (EIO: the route's device
// cannot checksum segmented datagrams) and that the Conn turned GSO off and sent the datagrams
// again without it. Conn.GSODisabled returns it, and it is logged once; writes never return it.
// Capabilities still reports GSO afterwards (capabilities never change); segmented messages are
// then split into single datagrams before the kernel sees them.
type GSODisabledError struct {
	// Local is the Conn's local address.
	Local netip.AddrPort
	// Err is the error of the failed GSO send.
	Err error
}

// Error implements error.
func (e *GSODisabledError) Error() string {
	return fmt.Sprintf("mmsg: UDP GSO disabled on %s after a failed send: %v", e.Local, e.Err)
}

// Unwrap returns the error of the failed GSO send.
func (e *GSODisabledError) Unwrap() error { return e.Err }

// Factory returns a transport.Factory that opens Conns with cfg.
func Factory(cfg Config) transport.Factory {
	return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		c, err := Listen(ctx, local, cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// Compile-time checks that Conn provides the contract and its optional capabilities.
var (
	_ transport.Conn          = (*Conn)(nil)
	_ transport.ControlSocket = (*Conn)(nil)
	_ transport.Stats         = (*Conn)(nil)
)
