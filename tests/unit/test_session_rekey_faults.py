"""Datagram rekeys whose KEX, SIG and ACK records are reordered, duplicated or dropped, and data
records in flight across the key switch, through two SptpsSessions (no transport).

For each case the test states the outcome:
  RECOVERS  the sessions complete the rekey (or keep carrying data) by themselves;
  ERROR     a record fails; the restart policy sees the error and restarts the tunnel if the
            peer's records stop decoding (tincapp.datapath.restart rule 3);
  STUCK     no error, but a handshake never completes: `handshake_pending` stays true, and the
            policy's watchdog (rekey_started + 10 s) restarts the tunnel.
The default session tolerates reordering (session.py docstring); tolerate_reordering=False is
tinc's behaviour, shown where it differs.

A initiated the tunnel (initiator role), B answered; roles never change across rekeys.
"""
import itertools

import pytest

from tincapp.datapath.batch import (SLOT_BAD_TAG, SLOT_OK, SLOT_REPLAYED, PacketBatch)
from tincapp.errors import DecryptError, HandshakeError, ReplayError
from tincapp.sptps import crypto
from tincapp.sptps.session import (HandshakeCompleted, RecordReceived, SptpsSession, State)

KEY_A = crypto.PrivateKey.from_seed(bytes(range(32)))
KEY_B = crypto.PrivateKey.from_seed(bytes(range(100, 132)))


def counter_rng():
    n = itertools.count()
    return lambda size: next(n).to_bytes(size, "big")


def out(s):
    return [data for _t, data in s.pop_outgoing()]


def transfer(a, b):
    events = {id(a): [], id(b): []}
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for data in out(src):
                moved = True
                events[id(dst)].extend(dst.receive(data))
    return events[id(a)], events[id(b)]


def connected(**kw):
    a = SptpsSession(initiator=True, datagram=True, label=b"rekey faults", my_key=KEY_A,
                     peer_public=KEY_B.public, rng=counter_rng(), **kw)
    b = SptpsSession(initiator=False, datagram=True, label=b"rekey faults", my_key=KEY_B,
                     peer_public=KEY_A.public, rng=counter_rng(), **kw)
    a.start()
    b.start()
    transfer(a, b)
    assert a.handshake_done and b.handshake_done
    assert not a.handshake_pending and not b.handshake_pending
    return a, b


def sealed(s, data):
    s.send_record(0, data)
    return out(s)[0]


def rekey_by_a(a, b):
    """A forces a rekey; returns every handshake record as it would travel, and leaves both
    sessions where they are after the last one was *sent* (nothing of the second half
    delivered): kex_a, kex_b, sig_a delivered; sig_b, ack_b, and (after sig_b) ack_a not."""
    a.force_kex()
    kex_a = out(a)[0]
    b.receive(kex_a)
    kex_b = out(b)[0]
    a.receive(kex_b)
    sig_a = out(a)[0]
    b.receive(sig_a)
    sig_b, ack_b = out(b)
    return kex_a, kex_b, sig_a, sig_b, ack_b


def assert_both_idle_and_talking(a, b):
    assert a.state is b.state is State.IDLE
    assert not a.handshake_pending and not b.handshake_pending
    assert b.receive(sealed(a, b"a->b")) == [RecordReceived(0, b"a->b")]
    assert a.receive(sealed(b, b"b->a")) == [RecordReceived(0, b"b->a")]


# --- reordering -------------------------------------------------------------------------------

def test_ack_before_sig_recovers():
    """RECOVERS (tinc: ERROR, then STUCK in AWAIT_ACK: test_session.py pins that)."""
    a, b = connected()
    *_, sig_b, ack_b = rekey_by_a(a, b)
    assert a.receive(ack_b) == []                 # held, not an error
    assert a.receive(sig_b) == [HandshakeCompleted(True)]
    assert b.receive(out(a)[0]) == [HandshakeCompleted(True)]
    assert a.held_records == 1
    assert_both_idle_and_talking(a, b)


def test_sig_before_kex_when_b_starts_the_rekey_recovers():
    """B forces the rekey: A answers with KEX and SIG back to back; SIG arrives first.
    RECOVERS (tinc: ERROR "Invalid KEX record length", then STUCK in AWAIT_SIG)."""
    a, b = connected()
    b.force_kex()
    a.receive(out(b)[0])
    kex_a, sig_a = out(a)
    assert b.receive(sig_a) == []
    assert b.receive(kex_a) == []                 # KEX, then the held SIG: B sends SIG + ACK
    assert b.state is State.AWAIT_ACK
    ev_a, ev_b = transfer(a, b)
    assert ev_a == [HandshakeCompleted(True)] == ev_b
    assert_both_idle_and_talking(a, b)


def test_sig_before_kex_in_tinc_mode_is_an_error_then_stuck():
    a, b = connected(tolerate_reordering=False)
    b.force_kex()
    a.receive(out(b)[0])
    kex_a, sig_a = out(a)
    with pytest.raises(HandshakeError, match="Invalid KEX record length"):
        b.receive(sig_a)
    b.receive(kex_a)
    transfer(a, b)
    assert b.state is State.AWAIT_SIG and a.state is State.AWAIT_SIG
    assert a.handshake_pending and b.handshake_pending      # the watchdog's cue
    # data still flows under the old keys meanwhile
    assert b.receive(sealed(a, b"old key")) == [RecordReceived(0, b"old key")]


def test_two_early_records_in_a_row_are_an_error():
    """Only one record is held: a second early one fails as in tinc (ERROR)."""
    a, b = connected()
    *_, sig_b, ack_b = rekey_by_a(a, b)
    a.receive(ack_b)
    with pytest.raises(ReplayError):              # the same ACK again: a duplicate
        a.receive(ack_b)
    assert a.receive(sig_b) == [HandshakeCompleted(True)]


# --- duplicates -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["kex_a", "kex_b", "sig_a", "sig_b", "ack_b"])
def test_duplicated_handshake_records_are_replays_and_the_rekey_completes(which):
    """ERROR (replayed; the restart policy does not restart a tunnel whose records still
    arrive) and RECOVERS. A late duplicate after the key switch is a replay under the previous
    key: it never starts another rekey."""
    a, b = connected()
    kex_a, kex_b, sig_a, sig_b, ack_b = rekey_by_a(a, b)
    records = dict(kex_a=(b, kex_a), kex_b=(a, kex_b), sig_a=(b, sig_a), sig_b=(a, sig_b),
                   ack_b=(a, ack_b))
    dst, dup = records[which]
    if which in ("kex_a", "kex_b", "sig_a"):
        with pytest.raises(ReplayError):          # duplicate right away
            dst.receive(dup)
    a.receive(sig_b)
    b.receive(out(a)[0])
    assert a.receive(ack_b) == [HandshakeCompleted(True)] or which == "ack_b"
    if which == "ack_b":
        assert a.state is State.IDLE
    with pytest.raises(ReplayError):              # duplicate after the switch
        dst.receive(dup)
    assert_both_idle_and_talking(a, b)


def test_duplicate_ack_in_tinc_mode_after_the_switch_fails_authentication():
    a, b = connected(tolerate_reordering=False)
    *_, sig_b, ack_b = rekey_by_a(a, b)
    a.receive(sig_b)
    b.receive(out(a)[0])
    a.receive(ack_b)
    with pytest.raises(DecryptError):
        a.receive(ack_b)


# --- drops ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lost", ["kex_a", "kex_b", "sig_a"])
def test_lost_handshake_record_before_any_key_changes_is_stuck_but_data_flows(lost):
    """STUCK: SPTPS never retransmits. Both directions keep using the old keys, so no error
    appears; handshake_pending says so, and the watchdog restarts the tunnel."""
    a, b = connected()
    a.force_kex()
    kex_a = out(a)[0]
    if lost != "kex_a":
        b.receive(kex_a)
        kex_b = out(b)[0]
        if lost != "kex_b":
            a.receive(kex_b)
            out(a)                                # sig_a, lost
    assert a.handshake_pending
    assert b.receive(sealed(a, b"x")) == [RecordReceived(0, b"x")]
    assert a.receive(sealed(b, b"y")) == [RecordReceived(0, b"y")]
    assert a.handshake_pending


def test_lost_sig_b_is_an_error_for_every_record_b_sends():
    """B has switched its send key; A cannot derive it without B's SIG. ERROR on every record
    from B (bad tag): the policy sees no valid record from B and restarts. A -> B still works."""
    a, b = connected()
    *_, _sig_b, ack_b = rekey_by_a(a, b)
    a.receive(ack_b)                              # held: B's SIG never comes
    assert a.state is State.AWAIT_SIG and b.state is State.AWAIT_ACK
    with pytest.raises(DecryptError):
        a.receive(sealed(b, b"new key"))
    assert b.receive(sealed(a, b"old key")) == [RecordReceived(0, b"old key")]


def test_lost_ack_b_recovers_on_the_first_record_under_the_new_key():
    """RECOVERS: B's first record under its new key proves its ACK was sent."""
    a, b = connected()
    *_, sig_b, _ack_b = rekey_by_a(a, b)
    a.receive(sig_b)
    assert b.receive(out(a)[0]) == [HandshakeCompleted(True)]
    assert a.state is State.AWAIT_ACK
    assert a.receive(sealed(b, b"new")) == [HandshakeCompleted(True), RecordReceived(0, b"new")]
    assert a.early_records == 1
    assert_both_idle_and_talking(a, b)


def test_lost_ack_a_recovers_on_the_first_record_under_the_new_key():
    a, b = connected()
    *_, sig_b, ack_b = rekey_by_a(a, b)
    a.receive(sig_b)
    out(a)                                        # A's ACK is lost
    assert a.receive(ack_b) == [HandshakeCompleted(True)]
    assert b.state is State.AWAIT_ACK and b.handshake_pending
    assert b.receive(sealed(a, b"new")) == [HandshakeCompleted(True), RecordReceived(0, b"new")]
    assert_both_idle_and_talking(a, b)


def test_lost_ack_with_an_idle_peer_is_stuck_until_the_watchdog():
    """STUCK (but carrying data A -> B): nothing from B ever proves its ACK."""
    a, b = connected()
    *_, sig_b, _ack_b = rekey_by_a(a, b)
    a.receive(sig_b)
    b.receive(out(a)[0])
    assert a.handshake_pending and a.state is State.AWAIT_ACK
    assert b.receive(sealed(a, b"works")) == [RecordReceived(0, b"works")]


# --- data records across the switch -------------------------------------------------------------

def test_data_under_the_new_key_before_the_ack_completes_and_the_late_ack_is_swallowed():
    a, b = connected()
    *_, sig_b, ack_b = rekey_by_a(a, b)
    a.receive(sig_b)
    b.receive(out(a)[0])
    early = sealed(b, b"early")
    assert a.receive(early) == [HandshakeCompleted(True), RecordReceived(0, b"early")]
    assert a.receive(ack_b) == []                 # the ACK: no error, no new rekey
    assert a.state is State.IDLE and out(a) == []
    with pytest.raises(ReplayError):
        a.receive(early)
    with pytest.raises(ReplayError):              # only once
        a.receive(ack_b)
    assert_both_idle_and_talking(a, b)


def test_old_key_records_in_flight_after_the_switch_are_accepted_once():
    a, b = connected()
    a.force_kex()
    b.receive(out(a)[0])
    a.receive(out(b)[0])
    in_flight = [sealed(b, b"old %d" % i) for i in range(3)]   # sealed before B's SIG/ACK
    b.receive(out(a)[0])
    sig_b, ack_b = out(b)
    after = sealed(b, b"new")
    a.receive(sig_b)
    b.receive(out(a)[0])
    assert a.receive(ack_b) == [HandshakeCompleted(True)]
    assert a.receive(after) == [RecordReceived(0, b"new")]
    for i in (2, 0, 1):                           # reordered stragglers under the old key
        assert a.receive(in_flight[i]) == [RecordReceived(0, b"old %d" % i)]
    assert a.previous_key_records == 3
    for rec in in_flight:
        with pytest.raises(ReplayError):
            a.receive(rec)
    forged = bytearray(in_flight[0])
    forged[-1] ^= 1
    with pytest.raises(DecryptError):
        a.receive(bytes(forged))


def test_old_key_records_fail_in_tinc_mode():
    a, b = connected(tolerate_reordering=False)
    a.force_kex()
    b.receive(out(a)[0])
    a.receive(out(b)[0])
    straggler = sealed(b, b"old")
    b.receive(out(a)[0])
    sig_b, ack_b = out(b)
    a.receive(sig_b)
    a.receive(ack_b)
    with pytest.raises(DecryptError):
        a.receive(straggler)


def test_previous_key_is_forgotten_once_the_window_has_passed():
    a, b = connected(replay_window=4)             # 32 sequence numbers
    a.force_kex()
    b.receive(out(a)[0])
    a.receive(out(b)[0])
    straggler = sealed(b, b"old")
    transfer(a, b)
    assert a.has_previous_key
    for i in range(31):
        a.receive(sealed(b, b"%d" % i))
    assert a.has_previous_key                     # the straggler could still pass the window
    a.receive(sealed(b, b"last"))
    assert not a.has_previous_key
    with pytest.raises(DecryptError):
        a.receive(straggler)


def test_verify_datagram_knows_the_other_keys():
    a, b = connected()
    *_, sig_b, ack_b = rekey_by_a(a, b)
    a.receive(sig_b)
    b.receive(out(a)[0])
    early = sealed(b, b"early")
    assert a.verify_datagram(early)               # the pending key
    a.receive(early)
    a.receive(ack_b)


# --- the same through bursts ----------------------------------------------------------------------

def burst(records):
    batch = PacketBatch(64, 256)
    for r in records:
        batch.append(r)
    return batch


def test_burst_with_old_and_new_key_records_around_the_switch():
    a, b = connected()
    a.force_kex()
    b.receive(out(a)[0])
    a.receive(out(b)[0])
    old = [sealed(b, b"old %d" % i) for i in range(3)]
    b.receive(out(a)[0])
    sig_b, ack_b = out(b)
    a.receive(sig_b)
    b.receive(out(a)[0])
    new = [sealed(b, b"new %d" % i) for i in range(3)]
    # A still awaits B's ACK: the burst mixes old, new (early) and a duplicate
    src = burst([old[0], new[0], old[1], new[1], new[1], old[2], new[2]])
    opened = PacketBatch(64, 256)
    events = a.open_batch(src, opened)
    assert events == [HandshakeCompleted(True)]
    assert [opened.status[i] for i in range(7)] == \
        [SLOT_OK, SLOT_OK, SLOT_OK, SLOT_OK, SLOT_REPLAYED, SLOT_OK, SLOT_OK]
    assert [opened.get(i) for i in (0, 1, 2, 3, 5, 6)] == \
        [b"old 0", b"new 0", b"old 1", b"new 1", b"old 2", b"new 2"]
    # old 1 and old 2 opened under the key current when the burst was opened, the new ones
    # under the pending key (the first) and then the new current key
    assert a.early_records == 1 and a.previous_key_records == 0
    assert a.receive(ack_b) == []
    # forged records in a burst stay bad tags under every key
    forged = bytearray(sealed(b, b"x"))
    forged[-1] ^= 1
    opened2 = PacketBatch(64, 256)
    a.open_batch(burst([bytes(forged)]), opened2)
    assert opened2.status[0] == SLOT_BAD_TAG


def test_burst_in_tinc_mode_fails_the_early_records():
    a, b = connected(tolerate_reordering=False)
    *_, sig_b, ack_b = rekey_by_a(a, b)
    a.receive(sig_b)
    b.receive(out(a)[0])
    opened = PacketBatch(64, 256)
    assert a.open_batch(burst([sealed(b, b"early")]), opened) == []
    assert opened.status[0] == SLOT_BAD_TAG
