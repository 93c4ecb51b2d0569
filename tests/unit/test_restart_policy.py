"""RestartPolicy driven with a fake clock: every rule of tincapp/datapath/restart.py.

Time is a number we advance; timers fire by calling handle_deadline() at next_deadline().
"""
import itertools

import pytest
from hypothesis import given, settings, strategies as st

from tincapp.datapath.restart import (KIND_BAD_TAG, KIND_FUTURE, KIND_HANDSHAKE, KIND_REPLAYED,
                                      KIND_SHORT, PATH_ANS_KEY, PATH_REQ_KEY_21, PATH_TCP_RAW,
                                      PATH_UDP, RestartConfig, RestartPolicy, classify,
                                      kind_of_slot)
from tincapp.errors import (DecryptError, HandshakeError, HandshakeOrderError, ReplayError,
                            WireError)
from tincapp.sptps import crypto
from tincapp.sptps.session import SptpsSession


def fixed_rng(byte):
    return lambda n: bytes([byte]) * n


def policy(me="alice", peer="bob", rng=None, **cfg):
    return RestartPolicy(peer, me, rng or fixed_rng(0), RestartConfig(**cfg))


class Sim:
    """A policy plus the tunnel core's side of the contract: restarts start sessions, timers
    fire when due. Records every restart time."""

    def __init__(self, p):
        self.p = p
        self.now = 0.0
        self.restarts = []
        self.logs = []

    def _take(self, d):
        if d.log:
            self.logs.append(d.log)
        if d.restart:
            self.restarts.append(self.now)
        return d

    def advance(self, t):
        """Move the clock to t, firing every deadline on the way."""
        while True:
            due = self.p.next_deadline()
            if due is None or due > t:
                break
            assert due >= self.now - 1e-9, "a deadline in the past was left armed"
            self.now = max(self.now, due)
            self._take(self.p.handle_deadline(self.now))
        self.now = t

    def error(self, t, kind=KIND_BAD_TAG, path=PATH_UDP, count=1):
        self.advance(t)
        return self._take(self.p.receive_failed(t, kind, path, "x", "10.0.0.2 port 655", count))

    def valid(self, t):
        self.advance(t)
        self.p.record_accepted(t)

    def wanted(self, t):
        self.advance(t)
        return self._take(self.p.wanted(t))

    def healthy_session(self, t):
        """We start a session at t and it completes at once."""
        self.advance(t)
        self.p.started(t)
        self.p.handshake_completed(t)


# --- configuration ------------------------------------------------------------------------

def test_interval_below_ten_seconds_needs_the_test_flag():
    with pytest.raises(ValueError):
        RestartConfig(min_interval_s=2)
    assert RestartConfig(min_interval_s=2, allow_short_interval=True).min_interval_s == 2


def test_classify_maps_session_errors_and_slot_statuses():
    from tincapp.datapath import batch
    assert classify(DecryptError("x")) == KIND_BAD_TAG
    assert classify(ReplayError("Received late or replayed packet, seqno 1")) == KIND_REPLAYED
    assert classify(ReplayError("Packet is 900 seqs in the future, dropped",
                                future=True)) == KIND_FUTURE
    assert classify(HandshakeOrderError("Invalid packet seqno: 0 != 1")) == KIND_HANDSHAKE
    assert classify(HandshakeError("Failed to verify SIG record")) == KIND_HANDSHAKE
    assert classify(WireError("short")) == KIND_SHORT
    assert kind_of_slot(batch.SLOT_BAD_TAG) == KIND_BAD_TAG
    assert kind_of_slot(batch.SLOT_OK) is None


# --- rule 1 and 4: the bound, a stuck tunnel ------------------------------------------------

def test_stuck_tunnel_restarts_at_first_error_then_not_within_the_bound_then_recovers():
    s = Sim(policy())
    s.healthy_session(0)
    for t in range(1, 31):
        s.valid(t)
    # the peer's records stop decoding at 100; the last valid one was at 30
    d = s.error(100)
    assert d.restart and s.restarts == [100]
    assert d.log == (3, "Failed to decode raw TCP packet from bob (10.0.0.2 port 655), "
                        "restarting SPTPS")
    assert s.p.snapshot().last_restart_reason.startswith("raw TCP packet: bad tag")
    # our new handshake is slow; the peer's old records keep failing: no restart before 110
    for t in [100.5, 103, 105, 109.9]:
        assert not s.error(t).restart
    s.advance(109.95)
    assert s.restarts == [100]
    # the new session completes; the tunnel carries traffic again: no more restarts
    s.p.handshake_completed(109.95)
    for t in range(110, 200):
        s.valid(t)
    s.advance(300)
    assert s.restarts == [100]


def test_error_forbidden_by_the_bound_restarts_when_it_expires_without_another_error():
    s = Sim(policy())
    s.healthy_session(0)
    s.valid(1)
    d = s.error(7)                        # dead (no record since 1 + 5) but S + 10 = 10
    assert not d.restart and d.log[1].endswith("not restarting SPTPS: next restart allowed in 3 s")
    assert s.p.next_deadline() == 10
    s.advance(20)
    assert s.restarts == [10]


def test_a_valid_record_cancels_the_pending_error():
    s = Sim(policy())
    s.healthy_session(0)
    s.error(7)
    s.valid(8)
    assert s.p.next_deadline() is None
    s.advance(30)
    assert s.restarts == []


def test_never_two_restarts_within_the_interval_even_under_errors_and_timeouts():
    s = Sim(policy())
    s.wanted(0)
    s.p.started(0)
    t = 0.0
    while t < 300:
        t += 0.25
        s.error(t, kind=KIND_HANDSHAKE, path=PATH_ANS_KEY)
        s.wanted(t)
    gaps = [b - a for a, b in zip(s.restarts, s.restarts[1:])]
    assert s.restarts and min(gaps) >= 10


# --- rule 3: forged records into a healthy tunnel ----------------------------------------------

@pytest.mark.parametrize("valid_every", [0.05, 1.0, 4.0])
def test_flood_of_forged_records_into_a_live_tunnel_never_restarts(valid_every):
    """10,000 forged datagrams per second (reported per 20 ms burst) for three minutes while
    the peer's own records keep arriving (from an iperf rate down to one ping reply per 4 s)."""
    s = Sim(policy())
    s.healthy_session(0)
    s.valid(0.5)
    next_valid = 0.5 + valid_every
    for i in range(1, 9000):
        t = 0.5 + i * 0.02
        while next_valid <= t:
            s.valid(next_valid)
            next_valid += valid_every
        s.error(t, count=200)
    s.advance(181)
    snap = s.p.snapshot()
    assert s.restarts == [] and snap.restarts == 0
    assert snap.decode_errors == 8999 * 200
    # the suppression is logged once per 10 s, not per burst
    assert 1 <= len(s.logs) <= 19
    assert all(text.endswith("not restarting SPTPS: valid records still arriving")
               for _level, text in s.logs)


def test_peer_restarted_unnoticed_restarts_within_the_bound():
    s = Sim(policy())
    s.healthy_session(0)
    t = 0.0
    while t < 100:
        t = round(t + 0.2, 6)
        s.valid(t)
    # the peer came back with a new key: everything it sends fails from now on
    while not s.restarts:
        t = round(t + 0.2, 6)
        s.error(t)
    assert 100 < s.restarts[0] <= 100 + 10
    assert s.restarts[0] == pytest.approx(105, abs=0.3)    # last valid record + liveness


def test_authentic_handshake_failure_restarts_even_if_data_flows():
    s = Sim(policy())
    s.healthy_session(0)
    for t in range(1, 50):
        s.valid(t)
    d = s.error(49.5, kind=KIND_HANDSHAKE, path=PATH_ANS_KEY)
    assert d.restart
    assert d.log[1] == ("Failed to decode handshake TCP packet from bob (10.0.0.2 port 655), "
                        "restarting SPTPS")


def test_log_wording_per_path():
    for path, what in [(PATH_TCP_RAW, "raw TCP packet"), (PATH_REQ_KEY_21, "TCP packet")]:
        s = Sim(policy())
        assert s.error(5, path=path).log[1] == \
            f"Failed to decode {what} from bob (10.0.0.2 port 655), restarting SPTPS"


# --- rule 2: grace ---------------------------------------------------------------------------

def test_errors_right_after_a_session_change_are_not_counted():
    s = Sim(policy())
    s.healthy_session(0)
    s.valid(30)
    s.p.rekey_started(40)
    s.p.handshake_completed(40.5)             # rekey done: old-key records still in flight
    for t in [40.6, 41, 42.4]:
        assert s.error(t) == s.error(t)       # nothing happens, however often
    snap = s.p.snapshot()
    assert s.restarts == [] and snap.grace_errors == 6 and snap.pending_error_since is None
    assert s.p.next_deadline() is None
    # after the grace period an error with no valid record since counts again
    s.error(46)
    assert s.restarts == [46]


# --- rule 5: backoff --------------------------------------------------------------------------

def run_failing_handshakes(rng, until=400):
    """Handshakes never complete; the peer's records fail every second, we want the tunnel."""
    s = Sim(policy(rng=rng))
    s.wanted(0)
    s.p.started(0)
    t = 0.0
    while t < until:
        t += 1
        s.error(t)
        s.wanted(t)
    return s


def test_failing_handshakes_back_off_with_jitter_capped_at_sixty_seconds():
    low = run_failing_handshakes(fixed_rng(0))           # u = 0: the full delay
    high = run_failing_handshakes(fixed_rng(0xff))       # u = 1: 20 % shorter
    gaps_low = [round(b - a, 6) for a, b in zip(low.restarts, low.restarts[1:])]
    gaps_high = [round(b - a, 6) for a, b in zip(high.restarts, high.restarts[1:])]
    assert low.restarts[0] == 10                          # the first watchdog restart
    assert gaps_low[:5] == [10, 20, 40, 60, 60]
    assert gaps_high[:5] == [10, 16, 32, 48, 48]
    assert max(gaps_low) <= 60 and min(gaps_high) >= 10
    assert low.p.snapshot().failed_restarts >= 4


def test_jitter_comes_from_the_injected_rng():
    values = itertools.cycle([b"\x00\x00", b"\x80\x00", b"\xff\xff"])
    s = run_failing_handshakes(lambda n: next(values), until=300)
    gaps = [round(b - a, 3) for a, b in zip(s.restarts, s.restarts[1:])]
    assert gaps[1] == 20 and 35 < gaps[2] < 37 and gaps[3] == 48


def test_a_completed_handshake_resets_the_backoff():
    s = run_failing_handshakes(fixed_rng(0), until=200)
    assert s.p.snapshot().failed_restarts >= 3
    t0 = s.now
    s.p.handshake_completed(t0 + 1)
    assert s.p.snapshot().failed_restarts == 0
    for t in range(2, 40):
        s.valid(t0 + t)
    s.error(t0 + 70)                              # stuck again: restart at once
    assert s.restarts[-1] == t0 + 70
    for t in range(71, 95):                       # and that restart fails too:
        s.error(t0 + t)                           # the next one after 10 s, not 60
    assert s.restarts[-1] == t0 + 80


# --- rule 6: the watchdog ---------------------------------------------------------------------

def test_no_key_after_ten_seconds_restarts():
    s = Sim(policy())
    s.wanted(0)
    s.p.started(0)
    assert s.p.next_deadline() == 10
    s.advance(10)
    assert s.restarts == [10]
    assert s.logs[-1] == (0, "No key from bob after 10 seconds, restarting SPTPS")
    # nobody wants the tunnel since: no timer retries it
    assert s.p.next_deadline() is None
    d = s.wanted(40)                               # tinc's try_sptps: overdue, restart now
    assert d.restart and s.restarts == [10, 40]


def test_stuck_rekey_is_restarted_by_the_watchdog():
    s = Sim(policy())
    s.healthy_session(0)
    for t in range(1, 100):
        s.valid(t)                                 # old keys still carry data
    s.p.rekey_started(100)
    for t in range(101, 115):
        s.valid(t)
    assert s.restarts == [110]


def test_completed_handshake_disarms_the_watchdog():
    s = Sim(policy())
    s.wanted(0)
    s.p.started(0)
    s.p.handshake_completed(0.3)
    assert s.p.next_deadline() is None


# --- rule 7 and 8: the peer's starts, crossings ----------------------------------------------

def test_peer_start_is_followed_and_is_not_a_restart_of_ours():
    s = Sim(policy())
    s.healthy_session(0)
    s.valid(50)
    d = s.p.peer_started(60)
    assert d.follow and not d.restart and s.p.snapshot().restarts == 0
    s.error(63)                                    # after its grace: but S + 10 = 70
    assert s.restarts == []
    s.advance(75)
    assert s.restarts == [70]


def test_peer_start_long_after_ours_is_followed():
    s = Sim(policy(me="alice", peer="bob"))
    s.p.started(0)
    assert s.p.peer_started(5).follow


def test_crossed_starts_lower_name_keeps_higher_name_follows():
    alice = policy(me="alice", peer="bob")
    bob = policy(me="bob", peer="alice")
    alice.started(0)
    bob.started(0.01)
    da, db = alice.peer_started(0.2), bob.peer_started(0.21)
    assert (da.follow, db.follow) == (False, True)
    assert "keeping our own session" in da.log[1]
    assert alice.snapshot().crossed_starts == bob.snapshot().crossed_starts == 1


def test_crossed_with_tinc_when_we_are_higher_restarts_once_when_the_peer_yielded_too():
    bob = policy(me="bob", peer="alice")
    bob.started(0)
    assert bob.peer_started(0.2).follow                # we yield ...
    # ... and so does tinc: its responder KEX hits our responder session and fails
    d = bob.receive_failed(0.4, KIND_HANDSHAKE, PATH_ANS_KEY, "Invalid packet seqno: 0 != 1")
    assert d.restart and d.reason.startswith("crossed")
    # the restart bound holds from here on
    assert not bob.receive_failed(5, KIND_HANDSHAKE, PATH_ANS_KEY).restart


def test_crossing_restart_respects_the_restart_bound():
    bob = policy(me="bob", peer="alice")
    bob.receive_failed(0, KIND_BAD_TAG, PATH_UDP)      # a restart of ours at 0
    assert bob.snapshot().restarts == 1
    assert bob.peer_started(0.5).follow
    assert not bob.receive_failed(0.6, KIND_HANDSHAKE, PATH_ANS_KEY).restart
    assert bob.next_deadline() == 10.5                 # S (the peer's start) + 10
    assert bob.handle_deadline(10.5).restart


KEY_A = crypto.PrivateKey.from_seed(bytes(range(32)))
KEY_B = crypto.PrivateKey.from_seed(bytes(range(100, 132)))


def session(initiator, me_key, peer_key, label):
    n = itertools.count()
    s = SptpsSession(initiator=initiator, datagram=True, label=label, my_key=me_key,
                     peer_public=peer_key.public, rng=lambda k: next(n).to_bytes(k, "big"))
    s.start()
    return s


def test_crossed_sessions_with_real_sessions_converge_both_ways():
    """The two crossings with a peer that always yields (tinc), through real sessions."""
    label_ab = b"tinc UDP key expansion alice bob\0"
    label_ba = b"tinc UDP key expansion bob alice\0"
    # alice (tincapp, lower) and bob (tinc) both start
    ia = session(True, KEY_A, KEY_B, label_ab)
    ib = session(True, KEY_B, KEY_A, label_ba)
    kex_ia, kex_ib = ia.pop_outgoing()[0][1], ib.pop_outgoing()[0][1]
    # case 1: we are alice and keep ours; tinc-bob yields: a responder for alice's start
    alice = policy(me="alice", peer="bob")
    alice.started(0)
    assert not alice.peer_started(0.1).follow          # kex_ib is ignored
    rb = session(False, KEY_B, KEY_A, label_ab)
    rb.receive(kex_ia)
    transfer = [(rb, ia)]
    while transfer:
        src, dst = transfer.pop()
        for _t, data in src.pop_outgoing():
            dst.receive(data)
            transfer.append((dst, src))
    assert ia.handshake_done and rb.handshake_done
    # case 2: we are bob (tincapp, higher) and yield; tinc-alice yields too
    bob = policy(me="bob", peer="alice")
    bob.started(0)
    assert bob.peer_started(0.1).follow
    r_bob = session(False, KEY_B, KEY_A, label_ab)     # our responder for alice's start
    r_bob.receive(kex_ia)
    r_alice = session(False, KEY_A, KEY_B, label_ba)   # tinc's responder for our start
    r_alice.receive(kex_ib)
    with pytest.raises(ReplayError) as e:              # its KEX reaches our responder
        r_bob.receive(r_alice.pop_outgoing()[0][1])
    d = bob.receive_failed(0.3, classify(e.value), PATH_ANS_KEY, str(e.value))
    assert d.restart                                   # tinc follows that start: converged


# --- reachability -----------------------------------------------------------------------------

def test_reachability_change_allows_a_restart_at_once():
    s = Sim(policy())
    s.healthy_session(0)
    s.error(7)
    assert s.restarts == []
    s.p.reachability_changed(7.5)
    assert s.p.next_deadline() is None
    s.error(8)
    assert s.restarts == [8]


def test_snapshot_counts_by_kind():
    p = policy()
    p.receive_failed(1, KIND_REPLAYED, PATH_UDP, count=3)
    p.receive_failed(2, KIND_FUTURE, PATH_UDP)
    snap = p.snapshot()
    assert snap.replayed == 3 and snap.late == 1 and snap.decode_errors == 4
    assert snap.errors_by_kind == (("future", 1), ("replayed", 3))
    assert snap.restarts == 1 and snap.last_restart_at == 1


# --- property: the bound and the recovery time over random event sequences -------------------

EVENT = st.tuples(st.floats(0.01, 3.0),
                  st.sampled_from(["error", "error", "valid", "wanted", "peer_start",
                                   "handshake_error", "rekey", "burst"]))


@settings(max_examples=100, deadline=None)
@given(events=st.lists(EVENT, max_size=60), fault_gap=st.floats(0, 20),
       handshake_s=st.floats(0.05, 2.0), jitter=st.integers(0, 255))
def test_property_bound_and_stuck_recovery(events, fault_gap, handshake_s, jitter):
    """Random healthy-tunnel history, then a fault: from then on every record from the peer
    fails (errors every 0.5 s) until we restart; each of our restarts completes after
    handshake_s. Invariants: never two restarts less than 10 s apart; the stuck tunnel restarts
    within 10 s (+ epsilon) of its first error after the previous restart."""
    s = Sim(policy(rng=fixed_rng(jitter)))
    s.healthy_session(0)
    t = 0.0
    completes_at = None

    def maybe_complete(t):
        nonlocal completes_at
        if completes_at is not None and completes_at <= t:
            s.advance(completes_at)
            s.p.handshake_completed(completes_at)
            completes_at = None

    def note_restarts(before):
        nonlocal completes_at
        if len(s.restarts) > before:
            completes_at = s.restarts[-1] + handshake_s

    for gap, what in events:
        t += gap
        maybe_complete(t)
        before = len(s.restarts)
        if what == "error":
            s.error(t)
        elif what == "valid":
            s.valid(t)
        elif what == "wanted":
            s.wanted(t)
        elif what == "peer_start":
            s.advance(t)
            if s.p.peer_started(t).follow:
                completes_at = t + handshake_s
        elif what == "handshake_error":
            s.error(t, kind=KIND_HANDSHAKE, path=PATH_ANS_KEY)
        elif what == "rekey":
            s.advance(t)
            s.p.rekey_started(t)
            completes_at = t + handshake_s
        else:
            s.error(t, count=50)
            s.valid(t)
        note_restarts(before)
    # the fault: nothing the peer sends decodes any more, until we restart
    t += fault_gap
    maybe_complete(t)
    restarts_before = len(s.restarts)
    first_error = None
    while len(s.restarts) == restarts_before and t < 500:
        t += 0.5
        maybe_complete(t)
        if first_error is None:
            first_error = t                      # later than every earlier restart
        s.error(t)
        note_restarts(restarts_before)
    s.advance(t)
    gaps = [b - a for a, b in zip(s.restarts, s.restarts[1:])]
    assert not gaps or min(gaps) >= 10 - 1e-9
    assert len(s.restarts) > restarts_before, "the stuck tunnel never restarted"
    assert s.restarts[-1] <= first_error + 10 + 0.5 + 1e-9


# --- rule 10: silence --------------------------------------------------------------------------

class ProbingSim(Sim):
    """Sim that also records rule 10's probe requests."""

    def __init__(self, p):
        super().__init__(p)
        self.probes = []

    def _take(self, d):
        if d.probe:
            self.probes.append(self.now)
        return super()._take(d)


def established(sim, t=0.0):
    sim.p.started(t)
    sim.p.handshake_completed(t + 0.1)
    sim.p.record_accepted(t + 0.1)


def test_silence_while_sending_probes_then_restarts():
    sim = ProbingSim(policy())
    established(sim)
    for i in range(1, 300):                    # we send every 0.1 s, nothing comes back
        sim.advance(20 + i * 0.1)
        sim.p.data_sent(sim.now)
    # valid record at 0.1, bound from the start at 0: probe at 4.1, silence error at 5.6,
    # which restarts at once (10 s bound long passed by the time data flows at 20 s: the probe
    # then comes 4 s after the last life, i.e. immediately)
    assert sim.probes and sim.restarts
    assert sim.restarts[0] - sim.probes[0] == pytest.approx(1.5, abs=0.11)
    assert any(kind == "silent" for kind, _ in sim.p.snapshot().errors_by_kind)
    assert all(b - a >= 10 for a, b in zip(sim.restarts, sim.restarts[1:]))


def test_a_live_peer_answers_the_silence_probe_and_nothing_restarts():
    sim = ProbingSim(policy())
    established(sim)
    answered = 0
    for i in range(1, 600):                    # one-way traffic for a minute
        sim.advance(i * 0.1)
        sim.p.data_sent(sim.now)
        if len(sim.probes) > answered:         # the peer replies to each probe at once
            answered = len(sim.probes)
            sim.p.record_accepted(sim.now)
    assert sim.probes                           # it did ask
    assert sim.restarts == []


def test_no_probe_without_sending_and_none_before_the_key_is_valid():
    sim = ProbingSim(policy())
    sim.p.started(0)
    sim.p.data_sent(1)                          # handshake not completed: rule 6's business
    sim.advance(9)
    assert sim.probes == []
    sim.p.handshake_completed(9.5)
    sim.advance(60)                             # valid, but we send nothing
    assert sim.probes == [] and sim.restarts == []
