"""read_burst/write_burst on a real TUN device (tincapp/io/tun.py) inside a test namespace:
the kernel's packets come out of read_burst as bare IP packets, and packets injected with
write_burst are delivered (ICMP echo requests get the kernel's echo replies back)."""
import os
import select
import socket
import struct
import time
import uuid

import pytest

from tests.integration.netns import Namespaces, ip, netns_unavailable
from tincapp.accel import batchio
from tincapp.datapath.batch import SLOT_EMPTY, SLOT_OK, PacketBatch
from tincapp.io import tun

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(netns_unavailable() is not None,
                                 reason=str(netns_unavailable()))]

TUN_ADDR = "192.0.2.1"       # TEST-NET-1, only inside the namespace
PEER_ADDR = "192.0.2.2"      # "behind" the TUN: the test plays this host
HEADROOM = 12                # where tinc's node-ID prefix would go


@pytest.fixture
def tun_in_ns():
    """(namespaces, ns name, fd, ifname): a TUN with TUN_ADDR/24, up, in a fresh namespace."""
    nss = Namespaces("a")
    fd = None
    try:
        fd, ifname = tun.open_tun(f"tbio{uuid.uuid4().hex[:6]}", tap=False)
        # the fd keeps working after the link moves to another namespace
        ip("link", "set", ifname, "netns", nss["a"])
        ip("-n", nss["a"], "addr", "add", f"{TUN_ADDR}/24", "dev", ifname)
        ip("-n", nss["a"], "link", "set", ifname, "up")
        yield nss, fd, ifname
    finally:
        if fd is not None:
            os.close(fd)              # a non-persistent TUN disappears with its last fd
        nss.close()


def read_until(fd, want, timeout=5.0):
    """IP packets read with read_burst (at HEADROOM) until `want(packets)` is true."""
    packets = []
    batch = PacketBatch(64)
    deadline = time.monotonic() + timeout
    while not want(packets):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {len(packets)} packets"
        select.select([fd], [], [], left)
        batch.clear()
        batchio.read_burst(fd, batch, offset=HEADROOM)
        for i in range(batch.count):
            assert batch.status[i] == SLOT_OK
            packets.append(bytes(batch.view(i)[HEADROOM:]))
    return packets


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ident=0):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def echo_request(ident, seq, data):
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]


def udp_to_peer(pkts, port):
    return [p for p in pkts if p[0] >> 4 == 4 and p[9] == socket.IPPROTO_UDP
            and p[16:20] == socket.inet_aton(PEER_ADDR)
            and struct.unpack("!H", p[22:24])[0] == port]


def test_read_burst_gets_the_kernels_ip_packets(tun_in_ns):
    nss, fd, _ = tun_in_ns
    script = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              f"for i in range(20): s.sendto(b'burst%02d' % i + bytes(i * 50), "
              f"('{PEER_ADDR}', 5555))")
    res = nss.run("a", ["python3", "-c", script])
    assert res.returncode == 0, res.stderr
    pkts = udp_to_peer(read_until(fd, lambda p: len(udp_to_peer(p, 5555)) >= 20), 5555)
    assert len(pkts) == 20
    for i, p in enumerate(pkts):
        assert p[12:16] == socket.inet_aton(TUN_ADDR)
        assert p[28:] == b"burst%02d" % i + bytes(i * 50)           # IP + UDP header = 28


def test_write_burst_injects_packets_the_kernel_answers(tun_in_ns):
    _, fd, _ = tun_in_ns
    out = PacketBatch(16)
    for seq in range(16):
        pkt = ipv4(PEER_ADDR, TUN_ADDR, socket.IPPROTO_ICMP,
                   echo_request(0x7ab, seq, b"tincapp%03d" % seq + bytes(seq * 40)), ident=seq)
        out.append(bytes(HEADROOM) + pkt)
    assert batchio.write_burst(fd, out, offset=HEADROOM) == 16

    def replies(pkts):
        return [p for p in pkts if p[9] == socket.IPPROTO_ICMP and p[20] == 0
                and p[24:26] == b"\x07\xab"]
    got = replies(read_until(fd, lambda p: len(replies(p)) >= 16))
    assert sorted(struct.unpack("!H", p[26:28])[0] for p in got) == list(range(16))
    for p in got:
        seq = struct.unpack("!H", p[26:28])[0]
        assert p[12:16] == socket.inet_aton(TUN_ADDR) and p[16:20] == socket.inet_aton(PEER_ADDR)
        assert p[28:] == b"tincapp%03d" % seq + bytes(seq * 40)


def test_write_burst_drops_what_the_device_refuses(tun_in_ns):
    # A TUN write that is not an IP packet is refused per packet; the others still go in.
    _, fd, _ = tun_in_ns
    out = PacketBatch(3)
    good = ipv4(PEER_ADDR, TUN_ADDR, socket.IPPROTO_ICMP, echo_request(0x7ac, 1, b"x"))
    out.append(good)
    out.append(b"\x00")                      # neither IPv4 nor IPv6: EINVAL
    out.append(good)
    written = batchio.write_burst(fd, out)
    assert written == 2 and list(out.status) == [SLOT_OK, SLOT_EMPTY, SLOT_OK]


def test_open_tun_errors_and_tap_address():
    name = f"tbio{uuid.uuid4().hex[:6]}"
    fd, ifname = tun.open_tun(name, tap=True)
    try:
        assert ifname == name
        with pytest.raises(tun.TunError) as e:
            tun.open_tun(name, tap=True)
        assert "busy" in str(e.value)
        mac = tun.hardware_address(ifname)
        shown = ip("link", "show", ifname).stdout.split("link/ether ")[1].split()[0]
        assert mac.hex(":") == shown
    finally:
        os.close(fd)
