"""tincapp._fastpath: the per-packet steps of the data path over a burst."""
from array import array

from tincapp.accel import fastpath
from tincapp.datapath.batch import SLOT_EMPTY, SLOT_OK, SLOT_TOO_BIG, PacketBatch

ETH = 14


def ipv4(dst, proto=17, payload=b"x" * 40, tcp_flags=0):
    if proto == 6:
        payload = bytes(13) + bytes([tcp_flags]) + bytes(6) + payload
    total = 20 + len(payload)
    return (bytes([0x45, 0, total >> 8, total & 255, 0, 0, 0, 0, 64, proto, 0, 0])
            + bytes([10, 0, 0, 1]) + bytes(dst) + payload)


def ipv6(dst, nxt=17, payload=b"y" * 40, tcp_flags=0):
    if nxt == 6:
        payload = bytes(13) + bytes([tcp_flags]) + bytes(6) + payload
    return (bytes([0x60, 0, 0, 0, len(payload) >> 8, len(payload) & 255, nxt, 64])
            + bytes(16) + bytes(dst) + payload)


def device_burst(packets, offset=ETH):
    b = PacketBatch(len(packets) + 1, 2048)
    for p in packets:
        b.append(bytes(offset) + p, type=99)
    return b


def targets_for(batch):
    return array("i", bytes(4 * batch.capacity))


A4, B4 = bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1])
A6 = bytes(range(16))


def test_classify_tx_looks_up_destinations_and_resets_types():
    b = device_burst([ipv4(A4), ipv4(B4), ipv6(A6), ipv4(bytes(4)), b"\x10junk" * 10])
    t = targets_for(b)
    slow = fastpath.classify_tx(b, ETH, {A4: 0, B4: 1, A6: 0}, t)
    assert list(t[:5]) == [0, 1, 0, -1, -1]
    assert slow == 2
    assert bytes(b.types[:5]) == bytes(5)


def test_classify_tx_lists_the_destinations_it_found_once_each():
    b = device_burst([ipv4(B4), ipv4(B4), ipv4(A4), ipv4(B4), ipv4(bytes(4)), ipv6(A6)])
    t = targets_for(b)
    hits = [7]                                       # cleared first
    assert fastpath.classify_tx(b, ETH, {A4: 0, B4: 1, A6: 2}, t, hits) == 1
    assert hits == [1, 0, 2]
    fastpath.classify_tx(b, ETH, {}, t, hits)
    assert hits == []


def test_classify_tx_sends_syn_and_ip_in_ip_to_the_slow_path():
    packets = [ipv4(A4, 6, tcp_flags=0x02), ipv4(A4, 6, tcp_flags=0x10), ipv4(A4, 4),
               ipv6(A6, 6, tcp_flags=0x12), ipv6(A6, 6, tcp_flags=0x18)]
    b = device_burst(packets)
    t = targets_for(b)
    cache = {A4: 3, A6: 3}
    assert fastpath.classify_tx(b, ETH, cache, t) == 3
    assert list(t[:5]) == [-1, 3, -1, -1, 3]


def test_classify_tx_skips_slots_that_are_not_ok_and_short_packets():
    b = device_burst([ipv4(A4), ipv4(A4)[:19]])
    b.status[0] = SLOT_EMPTY
    t = targets_for(b)
    assert fastpath.classify_tx(b, ETH, {A4: 0}, t) == 1
    assert list(t[:2]) == [-1, -1]


def test_select_and_restore_keep_one_target_within_the_length_limit():
    b = device_burst([ipv4(A4), ipv4(B4), ipv4(A4, payload=b"z" * 1400), ipv4(A4)])
    b.status[3] = SLOT_TOO_BIG
    t = targets_for(b)
    fastpath.classify_tx(b, ETH, {A4: 0, B4: 1}, t)
    saved = bytearray(b.capacity)
    assert fastpath.select_slots(b, t, 0, saved, 1000) == 1
    assert list(b.status[:4]) == [SLOT_OK, SLOT_EMPTY, SLOT_EMPTY, SLOT_EMPTY]
    fastpath.restore_status(b, saved)
    assert list(b.status[:4]) == [SLOT_OK, SLOT_OK, SLOT_OK, SLOT_TOO_BIG]


def test_mark_done_marks_only_sent_slots_of_the_target():
    b = device_burst([ipv4(A4), ipv4(A4), ipv4(B4)])
    t = targets_for(b)
    fastpath.classify_tx(b, ETH, {A4: 0, B4: 1}, t)
    sent = bytes([SLOT_OK, SLOT_TOO_BIG, SLOT_OK])
    fastpath.mark_done(b, t, 0, sent)
    assert list(t[:3]) == [-2, 0, 1]


def test_set_prefix_writes_ok_slots_and_counts_their_bytes():
    b = PacketBatch(3, 64)
    for n in (20, 30, 40):
        b.append(b"\xee" * n)
    b.status[1] = SLOT_EMPTY
    prefix = bytes(range(12))
    assert fastpath.set_prefix(b, prefix) == 60
    assert b.get(0)[:12] == prefix and b.get(2)[:12] == prefix
    assert b.get(1)[:12] == b"\xee" * 12


def test_check_prefix_needs_every_ok_slot_to_match():
    prefix = bytes(6) + b"ABCDEF"
    b = PacketBatch(4, 64)
    for _ in range(3):
        b.append(prefix + b"data")
    assert fastpath.check_prefix(b, 0, 3, prefix)
    b.buf[64 + 11] = 0
    assert not fastpath.check_prefix(b, 0, 3, prefix)
    assert fastpath.check_prefix(b, 2, 3, prefix)
    b.status[1] = SLOT_EMPTY
    assert fastpath.check_prefix(b, 0, 3, prefix)


def test_classify_rx_flags_plain_packets_for_local_destinations():
    b = PacketBatch(5, 2048)
    for p, type in ((ipv4(A4), 0), (ipv4(B4), 0), (ipv4(A4), 1), (ipv6(A6), 0),
                    (ipv4(A4, payload=b"q" * 100), 0)):
        b.append(p, type=type)
    b.status[4] = SLOT_EMPTY
    flags = targets_for(b)
    fast, total, longest = fastpath.classify_rx(b, 0, 5, {A4: True, A6: True}, flags)
    assert list(flags[:5]) == [1, 0, 0, 1, 0]
    assert fast == 2
    assert total == len(ipv4(A4)) + len(ipv6(A6))
    assert longest == max(len(ipv4(A4)), len(ipv6(A6)))
    fastpath.keep_flagged(b, 0, 5, flags)
    assert list(b.status[:5]) == [SLOT_OK, SLOT_EMPTY, SLOT_EMPTY, SLOT_OK, SLOT_EMPTY]


def test_classify_rx_leaves_syn_and_ip_in_ip_to_the_slow_path():
    """tinc clamps the MSS of SYNs to its own device too; the router does that."""
    b = PacketBatch(4, 2048)
    for p in (ipv4(A4, 6, tcp_flags=0x02), ipv4(A4, 6, tcp_flags=0x10), ipv4(A4, 4),
              ipv6(A6, 6, tcp_flags=0x12)):
        b.append(p, type=0)
    flags = targets_for(b)
    fast, _, _ = fastpath.classify_rx(b, 0, 4, {A4: True, A6: True}, flags)
    assert list(flags[:4]) == [0, 1, 0, 0] and fast == 1


def test_common_prefix_finds_one_originator_to_one_target():
    prefix = b"TARGET" + b"ORIGIN"
    b = PacketBatch(4, 64)
    b.append(prefix + b"x" * 30)
    b.append(prefix + b"y" * 40)
    b.append(b"other-prefix" + b"z" * 10)
    assert fastpath.common_prefix(b, 0, 2) == (prefix, 52)
    assert fastpath.common_prefix(b, 0, 3) == (None, 0)
    b.status[2] = SLOT_EMPTY
    assert fastpath.common_prefix(b, 0, 3) == (prefix, 52)
    assert fastpath.common_prefix(b, 2, 3) == (None, 0)
