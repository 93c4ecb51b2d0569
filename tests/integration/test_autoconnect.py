"""AutoConnect (graph.md 7) and the address cache (graph.md 9) between tincapp daemons on
loopback: a node with one ConnectTo reaches three meta connections in a four-node mesh; the
addresses that worked are cached and tried first next time."""
import json
import os
import shutil
import tempfile
import time

from tests.integration.test_node_mesh import Tincd, free_tcp_port, make_network, wait_until
from tincapp.control import Ctl

NAMES4 = ("alpha", "beta", "gamma", "delta")


def peers(tincd):
    return sorted(l.split()[2] for l in tincd.request(Ctl.DUMP_CONNECTIONS)
                  if l.split()[2] != "<control>")


def test_one_connect_to_grows_to_three_connections():
    root = tempfile.mkdtemp(prefix="tincapp-autoconnect-")
    ports = {n: free_tcp_port() for n in NAMES4}
    # A line beta - gamma - delta; alpha knows only beta and autoconnects to the rest.
    make_network(root, ports, {"alpha": ["beta"], "beta": ["gamma"], "gamma": ["delta"]},
                 names=NAMES4, auto_connect=("alpha",))
    daemons = {n: Tincd(root, n) for n in NAMES4}
    try:
        for d in daemons.values():
            d.start()
        alpha = daemons["alpha"]
        # One attempt per 5 s round: beta from ConnectTo, then gamma and delta.
        wait_until(lambda: peers(alpha) == ["beta", "delta", "gamma"], 30,
                   "alpha did not autoconnect to everyone")
        # Node status bit 11 (has_address) for nodes whose host file has an Address.
        status = {l.split()[2]: int(l.split()[12], 16) for l in alpha.request(Ctl.DUMP_NODES)}
        assert all(status[n] & 0x800 for n in NAMES4), status
        log = alpha.read_log()
        assert "Autoconnecting to gamma" in log and "Autoconnecting to delta" in log
        # With exactly three connections it stays there (nothing surplus to drop).
        assert "Autodisconnecting" not in log
        # beta's address is cached: either beta became reachable through alpha's outgoing
        # connection, or (beta started after alpha) the PONG after a retry confirmed it.
        # Whether gamma's and delta's are depends on start-up timing, as in tinc.
        with open(os.path.join(alpha.base, "cache", "beta.tincapp")) as f:
            assert json.load(f) == {"version": 1,
                                    "addresses": [["127.0.0.1", str(ports["beta"])]]}
    finally:
        for d in daemons.values():
            d.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_cached_address_is_tried_before_the_host_file():
    root = tempfile.mkdtemp(prefix="tincapp-addrcache-")
    names = ("alpha", "beta")
    ports = {n: free_tcp_port() for n in names}
    make_network(root, ports, {"alpha": ["beta"]}, names=names)
    alpha_dir = os.path.join(root, "alpha")
    # alpha's host file for beta names a dead port; only the cache knows the right one.
    host = os.path.join(alpha_dir, "hosts", "beta")
    with open(host) as f:
        text = f.read().replace(f"Port = {ports['beta']}", f"Port = {free_tcp_port()}")
    with open(host, "w") as f:
        f.write(text)
    os.makedirs(os.path.join(alpha_dir, "cache"))
    with open(os.path.join(alpha_dir, "cache", "beta.tincapp"), "w") as f:
        json.dump({"version": 1, "addresses": [["127.0.0.1", str(ports["beta"])]]}, f)
    daemons = {n: Tincd(root, n) for n in names}
    try:
        daemons["beta"].start()
        daemons["alpha"].start()
        wait_until(lambda: peers(daemons["alpha"]) == ["beta"] or peers(daemons["alpha"]), 10,
                   "alpha did not connect through the cached address")
        log = daemons["alpha"].read_log()
        first = log.index("Trying to connect to beta")
        assert f"Trying to connect to beta (127.0.0.1 port {ports['beta']})" in log[first:].split(
            "\n")[0]
    finally:
        for d in daemons.values():
            d.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_surplus_outgoing_connection_is_dropped():
    root = tempfile.mkdtemp(prefix="tincapp-autodrop-")
    names = NAMES4 + ("epsilon",)
    ports = {n: free_tcp_port() for n in names}
    # alpha dials all four; they also form a line, so each has another edge to fall back on.
    make_network(root, ports, {"alpha": ["beta", "gamma", "delta", "epsilon"],
                               "beta": ["gamma"], "gamma": ["delta"], "delta": ["epsilon"]},
                 names=names, auto_connect=("alpha",))
    daemons = {n: Tincd(root, n) for n in names}
    try:
        for n in names[1:] + names[:1]:
            daemons[n].start()
        alpha = daemons["alpha"]
        wait_until(lambda: "Autodisconnecting from" in alpha.read_log() or None, 20,
                   "alpha kept four connections")
        wait_until(lambda: len(peers(alpha)) == 3 or peers(alpha), 5, "no drop to three")
        # The dropped node's outgoing entry is gone: no reconnect in the next rounds.
        time.sleep(6)
        assert len(peers(alpha)) == 3
        assert alpha.read_log().count("Autodisconnecting from") == 1
    finally:
        for d in daemons.values():
            d.kill()
        shutil.rmtree(root, ignore_errors=True)
