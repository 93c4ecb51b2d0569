"""Per-node cache of recently working addresses and the order outgoing connections try
addresses in (graph.md 9; tinc's address_cache.c).

Owns the list of up to MAX_CACHED_ADDRESSES (host, port) pairs, most recent first, and its
serialisation. The shell owns the file (`CONFBASE/cache/NAME.tincapp`), the resolution of
`Address` lines and the connecting.

# DEVIATION: tinc's `cache/NAME` is a raw C struct (keys-and-files.md 3), not portable; we
# keep a small JSON document under another name and never read or write tinc's files.

No I/O. Not thread-safe.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional

MAX_CACHED_ADDRESSES = 8     # COMPAT: address_cache.h
CACHE_FORMAT_VERSION = 1
CACHE_SUFFIX = ".tincapp"

Address = tuple[str, str]    # (numeric host or name, port), both text


class AddressCache:
    """Recently working addresses of one node, most recent first."""

    def __init__(self, recent: Iterable[Address] = ()):
        self.recent: list[Address] = [tuple(a) for a in recent][:MAX_CACHED_ADDRESSES]

    def add_recent(self, address: Address) -> bool:
        """Called when `address` proved to work (PONG on an outgoing connection after a
        retry, or the node became reachable through our outgoing connection): move or add it
        to the front, dropping the oldest beyond MAX_CACHED_ADDRESSES. True if the list
        changed (the shell then rewrites the file)."""
        address = (str(address[0]), str(address[1]))
        if self.recent[:1] == [address]:
            return False
        if address in self.recent:
            self.recent.remove(address)
        self.recent.insert(0, address)
        del self.recent[MAX_CACHED_ADDRESSES:]
        return True

    def candidates(self, known: Iterable[Address], configured: Iterable[Address]) -> list:
        """The addresses to try, in tinc's get_recent_address order: (1) the cache, (2)
        addresses other nodes see the node at (`known`, see known_addresses) that are not
        cached, (3) the `Address` lines of its host file (`configured`), unfiltered."""
        out = list(self.recent)
        for a in known:
            if a not in self.recent and a not in out:
                out.append(a)
        out += list(configured)
        return out

    # --- serialisation --------------------------------------------------------------------

    def encode(self) -> bytes:
        """{"version": 1, "addresses": [[host, port], ...]}"""
        return json.dumps({"version": CACHE_FORMAT_VERSION,
                           "addresses": [list(a) for a in self.recent]}).encode() + b"\n"

    @classmethod
    def decode(cls, data: Optional[bytes]) -> "AddressCache":
        """A cache from a file's content; anything unreadable gives an empty cache, as tinc
        starts empty on a version mismatch or short read."""
        try:
            doc = json.loads(data or b"")
            if doc.get("version") != CACHE_FORMAT_VERSION:
                return cls()
            addrs = [(str(h), str(p)) for h, p in doc["addresses"]]
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()
        if len(addrs) > MAX_CACHED_ADDRESSES:
            return cls()
        return cls(addrs)


def known_addresses(graph, name: str) -> list:
    """Addresses at which other nodes see `name`: for each edge name -> X that has a reverse
    edge X -> name, the address on that reverse edge, once each.

    COMPAT: get_known_addresses prepends while walking the node's edge tree (by X's name),
    so the result is in reverse name order. Non-numeric ("unknown") addresses cannot be
    connected to and are skipped.
    """
    n = graph.node(name)
    if n is None:
        return []
    out: list = []
    for e in n.sorted_edges():
        r = e.reverse
        if r is None or r.address is None or r.address.unknown:
            continue
        a = (r.address.host, r.address.port)
        if a not in out:
            out.append(a)
    out.reverse()
    return out
