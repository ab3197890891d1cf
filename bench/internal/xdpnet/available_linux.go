package xdpnet

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/internal/netns"
)

// Available reports whether this process can run nq over AF_XDP in namespaces it creates: it
// needs the privileges to create network namespaces (root, or CAP_NET_ADMIN and CAP_SYS_ADMIN),
// iproute2's `ip`, and a kernel with AF_XDP sockets that lets it open one (CAP_NET_RAW). The
// error, when not nil, matches ErrUnavailable and says what is missing.
func Available() error {
	if err := netns.Available(); err != nil {
		return fmt.Errorf("%w (nqbench needs root to build its veth pair): %w", ErrUnavailable, err)
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	switch {
	case err == nil:
		_ = unix.Close(fd)
		return nil
	case errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("%w: the kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS): %v", ErrUnavailable, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: not permitted to open an AF_XDP socket (run as root, or with CAP_NET_RAW, CAP_NET_ADMIN and CAP_BPF): %v", ErrUnavailable, err)
	}
	return fmt.Errorf("%w: open an AF_XDP socket: %v", ErrUnavailable, err)
}
