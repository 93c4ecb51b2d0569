"""Helpers for data-plane tests in namespaces: underlay links with a chosen MTU, traffic over
the VPN (ping with RTTs, a checksummed TCP stream) and the node dump as named fields.

Also a small program, run inside a namespace with `python -m tests.integration.vpn`:
  serve ADDR PORT       accept one TCP connection, read to EOF, reply "NBYTES SHA256", exit
  send ADDR PORT N      connect (retrying a few seconds), send N random bytes, half-close,
                        check the server's reply against what was sent; exit 0 if it matches
"""
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from typing import NamedTuple, Optional

from tests.integration.netns import ip

# Fields of a "18 3 ..." dump-nodes line (tinc's control protocol), after splitting on spaces;
# the host is "ADDR port PORT", three fields.
NODE_FIELDS = ("name", "id", "host", "_port", "port", "cipher", "digest", "maclength",
               "compression", "options", "status", "nexthop", "via", "distance", "pmtu",
               "minmtu", "maxmtu")
STATUS_REACHABLE = 0x10
STATUS_UDP_CONFIRMED = 0x80


def veth(ns, a, addr_a, b, addr_b, mtu=None):
    """A veth pair between namespaces a and b (CIDR addresses), both ends with `mtu` if given.
    Returns the device names (a's, b's)."""
    tag = uuid.uuid4().hex[:6]
    va, vb = f"va{tag}", f"vb{tag}"
    ip("link", "add", va, "type", "veth", "peer", "name", vb)
    for name, dev, addr in ((a, va, addr_a), (b, vb, addr_b)):
        ip("link", "set", dev, "netns", ns[name])
        if mtu:
            ip("-n", ns[name], "link", "set", dev, "mtu", str(mtu))
        ip("-n", ns[name], "addr", "add", addr, "dev", dev)
        ip("-n", ns[name], "link", "set", dev, "up")
    return va, vb


def parse_nodes(lines):
    """{name: {field: value}} from dump-nodes reply lines (ints where the field is numeric)."""
    out = {}
    for line in lines:
        t = line.split()[2:]
        d = dict(zip(NODE_FIELDS, t))
        for k in ("options", "status"):
            d[k] = int(d[k], 16)
        for k in ("distance", "pmtu", "minmtu", "maxmtu"):
            d[k] = int(d[k])
        out[d["name"]] = d
    return out


def log_tails(nodes, tail):
    """Each node's log tail under a header, for a failing test's message ({name: node}; a
    node has .real, True for a reference tincd, and .read_log(tail))."""
    out = []
    for n, node in nodes.items():
        try:
            out.append(f"===== {n}{' (reference tincd)' if node.real else ''} log tail\n"
                       + node.read_log(tail))
        except OSError as e:
            out.append(f"===== {n}: {e}")
    return "\n".join(out)


class PingResult(NamedTuple):
    received: int
    sent: int
    rtt_ms: Optional[float]        # average
    duplicates: int


def ping(ns, src, dst, count=5, interval=0.2, wait=2):
    """Ping from namespace src to address dst."""
    r = ns.run(src, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                     "-W", str(wait), dst], timeout=count * (interval + wait) + 10)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    if not m:
        raise AssertionError(f"ping {src} -> {dst}: {r.stdout} {r.stderr}")
    rtt = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
    dups = re.search(r"\+(\d+) duplicates", r.stdout)
    return PingResult(int(m.group(2)), int(m.group(1)), float(rtt.group(1)) if rtt else None,
                      int(dups.group(1)) if dups else 0)


def wait_ping(ns, src, dst, timeout):
    """Single pings until one is answered; seconds it took, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if ping(ns, src, dst, count=1, wait=1).received == 1:
                return time.monotonic() - t0
        except AssertionError:
            # ping could not even send ("Network is unreachable"): tinc-up has not yet
            # given the interface its address
            time.sleep(0.2)
    return None


def tcp_stream(ns, src, dst_ns, dst_addr, port, nbytes, timeout=60):
    """nbytes over TCP from namespace src to dst_addr:port (a server in dst_ns); raises with
    both sides' output unless the server got exactly what was sent. Returns seconds taken."""
    prog = [sys.executable, "-m", "tests.integration.vpn"]
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    server = subprocess.Popen(ns.cmd(dst_ns, prog + ["serve", dst_addr, str(port)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=cwd)
    try:
        line = server.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(f"server in {dst_ns}: {line} {server.stderr.read()}")
        t0 = time.monotonic()
        client = ns.run(src, prog + ["send", dst_addr, str(port), str(nbytes)], cwd=cwd,
                        timeout=timeout)
        took = time.monotonic() - t0
        out, err = server.communicate(timeout=10)
        if client.returncode != 0:
            raise AssertionError(f"TCP {src} -> {dst_ns} ({dst_addr}): client "
                                 f"{client.stdout.strip()} {client.stderr.strip()[-500:]}; "
                                 f"server {out.strip()} {err.strip()[-500:]}")
        return took
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _serve(addr, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(1)
        s.settimeout(60)
        print("ready", flush=True)
        conn, _ = s.accept()
        with conn:
            conn.settimeout(60)
            h, n = hashlib.sha256(), 0
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                h.update(data)
                n += len(data)
            conn.sendall(f"{n} {h.hexdigest()}\n".encode())
        print(n, h.hexdigest(), flush=True)


def _send(addr, port, nbytes):
    data = os.urandom(nbytes)
    want = f"{nbytes} {hashlib.sha256(data).hexdigest()}"
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with s:
        s.settimeout(60)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    got = reply.decode().strip()
    print(f"sent {want}; server got {got}")
    return 0 if got == want else 1


if __name__ == "__main__":
    cmd, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "serve":
        _serve(addr, port)
    else:
        sys.exit(_send(addr, port, int(sys.argv[4])))
