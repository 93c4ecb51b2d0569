"""SptpsSession driven directly with bytes: handshakes, rekeys, and every kind of bad input.

Loss is dropping output, reordering is delivering it in another order. No sockets, no sleeps.
"""
import itertools

import pytest

from tincapp.datapath.batch import (SLOT_BAD_TAG, SLOT_EMPTY, SLOT_OK, SLOT_REPLAYED,
                                    PacketBatch)
from tincapp.errors import (DecryptError, HandshakeError, ReplayError, SequenceExhaustedError,
                            SptpsError, WireError)
from tincapp.sptps import crypto, wire
from tincapp.sptps.session import (HANDSHAKE_RESERVE, HandshakeCompleted, RecordReceived,
                                   SptpsSession, State)

KEY_A = crypto.PrivateKey.from_seed(bytes(range(32)))
KEY_B = crypto.PrivateKey.from_seed(bytes(range(100, 132)))
KEY_C = crypto.PrivateKey.from_seed(bytes(range(200, 232)))


def counter_rng():
    """Deterministic randomness: distinct 32-byte values."""
    n = itertools.count()
    return lambda size: next(n).to_bytes(size, "big")


def pair(datagram, **kw):
    a = SptpsSession(initiator=True, datagram=datagram, label=b"unit test", my_key=KEY_A,
                     peer_public=KEY_B.public, rng=counter_rng(), **kw)
    b = SptpsSession(initiator=False, datagram=datagram, label=b"unit test", my_key=KEY_B,
                     peer_public=KEY_A.public, rng=counter_rng(), **kw)
    return a, b


def out(s):
    return [data for _t, data in s.pop_outgoing()]


def transfer(a, b):
    """Deliver everything both sides queued until both are quiet; return events per side."""
    events = {id(a): [], id(b): []}
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for data in out(src):
                moved = True
                events[id(dst)].extend(dst.receive(data))
        if not moved:
            return events[id(a)], events[id(b)]


def connected(datagram, **kw):
    a, b = pair(datagram, **kw)
    a.start()
    b.start()
    ev_a, ev_b = transfer(a, b)
    assert ev_a == [HandshakeCompleted(rekey=False)] and ev_b == [HandshakeCompleted(False)]
    return a, b


def test_receive_before_start_is_refused():
    a, _ = pair(False)
    with pytest.raises(SptpsError, match="state zero"):
        a.receive(b"\x00\x01\x80x")


@pytest.mark.parametrize("datagram", [False, True])
def test_handshake_and_records_both_ways(datagram):
    a, b = connected(datagram)
    assert a.state is b.state is State.IDLE
    a.send_record(0, b"ping")
    b.send_record(5, b"")
    ev_a, ev_b = transfer(a, b)
    assert ev_b == [RecordReceived(0, b"ping")] and ev_a == [RecordReceived(5, b"")]


def test_stream_one_byte_at_a_time():
    a, b = pair(False)
    a.start()
    b.start()
    events = {id(a): [], id(b): []}
    for _ in range(4):
        for src, dst in ((a, b), (b, a)):
            for data in out(src):
                for i in range(len(data)):
                    events[id(dst)].extend(dst.receive(data[i:i + 1]))
    assert events[id(a)] == [HandshakeCompleted(False)] == events[id(b)]
    a.send_record(1, b"x" * 1000)
    stream = b"".join(out(a))
    got = []
    for i in range(len(stream)):
        got.extend(b.receive(stream[i:i + 1]))
    assert got == [RecordReceived(1, b"x" * 1000)]


def test_stream_stops_after_one_record():
    a, b = connected(False)
    a.send_record(0, b"one")
    a.send_record(0, b"two")
    stream = b"".join(out(a)) + b"RAW BYTES THAT ARE NOT SPTPS"
    used, events = b.receive_stream_record(stream)
    assert events == [RecordReceived(0, b"one")]
    used2, events2 = b.receive_stream_record(stream[used:])
    assert events2 == [RecordReceived(0, b"two")]
    assert stream[used + used2:] == b"RAW BYTES THAT ARE NOT SPTPS"


def test_sending_before_the_handshake_or_a_handshake_type_is_refused():
    a, b = pair(False)
    a.start()
    with pytest.raises(SptpsError, match="Handshake phase not finished yet"):
        a.send_record(0, b"early")
    b.start()
    transfer(a, b)
    with pytest.raises(SptpsError, match="Invalid application record type"):
        a.send_record(wire.HANDSHAKE, b"")


def test_wrong_peer_key_fails_the_signature():
    a = SptpsSession(initiator=True, datagram=False, label=b"l", my_key=KEY_A,
                     peer_public=KEY_C.public, rng=counter_rng())
    b = SptpsSession(initiator=False, datagram=False, label=b"l", my_key=KEY_B,
                     peer_public=KEY_A.public, rng=counter_rng())
    a.start()
    b.start()
    with pytest.raises(HandshakeError, match="Failed to verify SIG record"):
        transfer(a, b)
    assert a.state is State.FAILED or b.state is State.FAILED


def test_label_mismatch_fails_the_signature():
    a, _ = pair(True)
    b = SptpsSession(initiator=False, datagram=True, label=b"other", my_key=KEY_B,
                     peer_public=KEY_A.public, rng=counter_rng())
    a.start()
    b.start()
    with pytest.raises(HandshakeError):
        transfer(a, b)


def test_kex_with_a_nonzero_version_is_rejected():
    a, b = pair(True)
    a.start()
    b.start()
    kex = bytearray(out(a)[0])
    kex[5] = 1                                   # seqno(4) type(1) version
    with pytest.raises(HandshakeError, match="incorrect version"):
        b.receive(bytes(kex))


def test_plaintext_phase_needs_exact_order():
    a, b = pair(True)
    a.start()
    b.start()
    kex_a = out(a)[0]
    b.receive(kex_a)                             # responder stores it, sends nothing yet
    with pytest.raises(ReplayError, match="Invalid packet seqno: 0 != 1"):
        b.receive(kex_a)
    app = (1).to_bytes(4, "big") + b"\x00hello"
    with pytest.raises(SptpsError, match="Application record received before handshake"):
        b.receive(app)


# --- datagram mode: forged, replayed, reordered ----------------------------------------------

def test_forged_datagram_is_refused_and_changes_nothing():
    a, b = connected(True)
    a.send_record(0, b"genuine")
    d = out(a)[0]
    before = (b.replay.inseqno, b.replay.received, b.replay.late, b.state)
    for i in range(len(d)):
        forged = bytearray(d)
        forged[i] ^= 0x40
        with pytest.raises((DecryptError, ReplayError, WireError)):
            b.receive(bytes(forged))
    assert (b.replay.inseqno, b.replay.received, b.replay.late, b.state) == before
    assert b.receive(d) == [RecordReceived(0, b"genuine")]


def test_short_datagram():
    a, b = connected(True)
    with pytest.raises(WireError, match="short"):
        b.receive(b"\x00" * 20)


def test_replayed_datagram():
    a, b = connected(True)
    a.send_record(0, b"once")
    d = out(a)[0]
    b.receive(d)
    with pytest.raises(ReplayError, match="late or replayed"):
        b.receive(d)


def test_reordered_datagrams_inside_the_window_are_accepted_once():
    a, b = connected(True, replay_window=16)
    for i in range(100):
        a.send_record(0, b"%d" % i)
    ds = out(a)
    got = []
    for d in reversed(ds):
        got.extend(b.receive(d))
    assert sorted(int(e.data) for e in got) == list(range(100))
    with pytest.raises(ReplayError):
        b.receive(ds[50])


def test_too_old_datagram_is_refused():
    a, b = connected(True, replay_window=2)     # 16 numbers
    for i in range(40):
        a.send_record(0, b"x")
    ds = out(a)
    b.receive(ds[-1])
    with pytest.raises(ReplayError):
        b.receive(ds[0])


def test_verify_datagram_checks_without_consuming():
    a, b = connected(True)
    a.send_record(0, b"look")
    d = out(a)[0]
    assert b.verify_datagram(d)
    assert b.verify_datagram(d)                 # still fresh: nothing was consumed
    assert not b.verify_datagram(d[:-1] + bytes([d[-1] ^ 1]))
    b.receive(d)
    assert not b.verify_datagram(d)             # now it is a replay


def test_stream_forgery_fails_the_session():
    a, b = connected(False)
    a.send_record(0, b"hello")
    rec = bytearray(out(a)[0])
    rec[5] ^= 1
    with pytest.raises(DecryptError):
        b.receive(bytes(rec))
    assert b.state is State.FAILED
    with pytest.raises(SptpsError, match="failed earlier"):
        b.receive(b"\x00")


# --- rekeying ----------------------------------------------------------------------------

@pytest.mark.parametrize("datagram", [False, True])
def test_forced_rekey_changes_keys_and_data_keeps_flowing(datagram):
    a, b = connected(datagram)
    old = a._out_key
    a.force_kex()
    ev_a, ev_b = transfer(a, b)
    assert ev_a == [HandshakeCompleted(rekey=True)] == ev_b
    assert a._out_key is not old
    a.send_record(0, b"new key")
    assert transfer(a, b)[1] == [RecordReceived(0, b"new key")]


@pytest.mark.parametrize("datagram", [False, True])
def test_simultaneous_rekeys_settle(datagram):
    a, b = connected(datagram)
    a.force_kex()
    b.force_kex()
    ev_a, ev_b = transfer(a, b)
    assert HandshakeCompleted(rekey=True) in ev_a and HandshakeCompleted(rekey=True) in ev_b
    assert a.state is b.state is State.IDLE
    b.send_record(0, b"after")
    assert transfer(a, b)[0] == [RecordReceived(0, b"after")]


def test_force_kex_only_when_idle():
    a, b = connected(False)
    a.force_kex()
    with pytest.raises(SptpsError, match="Cannot force KEX"):
        a.force_kex()


def test_rekey_with_duplicated_handshake_datagrams_completes():
    a, b = connected(True)
    a.force_kex()
    kex_a = out(a)[0]
    b.receive(kex_a)
    with pytest.raises(ReplayError):            # the duplicate is a replay
        b.receive(kex_a)
    ev_a, ev_b = transfer(a, b)
    assert ev_a == [HandshakeCompleted(True)] == ev_b


def test_rekey_with_ack_overtaking_sig_leaves_a_defined_stuck_state():
    """tinc's state machine cannot recover from this by itself: the restart rule
    (a new REQ_KEY) must. The session must report the errors and stay consistent.
    (tinc's behaviour, tolerate_reordering=False; the default recovers: see
    test_session_rekey_faults.py.)"""
    a, b = connected(True, tolerate_reordering=False)
    a.force_kex()
    b.receive(out(a)[0])                         # KEX_A' -> B answers with KEX_B'
    a.receive(out(b)[0])                         # KEX_B' -> A sends SIG_A'
    b.receive(out(a)[0])                         # SIG_A' -> B sends SIG_B' and ACK_B
    sig_b, ack_b = out(b)
    with pytest.raises(HandshakeError):          # ACK first: A still waits for a SIG
        a.receive(ack_b)
    a.receive(sig_b)                             # A derives, sends ACK_A, awaits B's ACK
    assert a.state is State.AWAIT_ACK
    b.receive(out(a)[0])                         # B completes
    assert b.state is State.IDLE
    b.send_record(0, b"under the new key")
    with pytest.raises(DecryptError):            # A never got an ACK it could use
        a.receive(out(b)[0])
    assert a.state is State.AWAIT_ACK


def test_data_under_the_new_key_that_overtakes_the_ack_fails_then_recovers():
    """tinc's behaviour (tolerate_reordering=False); the default accepts the early record."""
    a, b = connected(True, tolerate_reordering=False)
    a.force_kex()
    b.receive(out(a)[0])
    a.receive(out(b)[0])
    b.receive(out(a)[0])
    sig_b, ack_b = out(b)
    a.receive(sig_b)
    b.receive(out(a)[0])                         # B has A's ACK: B receives with the new key
    b.send_record(0, b"early")
    early = out(b)[0]
    with pytest.raises(DecryptError):
        a.receive(early)                         # A does not use the new key before B's ACK
    assert a.receive(ack_b) == [HandshakeCompleted(True)]
    b.send_record(0, b"later")
    assert a.receive(out(b)[0]) == [RecordReceived(0, b"later")]


# --- nonce budget ------------------------------------------------------------------------

def test_automatic_rekey_before_the_record_limit():
    a, b = connected(True, max_records_per_key=HANDSHAKE_RESERVE + 10, rekey_after_records=4)
    for i in range(4):
        a.send_record(0, b"%d" % i)
    types = [t for t, _ in a.pop_outgoing()]
    assert types == [0, 0, 0, 0, wire.HANDSHAKE]   # the KEX follows the 4th record
    assert a.state is State.AWAIT_KEX


def test_refuses_to_send_rather_than_reuse_a_nonce():
    limit = HANDSHAKE_RESERVE + 8
    a, b = connected(True, max_records_per_key=limit, rekey_after_records=3)
    sent = 0
    with pytest.raises(SequenceExhaustedError):
        while True:
            a.send_record(0, b"x")              # the peer never answers the rekey
            sent += 1
    # data may use the budget less the handshake reserve; the automatic KEX took one
    assert sent == limit - HANDSHAKE_RESERVE - 1
    # once the peer answers, the new key lifts the limit
    transfer(a, b)
    a.send_record(0, b"fresh")
    assert transfer(a, b)[1][-1] == RecordReceived(0, b"fresh")


def test_stream_auto_rekey_keeps_sequence_order():
    a, b = connected(False, max_records_per_key=100, rekey_after_records=3)
    for i in range(10):
        a.send_record(0, b"%d" % i)
        ev_a, ev_b = transfer(a, b)
        assert RecordReceived(0, b"%d" % i) in ev_b


# --- batches through the session ----------------------------------------------------------

def test_batches_with_a_rekey_inside():
    a, b = connected(True)
    plain = PacketBatch(64, 256)
    for i in range(20):
        plain.append(b"packet %d" % i, type=0)
    sealed = PacketBatch(64, 256)
    a.seal_batch(plain, sealed)
    # put a rekey KEX from B in the middle of the burst A receives... simulated by B's batch:
    data_b = PacketBatch(64, 256)
    for i in range(10):
        data_b.append(b"from b %d" % i, type=0)
    sealed_b = PacketBatch(64, 256)
    b.seal_batch(data_b, sealed_b)
    b.force_kex()
    kex = out(b)[0]
    burst = PacketBatch(64, 256)
    for i in range(5):
        burst.append(sealed_b.get(i))
    burst.append(kex)
    burst.append(sealed_b.get(5))
    burst.append(sealed_b.get(5))                # duplicate
    opened = PacketBatch(64, 256)
    events = a.open_batch(burst, opened)
    assert events == []                          # A answered the KEX; nothing completed yet
    assert [opened.status[i] for i in range(8)] == \
        [SLOT_OK] * 5 + [SLOT_EMPTY, SLOT_OK, SLOT_REPLAYED]
    assert [opened.get(i) for i in range(5)] == [b"from b %d" % i for i in range(5)]
    assert a.state is State.AWAIT_SIG
    # B's side opens A's burst, with one tampered record
    sealed.buf[3 * 256 + 10] ^= 1
    opened_b = PacketBatch(64, 256)
    assert b.open_batch(sealed, opened_b) == []
    assert opened_b.status[3] == SLOT_BAD_TAG
    assert sum(opened_b.status[i] == SLOT_OK for i in range(20)) == 19
    ev_a, ev_b = transfer(a, b)
    assert HandshakeCompleted(True) in ev_a and HandshakeCompleted(True) in ev_b
