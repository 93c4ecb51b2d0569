"""tincapp._batchio with real sockets, no root: UDP bursts over loopback (IPv4, IPv6, dual
stack), per-slot addresses, truncation, EMSGSIZE and EAGAIN reporting, headroom; read_burst and
write_burst over AF_UNIX SOCK_SEQPACKET pairs, which keep packet boundaries like a TUN fd."""
import errno
import os
import socket

import pytest

from tincapp.accel import batchio
from tincapp.datapath.batch import (SLOT_BAD_TAG, SLOT_EMPTY, SLOT_OK, SLOT_TOO_BIG,
                                    PacketBatch)

SIZES = (1, 60, 1400, 0, 777, 1500, 2, 1999)   # a zero-length datagram is a datagram too
FILL = 0xAA


def payload(i, n):
    return bytes((i * 7 + j) & 0xFF for j in range(n))


def udp(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def filled_batch(capacity, slot_size=2048):
    b = PacketBatch(capacity, slot_size)
    b.buf[:] = bytes([FILL]) * len(b.buf)
    return b


def batch_of(sizes, offset=0, slot_size=2048):
    b = PacketBatch(len(sizes), slot_size)
    for i, n in enumerate(sizes):
        b.append(bytes(offset) + payload(i, n))
    return b


def slot_bytes(b, i, offset=0):
    return bytes(b.view(i)[offset:])


@pytest.fixture
def pair4():
    a, c = udp(), udp()
    yield a, c
    a.close()
    c.close()


def ipv6_loopback():
    try:
        s = udp(socket.AF_INET6, "::1")
    except OSError:
        return False
    s.close()
    return True


# --- UDP: send_burst / recv_burst ----------------------------------------------------------

@pytest.mark.parametrize("offset", [0, 12])
def test_udp_burst_both_directions_ipv4(pair4, offset):
    a, c = pair4
    for sender, receiver in ((c, a), (a, c)):
        out = batch_of(SIZES, offset)
        dest = batchio.UdpAddresses(len(SIZES))
        dest.set_all(*receiver.getsockname())
        assert batchio.send_burst(sender.fileno(), out, dest, offset=offset) == (len(SIZES), 0)

        got = filled_batch(16)
        src = batchio.UdpAddresses(16)
        assert batchio.recv_burst(receiver.fileno(), got, src, offset=offset) == len(SIZES)
        assert got.count == len(SIZES)
        for i, n in enumerate(SIZES):
            assert got.status[i] == SLOT_OK
            assert got.lengths[i] == offset + n
            assert slot_bytes(got, i, offset) == payload(i, n)
            # the headroom is the caller's: recv_burst leaves it alone
            assert got.buf[i * 2048:i * 2048 + offset] == bytes([FILL]) * offset
            assert src.get(i) == sender.getsockname()
        assert batchio.recv_burst(receiver.fileno(), got, src) == 0


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_udp_burst_ipv6_and_addresses_round_trip():
    a, c = udp(socket.AF_INET6, "::1"), udp(socket.AF_INET6, "::1")
    try:
        dest = batchio.UdpAddresses(4)
        dest.set_all("::1", a.getsockname()[1])
        out = batch_of(SIZES[:4])
        assert batchio.send_burst(c.fileno(), out, dest) == (4, 0)
        got, src = PacketBatch(4), batchio.UdpAddresses(4)
        assert batchio.recv_burst(a.fileno(), got, src) == 4
        assert [got.get(i) for i in range(4)] == [payload(i, n) for i, n in enumerate(SIZES[:4])]
        assert src.get(3) == ("::1", c.getsockname()[1])
        # a received address keys like the same address set() by hand
        mine = batchio.UdpAddresses(1)
        mine.set(0, "::1", c.getsockname()[1])
        assert src.key(2) == mine.key(0)
        # and can be sent back to as it is
        back = batchio.UdpAddresses(4)
        back.copy(0, src, 0)
        assert batchio.send_burst(a.fileno(), batch_of([5]), back) == (1, 0)
        assert c.recvfrom(100)[0] == payload(0, 5)
    finally:
        a.close()
        c.close()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_dual_stack_socket_sees_ipv4_peers_as_ipv4():
    a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    a.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    a.bind(("::", 0))
    a.setblocking(False)
    c = udp()
    try:
        c.sendto(b"hello", ("127.0.0.1", a.getsockname()[1]))
        got, src = PacketBatch(2), batchio.UdpAddresses(2)
        assert batchio.recv_burst(a.fileno(), got, src) == 1
        assert src.get(0) == c.getsockname()
        mine = batchio.UdpAddresses(1)
        mine.set(0, *c.getsockname())
        assert src.key(0) == mine.key(0)
        # replying through the v6 socket needs the v4-mapped form
        assert batchio.send_to_one(a.fileno(), batch_of([9]), *c.getsockname(),
                                   map_v4=True) == (1, 0)
        assert c.recvfrom(100) == (payload(0, 9), ("127.0.0.1", a.getsockname()[1]))
    finally:
        a.close()
        c.close()


def test_truncated_datagram_is_too_big(pair4):
    a, c = pair4
    c.sendto(b"x" * 3000, a.getsockname())
    c.sendto(b"small", a.getsockname())
    got, src = PacketBatch(4, 2048), batchio.UdpAddresses(4)
    assert batchio.recv_burst(a.fileno(), got, src, offset=12) == 2
    assert got.status[0] == SLOT_TOO_BIG
    assert got.lengths[0] == 2048            # what fit
    assert got.status[1] == SLOT_OK
    assert slot_bytes(got, 1, 12) == b"small"


def test_recv_appends_at_count_and_respects_limits(pair4):
    a, c = pair4
    for i in range(6):
        c.sendto(payload(i, 10 + i), a.getsockname())
    got, src = PacketBatch(4), batchio.UdpAddresses(4)
    got.append(b"keep me")
    assert batchio.recv_burst(a.fileno(), got, src, max_packets=2) == 2
    assert batchio.recv_burst(a.fileno(), got, src) == 1          # batch now full
    assert batchio.recv_burst(a.fileno(), got, src) == 0
    assert got.count == 4
    assert [got.get(i) for i in range(4)] == [b"keep me"] + [payload(i, 10 + i) for i in range(3)]
    got.clear()
    assert batchio.recv_burst(a.fileno(), got, src) == 3
    with pytest.raises(ValueError):
        batchio.recv_burst(a.fileno(), PacketBatch(8), batchio.UdpAddresses(4))


def test_send_skips_slots_that_are_not_ok_and_honours_range(pair4):
    a, c = pair4
    out = batch_of([10, 11, 12, 13, 14])
    out.status[1] = SLOT_BAD_TAG
    out.status[3] = SLOT_EMPTY
    assert batchio.send_to_one(c.fileno(), out, *a.getsockname()) == (3, 0)
    assert batchio.send_to_one(c.fileno(), out, *a.getsockname(), start=3, stop=5) == (1, 0)
    got, src = PacketBatch(8), batchio.UdpAddresses(8)
    assert batchio.recv_burst(a.fileno(), got, src) == 4
    assert [len(got.get(i)) for i in range(4)] == [10, 12, 14, 14]
    assert list(out.status) == [SLOT_OK, SLOT_BAD_TAG, SLOT_OK, SLOT_EMPTY, SLOT_OK]


def test_send_to_many_destinations_and_emsgsize(pair4):
    a, c = pair4
    third = udp()
    try:
        out = PacketBatch(4, 70000)
        for n in (100, 66000, 200, 300):         # 66000 > 65507, the IPv4 UDP maximum
            out.append(b"z" * n)
        dest = batchio.UdpAddresses(4)
        dest.set_all(*a.getsockname())
        dest.set(2, *third.getsockname())
        assert dest.run_end(0, 4) == 2 and dest.run_end(2, 4) == 3 and dest.run_end(3, 4) == 4
        assert batchio.send_burst(c.fileno(), out, dest) == (3, errno.EMSGSIZE)
        assert list(out.status) == [SLOT_OK, SLOT_TOO_BIG, SLOT_OK, SLOT_OK]
        assert [len(a.recv(70000)), len(a.recv(70000))] == [100, 300]
        assert len(third.recv(70000)) == 200
    finally:
        third.close()


def test_send_stops_on_full_socket_buffer():
    # A datagram socketpair's buffer fills up (loopback UDP would drop silently instead).
    s, r = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        r.setblocking(False)
        out = batch_of([1000] * 64)
        total = 0
        for _ in range(50):
            sent, err = batchio.send_to_one(s.fileno(), out, None, 0)
            total += sent
            if err:
                break
        assert err == errno.EAGAIN and sent < 64
        assert set(out.status) == {SLOT_OK}         # a full buffer marks nothing
        got, src = PacketBatch(64), batchio.UdpAddresses(64)
        received = 0
        while n := batchio.recv_burst(r.fileno(), got, src):
            received += n
            got.clear()
        assert received == total
    finally:
        s.close()
        r.close()


def test_empty_socket_gives_zero_and_bad_fd_raises(pair4):
    a, _ = pair4
    got, src = PacketBatch(4), batchio.UdpAddresses(4)
    assert batchio.recv_burst(a.fileno(), got, src) == 0
    assert got.count == 0
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as e:
        batchio.recv_burst(r, got, src)
    assert e.value.errno == errno.EBADF
    assert batchio.send_to_one(w, batch_of([3]), "127.0.0.1", 9) == (0, errno.EBADF)


# --- UdpAddresses --------------------------------------------------------------------------

def test_addresses_set_get_key():
    ad = batchio.UdpAddresses(6)
    ad.set(0, "192.0.2.1", 655)
    ad.set(1, "2001:db8::1", 655)
    ad.set(2, "192.0.2.1", 655, map_v4=True)
    ad.set(3, "::ffff:192.0.2.1", 655)
    ad.set(4, "fe80::1%7", 1)
    assert ad.get(0) == ("192.0.2.1", 655)
    assert ad.get(1) == ("2001:db8::1", 655)
    assert ad.get(2) == ad.get(3) == ("192.0.2.1", 655)
    assert ad.get(4) == ("fe80::1%7", 1)
    assert ad.get(5) == ("", 0)                             # never set
    assert ad.key(0) == ad.key(2) == ad.key(3)
    keys = {ad.key(0), ad.key(1), ad.key(4), ad.key(5)}
    assert len(keys) == 4
    ad.set(5, "192.0.2.1", 656)
    assert ad.key(5) != ad.key(0)
    for bad in ("example.com", "192.0.2", "1.2.3.4%eth0", "fe80::1%nosuchif0"):
        with pytest.raises(ValueError):
            ad.set(0, bad, 1)
    with pytest.raises(ValueError):
        ad.set(0, "192.0.2.1", 65536)
    with pytest.raises(IndexError):
        ad.get(6)


# --- packet fds: read_burst / write_burst --------------------------------------------------

@pytest.fixture
def seqpacket():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("offset", [0, 12])
def test_write_then_read_burst_keeps_packet_boundaries(seqpacket, offset):
    a, b = seqpacket
    sizes = [n for n in SIZES if n]           # a 0-byte read() means end of file
    out = batch_of(sizes, offset)
    out.status[2] = SLOT_BAD_TAG              # not written
    assert batchio.write_burst(a.fileno(), out, offset=offset) == len(sizes) - 1
    got = filled_batch(16)
    assert batchio.read_burst(b.fileno(), got, offset=offset) == len(sizes) - 1
    expect = [payload(i, n) for i, n in enumerate(sizes) if i != 2]
    assert [slot_bytes(got, i, offset) for i in range(got.count)] == expect
    for i in range(got.count):
        assert got.status[i] == SLOT_OK
        assert got.buf[i * 2048:i * 2048 + offset] == bytes([FILL]) * offset
    assert batchio.read_burst(b.fileno(), got) == 0


def test_read_burst_limits_and_range_writes(seqpacket):
    a, b = seqpacket
    out = batch_of([10, 20, 30, 40, 50])
    assert batchio.write_burst(a.fileno(), out, start=1, stop=4) == 3
    got = PacketBatch(2)
    assert batchio.read_burst(b.fileno(), got, max_packets=1) == 1
    assert batchio.read_burst(b.fileno(), got) == 1           # full
    assert [len(got.get(i)) for i in range(2)] == [20, 30]
    got.clear()
    assert batchio.read_burst(b.fileno(), got) == 1
    assert len(got.get(0)) == 40


def test_write_burst_drops_refused_packets_and_stops_when_full(seqpacket):
    a, b = seqpacket
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    out = batch_of([100, 60000, 200], slot_size=60000)
    assert batchio.write_burst(a.fileno(), out) == 2          # 60000 > the send buffer
    assert list(out.status) == [SLOT_OK, SLOT_EMPTY, SLOT_OK]
    got = PacketBatch(4, 60000)
    assert batchio.read_burst(b.fileno(), got) == 2
    # now fill the buffer: EAGAIN ends the burst early, statuses untouched
    many = batch_of([1000] * 64)
    n = batchio.write_burst(a.fileno(), many)
    assert 0 < n < 64
    assert set(many.status) == {SLOT_OK}
    assert batchio.write_burst(a.fileno(), many) == 0


def test_read_burst_errors(seqpacket):
    r, w = os.pipe()
    try:
        got = PacketBatch(2)
        with pytest.raises(OSError) as e:
            batchio.read_burst(w, got)                # the write end cannot be read
        assert e.value.errno == errno.EBADF
        with pytest.raises(ValueError):
            batchio.read_burst(r, got, offset=2049)
    finally:
        os.close(r)
        os.close(w)
    a, b = seqpacket
    b.close()
    with pytest.raises(OSError) as e:
        batchio.write_burst(a.fileno(), batch_of([5]))
    assert e.value.errno == errno.EPIPE


# --- UDP GSO -------------------------------------------------------------------------------

GSO_SIZES = [1400] * 50 + [1000, 0, 5, 5, 5, 66000, 1400, 1400, 1500, 3]


@pytest.mark.parametrize("no_check", [False, True])
def test_gso_sends_the_same_datagrams(pair4, no_check):
    # Runs of equal sizes go out as super-datagrams (50 x 1400 is two runs: 46 fit in 64 KiB),
    # the receiver sees the separate datagrams in order. With UDP checksums off the kernel
    # refuses GSO (EINVAL), so every run is resent one datagram at a time: same result.
    a, c = pair4
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    if no_check:
        c.setsockopt(socket.SOL_SOCKET, 11, 1)            # SO_NO_CHECK
    out = PacketBatch(len(GSO_SIZES), 70000)
    for i, n in enumerate(GSO_SIZES):
        out.append(bytes(12) + payload(i, n))
    out.status[2] = SLOT_BAD_TAG
    assert batchio.send_to_one(c.fileno(), out, *a.getsockname(), offset=12, gso=True) == \
        (len(GSO_SIZES) - 2, errno.EMSGSIZE)
    expect = [i for i, n in enumerate(GSO_SIZES) if i != 2 and n != 66000]
    assert [i for i in range(out.count) if out.status[i] != SLOT_OK] == [2, 55]
    assert out.status[55] == SLOT_TOO_BIG
    got, src = PacketBatch(64, 2048), batchio.UdpAddresses(64)
    assert batchio.recv_burst(a.fileno(), got, src) == len(expect)
    assert [got.get(j) for j in range(got.count)] == [payload(i, GSO_SIZES[i]) for i in expect]
    assert src.get(0) == c.getsockname()


def test_gso_on_a_connected_socket(pair4):
    a, c = pair4
    c.connect(a.getsockname())
    out = batch_of([700] * 10)
    assert batchio.send_to_one(c.fileno(), out, None, 0, gso=True) == (10, 0)
    got, src = PacketBatch(16), batchio.UdpAddresses(16)
    assert batchio.recv_burst(a.fileno(), got, src) == 10
    assert got.get(9) == payload(9, 700)


def test_slots_shorter_than_the_headroom_are_not_sent(pair4, seqpacket):
    a, c = pair4
    for gso in (False, True):
        out = batch_of([20, 0, 20], offset=0)
        out.lengths[1] = 5                        # less than the 12-byte headroom
        assert batchio.send_to_one(c.fileno(), out, *a.getsockname(), offset=12,
                                   gso=gso) == (2, 0)
        assert list(out.status) == [SLOT_OK, SLOT_EMPTY, SLOT_OK]
        assert [len(a.recv(100)), len(a.recv(100))] == [8, 8]
    s, r = seqpacket
    out = batch_of([20, 0, 20])
    out.lengths[1] = 12                           # nothing after the headroom
    assert batchio.write_burst(s.fileno(), out, offset=12) == 2
    assert list(out.status) == [SLOT_OK, SLOT_EMPTY, SLOT_OK]


# --- UDP GRO -------------------------------------------------------------------------------

UDP_GRO = 104      # <netinet/udp.h>


@pytest.fixture
def gro_pair(pair4):
    a, c = pair4
    try:
        a.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    except OSError as e:
        pytest.skip(f"no UDP_GRO here: {e}")
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return a, c


def test_gro_receiver_splits_coalesced_runs(gro_pair):
    # On loopback a GSO super-datagram reaches a UDP_GRO socket still coalesced.
    a, c = gro_pair
    sizes = [1400] * 60 + [1000, 0, 5, 5, 5, 1400, 1400, 1500]
    out = batch_of(sizes)
    assert batchio.send_to_one(c.fileno(), out, *a.getsockname(), gso=True) == (len(sizes), 0)
    c.sendto(b"plain", a.getsockname())
    rx = batchio.UdpGroReceiver(4)
    got, src = filled_batch(16), batchio.UdpAddresses(16)
    received = []
    while n := rx.receive(a.fileno(), got, src, offset=12):
        assert n == got.count
        for i in range(n):
            assert got.status[i] == SLOT_OK and src.get(i) == c.getsockname()
            assert got.buf[i * 2048:i * 2048 + 12] == bytes([FILL]) * 12
            received.append(slot_bytes(got, i, 12))
        if len(received) == 16:
            assert rx.pending            # the first run held 46 datagrams: 30 wait
        got.clear()
    assert received == [payload(i, n) for i, n in enumerate(sizes)] + [b"plain"]
    assert rx.receive(a.fileno(), got, src) == 0 and not rx.pending


def test_gro_receiver_limits_and_too_big(gro_pair):
    a, c = gro_pair
    out = batch_of([1400] * 10)
    assert batchio.send_to_one(c.fileno(), out, *a.getsockname(), gso=True) == (10, 0)
    rx = batchio.UdpGroReceiver()
    got, src = PacketBatch(8, 1024), batchio.UdpAddresses(8)
    assert rx.receive(a.fileno(), got, src, max_packets=3) == 3
    assert rx.receive(a.fileno(), got, src) == 5                  # batch full
    assert list(got.status) == [SLOT_TOO_BIG] * 8                 # 1400 > 1024-byte slots
    assert list(got.lengths) == [1024] * 8
    assert got.get(7) == payload(7, 1400)[:1024]
    got.clear()
    assert rx.receive(a.fileno(), got, src) == 2 and got.get(1) == payload(9, 1400)[:1024]
