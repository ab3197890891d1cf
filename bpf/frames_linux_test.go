package bpf

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// Addresses of the crafted frames (TEST-NET-2 and the IPv6 documentation prefix).
var (
	macSrc = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	macDst = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	ip4Src = net.IP{198, 51, 100, 2}
	ip4Dst = net.IP{198, 51, 100, 1}
	ip6Src = net.ParseIP("2001:db8::2")
	ip6Dst = net.ParseIP("2001:db8::1")
)

// Ports of the test programs.
const (
	portA     = 4433
	portB     = 27015
	portOther = 53
)

// serialize builds a frame from layers, fixing lengths and checksums.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macSrc, DstMAC: macDst, EthernetType: typ}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: ip4Src, DstIP: ip4Dst}
}

func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: ip6Src, DstIP: ip6Dst}
}

func udp(t testing.TB, dport uint16, nl gopacket.NetworkLayer) *layers.UDP {
	t.Helper()
	u := &layers.UDP{SrcPort: 50000, DstPort: layers.UDPPort(dport)}
	if err := u.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatalf("udp checksum over %v: %v", nl.LayerType(), err)
	}
	return u
}

// udp4 is an Ethernet/IPv4/UDP frame to dport with a 32-byte payload; edit, if not nil, changes
// the IPv4 header before serialization.
func udp4(t testing.TB, dport uint16, edit func(*layers.IPv4)) []byte {
	ip := ip4(layers.IPProtocolUDP)
	if edit != nil {
		edit(ip)
	}
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, udp(t, dport, ip), gopacket.Payload(make([]byte, 32)))
}

// udp6 is an Ethernet/IPv6/UDP frame to dport with a 32-byte payload.
func udp6(t testing.TB, dport uint16) []byte {
	ip := ip6(layers.IPProtocolUDP)
	return serialize(t, eth(layers.EthernetTypeIPv6), ip, udp(t, dport, ip), gopacket.Payload(make([]byte, 32)))
}

// rawUDP is a UDP header to dport with a zero checksum followed by n payload bytes.
func rawUDP(dport uint16, n int) []byte {
	b := make([]byte, udpLen+n)
	binary.BigEndian.PutUint16(b[0:], 50000)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	return b
}

// patch returns a copy of b with the bytes at off replaced by v.
func patch(b []byte, off int, v ...byte) []byte {
	c := append([]byte(nil), b...)
	copy(c[off:], v)
	return c
}

// patch16 returns a copy of b with the big-endian 16-bit field at off set to v.
func patch16(b []byte, off int, v uint16) []byte {
	return patch(b, off, byte(v>>8), byte(v))
}

// frameCase is one frame and the counters it must move.
type frameCase struct {
	name  string
	frame []byte
	want  Counters
}

var (
	wantRedirectV4 = Counters{RedirectV4: 1, NoSocket: 1}
	wantRedirectV6 = Counters{RedirectV6: 1, NoSocket: 1}
	wantNotIP      = Counters{PassNotIP: 1}
	wantVLAN       = Counters{PassVLAN: 1}
	wantNotUDP     = Counters{PassNotUDP: 1}
	wantOtherPort  = Counters{PassOtherPort: 1}
	wantFragment   = Counters{PassFragment: 1}
	wantIPv6Ext    = Counters{PassIPv6Ext: 1}
	wantMalformed  = Counters{PassMalformed: 1}
)

// frameCases is the table shared by the unit test, the fuzz seeds and the benchmarks, for a
// program loaded with ports portA and portB and no socket in the XSKMAP.
func frameCases(t testing.TB) []frameCase {
	v4 := udp4(t, portA, nil)
	v6 := udp6(t, portA)
	const ipOff, udp4Off, udp6Off = ethLen, ethLen + ipv4Min, ethLen + ipv6Len

	ipOpt := ip4(layers.IPProtocolUDP)
	ipOpt.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
	withOptions := serialize(t, eth(layers.EthernetTypeIPv4), ipOpt, udp(t, portA, ipOpt), gopacket.Payload(make([]byte, 32)))

	// A 4-byte payload makes a 46-byte frame; Ethernet pads it to the 60-byte minimum.
	shortIP := ip4(layers.IPProtocolUDP)
	short := serialize(t, eth(layers.EthernetTypeIPv4), shortIP, udp(t, portA, shortIP), gopacket.Payload(make([]byte, 4)))
	padded := append(short, make([]byte, 60-len(short))...)

	srcIP := ip4(layers.IPProtocolUDP)
	srcUDP := udp(t, portOther, srcIP)
	srcUDP.SrcPort = portA
	srcOurs := serialize(t, eth(layers.EthernetTypeIPv4), srcIP, srcUDP, gopacket.Payload(make([]byte, 8)))

	tcp4, tcp6 := ip4(layers.IPProtocolTCP), ip6(layers.IPProtocolTCP)
	tcpTo4 := &layers.TCP{SrcPort: 50000, DstPort: portA, Window: 1, DataOffset: 5}
	tcpTo6 := &layers.TCP{SrcPort: 50000, DstPort: portA, Window: 1, DataOffset: 5}
	if err := errors.Join(tcpTo4.SetNetworkLayerForChecksum(tcp4), tcpTo6.SetNetworkLayerForChecksum(tcp6)); err != nil {
		t.Fatal(err)
	}
	icmp4 := ip4(layers.IPProtocolICMPv4)
	icmp6 := ip6(layers.IPProtocolICMPv6)
	ns := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	if err := ns.SetNetworkLayerForChecksum(icmp6); err != nil {
		t.Fatal(err)
	}
	arp := &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: macSrc, SourceProtAddress: ip4Src,
		DstHwAddress: make([]byte, 6), DstProtAddress: ip4Dst,
	}
	vlanIP := ip4(layers.IPProtocolUDP)
	vlan := serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
		vlanIP, udp(t, portA, vlanIP), gopacket.Payload(make([]byte, 8)))
	qinqIP := ip4(layers.IPProtocolUDP)
	qinq := serialize(t, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 8, Type: layers.EthernetTypeIPv4}, qinqIP, udp(t, portA, qinqIP), gopacket.Payload(make([]byte, 8)))

	// IPv6 Fragment header (first fragment, M set) carrying UDP to portA.
	frag6Hdr := []byte{byte(layers.IPProtocolUDP), 0, 0, 1, 0, 0, 0, 42}
	frag6 := serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Fragment), gopacket.Payload(append(frag6Hdr, rawUDP(portA, 16)...)))
	// Hop-by-hop options header (PadN) carrying UDP to portA.
	hbhHdr := []byte{byte(layers.IPProtocolUDP), 0, 1, 4, 0, 0, 0, 0}
	hbh := serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop), gopacket.Payload(append(hbhHdr, rawUDP(portA, 16)...)))
	esp6 := serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolESP), gopacket.Payload(make([]byte, 24)))

	// An IPv4 header (total length 24) followed by only half a UDP header.
	truncUDP4 := patch16(v4[:udp4Off+4], ipOff+2, ipv4Min+4)
	// An IPv6 header (payload length 4) followed by only half a UDP header.
	truncUDP6 := patch16(v6[:udp6Off+4], ipOff+4, 4)

	return []frameCase{
		{"ipv4 udp to port A", v4, wantRedirectV4},
		{"ipv4 udp to port B", udp4(t, portB, nil), wantRedirectV4},
		{"ipv4 udp DF set", udp4(t, portA, func(ip *layers.IPv4) { ip.Flags = layers.IPv4DontFragment }), wantRedirectV4},
		{"ipv4 udp with options", withOptions, wantRedirectV4},
		{"ipv4 udp with ethernet padding", padded, wantRedirectV4},
		{"ipv6 udp to port A", v6, wantRedirectV6},
		{"ipv6 udp to port B", udp6(t, portB), wantRedirectV6},
		{"ipv4 udp other port", udp4(t, portOther, nil), wantOtherPort},
		{"ipv4 udp from our port to another", srcOurs, wantOtherPort},
		{"ipv6 udp other port", udp6(t, portOther), wantOtherPort},
		{"ipv4 tcp to port", serialize(t, eth(layers.EthernetTypeIPv4), tcp4, tcpTo4), wantNotUDP},
		{"ipv6 tcp to port", serialize(t, eth(layers.EthernetTypeIPv6), tcp6, tcpTo6), wantNotUDP},
		{"icmpv4 echo", serialize(t, eth(layers.EthernetTypeIPv4), icmp4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}), wantNotUDP},
		{"icmpv6 neighbour solicitation", serialize(t, eth(layers.EthernetTypeIPv6), icmp6, ns, &layers.ICMPv6NeighborSolicitation{TargetAddress: ip6Dst}), wantNotUDP},
		{"ipv6 esp", esp6, wantNotUDP},
		{"arp request", serialize(t, eth(layers.EthernetTypeARP), arp), wantNotIP},
		{"lldp", serialize(t, eth(layers.EthernetTypeLinkLayerDiscovery), gopacket.Payload(make([]byte, 46))), wantNotIP},
		{"vlan tagged udp to port", vlan, wantVLAN},
		{"qinq tagged udp to port", qinq, wantVLAN},
		{"ipv4 first fragment (MF)", udp4(t, portA, func(ip *layers.IPv4) { ip.Flags = layers.IPv4MoreFragments }), wantFragment},
		{"ipv4 last fragment (offset)", udp4(t, portA, func(ip *layers.IPv4) { ip.FragOffset = 185 }), wantFragment},
		{"ipv4 fragment offset high bits", udp4(t, portA, func(ip *layers.IPv4) { ip.FragOffset = 0x1000 }), wantFragment},
		{"ipv6 fragment header", frag6, wantFragment},
		{"ipv6 hop-by-hop header", hbh, wantIPv6Ext},
		{"empty frame", nil, wantMalformed},
		{"truncated ethernet", v4[:10], wantMalformed},
		{"ethernet header only", v4[:ethLen], wantMalformed},
		{"truncated ipv4 header", v4[:ipOff+10], wantMalformed},
		{"ipv4 IHL 4", patch(v4, ipOff, 0x44), wantMalformed},
		{"ipv4 IHL 0", patch(v4, ipOff, 0x40), wantMalformed},
		{"ipv4 version 6", patch(v4, ipOff, 0x65), wantMalformed},
		{"ipv4 options past the frame", patch(v4[:udp4Off+4], ipOff, 0x4f), wantMalformed},
		{"ipv4 total length beyond frame", patch16(v4, ipOff+2, uint16(len(v4)-ethLen+1)), wantMalformed},
		{"ipv4 total length below header", patch16(v4, ipOff+2, ipv4Min-1), wantMalformed},
		{"ipv4 total length without udp header", patch16(v4, ipOff+2, ipv4Min+4), wantMalformed},
		{"ipv4 truncated udp header", truncUDP4, wantMalformed},
		{"ipv4 udp length 7", patch16(v4, udp4Off+udpLength, 7), wantMalformed},
		{"ipv4 udp length beyond ip", patch16(v4, udp4Off+udpLength, uint16(len(v4)-udp4Off+1)), wantMalformed},
		{"truncated ipv6 header", v6[:ipOff+39], wantMalformed},
		{"ipv6 version 4", patch(v6, ipOff, 0x40), wantMalformed},
		{"ipv6 payload length beyond frame", patch16(v6, ipOff+4, uint16(len(v6)-udp6Off+1)), wantMalformed},
		{"ipv6 truncated udp header", truncUDP6, wantMalformed},
		{"ipv6 udp length 0", patch16(v6, udp6Off+udpLength, 0), wantMalformed},
		{"ipv6 udp length beyond payload", patch16(v6, udp6Off+udpLength, uint16(len(v6)-udp6Off+1)), wantMalformed},
	}
}

// xdpMD mirrors struct xdp_md, the context of an XDP program run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// run runs prog once on frame (BPF_PROG_TEST_RUN), as received on an RX queue of the device
// ifindex, which must then exist in the calling thread's network namespace, or on no particular
// device when ifindex is 0 (queue must then be 0).
func run(prog *ebpf.Program, frame []byte, ifindex, queue int) (uint32, error) {
	return prog.Run(&ebpf.RunOptions{
		Data:    frame,
		Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex), RxQueueIndex: uint32(queue)},
	})
}

// refusedShort reports whether err is the kernel refusing to run a frame shorter than an
// Ethernet header: BPF_PROG_TEST_RUN requires 14 bytes (EINVAL otherwise), as real drivers never
// deliver shorter frames. The program still checks, since the verifier insists.
func refusedShort(frame []byte, err error) bool {
	return len(frame) < ethLen && errors.Is(err, unix.EINVAL)
}

// load loads a program for cfg, closed by t.Cleanup. It skips the test only when the kernel
// lacks BPF.
func load(t testing.TB, cfg Config) *Program {
	t.Helper()
	p, err := Load(cfg)
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel without BPF support for XDP programs: %v", err)
	}
	if err != nil {
		t.Fatalf("Load(%+v): %+v", cfg, err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// counters reads p's counters or fails the test.
func counters(t testing.TB, p *Program) Counters {
	t.Helper()
	c, err := p.Counters()
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	return c
}
