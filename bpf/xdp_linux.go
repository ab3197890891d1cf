package bpf

import (
	"encoding/binary"

	"github.com/cilium/ebpf/asm"
)

// Names of the program and its maps, as bpftool shows them (at most 15 bytes).
const (
	programName = "nq_xdp_redirect"
	xsksName    = "nq_xsks"
	countName   = "nq_counters"
)

// reason indexes the per-CPU counter array. Every frame is counted under exactly one reason other
// than reasonNoSocket, which is counted in addition to a redirect reason.
type reason uint32

const (
	reasonRedirectV4 reason = iota
	reasonRedirectV6
	reasonNoSocket
	reasonNotIP
	reasonVLAN
	reasonNotUDP
	reasonOtherPort
	reasonFragment
	reasonIPv6Ext
	reasonMalformed
	numReasons
)

// field returns the Counters field that counts r.
func (c *Counters) field(r reason) *uint64 {
	switch r {
	case reasonRedirectV4:
		return &c.RedirectV4
	case reasonRedirectV6:
		return &c.RedirectV6
	case reasonNoSocket:
		return &c.NoSocket
	case reasonNotIP:
		return &c.PassNotIP
	case reasonVLAN:
		return &c.PassVLAN
	case reasonNotUDP:
		return &c.PassNotUDP
	case reasonOtherPort:
		return &c.PassOtherPort
	case reasonFragment:
		return &c.PassFragment
	case reasonIPv6Ext:
		return &c.PassIPv6Ext
	default:
		return &c.PassMalformed
	}
}

// XDP actions (enum xdp_action).
const (
	xdpPass     = 2
	xdpRedirect = 4
)

// Offsets of struct xdp_md fields.
const (
	mdData         = 0
	mdDataEnd      = 4
	mdRxQueueIndex = 16
)

// Frame layout.
const (
	ethLen    = 14 // destination MAC, source MAC, EtherType
	ethType   = 12
	ipv4Min   = 20
	ipv6Len   = 40
	udpLen    = 8
	udpDport  = 2
	udpLength = 4

	ipv4VerIHL   = ethLen + 0
	ipv4TotLen   = ethLen + 2
	ipv4FragOff  = ethLen + 6
	ipv4Protocol = ethLen + 9

	ipv6VerTC   = ethLen + 0
	ipv6PayLen  = ethLen + 4
	ipv6NextHdr = ethLen + 6
	ipv6UDP     = ethLen + ipv6Len
)

// Protocol numbers.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
	protoUDP      = 17
	protoFragment = 44
	ipv4FragMask  = 0x3fff // MF flag and fragment offset
)

// counterKeySlot is the stack offset of the counter map key.
const counterKeySlot = -4

// ipv6ExtHeaders are the next-header values of IPv6 extension headers other than Fragment
// (RFC 8200, RFC 7045): hop-by-hop, routing, destination options, AH, mobility, HIP, shim6.
var ipv6ExtHeaders = []int32{0, 43, 60, 51, 135, 139, 140}

// wire16 returns the value a 16-bit load yields for the network-order (big-endian) value v on
// this host, so loaded header fields are compared without a byte swap.
func wire16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// Labels.
const (
	lblIPv4       = "ipv4"
	lblIPv6       = "ipv6"
	lblUDP6       = "udp6"
	lblRedirectV4 = "redirect_v4"
	lblRedirectV6 = "redirect_v6"
	lblRedirect   = "redirect"
	lblMalformed  = "malformed"
	lblNotIP      = "not_ip"
	lblVLAN       = "vlan"
	lblNotUDP     = "not_udp"
	lblOtherPort  = "other_port"
	lblFragment   = "fragment"
	lblIPv6Ext    = "ipv6_ext"
	lblPass       = "pass"
	lblCount      = "count"
	lblCounted    = "counted"
	lblNoSockDone = "no_socket_counted"
)

// instructions assembles the XDP program matching ports. The program refers to its maps by the
// names xsksName and countName.
//
// Registers: R6 holds the context, R7 the packet start (later the action to return), R8 the
// packet end, R9 the counter reason.
func instructions(ports []uint16) asm.Instructions {
	var p asm.Instructions
	add := func(ins ...asm.Instruction) { p = append(p, ins...) }

	// Ethernet.
	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R8, asm.R6, mdDataEnd, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, ethLen),
		asm.JGT.Reg(asm.R1, asm.R8, lblMalformed),
		asm.LoadMem(asm.R2, asm.R7, ethType, asm.Half),
		asm.JEq.Imm(asm.R2, wire16(etherTypeIPv4), lblIPv4),
		asm.JEq.Imm(asm.R2, wire16(etherTypeIPv6), lblIPv6),
		asm.JEq.Imm(asm.R2, wire16(etherTypeVLAN), lblVLAN),
		asm.JEq.Imm(asm.R2, wire16(etherTypeQinQ), lblVLAN),
		asm.Ja.Label(lblNotIP),
	)

	// IPv4: a full minimal header, version 4, IHL >= 5, IHL*4 <= total length <= frame.
	add(
		asm.Mov.Reg(asm.R1, asm.R7).WithSymbol(lblIPv4),
		asm.Add.Imm(asm.R1, ethLen+ipv4Min),
		asm.JGT.Reg(asm.R1, asm.R8, lblMalformed),
		asm.LoadMem(asm.R2, asm.R7, ipv4VerIHL, asm.Byte),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 4),
		asm.JNE.Imm(asm.R3, 4, lblMalformed),
		asm.And.Imm(asm.R2, 0x0f),
		asm.JLT.Imm(asm.R2, ipv4Min/4, lblMalformed),
		asm.LSh.Imm(asm.R2, 2), // R2: header length in bytes, 20..60
		asm.LoadMem(asm.R3, asm.R7, ipv4TotLen, asm.Half),
		asm.HostTo(asm.BE, asm.R3, asm.Half), // R3: total length
		asm.JLT.Reg(asm.R3, asm.R2, lblMalformed),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, ethLen),
		asm.Add.Reg(asm.R1, asm.R3),
		asm.JGT.Reg(asm.R1, asm.R8, lblMalformed),
		asm.LoadMem(asm.R4, asm.R7, ipv4Protocol, asm.Byte),
		asm.JNE.Imm(asm.R4, protoUDP, lblNotUDP),
		asm.LoadMem(asm.R4, asm.R7, ipv4FragOff, asm.Half),
		asm.JSet.Imm(asm.R4, wire16(ipv4FragMask), lblFragment),
		// UDP at R7 + 14 + IHL*4, with 8 <= UDP length <= total length - IHL*4.
		asm.Sub.Reg(asm.R3, asm.R2), // R3: IP payload length
		asm.JLT.Imm(asm.R3, udpLen, lblMalformed),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, ethLen),
		asm.Add.Reg(asm.R1, asm.R2),
		asm.Mov.Reg(asm.R4, asm.R1),
		asm.Add.Imm(asm.R4, udpLen),
		asm.JGT.Reg(asm.R4, asm.R8, lblMalformed),
		asm.LoadMem(asm.R4, asm.R1, udpLength, asm.Half),
		asm.HostTo(asm.BE, asm.R4, asm.Half),
		asm.JLT.Imm(asm.R4, udpLen, lblMalformed),
		asm.JGT.Reg(asm.R4, asm.R3, lblMalformed),
		asm.LoadMem(asm.R4, asm.R1, udpDport, asm.Half),
	)
	for _, port := range ports {
		add(asm.JEq.Imm(asm.R4, wire16(port), lblRedirectV4))
	}
	add(asm.Ja.Label(lblOtherPort))

	// IPv6: a full fixed header, version 6, payload length within the frame.
	add(
		asm.Mov.Reg(asm.R1, asm.R7).WithSymbol(lblIPv6),
		asm.Add.Imm(asm.R1, ethLen+ipv6Len),
		asm.JGT.Reg(asm.R1, asm.R8, lblMalformed),
		asm.LoadMem(asm.R2, asm.R7, ipv6VerTC, asm.Byte),
		asm.RSh.Imm(asm.R2, 4),
		asm.JNE.Imm(asm.R2, 6, lblMalformed),
		asm.LoadMem(asm.R3, asm.R7, ipv6PayLen, asm.Half),
		asm.HostTo(asm.BE, asm.R3, asm.Half), // R3: payload length
		asm.Add.Reg(asm.R1, asm.R3),
		asm.JGT.Reg(asm.R1, asm.R8, lblMalformed),
		asm.LoadMem(asm.R2, asm.R7, ipv6NextHdr, asm.Byte),
		asm.JEq.Imm(asm.R2, protoUDP, lblUDP6),
		asm.JEq.Imm(asm.R2, protoFragment, lblFragment),
	)
	for _, h := range ipv6ExtHeaders {
		add(asm.JEq.Imm(asm.R2, h, lblIPv6Ext))
	}
	add(
		asm.Ja.Label(lblNotUDP),
		// UDP right after the fixed header, with 8 <= UDP length <= payload length.
		asm.JLT.Imm(asm.R3, udpLen, lblMalformed).WithSymbol(lblUDP6),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, ipv6UDP+udpLen),
		asm.JGT.Reg(asm.R1, asm.R8, lblMalformed),
		asm.LoadMem(asm.R4, asm.R7, ipv6UDP+udpLength, asm.Half),
		asm.HostTo(asm.BE, asm.R4, asm.Half),
		asm.JLT.Imm(asm.R4, udpLen, lblMalformed),
		asm.JGT.Reg(asm.R4, asm.R3, lblMalformed),
		asm.LoadMem(asm.R4, asm.R7, ipv6UDP+udpDport, asm.Half),
	)
	for _, port := range ports {
		add(asm.JEq.Imm(asm.R4, wire16(port), lblRedirectV6))
	}
	add(asm.Ja.Label(lblOtherPort))

	// Redirect to xsks[rx_queue_index], XDP_PASS when that slot is empty.
	add(
		asm.Mov.Imm(asm.R9, int32(reasonRedirectV4)).WithSymbol(lblRedirectV4),
		asm.Ja.Label(lblRedirect),
		asm.Mov.Imm(asm.R9, int32(reasonRedirectV6)).WithSymbol(lblRedirectV6),
		asm.LoadMapPtr(asm.R1, 0).WithReference(xsksName).WithSymbol(lblRedirect),
		asm.LoadMem(asm.R2, asm.R6, mdRxQueueIndex, asm.Word),
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Mov.Imm(asm.R7, xdpRedirect),
		asm.JEq.Imm(asm.R0, xdpRedirect, lblCount),
		asm.Mov.Imm(asm.R7, xdpPass),
		asm.StoreImm(asm.RFP, counterKeySlot, int64(reasonNoSocket), asm.Word),
	)
	add(increment(lblNoSockDone)...)
	add(asm.Ja.Label(lblCount).WithSymbol(lblNoSockDone))

	// Pass reasons; the last one falls through to lblPass.
	passReasons := []struct {
		label  string
		reason reason
	}{
		{lblMalformed, reasonMalformed},
		{lblNotIP, reasonNotIP},
		{lblVLAN, reasonVLAN},
		{lblNotUDP, reasonNotUDP},
		{lblOtherPort, reasonOtherPort},
		{lblFragment, reasonFragment},
		{lblIPv6Ext, reasonIPv6Ext},
	}
	for i, r := range passReasons {
		add(asm.Mov.Imm(asm.R9, int32(r.reason)).WithSymbol(r.label))
		if i < len(passReasons)-1 {
			add(asm.Ja.Label(lblPass))
		}
	}

	// Count R9 and return R7.
	add(
		asm.Mov.Imm(asm.R7, xdpPass).WithSymbol(lblPass),
		asm.StoreMem(asm.RFP, counterKeySlot, asm.R9, asm.Word).WithSymbol(lblCount),
	)
	add(increment(lblCounted)...)
	add(
		asm.Mov.Reg(asm.R0, asm.R7).WithSymbol(lblCounted),
		asm.Return(),
	)
	return p
}

// increment adds one to the per-CPU counter whose key is on the stack at counterKeySlot, then
// continues at the instruction labelled next, which must follow immediately.
func increment(next string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, counterKeySlot),
		asm.LoadMapPtr(asm.R1, 0).WithReference(countName),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, next),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	}
}
