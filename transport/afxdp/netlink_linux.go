package afxdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// netlink is a NETLINK_ROUTE socket for route and neighbour queries. It belongs to the network
// namespace it was opened in, so queries keep going there whichever thread makes them. It is
// used by one goroutine at a time (the combiner's leader).
type netlink struct {
	fd  int
	seq uint32
	buf []byte
}

// netlinkTimeout bounds the wait for the kernel's answer (which comes at once).
const netlinkTimeout = 2 * time.Second

func openNetlink() (*netlink, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	tv := unix.NsecToTimeval(int64(netlinkTimeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &netlink{fd: fd, buf: make([]byte, 16<<10)}, nil
}

func (n *netlink) close() error { return unix.Close(n.fd) }

// routeInfo is the kernel's answer to "how would a datagram to dst leave?".
type routeInfo struct {
	unicast bool       // a unicast route (not local, broadcast, multicast, unreachable, ...)
	oif     int        // output interface index
	gateway netip.Addr // next hop, when not on-link
	src     netip.Addr // preferred source address
}

// route asks the kernel's routing table for dst (RTM_GETROUTE).
func (n *netlink) route(dst netip.Addr, ifindex int) (routeInfo, error) {
	var ri routeInfo
	family, addrLen := familyOf(dst)
	req := n.header(unix.RTM_GETROUTE, unix.SizeofRtMsg)
	req[unix.SizeofNlMsghdr+0] = family            // rtm_family
	req[unix.SizeofNlMsghdr+1] = byte(addrLen * 8) // rtm_dst_len
	req = appendAttr(req, unix.RTA_DST, dst.AsSlice())
	if dst.Is6() && (dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast()) {
		var oif [4]byte
		binary.NativeEndian.PutUint32(oif[:], uint32(ifindex))
		req = appendAttr(req, unix.RTA_OIF, oif[:])
	}
	msgs, err := n.do(req)
	if err != nil {
		return ri, fmt.Errorf("route to %s: %w", dst, err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
			continue
		}
		ri.unicast = m.Data[7] == unix.RTN_UNICAST // rtm_type
		forEachAttr(m.Data[unix.SizeofRtMsg:], func(typ uint16, v []byte) {
			switch typ {
			case unix.RTA_OIF:
				if len(v) >= 4 {
					ri.oif = int(binary.NativeEndian.Uint32(v))
				}
			case unix.RTA_GATEWAY:
				if ip, ok := netip.AddrFromSlice(v); ok {
					ri.gateway = ip
				}
			case unix.RTA_PREFSRC:
				if ip, ok := netip.AddrFromSlice(v); ok {
					ri.src = ip
				}
			}
		})
		return ri, nil
	}
	return ri, fmt.Errorf("route to %s: no route in the answer", dst)
}

// neighbour asks the kernel's neighbour table for the link-layer address of ip on ifindex
// (RTM_GETNEIGH for one entry, Linux 5.0+). ok is false when there is no usable entry.
func (n *netlink) neighbour(ip netip.Addr, ifindex int) (mac [6]byte, ok bool, err error) {
	family, _ := familyOf(ip)
	req := n.header(unix.RTM_GETNEIGH, unix.SizeofNdMsg)
	req[unix.SizeofNlMsghdr] = family // ndm_family
	binary.NativeEndian.PutUint32(req[unix.SizeofNlMsghdr+4:], uint32(ifindex))
	req = appendAttr(req, unix.NDA_DST, ip.AsSlice())
	msgs, err := n.do(req)
	if errors.Is(err, unix.ENOENT) {
		return mac, false, nil
	}
	if err != nil {
		return mac, false, fmt.Errorf("neighbour %s: %w", ip, err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWNEIGH || len(m.Data) < unix.SizeofNdMsg {
			continue
		}
		state := binary.NativeEndian.Uint16(m.Data[8:10])
		const usable = unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE |
			unix.NUD_PERMANENT | unix.NUD_NOARP
		if state&usable == 0 {
			return mac, false, nil
		}
		forEachAttr(m.Data[unix.SizeofNdMsg:], func(typ uint16, v []byte) {
			if typ == unix.NDA_LLADDR && len(v) == 6 {
				mac, ok = [6]byte(v), true
			}
		})
		return mac, ok, nil
	}
	return mac, false, nil
}

// forEachAttr calls f with the type and value of each route attribute in b, stopping at the
// first malformed one.
func forEachAttr(b []byte, f func(typ uint16, value []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		f(binary.NativeEndian.Uint16(b[2:4])&^unix.NLA_F_NESTED, b[unix.SizeofRtAttr:l])
		next := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if next >= len(b) {
			return
		}
		b = b[next:]
	}
}

// header starts a request of the given type with a zeroed body of bodyLen bytes.
func (n *netlink) header(typ uint16, bodyLen int) []byte {
	n.seq++
	req := make([]byte, unix.SizeofNlMsghdr+bodyLen, unix.SizeofNlMsghdr+bodyLen+64)
	binary.NativeEndian.PutUint16(req[4:6], typ)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:12], n.seq)
	return req
}

// appendAttr appends a route attribute (padded to 4 bytes).
func appendAttr(req []byte, typ uint16, value []byte) []byte {
	l := unix.SizeofRtAttr + len(value)
	var h [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(h[0:2], uint16(l))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	req = append(req, h[:]...)
	req = append(req, value...)
	for len(req)%4 != 0 {
		req = append(req, 0)
	}
	return req
}

// do sends req (setting its length) and returns the messages of the answer with the same
// sequence number. An NLMSG_ERROR answer becomes its errno.
func (n *netlink) do(req []byte) ([]syscall.NetlinkMessage, error) {
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	if err := unix.Sendto(n.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	for range 16 { // skip stale answers to earlier requests that timed out
		nr, _, err := unix.Recvfrom(n.fd, n.buf, 0)
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(n.buf[:nr])
		if err != nil {
			return nil, fmt.Errorf("netlink parse: %w", err)
		}
		var out []syscall.NetlinkMessage
		for _, m := range msgs {
			if m.Header.Seq != n.seq {
				continue
			}
			if m.Header.Type == unix.NLMSG_ERROR {
				if len(m.Data) >= 4 {
					if errno := -int32(binary.NativeEndian.Uint32(m.Data[0:4])); errno != 0 {
						return nil, syscall.Errno(errno)
					}
				}
				continue
			}
			out = append(out, m)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, errors.New("netlink: no answer")
}

// familyOf returns the address family and length of ip.
func familyOf(ip netip.Addr) (byte, int) {
	if ip.Is4() {
		return unix.AF_INET, 4
	}
	return unix.AF_INET6, 16
}

// ethtoolChannels is struct ethtool_channels.
type ethtoolChannels struct {
	cmd           uint32
	maxRX         uint32
	maxTX         uint32
	maxOther      uint32
	maxCombined   uint32
	rxCount       uint32
	txCount       uint32
	otherCount    uint32
	combinedCount uint32
}

// ifreqData is struct ifreq with its ifr_data member.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte // rest of the union
}

// rxQueueCount returns the number of active RX queues of the interface (ETHTOOL_GCHANNELS: RX
// plus combined channels). Devices that do not report channels have one queue.
func rxQueueCount(ifname string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ch := ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&ch)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		if e == unix.EOPNOTSUPP {
			return 1, nil
		}
		return 0, e
	}
	if n := int(ch.rxCount + ch.combinedCount); n > 0 {
		return n, nil
	}
	return 1, nil
}
