"""UDP discovery and path MTU discovery towards one node (data-path.md §8, §9 step 4).

Owns, per node: whether UDP is confirmed, the probe RTT, the MTU bounds (`minmtu`, `maxmtu`),
the MTU in use (`mtu`), the discovery counter (`mtuprobes`), the largest recently received
record (`maxrecentlen`) and the UDPDiscoveryTimeout deadline. All sizes are SPTPS record
payload lengths, i.e. frame lengths including the 14-byte Ethernet header (§8.6).

How the data plane drives it (tinc's try_tx/try_udp/try_mtu/udp_probe_h):

  * `maintenance(now, ...)` for every packet sent to the node (probe_mtu=True) and from the 1 s
    ping timer (probe_mtu=False); send the returned ProbeToSend frames as PKT_PROBE records
    over UDP, immediately and in order.
  * A sendto() of a record to this node failing with EMSGSIZE: `send_failed_emsgsize(len)`,
    and send the probes it returns (the rest of tinc's probe loop).
  * A PKT_PROBE record received over UDP: `probe_received(frame, now, peer_minor)`, send the
    reply frame it returns (it counts towards maxrecentlen itself). A data record received
    over UDP: `record_received_len(frame_len)`.
  * `next_deadline()` / `handle_deadline(now)`: the UDPDiscoveryTimeout. Probe pacing has no
    deadline of its own: like tinc, it only advances when maintenance() is called.
  * `reset()` when the node's reachability or UDP address changes; `mtu_info(mtu)` for a
    received MTU_INFO; `limit_mtu(pmtu)` for a PMTU setting.

Whole-second comparisons: tinc compares `elapsed.tv_sec >= N` for integer N, which is
`elapsed >= N` on float seconds.

No I/O, no clock (`now` is passed in), no global randomness (`rng(n)` is injected).
Not thread-safe.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Callable, Optional

from tincapp.datapath.packets import MAXSIZE, MTU     # COMPAT: probes are cut to MAXSIZE
from tincapp.meta.events import NODE_ID_LEN
from tincapp.sptps.wire import DATAGRAM_OVERHEAD

MINMTU = 512            # below this UDP is considered unusable
MIN_PROBE_SIZE = 18
PROBE_HEADER_LEN = 14   # the zeroed "Ethernet header" of a probe frame

# Byte 0 of a probe frame.
PROBE_REQUEST = 0
PROBE_REPLY_ECHO = 1    # type 1: the request echoed (peers with protocol minor < 3)
PROBE_REPLY_LEN = 2     # type 2: the received length in bytes 1..2 (minor >= 3)

PROBES_PER_CYCLE = 8
FIX_AFTER_PROBES = 20
DISCOVERY_PACING_S = 0.333333   # COMPAT: tv_sec == 0 && tv_usec < 333333
FIXED_RECHECK_S = 1             # pacing while maxmtu probes go unanswered (mtuprobes < -1)

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8


@dataclass(frozen=True)
class PmtuConfig:
    """The daemon-wide settings this core reads (tinc.conf; see keys-and-files.md)."""
    udp_discovery: bool = True
    udp_discovery_keepalive_interval_s: int = 10   # tinc's code; its documentation says 9
    udp_discovery_interval_s: int = 2
    udp_discovery_timeout_s: int = 30
    ping_interval_s: int = 60
    local_discovery: bool = True


@dataclass(frozen=True)
class ProbeToSend:
    """A probe frame to seal as a PKT_PROBE record and send over UDP to the node.

    is_reply: a probe reply; tinc sends it to the node's current UDP address as if that were
    confirmed (§8.1). locally: the LocalDiscovery probe, sent to a LAN address of the node
    (the local address of a random edge from it, §6.4).
    """
    frame: bytes
    is_reply: bool = False
    locally: bool = False


# --- probe frames (§8.1) -----------------------------------------------------------------------
#
#  request:   +---+--------------+---------------------+
#             | 0 | 13 zero bytes | random              |   length = probe size (>= 18)
#             +---+--------------+---------------------+
#  type 1:    the request with byte 0 = 1
#  type 2:    +---+----------------+--------------------+
#             | 2 | len (2, BE)    | request[3:18]      |   length = 18
#             +---+----------------+--------------------+

def build_probe_request(size, rng):
    """A probe request of `size` bytes, clamped to [MIN_PROBE_SIZE, MAXSIZE] as tinc does."""
    size = min(max(size, MIN_PROBE_SIZE), MAXSIZE)
    return bytes(PROBE_HEADER_LEN) + rng(size - PROBE_HEADER_LEN)


def build_probe_reply(request, peer_minor, reported_len=None):
    """The reply to `request` for a peer speaking protocol minor `peer_minor`.

    reported_len is the length announced in a type-2 reply (default: the request's length;
    the gratuitous reply announces maxrecentlen instead).
    """
    if reported_len is None:
        reported_len = len(request)
    if peer_minor >= 3:
        # COMPAT: type 2 replies came with protocol 17.3. DEVIATION: a request shorter than 18
        # bytes is padded with zeros where tinc would send stale buffer bytes.
        tail = bytes(request[3:MIN_PROBE_SIZE]).ljust(MIN_PROBE_SIZE - 3, b"\0")
        return bytes([PROBE_REPLY_LEN]) + struct.pack(">H", reported_len & 0xFFFF) + tail
    return bytes([PROBE_REPLY_ECHO]) + bytes(request[1:])


def probe_reply_len(frame):
    """The length a reply confirms: bytes 1..2 of a type-2 reply, else the frame's length.
    None for a request or a frame too short to carry its length field."""
    if not frame or frame[0] == PROBE_REQUEST:
        return None
    if frame[0] == PROBE_REPLY_LEN:
        if len(frame) < 3:
            return None
        return struct.unpack_from(">H", frame, 1)[0]
    # COMPAT: any other non-zero type counts as a type-1 reply.
    return len(frame)


# --- numbers -----------------------------------------------------------------------------------

def _f32(x):
    """Round a double to the nearest float32, as a C float variable holds it."""
    return struct.unpack("f", struct.pack("f", x))[0]


_MULTIPLIER_AT_MTU = _f32(0.97)


def discovery_probe_size(minmtu, maxmtu, mtuprobes):
    """The size of discovery probe number `mtuprobes` (>= 0) given the current bounds (§8.4).

    COMPAT: tinc head computes this in float32 (powf) and rounds with lrintf (half to even);
    1.1pre18 truncated instead. Emulated here step by step: every float32 operation is
    rounded to float32, powf as pow in double rounded once. This matches tinc's expression
    compiled with gcc -O2 for every minmtu in {0} + [512, maxmtu], maxmtu in [1, 1518] and
    cycle position (checked exhaustively when this was written).
    """
    lo = max(minmtu, MINMTU)
    span = maxmtu - lo
    offset = 0
    if span > 0:
        multiplier = _MULTIPLIER_AT_MTU if maxmtu == MTU else 1.0
        position = float(PROBES_PER_CYCLE - mtuprobes % PROBES_PER_CYCLE - 1)
        exponent = _f32(_f32(multiplier * position) / float(PROBES_PER_CYCLE - 1))
        offset = round(_f32(math.pow(float(span), exponent)))   # round(): half to even
    return lo + offset


def estimate_initial_maxmtu(ip_mtu, ipv6, peer_minor):
    """tinc's choose_initial_maxmtu for an SPTPS node from the OS path MTU (Linux IP_MTU on a
    UDP socket connected to the node's address); `ip_mtu` None when that failed."""
    if ip_mtu is None or ip_mtu < MINMTU:
        return MTU
    mtu = ip_mtu - (IPV6_HEADER_LEN if ipv6 else IPV4_HEADER_LEN) - UDP_HEADER_LEN
    mtu -= DATAGRAM_OVERHEAD
    if peer_minor >= 4:
        mtu -= 2 * NODE_ID_LEN
    return min(mtu, MTU)


# --- the per-node state ------------------------------------------------------------------------

class PathMtu:
    """UDP reachability and path MTU towards one node (tinc's node_t fields of the same names).

    mtuprobes: 0..19 discovery rounds done; -1 MTU fixed; -2, -3 maxmtu probes unanswered
    (at -4 discovery restarts).
    """

    def __init__(self, config: Optional[PmtuConfig], rng: Callable[[int], bytes]):
        self.config = config if config is not None else PmtuConfig()
        self._rng = rng
        self.udp_confirmed = False
        self.rtt_s: Optional[float] = None
        self.minmtu = 0
        self.maxmtu = MTU
        self.mtu = MTU
        self.mtuprobes = 0
        self.maxrecentlen = 0
        # COMPAT: tinc's timestamps start at 0 (the epoch), so the first check always passes.
        self._udp_ping_sent_at = -math.inf     # last UDP discovery probe request
        self._ping_sent = False                # that request is awaiting a reply (for rtt)
        self._udp_reply_sent_at = -math.inf    # last gratuitous reply check
        self._mtu_ping_sent_at = -math.inf     # last PMTU round
        self._udp_timeout_at: Optional[float] = None
        # (size, mtuprobes) of the discovery probe the last round emitted, until the next
        # round: an EMSGSIZE for it continues that round (tinc's probe loop).
        self._round: Optional[tuple[int, int]] = None

    # -- state changes from outside --

    def reset(self):
        """Called when the node's reachability or UDP address changes: UDP must be proven
        again (tinc's update_node_udp and the graph's reachability change). `mtu` stays."""
        self.udp_confirmed = False
        self.maxrecentlen = 0
        self.mtuprobes = 0
        self.minmtu = 0
        self.maxmtu = MTU
        self._udp_timeout_at = None
        self._round = None

    def mtu_info(self, mtu):
        """Called for a received MTU_INFO about this node (already checked >= 512): a
        provisional `mtu` while discovery has not fixed it (meta-protocol.md §9.1)."""
        mtu = min(mtu, MTU)
        if self.mtu != mtu and self.minmtu != self.maxmtu:
            self.mtu = mtu

    def limit_mtu(self, pmtu):
        """Called with a PMTU setting (the node's host file or ours): an upper limit on `mtu`."""
        if pmtu < self.mtu:
            self.mtu = pmtu

    def record_received_len(self, frame_len):
        """Called for each data record received from the node over UDP, with the frame length
        (including the 14-byte header): announced by the next gratuitous reply (§8.2)."""
        if frame_len > self.maxrecentlen:
            self.maxrecentlen = frame_len

    def send_failed_emsgsize(self, payload_len):
        """Called when sending a record with `payload_len` bytes of payload to this node failed
        with EMSGSIZE (§8.5). Lowers maxmtu and mtu to payload_len - 1 (at least 512).

        If the failed record was the discovery probe of the current round, returns its
        replacement computed from the lowered bound (send it, and report it again if it fails
        too); otherwise returns [].
        """
        current = self._round
        self._round = None
        in_round = (current is not None and current[0] == payload_len
                    and self.mtuprobes == current[1] + 1)
        if in_round:
            # COMPAT: tinc is still inside try_mtu's loop: the round is not counted yet.
            self.mtuprobes = current[1]
        before = self.maxmtu
        self._reduce_mtu(payload_len - 1)
        if not in_round or self.mtuprobes < 0:
            return []
        out = []
        if self.maxmtu != before:
            out.append(self._discovery_probe())
        self.mtuprobes += 1
        return out

    # -- maintenance (tinc's try_udp + try_mtu) --

    def maintenance(self, now, probe_mtu, peer_minor, initial_maxmtu=None,
                    local_candidate=False):
        """Called for every packet sent to the node (probe_mtu = the node's options have
        PMTU_DISCOVERY) and from the ping timer (probe_mtu=False). Returns the probes to send
        now, in order.

        initial_maxmtu: a zero-argument callable giving the estimate for maxmtu when a
        discovery starts (see estimate_initial_maxmtu()); None means 1518.
        local_candidate: the node has a known previous edge, so a LocalDiscovery probe can be
        addressed.
        """
        out = []
        self._round = None
        self._try_udp(now, peer_minor, local_candidate, out)
        if probe_mtu:
            self._try_mtu(now, initial_maxmtu, out)
        return out

    def _try_udp(self, now, peer_minor, local_candidate, out):
        cfg = self.config
        if not cfg.udp_discovery:
            return
        # Gratuitous type-2 reply: lets the peer confirm the largest size we received lately
        # without probing. Protocol minor >= 3 only.
        if peer_minor >= 3 and self.udp_confirmed:
            if now - self._udp_reply_sent_at >= cfg.udp_discovery_keepalive_interval_s - 1:
                self._udp_reply_sent_at = now
                if self.maxrecentlen:
                    header = bytes(PROBE_HEADER_LEN) + self._rng(MIN_PROBE_SIZE - PROBE_HEADER_LEN)
                    frame = build_probe_reply(header, peer_minor, self.maxrecentlen)
                    out.append(ProbeToSend(frame, is_reply=True))
                    self.maxrecentlen = 0
        interval = (cfg.udp_discovery_keepalive_interval_s if self.udp_confirmed
                    else cfg.udp_discovery_interval_s)
        if now - self._udp_ping_sent_at >= interval:
            self._udp_ping_sent_at = now
            self._ping_sent = True
            out.append(ProbeToSend(build_probe_request(MIN_PROBE_SIZE, self._rng)))
            if cfg.local_discovery and not self.udp_confirmed and local_candidate:
                out.append(ProbeToSend(build_probe_request(MIN_PROBE_SIZE, self._rng),
                                       locally=True))

    def _try_mtu(self, now, initial_maxmtu, out):
        if self.config.udp_discovery and not self.udp_confirmed:
            # Nothing is known until UDP works; start from scratch once it does.
            self.maxrecentlen = 0
            self.mtuprobes = 0
            self.minmtu = 0
            self.maxmtu = MTU
            return
        elapsed = now - self._mtu_ping_sent_at
        if self.mtuprobes >= 0:
            if self.mtuprobes != 0 and elapsed < DISCOVERY_PACING_S:
                return
        elif self.mtuprobes < -1:
            if elapsed < FIXED_RECHECK_S:
                return
        elif elapsed < self.config.ping_interval_s:
            return
        self._mtu_ping_sent_at = now

        self._try_fix_mtu()
        if self.mtuprobes < -3:
            # Three maxmtu probes in a row went unanswered: the path shrank. Rediscover.
            self.mtuprobes = 0
            self.minmtu = 0

        if self.mtuprobes < 0:
            # Fixed: check that maxmtu still works, and once per PingInterval whether one
            # byte more does too.
            out.append(ProbeToSend(build_probe_request(self.maxmtu, self._rng)))
            if self.mtuprobes == -1 and self.maxmtu + 1 < MTU:
                out.append(ProbeToSend(build_probe_request(self.maxmtu + 1, self._rng)))
            self.mtuprobes -= 1
        else:
            if self.mtuprobes == 0:
                self.maxmtu = initial_maxmtu() if initial_maxmtu is not None else MTU
            out.append(self._discovery_probe())
            self.mtuprobes += 1

    def _discovery_probe(self):
        size = discovery_probe_size(self.minmtu, self.maxmtu, self.mtuprobes)
        probe = ProbeToSend(build_probe_request(size, self._rng))
        self._round = (len(probe.frame), self.mtuprobes)
        return probe

    def _try_fix_mtu(self):
        """The fix rule: after 20 discovery probes, or once the bounds meet, use minmtu."""
        if self.mtuprobes < 0:
            return
        if self.mtuprobes == FIX_AFTER_PROBES or self.minmtu >= self.maxmtu:
            if self.minmtu > self.maxmtu:
                self.minmtu = self.maxmtu
            else:
                self.maxmtu = self.minmtu
            self.mtu = self.minmtu
            self.mtuprobes = -1

    def _reduce_mtu(self, mtu):
        mtu = max(mtu, MINMTU)
        if self.maxmtu > mtu:
            self.maxmtu = mtu
        if self.mtu > mtu:
            self.mtu = mtu
        self._try_fix_mtu()

    # -- received probes (tinc's udp_probe_h) --

    def probe_received(self, frame, now, peer_minor):
        """Called for a PKT_PROBE record received from the node over UDP (never over TCP: that
        is a receive failure, §2.3). Returns the reply frame to send for a request (send it
        like a ProbeToSend with is_reply=True), else None."""
        frame = bytes(frame)
        # COMPAT: every probe record counts towards maxrecentlen, requests and replies alike.
        self.record_received_len(len(frame))
        if not frame:
            return None   # DEVIATION: tinc would read a stale buffer byte as the type
        if frame[0] == PROBE_REQUEST:
            return build_probe_reply(frame, peer_minor)
        length = probe_reply_len(frame)
        if length is None:
            return None   # DEVIATION: a type-2 reply without its length field is ignored
        # DEVIATION: tinc takes a type-2 length above 1518 as is (minmtu > maxmtu until the
        # next fix); no real record is that long, so clamp it.
        length = min(length, MTU)
        if self._ping_sent:
            self.rtt_s = now - self._udp_ping_sent_at
            self._ping_sent = False
        # Any reply proves the path both ways (the shell records the address in the cache
        # when udp_confirmed turns True).
        self.udp_confirmed = True
        if self.config.udp_discovery:
            self._udp_timeout_at = now + self.config.udp_discovery_timeout_s

        if length > self.maxmtu:
            # The path got bigger: search upward from here. mtuprobes = 1 so that the next
            # round does not re-estimate maxmtu.
            self.minmtu = length
            self.maxmtu = MTU
            self.mtuprobes = 1
            return None
        if self.mtuprobes < 0 and length == self.maxmtu:
            # The fixed MTU still works.
            self.mtuprobes = -1
            self._mtu_ping_sent_at = now
        if self.minmtu < length:
            self.minmtu = length
            self._try_fix_mtu()
        return None

    # -- the UDPDiscoveryTimeout --

    def next_deadline(self):
        """When UDP is declared broken unless a probe reply arrives first; None if not armed."""
        return self._udp_timeout_at

    def handle_deadline(self, now):
        """Called when next_deadline() has passed: no probe reply for UDPDiscoveryTimeout, so
        UDP is unconfirmed and the MTU bounds start over."""
        if self._udp_timeout_at is None or now < self._udp_timeout_at:
            return
        self._udp_timeout_at = None
        if not self.udp_confirmed:
            return
        self.udp_confirmed = False
        self.rtt_s = None
        self.maxrecentlen = 0
        self.mtuprobes = 0
        self.minmtu = 0
        self.maxmtu = MTU
