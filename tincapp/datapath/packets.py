"""Header layouts, checksums and packet builders the router needs (tinc src/route.c,
ethernet.h, ipv4.h, ipv6.h).

Owns: named offsets and constants for Ethernet/802.1Q, ARP, IPv4, IPv6, ICMP, ICMPv6, NDP and
TCP; the Internet checksum (RFC 1071) and tinc's two incremental updates; builders for the
frames tinc generates (ICMP errors, ARP replies, neighbour advertisements, IPv4 fragments) and
the in-place rewrites it does (TTL decrement, MSS clamping).

Every function takes a whole internal frame (Ethernet header first, data-path.md 1) plus the
length of the link-layer header (`ethlen`: 14, or 18 with an 802.1Q tag) where it matters.
Parsers return None instead of raising: the data path drops, it never raises per packet.
No I/O, no state.
"""
from __future__ import annotations

from typing import Optional

# --- Ethernet (ethernet.h) -----------------------------------------------------------------
#
#   0      6      12   14 (18 with a VLAN tag: 12 = 0x8100, 14 = TCI, 16 = inner type)
#   | dst  | src  |type| payload
# tinc's frame and buffer sizes (net.h): the largest frame, and the packet buffer every
# datagram, probe and decompressed record must fit
MTU = 1518
MAXSIZE = 1673

ETH_ALEN = 6
ETH_HLEN = 14
VLAN_HLEN = 18
ETH_DST = 0
ETH_SRC = 6
ETH_TYPE = 12
VLAN_INNER_TYPE = 16

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100

# --- ARP over Ethernet for IPv4 (RFC 826), offsets from the start of the ARP header ---------
#
#   0    2    4   5   6    8      14    18     24    28
#   |hrd |pro |hln|pln| op | sha  | spa | tha  | tpa |
ARP_LEN = 28
ARP_HRD = 0
ARP_PRO = 2
ARP_HLN = 4
ARP_PLN = 5
ARP_OP = 6
ARP_SHA = 8
ARP_SPA = 14
ARP_THA = 18
ARP_TPA = 24
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

# --- IPv4 (RFC 791), offsets from the start of the IP header --------------------------------
#
#   0       1     2       4    6          8    9   10     12    16    20
#   |v/ihl  |tos  |len    |id  |flags/off |ttl |p  |sum   |src  |dst  |
IP_HLEN = 20
IP_VHL = 0
IP_TOS = 1
IP_LEN = 2
IP_ID = 4
IP_OFF = 6
IP_TTL = 8
IP_P = 9
IP_SUM = 10
IP_SRC = 12
IP_DST = 16
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFMASK = 0x1FFF
IP_MSS = 576            # the size every IPv4 host accepts; caps ICMP error messages

IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_ICMPV6 = 58

# --- ICMP (RFC 792): type, code, checksum, then 4 bytes (frag-needed: 2 unused + next MTU) ---
ICMP_HLEN = 8
ICMP_NEXTMTU = 6
ICMP_DEST_UNREACH = 3
ICMP_TIME_EXCEEDED = 11
ICMP_NET_UNREACH = 0
ICMP_FRAG_NEEDED = 4
ICMP_NET_UNKNOWN = 6
ICMP_NET_ANO = 9
ICMP_EXC_TTL = 0

# --- IPv6 (RFC 8200), offsets from the start of the IP header -------------------------------
#
#   0             4     6    7     8     24    40
#   |v/tc/flow    |plen |nxt |hlim |src  |dst  |
IP6_HLEN = 40
IP6_FLOW = 0
IP6_PLEN = 4
IP6_NXT = 6
IP6_HLIM = 7
IP6_SRC = 8
IP6_DST = 24

# --- ICMPv6 (RFC 4443): type, code, checksum, 4 bytes of data (packet too big: the MTU) ------
ICMP6_HLEN = 8
ICMP6_DATA = 4
ICMP6_DST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_DST_UNREACH_NOROUTE = 0
ICMP6_DST_UNREACH_ADMIN = 1
ICMP6_DST_UNREACH_ADDR = 3
ICMP6_TIME_EXCEED_TRANSIT = 0

# --- Neighbour discovery (RFC 4861), offsets from the start of the ICMPv6 header ------------
#
#   0    1    2     4         8        24    25   26     32
#   |type|code|cksum|reserved |target  |opt  |len |mac   |
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_NS_RESERVED = 4
ND_NS_TARGET = 8
ND_NS_LEN = 24
ND_OPT_HLEN = 2
ND_OPT_SOURCE_LINKADDR = 1
ND_OPT_TARGET_LINKADDR = 2
ND_NA_FLAG_SOLICITED = 0x40000000

# --- TCP (RFC 793), offsets from the start of the TCP header --------------------------------
TCP_HLEN = 20
TCP_SUM = 16
TCP_DOFF = 12
TCP_FLAGS = 13
TCP_SYN = 0x02
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2


def ethertype(frame) -> int:
    return frame[ETH_TYPE] << 8 | frame[ETH_TYPE + 1]


def link_header(frame) -> tuple[int, int]:
    """(ethertype, ethlen): looks through one 802.1Q tag as tinc does for TTL and MSS work."""
    etype = frame[ETH_TYPE] << 8 | frame[ETH_TYPE + 1]
    if etype == ETH_P_8021Q and len(frame) >= VLAN_HLEN:
        return frame[VLAN_INNER_TYPE] << 8 | frame[VLAN_INNER_TYPE + 1], VLAN_HLEN
    return etype, ETH_HLEN


# --- checksums -----------------------------------------------------------------------------

def ones_sum(data) -> int:
    """RFC 1071 one's-complement sum of 16-bit big-endian words (odd tail padded with zero).

    Uses 2^16 = 1 (mod 0xFFFF): the folded sum is the number modulo 0xFFFF, written 0xFFFF
    rather than 0 unless every word is zero (end-around carry never yields 0 otherwise).
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"
    value = int.from_bytes(data, "big")
    if value == 0:
        return 0
    return value % 0xFFFF or 0xFFFF


def inet_checksum(*parts) -> int:
    """The Internet checksum over the concatenation of `parts` (each of even length but the
    last). A block that already holds its correct checksum gives 0."""
    total = 0
    for p in parts:
        total += ones_sum(p)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header6(src: bytes, dst: bytes, length: int, next_header: int) -> bytes:
    """The IPv6 pseudo header for upper-layer checksums (RFC 8200 8.1)."""
    return src + dst + length.to_bytes(4, "big") + next_header.to_bytes(4, "big")


def _put16(buf: bytearray, off: int, value: int) -> None:
    buf[off] = (value >> 8) & 0xFF
    buf[off + 1] = value & 0xFF


def _get16(buf, off: int) -> int:
    return buf[off] << 8 | buf[off + 1]


# --- generated ICMP errors -----------------------------------------------------------------

def _swapped_link_header(frame, ethlen: int) -> bytearray:
    head = bytearray(frame[:ethlen])
    head[ETH_DST:ETH_DST + 6], head[ETH_SRC:ETH_SRC + 6] = frame[ETH_SRC:ETH_SRC + 6], \
        frame[ETH_DST:ETH_DST + 6]
    return head


def icmp4_error(frame, ethlen: int, type: int, code: int, *, next_mtu: int = 0,
                src: Optional[bytes] = None) -> bytes:
    """tinc route_ipv4_unreachable: an ICMP error about `frame` sent back to its source.

    MACs swapped, a fresh 20-byte IP header (TTL 255, id 0) from the original destination (or
    `src`) to the original source, and as much of the original IP packet as keeps the reply
    within 576 bytes. `frame` must hold at least `ethlen` + 20 bytes.

        | link hdr (MACs swapped) | IPv4 (20) | type code cksum 0 0 nextmtu | quote... |
    """
    ip = frame[ethlen:]
    orig_src = bytes(ip[IP_SRC:IP_SRC + 4])
    orig_dst = bytes(ip[IP_DST:IP_DST + 4])
    quote_len = min(len(ip), IP_MSS - IP_HLEN - ICMP_HLEN)
    quote = bytes(ip[:quote_len])

    iph = bytearray(IP_HLEN)
    iph[IP_VHL] = 0x45
    _put16(iph, IP_LEN, IP_HLEN + ICMP_HLEN + quote_len)
    iph[IP_TTL] = 255
    iph[IP_P] = IPPROTO_ICMP
    iph[IP_SRC:IP_SRC + 4] = orig_dst if src is None else src
    iph[IP_DST:IP_DST + 4] = orig_src
    _put16(iph, IP_SUM, inet_checksum(iph))

    icmp = bytearray(ICMP_HLEN)
    icmp[0] = type
    icmp[1] = code
    _put16(icmp, ICMP_NEXTMTU, next_mtu)
    _put16(icmp, 2, inet_checksum(icmp, quote))
    return bytes(_swapped_link_header(frame, ethlen) + iph + icmp + quote)


def icmp6_error(frame, ethlen: int, type: int, code: int, *, mtu: int = 0,
                src: Optional[bytes] = None) -> bytes:
    """tinc route_ipv6_unreachable: an ICMPv6 error about `frame` back to its source.

    Like icmp4_error with a fresh IPv6 header (flow 0, hop limit 255); the 4 data bytes carry
    `mtu` (packet too big). The reply stays within 576 bytes. `frame` holds >= ethlen + 40.
    """
    ip = frame[ethlen:]
    orig_src = bytes(ip[IP6_SRC:IP6_SRC + 16])
    orig_dst = bytes(ip[IP6_DST:IP6_DST + 16])
    quote_len = min(len(ip), IP_MSS - IP6_HLEN - ICMP6_HLEN)
    quote = bytes(ip[:quote_len])
    new_src = orig_dst if src is None else src

    iph = bytearray(IP6_HLEN)
    iph[IP6_FLOW] = 0x60
    _put16(iph, IP6_PLEN, ICMP6_HLEN + quote_len)
    iph[IP6_NXT] = IPPROTO_ICMPV6
    iph[IP6_HLIM] = 255
    iph[IP6_SRC:IP6_SRC + 16] = new_src
    iph[IP6_DST:IP6_DST + 16] = orig_src

    icmp = bytearray(ICMP6_HLEN)
    icmp[0] = type
    icmp[1] = code
    icmp[ICMP6_DATA:ICMP6_DATA + 4] = mtu.to_bytes(4, "big")
    pseudo = pseudo_header6(new_src, orig_src, ICMP6_HLEN + quote_len, IPPROTO_ICMPV6)
    _put16(icmp, 2, inet_checksum(pseudo, icmp, quote))
    return bytes(_swapped_link_header(frame, ethlen) + iph + icmp + quote)


# --- ARP and neighbour discovery proxies ---------------------------------------------------

def arp_request_target(frame) -> Optional[bytes]:
    """The target IPv4 address of a valid Ethernet/IPv4 ARP request, else None."""
    if len(frame) < ETH_HLEN + ARP_LEN:
        return None
    a = ETH_HLEN
    if (_get16(frame, a + ARP_HRD) != ARPHRD_ETHER or _get16(frame, a + ARP_PRO) != ETH_P_IP
            or frame[a + ARP_HLN] != ETH_ALEN or frame[a + ARP_PLN] != 4
            or _get16(frame, a + ARP_OP) != ARPOP_REQUEST):
        return None
    return bytes(frame[a + ARP_TPA:a + ARP_TPA + 4])


def arp_reply(frame) -> bytes:
    """tinc route_arp's answer to a request (validated by arp_request_target).

    The Ethernet header is left as it was; the ARP sender becomes the asked-for address at the
    requester's own MAC with the last byte XOR 0xff (the same fake MAC the device path uses).
    """
    out = bytearray(frame)
    a = ETH_HLEN
    spa = bytes(frame[a + ARP_SPA:a + ARP_SPA + 4])
    tpa = bytes(frame[a + ARP_TPA:a + ARP_TPA + 4])
    sha = bytes(frame[a + ARP_SHA:a + ARP_SHA + 6])
    out[a + ARP_TPA:a + ARP_TPA + 4] = spa
    out[a + ARP_SPA:a + ARP_SPA + 4] = tpa
    out[a + ARP_THA:a + ARP_THA + 6] = sha
    out[a + ARP_SHA:a + ARP_SHA + 6] = frame[ETH_SRC:ETH_SRC + 6]
    out[a + ARP_SHA + 5] ^= 0xFF
    _put16(out, a + ARP_OP, ARPOP_REPLY)
    return bytes(out)


_NS_AT = ETH_HLEN + IP6_HLEN
_NS_OPT_AT = _NS_AT + ND_NS_LEN
_NS_WITH_OPT_LEN = _NS_OPT_AT + ND_OPT_HLEN + ETH_ALEN


def is_neighbor_solicitation(frame) -> bool:
    """What tinc route_ipv6 checks before treating a frame as NDP: ICMPv6 type 135 straight
    after the IPv6 header (frame has at least the IPv6 + ICMPv6 headers)."""
    return (len(frame) >= ETH_HLEN + IP6_HLEN + ICMP6_HLEN
            and frame[ETH_HLEN + IP6_NXT] == IPPROTO_ICMPV6
            and frame[_NS_AT] == ND_NEIGHBOR_SOLICIT)


def _ns_checksum(frame, src: bytes, dst: bytes, has_opt: bool) -> int:
    # COMPAT: tinc sums exactly the solicitation (+ one link-layer option), not the IPv6
    # payload length, so a solicitation with further options fails verification.
    end = _NS_WITH_OPT_LEN if has_opt else _NS_OPT_AT
    body = frame[_NS_AT:end]
    return inet_checksum(pseudo_header6(src, dst, len(body), IPPROTO_ICMPV6), body)


def neighbor_solicitation_target(frame) -> Optional[bytes]:
    """The target address of a neighbour solicitation tinc accepts, else None: long enough,
    type 135, the first option (if the frame is long enough to hold one) is a source
    link-layer address, and the checksum verifies."""
    if len(frame) < _NS_OPT_AT or frame[_NS_AT] != ND_NEIGHBOR_SOLICIT:
        return None
    has_opt = len(frame) >= _NS_WITH_OPT_LEN
    if has_opt and frame[_NS_OPT_AT] != ND_OPT_SOURCE_LINKADDR:
        return None
    ip = ETH_HLEN
    src = bytes(frame[ip + IP6_SRC:ip + IP6_SRC + 16])
    dst = bytes(frame[ip + IP6_DST:ip + IP6_DST + 16])
    if _ns_checksum(frame, src, dst, has_opt) != 0:
        return None
    return bytes(frame[_NS_AT + ND_NS_TARGET:_NS_AT + ND_NS_TARGET + 16])


def neighbor_advertisement(frame) -> bytes:
    """tinc route_neighborsol's answer to a solicitation (validated by
    neighbor_solicitation_target), same length as the request.

    Ethernet: to the requester, from its MAC with the last byte XOR 0xff. IPv6: from the target
    to the requester, other fields kept. ICMPv6: type 136, solicited flag only; the link-layer
    option (if present) becomes a target link-layer address holding the fake MAC.
    """
    out = bytearray(frame)
    requester_mac = bytes(frame[ETH_SRC:ETH_SRC + 6])
    out[ETH_DST:ETH_DST + 6] = requester_mac
    out[ETH_SRC + 5] ^= 0xFF
    ip = ETH_HLEN
    requester = bytes(frame[ip + IP6_SRC:ip + IP6_SRC + 16])
    target = bytes(frame[_NS_AT + ND_NS_TARGET:_NS_AT + ND_NS_TARGET + 16])
    out[ip + IP6_SRC:ip + IP6_SRC + 16] = target
    out[ip + IP6_DST:ip + IP6_DST + 16] = requester
    has_opt = len(frame) >= _NS_WITH_OPT_LEN
    if has_opt:
        out[_NS_OPT_AT] = ND_OPT_TARGET_LINKADDR
        out[_NS_OPT_AT + ND_OPT_HLEN:_NS_WITH_OPT_LEN] = out[ETH_SRC:ETH_SRC + 6]
    out[_NS_AT] = ND_NEIGHBOR_ADVERT
    out[_NS_AT + 2:_NS_AT + 4] = b"\0\0"
    out[_NS_AT + ND_NS_RESERVED:_NS_AT + ND_NS_RESERVED + 4] = \
        ND_NA_FLAG_SOLICITED.to_bytes(4, "big")
    _put16(out, _NS_AT + 2, _ns_checksum(out, target, requester, has_opt))
    return bytes(out)


# --- in-place rewrites ---------------------------------------------------------------------

def decrement_ipv4_ttl(buf: bytearray, ethlen: int) -> None:
    """TTL - 1 with tinc's incremental header-checksum update (RFC 1141 style).

    COMPAT: byte-for-byte tinc's arithmetic (sum += old + ~new, folded), which can give 0x0000
    where a full recomputation gives 0xFFFF; both verify.
    """
    at = ethlen + IP_TTL
    old = _get16(buf, at)
    buf[at] -= 1
    new = _get16(buf, at)
    csum = _get16(buf, ethlen + IP_SUM) + old + (~new & 0xFFFF)
    while csum >> 16:
        csum = (csum & 0xFFFF) + (csum >> 16)
    _put16(buf, ethlen + IP_SUM, csum)


def clamp_mss(buf: bytearray, mtu: int) -> Optional[tuple[int, int]]:
    """tinc clamp_mss: lower a TCP MSS option above `mtu` - (TCP header offset) - 20.

    Finds TCP in IPv4 (also inside one IPv4-in-IPv4 layer) or IPv6 without extension headers,
    after an optional 802.1Q tag. Returns (old, new) MSS if it rewrote the option (checksum
    adjusted incrementally, RFC 1624), else None.
    """
    n = len(buf)
    if n < ETH_HLEN:
        return None
    etype, start = link_header(buf)
    # IP-in-IP (RFC 2003): COMPAT: tinc assumes a 20-byte outer header.
    if etype == ETH_P_IP and n > start + IP_P and buf[start + IP_P] == IPPROTO_IPIP:
        start += IP_HLEN
    if n <= start + 20:
        return None
    if etype == ETH_P_IP and buf[start + IP_P] == IPPROTO_TCP:
        start += (buf[start] & 0xF) * 4
    elif etype == ETH_P_IPV6 and buf[start + IP6_NXT] == IPPROTO_TCP:
        start += IP6_HLEN
    else:
        return None
    if n <= start + TCP_HLEN:
        return None
    opt_len = ((buf[start + TCP_DOFF] >> 4) - 5) * 4
    if n < start + TCP_HLEN + opt_len:
        return None
    opts = start + TCP_HLEN
    i = 0
    while i < opt_len:
        kind = buf[opts + i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i > opt_len - 2 or i > opt_len - buf[opts + i + 1]:
            break
        if kind != TCPOPT_MSS:
            if buf[opts + i + 1] < 2:
                break
            i += buf[opts + i + 1]
            continue
        # DEVIATION: tinc checks the length byte of the *first* option here, so an MSS option
        # after a NOP is never clamped; we check the MSS option's own length.
        if buf[opts + i + 1] != 4:
            break
        old = _get16(buf, opts + i + 2)
        new = (mtu - start - 20) & 0xFFFF
        if old <= new:
            break
        _put16(buf, opts + i + 2, new)
        # COMPAT: tinc's RFC 1624 eqn. 3 steps, two folds.
        csum = _get16(buf, start + TCP_SUM) ^ 0xFFFF
        csum += old ^ 0xFFFF
        csum += new
        csum = (csum & 0xFFFF) + (csum >> 16)
        csum += csum >> 16
        csum ^= 0xFFFF
        _put16(buf, start + TCP_SUM, csum)
        return old, new
    return None


def fragment_ipv4(frame, ethlen: int, mtu: int) -> Optional[list[bytes]]:
    """tinc fragment_ipv4_packet: cut an IPv4 packet (20-byte header only) into fragments of
    (max(mtu, 590) - ethlen - 20) & ~7 payload bytes; each keeps the link header, gets its own
    total length, offset, MF flag and header checksum. None if the header has options or the
    IP total length disagrees with the frame length.
    """
    ip = frame[ethlen:ethlen + IP_HLEN]
    if len(ip) < IP_HLEN or ip[IP_VHL] & 0xF != IP_HLEN // 4:
        return None
    todo = _get16(ip, IP_LEN) - IP_HLEN
    if ethlen + IP_HLEN + todo != len(frame):
        return None
    maxlen = (max(mtu, 590) - ethlen - IP_HLEN) & ~7
    off_field = _get16(ip, IP_OFF)
    flags = off_field & ~IP_OFFMASK
    offset = off_field & IP_OFFMASK
    link = bytes(frame[:ethlen])
    pos = ethlen + IP_HLEN
    out = []
    while todo:
        size = min(todo, maxlen)
        todo -= size
        hdr = bytearray(ip)
        _put16(hdr, IP_LEN, IP_HLEN + size)
        _put16(hdr, IP_OFF, offset | flags | (IP_MF if todo else 0))
        hdr[IP_SUM:IP_SUM + 2] = b"\0\0"
        _put16(hdr, IP_SUM, inet_checksum(hdr))
        out.append(link + bytes(hdr) + bytes(frame[pos:pos + size]))
        pos += size
        offset += size // 8
    return out
