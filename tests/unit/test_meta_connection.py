"""MetaConnection pairs wired back to back with a hand-advanced clock: ID, SPTPS handshake,
ACK, requests, PACKET/SPTPS_PACKET framing, PING/PONG, timeouts, and garbage at every stage.

Loss is not calling transfer(); no sockets, no sleeps.
"""
import itertools

import pytest

from tincapp.meta import messages as m
from tincapp.meta.connection import MetaConnection, PeerSettings, State, _c_half
from tincapp.meta.events import (Activated, ConnectionFailed, PacketReceived, PongReceived,
                                 RequestReceived, SptpsPacketReceived)
from tincapp.sptps import crypto

KEY_A = crypto.PrivateKey.from_seed(bytes(range(32)))
KEY_B = crypto.PrivateKey.from_seed(bytes(range(100, 132)))
KEYS = {"alice": KEY_A, "bob": KEY_B}
SUBNET = m.parse(b"10 1 alice 10.1.0.0/16")


def counter_rng():
    n = itertools.count(1)
    return lambda size: next(n).to_bytes(size, "big")


def lookup(settings=None, **per_name):
    """A lookup_peer callback: known names get a PeerSettings with their public key."""
    def find(name):
        if name in per_name:
            return per_name[name]
        if name in KEYS:
            return PeerSettings(KEYS[name].public, **(settings or {}))
        return None
    return find


def pair(now=0.0, alice_kw=None, bob_kw=None):
    alice = MetaConnection(my_name="alice", my_key=KEY_A, outgoing=True, peer_name="bob",
                           lookup_peer=lookup(), udp_port="655", rng=counter_rng(), now=now,
                           **(alice_kw or {}))
    bob = MetaConnection(my_name="bob", my_key=KEY_B, outgoing=False, lookup_peer=lookup(),
                         udp_port="656", rng=counter_rng(), now=now, **(bob_kw or {}))
    return alice, bob


def transfer(a, b, now, bytewise=False):
    """Deliver everything both sides queue until both are quiet; return their events."""
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.data_to_send()
            if data and dst.state is not State.CLOSED:
                moved = True
                if bytewise:
                    for i in range(len(data)):
                        dst.receive(data[i:i + 1], now)
                else:
                    dst.receive(data, now)
        if not moved:
            return a.pop_events(), b.pop_events()


def connected(now=0.0, **kw):
    alice, bob = pair(now, **kw)
    alice.start(now)
    ev_a, ev_b = transfer(alice, bob, now)
    assert [type(e) for e in ev_a] == [Activated] and [type(e) for e in ev_b] == [Activated]
    return alice, bob


def failure(conn, events=None):
    """The one ConnectionFailed among `events` (default: conn's pending events)."""
    events = conn.pop_events() if events is None else events
    assert len(events) == 1 and isinstance(events[0], ConnectionFailed), events
    assert conn.state is State.CLOSED and conn.next_deadline() is None
    return events[0]


# --- establishment ----------------------------------------------------------------------------

def test_full_establishment_and_activation_details():
    alice, bob = pair(now=0.0)
    alice.start(0.0)
    assert alice.data_to_send() == b"0 alice 17.7\n"
    bob.receive(b"0 alice 17.7\n", 0.010)
    out = bob.data_to_send()
    # The responder's ID and its SPTPS KEX go out together: line mode must end after "\n".
    assert out.startswith(b"0 bob 17.7\n") and len(out) > len(b"0 bob 17.7\n")
    alice.receive(out, 0.020)
    assert alice.state is State.AWAIT_HANDSHAKE
    ev_a, ev_b = transfer(alice, bob, 0.030)
    (act_a,), (act_b,) = ev_a, ev_b
    assert alice.active and bob.active
    # alice sent its ID at 0.000 and its ACK at 0.030; bob sent its ID at 0.010.
    assert act_a.my_weight == 30 and act_b.my_weight == 20
    assert act_a.peer_weight == 20 and act_b.peer_weight == 30
    assert act_a.weight == act_b.weight == 25
    assert act_a.name == "bob" and act_a.port == "656"
    assert act_b.name == "alice" and act_b.port == "655"
    assert act_a.options == 0x700000C and act_a.peer_minor == 7
    assert alice.peer_minor == bob.peer_minor == 7


def test_establishment_one_byte_at_a_time():
    alice, bob = pair()
    alice.start(0.0)
    ev_a, ev_b = transfer(alice, bob, 0.0, bytewise=True)
    assert [type(e) for e in ev_a + ev_b] == [Activated, Activated]
    alice.send_request(SUBNET)
    alice.send_packet(b"\x01" * 60)
    alice.send_sptps_packet(b"\x02" * 40)
    alice.send_request(SUBNET)
    _, ev_b = transfer(alice, bob, 0.0, bytewise=True)
    assert [type(e) for e in ev_b] == [RequestReceived, PacketReceived, SptpsPacketReceived,
                                       RequestReceived]


def test_ack_options_and_weight_overrides():
    bob_settings = {"alice": PeerSettings(KEY_A.public, options=m.OPTION_TCPONLY, weight=100,
                                          clamp_mss=False)}
    alice, bob = pair()
    bob._lookup_peer = lookup(**bob_settings)
    alice.start(0.0)
    sent = []
    real = bob._send_record
    bob._send_record = lambda data: (sent.append(data), real(data))
    ev_a, ev_b = transfer(alice, bob, 0.0)
    # COMPAT: TCPONLY implies INDIRECT and excludes PMTU_DISCOVERY in the ACK.
    assert sent[0] == b"4 656 100 7000003\n"
    (act_a,), (act_b,) = ev_a, ev_b
    # alice: PMTU dropped (bob lacks it), her CLAMP_MSS plus bob's flags and minor.
    assert act_a.options == 0x700000B
    # bob: his host-file ClampMSS = no clears CLAMP_MSS on his edge.
    assert act_b.options == 0x7000003
    assert act_b.weight == 50 and act_a.weight == 50


def test_c_division_truncates_toward_zero():
    assert _c_half(5) == 2 and _c_half(-5) == -2 and _c_half(-1) == 0


def test_peer_rekey_on_the_meta_session_changes_nothing():
    alice, bob = connected()
    alice._sptps.force_kex()
    alice._drain_sptps()
    assert transfer(alice, bob, 1.0) == ([], [])
    alice.send_request(SUBNET)
    assert transfer(alice, bob, 1.0)[1] == [RequestReceived(SUBNET, m.format(SUBNET))]


# --- requests and data --------------------------------------------------------------------------

def test_requests_and_forwarding_keep_the_text():
    alice, bob = connected()
    alice.send_request(SUBNET)
    odd = b"14 00ABC carol extra"              # non-canonical text is forwarded as is
    alice.forward_request(odd + b"\n")
    _, ev_b = transfer(alice, bob, 1.0)
    assert ev_b == [RequestReceived(SUBNET, b"10 1 alice 10.1.0.0/16"),
                    RequestReceived(m.KeyChanged(0xABC, "carol"), odd)]


def test_packet_and_sptps_packet():
    alice, bob = connected()
    frame = bytes(range(256)) * 5
    alice.send_packet(frame)
    raw = b"D" * 6 + b"S" * 6 + b"datagram"
    alice.send_sptps_packet(raw)
    _, ev_b = transfer(alice, bob, 1.0)
    assert ev_b[0] == PacketReceived(frame)
    assert ev_b[1] == SptpsPacketReceived(raw)
    assert ev_b[1].dst_id == b"D" * 6 and ev_b[1].src_id == b"S" * 6
    assert ev_b[1].datagram == b"datagram"


def test_sptps_packet_raw_bytes_and_next_record_in_one_segment():
    alice, bob = connected()
    alice.send_sptps_packet(b"x" * 12)
    alice.send_request(m.KeyChanged(5, "carol"))
    data = alice.data_to_send()
    bob.receive(data, 1.0)
    assert [type(e) for e in bob.pop_events()] == [SptpsPacketReceived, RequestReceived]


def test_zero_length_packet_announces_nothing():
    alice, bob = connected()
    alice._send_record(b"17 0\n")                 # COMPAT: the next record is a request
    alice._send_record(b"21 0\n")
    alice.send_request(SUBNET)
    _, ev_b = transfer(alice, bob, 1.0)
    assert [type(e) for e in ev_b] == [RequestReceived]


def test_send_limits():
    alice, bob = pair()
    with pytest.raises(RuntimeError):
        alice.send_request(SUBNET)                # not active yet
    alice.start(0.0)
    transfer(alice, bob, 0.0)
    for bad in (m.Ping(), m.Pong(), m.Id("alice"), m.Ack("1", 1, 1), m.Packet(1)):
        with pytest.raises(ValueError):
            alice.send_request(bad)
    with pytest.raises(ValueError):
        alice.send_sptps_packet(b"x" * 11)
    with pytest.raises(ValueError):
        alice.send_packet(b"")
    alice.close()
    alice.send_request(SUBNET)                    # closed: dropped silently
    assert alice.data_to_send() == b""


# --- PING / PONG and timeouts -------------------------------------------------------------------

def test_ping_pong_cycle():
    alice, bob = connected(now=0.0)
    assert alice.next_deadline() == 60.0
    alice.handle_deadline(59.0)                   # early: nothing
    assert alice.data_to_send() == b""
    alice.handle_deadline(60.0)                   # sends PING
    assert alice.next_deadline() == 65.0
    ev_a, ev_b = transfer(alice, bob, 60.1)
    assert ev_a == [PongReceived()] and ev_b == []  # bob answered by itself
    assert alice.next_deadline() == 120.0


def test_ping_timeout():
    alice, bob = connected(now=0.0)
    alice.handle_deadline(alice.next_deadline())
    alice.data_to_send()                          # the PING is lost
    alice.handle_deadline(alice.next_deadline())
    f = failure(alice)
    assert "PONG" in f.reason and f.activated and not f.tarpit and f.peer == "bob"


def test_authentication_timeout():
    alice, bob = pair(now=0.0)
    alice.start(0.0)
    bob.receive(alice.data_to_send(), 0.1)        # bob's answer is lost
    assert bob.next_deadline() == 5.0
    bob.handle_deadline(5.0)
    f = failure(bob)
    assert f.reason == "timeout during authentication" and f.tarpit and not f.activated


def test_connect_timeout():
    alice, _ = pair(now=0.0)
    alice.handle_deadline(alice.next_deadline())
    f = failure(alice)
    assert f.reason == "timeout while connecting" and not f.tarpit


def test_nothing_after_failure():
    alice, bob = connected()
    bob._send_record(b"7\n")
    ev_a, _ = transfer(alice, bob, 1.0)
    assert "TERMREQ" in failure(alice, ev_a).reason
    alice.receive(b"anything", 2.0)
    alice.handle_deadline(1000.0)
    assert alice.pop_events() == [] and alice.data_to_send() == b""


# --- garbage at each stage ----------------------------------------------------------------------

@pytest.mark.parametrize("line,reason", [
    (b"hello\n", "bogus data"),
    (b"\n", "bogus data"),
    (b"8\n", "unauthorized request PING: expected ID"),
    (b"4 655 1 1\n", "unauthorized request ACK"),
    (b"0 al-ice 17.7\n", "invalid name"),
    (b"0 carol 17.7\n", "unknown identity"),
    (b"0 bob 17.7\n", "our own name"),
    (b"0 alice 18.7\n", "incompatible version"),
    (b"0 alice 17.0\n", "roll back"),
    (b"0 alice 17\n", "roll back"),
    (b"0 ^cookie 0\n", "control and invitation"),
    (b"0 alice 17.7" + b" " * 3000, "too long"),
])
def test_bad_id_line(line, reason):
    _, bob = pair()
    bob.receive(line, 0.0)
    f = failure(bob)
    assert reason in f.reason
    assert bob.data_to_send() == b""


def test_legacy_peer_is_refused_clearly():
    _, bob = pair()
    bob.receive(b"0 alice 17.1\n", 0.0)
    f = failure(bob)
    assert "legacy protocol" in f.reason and not f.tarpit


def test_peer_without_known_key_is_refused_clearly():
    _, bob = pair()
    bob._lookup_peer = lookup(alice=PeerSettings(None))
    bob.receive(b"0 alice 17.7\n", 0.0)
    f = failure(bob)
    assert "no Ed25519 public key" in f.reason and not f.tarpit


def test_outgoing_reaches_the_wrong_node():
    alice, _ = pair()
    alice.start(0.0)
    alice.receive(b"0 carol 17.7\n", 0.0)
    assert "peer is carol instead of bob" in failure(alice).reason


def test_garbage_during_sptps_handshake():
    alice, bob = pair()
    alice.start(0.0)
    bob.receive(alice.data_to_send(), 0.0)
    # A plaintext application record before the handshake finished.
    bob.receive(b"\x00\x02\x008\n", 0.0)
    f = failure(bob)
    assert f.reason.startswith("SPTPS:") and f.tarpit


def test_wrong_peer_key_fails_the_handshake():
    alice, bob = pair()
    bob._lookup_peer = lookup(alice=PeerSettings(crypto.PrivateKey.from_seed(bytes(32)).public))
    alice.start(0.0)
    _, ev_b = transfer(alice, bob, 0.0)
    assert "SIG" in failure(bob, ev_b).reason


def test_non_ack_while_awaiting_ack():
    alice, bob = pair()
    bob._send_ack = lambda now: bob._send_record(b"8\n")
    alice.start(0.0)
    ev_a, _ = transfer(alice, bob, 0.0)
    assert "unauthorized request PING: expected ACK" in failure(alice, ev_a).reason


def test_malformed_ack():
    alice, bob = pair()
    bob._send_ack = lambda now: bob._send_record(b"4 655\n")
    alice.start(0.0)
    ev_a, _ = transfer(alice, bob, 0.0)
    assert "ACK" in failure(alice, ev_a).reason


@pytest.mark.parametrize("record,reason", [
    (b"garbage\n", "bogus data"),
    (b"", "bogus data"),
    (b"12 1 a a 1.2.3.4 655 c 10\n", "ADD_EDGE"),
    (b"23 a b 100\n", "MTU_INFO"),
    (b"1 metakey\n", "METAKEY"),
    (b"0 bob 17.7\n", "ID on an active connection"),
    (b"4 655 1 c\n", "ACK on an active connection"),
    (b"7\n", "TERMREQ"),
    (b"21 5\n", "too short"),
    (b"17 -3\n", "PACKET"),
])
def test_garbage_on_an_active_connection(record, reason):
    alice, bob = connected()
    bob._send_record(record)
    ev_a, _ = transfer(alice, bob, 1.0)
    f = failure(alice, ev_a)
    assert reason in f.reason and f.activated and f.tarpit


def test_packet_length_mismatch():
    alice, bob = connected()
    bob._send_record(b"17 10\n")
    bob._send_record(b"short")
    ev_a, _ = transfer(alice, bob, 1.0)
    assert "PACKET announced 10 bytes" in failure(alice, ev_a).reason


def test_corrupted_ciphertext():
    alice, bob = connected()
    alice.receive(b"\x00\x04" + bytes(21), 1.0)
    assert failure(alice).reason.startswith("SPTPS:")


def test_receive_before_start_is_a_programming_error():
    alice, _ = pair()
    with pytest.raises(RuntimeError):
        alice.receive(b"0 bob 17.7\n", 0.0)


def test_constructor_checks():
    with pytest.raises(ValueError):
        MetaConnection(my_name="a-b", my_key=KEY_A, outgoing=False, lookup_peer=lookup(),
                       udp_port="655", rng=counter_rng(), now=0.0)
    with pytest.raises(ValueError):
        MetaConnection(my_name="alice", my_key=KEY_A, outgoing=True, lookup_peer=lookup(),
                       udp_port="655", rng=counter_rng(), now=0.0)
    with pytest.raises(ValueError):
        PeerSettings(b"short")
