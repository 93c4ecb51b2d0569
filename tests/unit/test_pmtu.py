"""tincapp.datapath.pmtu: UDP discovery and PMTU discovery (data-path.md §8), on a fake clock.

The path is simulated: probes from `a` up to `limit` bytes reach `b` (a real PathMtu, which
builds the reply), larger ones are lost. Replies are small and always arrive.
"""
import itertools

import pytest

from tincapp.datapath.pmtu import (MAXSIZE, MTU, PathMtu, PmtuConfig,
                                   build_probe_reply, build_probe_request,
                                   discovery_probe_size, estimate_initial_maxmtu,
                                   probe_reply_len)

MINOR = 7


def counter_rng():
    """Deterministic distinct bytes (the core only needs them to be random-looking)."""
    c = itertools.count(1)
    return lambda n: bytes(next(c) & 0xFF for _ in range(n))


def sizes(probes):
    """Sizes of the probe requests among `probes` (gratuitous replies left out)."""
    return [len(p.frame) for p in probes if not p.is_reply]


def make(**cfg):
    return PathMtu(PmtuConfig(**cfg), counter_rng())


class Link:
    """`a` probes `b` over a path that drops a->b records longer than `limit`."""

    def __init__(self, limit, a=None, estimate=None, **cfg):
        self.a = a or make(**cfg)
        self.b = make(**cfg)
        self.limit = limit
        self.estimate = estimate
        self.sent = []          # sizes of a's non-reply probes, in order
        self.first_fix = None   # (now, mtu) when a's MTU was first fixed

    def deliver(self, probes, now):
        for p in probes:
            if p.is_reply:
                continue
            self.sent.append(len(p.frame))
            if len(p.frame) <= self.limit:
                reply = self.b.probe_received(p.frame, now, MINOR)
                self.a.probe_received(reply, now, MINOR)

    def tick(self, now, probe_mtu=True):
        est = None if self.estimate is None else (lambda: self.estimate)
        probes = self.a.maintenance(now, probe_mtu, MINOR, est)
        self._note_fix(now)             # fixed by the round (20 probes)...
        self.deliver(probes, now)
        self._note_fix(now)             # ...or by a reply (bounds met)

    def _note_fix(self, now):
        if self.a.mtuprobes < 0 and self.first_fix is None:
            self.first_fix = (now, self.a.mtu)

    def confirm(self, now=0.0):
        """The first maintenance sends an 18-byte probe; its reply confirms UDP."""
        self.tick(now, probe_mtu=False)
        assert self.a.udp_confirmed


def settle(link, start, limit_s=60):
    """Packets every 0.2 s until a's MTU is fixed at exactly the path's (or time runs out)."""
    now, a = start, link.a
    while now < start + limit_s and not (a.mtuprobes < 0 and a.mtu == link.limit):
        now += 0.2
        link.tick(now)
    return now


def run_until_fixed(link, start, step=0.2, limit_s=30):
    now = start
    while link.a.mtuprobes >= 0 and now < start + limit_s:
        now += step
        link.tick(now)
    return now


# --- frames ----------------------------------------------------------------------------------

def test_probe_request_layout_and_size_clamp():
    req = build_probe_request(100, counter_rng())
    assert len(req) == 100 and req[:14] == bytes(14) and req[14:] == bytes(range(1, 87))
    assert len(build_probe_request(0, counter_rng())) == 18
    assert len(build_probe_request(5000, counter_rng())) == MAXSIZE


def test_type_1_and_type_2_replies():
    req = build_probe_request(1330, counter_rng())
    r1 = build_probe_reply(req, peer_minor=2)
    assert r1 == b"\x01" + req[1:]
    assert probe_reply_len(r1) == 1330
    r2 = build_probe_reply(req, peer_minor=3)
    assert r2 == b"\x02" + (1330).to_bytes(2, "big") + req[3:18]
    assert len(r2) == 18 and probe_reply_len(r2) == 1330
    assert probe_reply_len(req) is None
    assert probe_reply_len(b"\x02\x05") is None


def test_requests_are_answered_by_minor():
    b = make()
    req = build_probe_request(600, counter_rng())
    assert b.probe_received(req, 0.0, 2) == b"\x01" + req[1:]
    assert b.probe_received(req, 0.0, 3) == b"\x02\x02\x58" + req[3:18]
    assert b.maxrecentlen == 600       # every probe record counts
    assert not b.udp_confirmed         # a request proves nothing about our direction


# --- the probe size formula (§8.4) -----------------------------------------------------------

# Produced by a throwaway C program (gcc -std=c11 -O2, glibc powf/lrintf) that evaluates tinc
# head's expression from try_mtu() in src/net_packet.c verbatim, for mtuprobes = 0..7.
# The exhaustive comparison (all minmtu in {0}+[512, maxmtu], maxmtu in [1, 1518], 8
# positions: 4,072,368 cases) agreed with discovery_probe_size() everywhere.
# Note the first probe is 1330: tinc's comment (and 1.1pre18, which truncated) say 1329; head
# rounds 817.6 up. Real tincd (head) was seen sending 1330 first.
C_CYCLES = {
    (0, 1518): [1330, 826, 632, 558, 530, 519, 515, 513],
    (1330, 1518): [1491, 1408, 1368, 1348, 1339, 1334, 1332, 1331],
    (0, 1451): [1451, 865, 645, 562, 531, 519, 515, 513],
    (1400, 1451): [1451, 1429, 1417, 1409, 1405, 1403, 1402, 1401],
    (600, 1000): [1000, 770, 672, 631, 613, 606, 602, 601],
    (0, 512): [512] * 8,
    (0, 513): [513] * 8,
    (0, 451): [512] * 8,       # maxmtu below 512: zero span, probe at 512
}


@pytest.mark.parametrize("bounds", list(C_CYCLES), ids=str)
def test_probe_sizes_match_tincs_c_expression(bounds):
    minmtu, maxmtu = bounds
    assert [discovery_probe_size(minmtu, maxmtu, i) for i in range(8)] == C_CYCLES[bounds]
    # the cycle repeats every 8 probes
    assert discovery_probe_size(minmtu, maxmtu, 8) == C_CYCLES[bounds][0]


def test_first_discovery_probe_is_1330_at_full_mtu():
    link = Link(limit=MTU)
    link.confirm()
    assert sizes(link.a.maintenance(0.5, True, MINOR)) == [1330]
    assert link.a.mtuprobes == 1 and link.a.maxmtu == MTU


# --- UDP discovery (§8.2, §8.3) --------------------------------------------------------------

def test_unconfirmed_probes_every_udp_discovery_interval():
    a = make()
    seen = []
    for t in (0.0, 1.0, 1.99, 2.0, 3.5, 4.0):
        seen.append(sizes(a.maintenance(t, False, MINOR)))
    assert seen == [[18], [], [], [18], [], [18]]


def test_local_discovery_adds_a_lan_probe_while_unconfirmed():
    a = make()
    probes = a.maintenance(0.0, False, MINOR, local_candidate=True)
    assert [(len(p.frame), p.locally) for p in probes] == [(18, False), (18, True)]
    assert len(make(local_discovery=False).maintenance(0.0, False, MINOR, None, True)) == 1
    assert len(make().maintenance(0.0, False, MINOR, None, False)) == 1


def test_reply_confirms_records_rtt_then_keepalive_interval():
    link = Link(limit=MTU)
    probes = link.a.maintenance(10.0, False, MINOR)
    reply = link.b.probe_received(probes[0].frame, 10.0, MINOR)
    link.a.probe_received(reply, 10.25, MINOR)
    assert link.a.udp_confirmed and link.a.rtt_s == pytest.approx(0.25)
    assert link.a.minmtu == 18
    # confirmed: the next request waits UDPDiscoveryKeepaliveInterval (10 s), not 2 s
    assert [p for p in link.a.maintenance(12.0, False, MINOR) if not p.is_reply] == []
    assert [len(p.frame) for p in link.a.maintenance(20.0, False, MINOR)
            if not p.is_reply] == [18]
    # a reply without a request in flight leaves the rtt alone
    link.a.probe_received(reply, 20.9, MINOR)
    assert link.a.rtt_s == pytest.approx(0.9)
    link.a.probe_received(reply, 25.0, MINOR)
    assert link.a.rtt_s == pytest.approx(0.9)


def test_no_discovery_no_probes_and_no_timeout():
    a = make(udp_discovery=False)
    assert a.maintenance(0.0, False, MINOR) == []
    # without UDPDiscovery, PMTU probing runs without waiting for confirmation
    assert sizes(a.maintenance(0.0, True, MINOR)) == [1330]
    a.probe_received(build_probe_reply(build_probe_request(1330, counter_rng()), MINOR),
                     0.1, MINOR)
    assert a.udp_confirmed and a.minmtu == 1330 and a.next_deadline() is None


def test_pmtu_waits_for_udp_and_resets_meanwhile():
    a = make()
    a.minmtu, a.maxmtu, a.mtuprobes, a.maxrecentlen = 900, 1000, 5, 77
    assert sizes(a.maintenance(0.0, True, MINOR)) == [18]
    assert (a.minmtu, a.maxmtu, a.mtuprobes, a.maxrecentlen) == (0, MTU, 0, 0)


def test_udp_timeout_unconfirms_and_resets():
    link = Link(limit=1400, estimate=1400)
    link.confirm(0.0)
    link.tick(0.2)                  # the estimate, probed once, answered: fixed
    assert link.a.mtuprobes == -1 and link.a.mtu == 1400
    deadline = link.a.next_deadline()
    assert deadline == pytest.approx(0.2 + 30)
    link.a.handle_deadline(deadline - 0.001)
    assert link.a.udp_confirmed
    link.a.handle_deadline(deadline)
    a = link.a
    assert not a.udp_confirmed and a.rtt_s is None and a.next_deadline() is None
    assert (a.minmtu, a.maxmtu, a.mtuprobes, a.maxrecentlen) == (0, MTU, 0, 0)
    assert a.mtu == 1400    # the MTU in use is not touched


def test_every_reply_pushes_the_timeout_back():
    link = Link(limit=MTU)
    link.confirm(0.0)
    assert link.a.next_deadline() == 30.0
    link.tick(10.0, probe_mtu=False)           # keepalive probe, answered
    assert link.a.next_deadline() == 40.0


# --- gratuitous replies ----------------------------------------------------------------------

def test_gratuitous_reply_announces_maxrecentlen_once_per_keepalive():
    link = Link(limit=MTU)
    link.confirm(0.0)
    a = link.a
    a.record_received_len(1200)
    a.record_received_len(300)
    out = [p for p in a.maintenance(0.1, False, MINOR) if p.is_reply]
    # the first check after confirmation passes (tinc's timestamp starts at the epoch)
    assert len(out) == 1 and len(out[0].frame) == 18
    assert out[0].frame[:3] == b"\x02" + (1200).to_bytes(2, "big")
    assert out[0].frame[3:14] == bytes(11)
    assert a.maxrecentlen == 0
    # the peer confirms 1200 bytes from it
    b = link.b
    b.udp_confirmed = True
    b.probe_received(out[0].frame, 0.2, MINOR)
    assert b.minmtu == 1200
    a.record_received_len(1000)
    # next one only after UDPDiscoveryKeepaliveInterval - 1 = 9 s
    assert [p for p in a.maintenance(9.0, False, MINOR) if p.is_reply] == []
    out = [p for p in a.maintenance(9.1, False, MINOR) if p.is_reply]
    assert [probe_reply_len(p.frame) for p in out] == [1000]


def test_gratuitous_reply_needs_data_minor_3_and_confirmation():
    a = make()
    a.record_received_len(500)
    assert [p for p in a.maintenance(0.0, False, MINOR) if p.is_reply] == []   # unconfirmed
    a.udp_confirmed = True
    assert [p for p in a.maintenance(0.0, False, 2) if p.is_reply] == []       # minor 2
    # nothing received: no reply, but the 9 s period still restarts
    a.maxrecentlen = 0
    assert [p for p in a.maintenance(1.0, False, MINOR) if p.is_reply] == []
    a.record_received_len(500)
    assert [p for p in a.maintenance(9.9, False, MINOR) if p.is_reply] == []
    assert len([p for p in a.maintenance(10.0, False, MINOR) if p.is_reply]) == 1


# --- discovery (§8.4) ------------------------------------------------------------------------

# Real tincd (head) between two network namespaces whose path carried probes up to 1343
# bytes, pinging every 0.2 s (so a round every ~0.4 s): the probe sizes it logged ("Sending
# UDP probe length ...") after UDP was confirmed, then "Fixing MTU ... to 1343 after 20 probes"
# and the first fixed-state pair.
REAL_TINC_PROBES_1343 = [1330, 1408, 1368, 1348, 1339, 1343, 1345, 1344, 1493, 1416, 1379,
                         1361, 1352, 1347, 1345, 1344, 1493, 1416, 1379, 1361]


def test_discovery_reproduces_real_tincs_probe_sequence():
    link = Link(limit=1343)
    link.confirm(0.0)
    link.sent.clear()
    run_until_fixed(link, 0.0)
    assert link.sent == REAL_TINC_PROBES_1343 + [1343, 1344]
    a = link.a
    # the fixed-state 1343 probe was answered (back to -1), 1344 was not
    assert (a.minmtu, a.maxmtu, a.mtu, a.mtuprobes) == (1343, 1343, 1343, -1)


@pytest.mark.parametrize("limit", [513, 576, 1000, 1280, 1339, 1400, 1472, 1517, 1518])
def test_discovery_fixes_within_20_rounds_then_climbs_to_the_path_mtu(limit):
    link = Link(limit=limit)
    link.confirm(0.0)
    a = link.a
    settle(link, 0.0)
    fixed_at, first_mtu = link.first_fix
    assert fixed_at <= 8.4             # at most 20 rounds, one per 0.4 s of packets
    assert first_mtu <= limit
    # Each fixed-state check also probes maxmtu + 1; while that is answered, discovery
    # restarts upwards from there, until the MTU is exactly the path's.
    assert a.mtuprobes < 0 and a.minmtu == a.maxmtu == a.mtu == limit


def test_exact_initial_estimate_is_confirmed_by_one_probe():
    # tincd's log with IP_MTU 1400 to a minor-7 peer: "Using system-provided maximum tinc MTU
    # ... 1339", one probe of 1339, "Fixing MTU ... to 1339 after 1 probes".
    est = estimate_initial_maxmtu(1400, ipv6=False, peer_minor=7)
    assert est == 1339
    link = Link(limit=1339, estimate=est)
    link.confirm(0.0)
    link.sent.clear()
    link.tick(0.5)
    assert link.sent == [1339]
    assert (link.a.mtu, link.a.mtuprobes) == (1339, -1)


def test_initial_estimate_arithmetic():
    assert estimate_initial_maxmtu(1500, ipv6=True, peer_minor=3) == 1500 - 40 - 8 - 21
    assert estimate_initial_maxmtu(1600, ipv6=False, peer_minor=7) == MTU
    assert estimate_initial_maxmtu(511, ipv6=False, peer_minor=7) == MTU
    assert estimate_initial_maxmtu(None, ipv6=False, peer_minor=7) == MTU
    assert estimate_initial_maxmtu(512, ipv6=False, peer_minor=7) == 451


def test_fix_after_20_unanswered_rounds():
    link = Link(limit=18)             # only the UDP discovery probes get through
    link.confirm(0.0)
    a = link.a
    a._udp_ping_sent_at = 1e9         # keep the UDP requests out of the way
    now = 0.0
    for i in range(20):
        now += 0.4
        link.tick(now)
        assert a.mtuprobes == i + 1
    assert a.minmtu == 18
    now += 0.4
    out = a.maintenance(now, True, MINOR)
    # the 21st round fixes the MTU at minmtu, then probes it (and +1)
    assert (a.minmtu, a.maxmtu, a.mtu) == (18, 18, 18)
    assert sizes(out) == [18, 19]


def test_discovery_pacing_is_333_ms():
    link = Link(limit=MTU)
    link.confirm(0.0)
    a = link.a
    assert sizes(a.maintenance(1.0, True, MINOR)) == [1330]        # mtuprobes 0: no pacing
    assert sizes(a.maintenance(1.333, True, MINOR)) == []
    assert len(sizes(a.maintenance(1.3334, True, MINOR))) == 1


# --- fixed state -----------------------------------------------------------------------------

def fixed_link(limit=1400, ping_interval_s=60):
    link = Link(limit=limit, estimate=limit, ping_interval_s=ping_interval_s)
    link.confirm(0.0)
    link.tick(0.5)
    assert link.a.mtuprobes == -1 and link.a.mtu == limit
    link.a._udp_ping_sent_at = 1e9    # keep the UDP requests out of the way
    return link


def test_fixed_state_rechecks_every_ping_interval():
    link = fixed_link(ping_interval_s=60)
    a = link.a
    assert sizes(a.maintenance(60.4, True, MINOR)) == []
    out = a.maintenance(60.5, True, MINOR)
    assert sizes(out) == [1400, 1401]
    assert a.mtuprobes == -2
    link.deliver(out, 60.6)                     # 1400 answered, 1401 lost
    assert a.mtuprobes == -1 and a.mtu == 1400


def test_three_unanswered_checks_restart_discovery():
    link = fixed_link(ping_interval_s=60)
    link.limit = 1200                           # the path shrank
    a = link.a
    link.sent.clear()
    link.tick(60.5)
    assert link.sent == [1400, 1401] and a.mtuprobes == -2
    link.tick(61.0)                             # 1 s pacing once unanswered
    assert link.sent == [1400, 1401] and a.mtuprobes == -2
    link.tick(61.5)
    link.tick(62.5)
    assert link.sent == [1400, 1401, 1400, 1400] and a.mtuprobes == -4
    link.estimate = 1400
    link.tick(63.5)
    # restart: minmtu 0, a fresh estimate, the first probe at the estimate
    assert link.sent[-1] == 1400 and a.mtuprobes == 1 and a.minmtu == 0
    end = run_until_fixed(link, 63.5)
    assert a.mtuprobes < 0 and a.mtu <= 1200 and end <= 63.5 + 20 * 0.4 + 0.01
    settle(link, end)
    assert (a.minmtu, a.maxmtu, a.mtu, a.mtuprobes) == (1200, 1200, 1200, -1)


def test_bigger_reply_restarts_discovery_upwards():
    link = fixed_link(limit=1400)
    link.limit = 1450                           # the path grew: the +1 probe is answered
    a = link.a
    link.tick(60.5)
    assert (a.minmtu, a.maxmtu, a.mtuprobes) == (1401, MTU, 1)
    settle(link, 60.5)
    assert (a.minmtu, a.maxmtu, a.mtu, a.mtuprobes) == (1450, 1450, 1450, -1)


def test_no_plus_one_probe_at_the_top():
    link = fixed_link(limit=1517)
    assert sizes(link.a.maintenance(60.5, True, MINOR)) == [1517]


# --- EMSGSIZE (§8.5) -------------------------------------------------------------------------

def test_emsgsize_on_a_discovery_probe_retries_within_the_round():
    link = Link(limit=MTU)
    link.confirm(0.0)
    a = link.a
    assert sizes(a.maintenance(0.5, True, MINOR)) == [1330]
    retry = a.send_failed_emsgsize(1330)
    # maxmtu 1329 (multiplier 1.0 now), same cycle position: the probe is maxmtu itself
    assert [len(p.frame) for p in retry] == [1329]
    assert (a.maxmtu, a.mtu, a.mtuprobes) == (1329, 1329, 1)
    retry = a.send_failed_emsgsize(1329)
    assert [len(p.frame) for p in retry] == [1328] and a.mtuprobes == 1
    # a data packet failing later is not part of the round
    assert a.send_failed_emsgsize(1000) == [] and a.maxmtu == 999 and a.mtuprobes == 1


def test_emsgsize_lowers_bounds_and_may_fix():
    a = make(udp_discovery=False)
    a.minmtu, a.mtuprobes = 800, 3
    assert a.send_failed_emsgsize(1200) == []
    assert (a.maxmtu, a.mtu, a.mtuprobes) == (1199, 1199, 3)
    a.send_failed_emsgsize(100)                  # never below 512...
    assert (a.maxmtu, a.mtu) == (512, 512)
    # ...and minmtu >= maxmtu fixes the MTU at the smaller bound
    assert (a.minmtu, a.mtuprobes) == (512, -1)


def test_emsgsize_fixing_the_mtu_ends_the_round():
    link = Link(limit=MTU)
    link.confirm(0.0)
    a = link.a
    a.minmtu, a.maxmtu, a.mtuprobes = 1400, MTU, 7
    # the last probe of a cycle is minmtu + 1; refused, it brings maxmtu down to minmtu
    assert sizes(a.maintenance(0.5, True, MINOR)) == [1401]
    assert a.send_failed_emsgsize(1401) == []
    assert (a.minmtu, a.maxmtu, a.mtu, a.mtuprobes) == (1400, 1400, 1400, -1)


# --- MTU_INFO, PMTU, reset -------------------------------------------------------------------

def test_mtu_info_is_provisional_until_fixed():
    a = make()
    a.mtu_info(1400)
    assert a.mtu == 1400
    a.mtu_info(2000)
    assert a.mtu == MTU
    a.minmtu = a.maxmtu = a.mtu = 1300
    a.mtu_info(1400)
    assert a.mtu == 1300


def test_pmtu_setting_only_lowers():
    a = make()
    a.limit_mtu(1400)
    a.limit_mtu(1450)
    assert a.mtu == 1400


def test_reset_unconfirms_and_forgets_bounds():
    link = fixed_link()
    a = link.a
    a.record_received_len(99)
    a.reset()
    assert not a.udp_confirmed and a.next_deadline() is None
    assert (a.minmtu, a.maxmtu, a.mtuprobes, a.maxrecentlen) == (0, MTU, 0, 0)
    assert a.mtu == 1400


def test_malformed_replies():
    a = PathMtu(None, counter_rng())         # tinc's defaults
    assert a.config == PmtuConfig()
    assert a.probe_received(b"", 0.0, MINOR) is None
    assert a.probe_received(b"\x02\x05", 0.0, MINOR) is None
    assert not a.udp_confirmed               # neither counted as a reply
    # a type-2 length above 1518 is taken as 1518 (DEVIATION: tinc would set minmtu to it)
    a.maxmtu = 1400
    a.probe_received(b"\x02\xff\xff" + bytes(15), 0.0, MINOR)
    assert (a.minmtu, a.maxmtu, a.mtuprobes) == (MTU, MTU, 1)
    # any other non-zero type is a type-1 reply: its own length counts
    b = make()
    b.probe_received(b"\x07" + bytes(599), 0.0, MINOR)
    assert b.udp_confirmed and b.minmtu == 600
