"""sptps_test -t: IP packets through real tun devices and an SPTPS datagram tunnel between two
network namespaces, checked with ping."""
import re

import pytest

from tests.integration.netns import Namespaces, netns_unavailable
from tests.integration.sptps_tools import OURS, Proc, keypair

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(netns_unavailable() is not None,
                                 reason=str(netns_unavailable()))]

TUN_NAME = re.compile(rb"Using tun interface (\S+)")


@pytest.mark.parametrize("datagram", [True, False], ids=["datagram", "stream"])
def test_ping_through_sptps_test_tun(tmp_path, datagram):
    a_priv, a_pub = keypair(OURS, str(tmp_path), "a")
    b_priv, b_pub = keypair(OURS, str(tmp_path), "b")
    mode = ["-d"] if datagram else []
    with Namespaces("a", "b") as ns:
        ns.link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        lst = Proc(ns.cmd("a", OURS.cmd("sptps_test", "-t", *mode, a_priv, b_pub, "6655")))
        ini = None
        try:
            tun_a = lst.wait_for(TUN_NAME).group(1).decode()
            lst.wait_for(b"Listening")
            ini = Proc(ns.cmd("b", OURS.cmd("sptps_test", "-t", *mode, b_priv, a_pub,
                                            "192.0.2.1", "6655")))
            tun_b = ini.wait_for(TUN_NAME).group(1).decode()
            for side, dev, addr in (("a", tun_a, "198.51.100.1/24"),
                                    ("b", tun_b, "198.51.100.2/24")):
                for argv in (["ip", "addr", "add", addr, "dev", dev],
                             ["ip", "link", "set", dev, "up"]):
                    r = ns.run(side, argv)
                    assert r.returncode == 0, (argv, r.stderr, lst.err[-500:], ini.err[-500:])
            r = ns.run("b", ["ping", "-c", "3", "-i", "0.2", "-W", "5", "198.51.100.1"])
            assert r.returncode == 0, (r.stdout + r.stderr, lst.err[-500:], ini.err[-500:])
            assert " 0% packet loss" in r.stdout
        finally:
            lst.stop()
            if ini:
                ini.stop()
