"""Network namespaces for tests: create, run commands in, and always remove.

Needs root, iproute2 and /dev/net/tun; `netns_unavailable()` says why not, for skip messages.
Test traffic stays inside the namespaces a test creates (TEST-NET addresses on their links).
"""
import os
import shutil
import subprocess
import uuid


def netns_unavailable():
    """A reason string if namespace tests cannot run here, else None."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if not shutil.which("ip"):
        return "network namespace tests need iproute2's `ip`"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=30)


class Namespaces:
    """A set of namespaces with unique names; `close()` deletes them and their links."""

    def __init__(self, *names):
        tag = uuid.uuid4().hex[:6]
        self.names = {n: f"tapp-{tag}-{n}" for n in names}
        self._created = []
        try:
            for n in names:
                ip("netns", "add", self.names[n])
                self._created.append(self.names[n])
                ip("-n", self.names[n], "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    def __getitem__(self, name):
        return self.names[name]

    def link(self, a, addr_a, b, addr_b):
        """A veth pair between namespaces a and b with the given CIDR addresses."""
        tag = uuid.uuid4().hex[:6]
        va, vb = f"va{tag}", f"vb{tag}"
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        ip("link", "set", va, "netns", self.names[a])
        ip("link", "set", vb, "netns", self.names[b])
        for ns, dev, addr in ((a, va, addr_a), (b, vb, addr_b)):
            ip("-n", self.names[ns], "addr", "add", addr, "dev", dev)
            ip("-n", self.names[ns], "link", "set", dev, "up")

    def bridge(self, name, dev="br0"):
        """A bridge device `dev` (up, no STP) in namespace `name`: a switch for `port()`."""
        ip("-n", self.names[name], "link", "add", dev, "type", "bridge")
        ip("-n", self.names[name], "link", "set", dev, "up")
        return dev

    def port(self, a, addr_a, switch, dev="br0"):
        """A veth pair from namespace a (address addr_a) to a port of bridge `dev` in
        namespace `switch`; returns the name of a's end (for `set_link`)."""
        tag = uuid.uuid4().hex[:6]
        va, vb = f"va{tag}", f"vb{tag}"
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        ip("link", "set", va, "netns", self.names[a])
        ip("link", "set", vb, "netns", self.names[switch])
        ip("-n", self.names[a], "addr", "add", addr_a, "dev", va)
        ip("-n", self.names[a], "link", "set", va, "up")
        ip("-n", self.names[switch], "link", "set", vb, "master", dev)
        ip("-n", self.names[switch], "link", "set", vb, "up")
        return va

    def set_link(self, name, dev, up):
        """`ip link set dev up|down` inside namespace `name`."""
        ip("-n", self.names[name], "link", "set", dev, "up" if up else "down")

    def cmd(self, name, argv):
        """argv run inside namespace `name`."""
        return ["ip", "netns", "exec", self.names[name], *argv]

    def run(self, name, argv, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(self.cmd(name, argv), **kw)

    def close(self):
        for ns in self._created:
            ip("netns", "del", ns, check=False)
        self._created = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
