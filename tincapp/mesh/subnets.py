"""Subnets: tinc's text format, ordering and lookup (src/subnet.c, subnet_parse.c).

Owns: the set of known subnets (per owner and the global ordered index, including the
ownerless broadcast subnets) and the lookup cache. Ordering, matching and the cache's flush
rules are tinc's; reachability comes from the Graph, whose `generation` counter flushes the
cache exactly where tinc's graph() flushes it.

Must not: do I/O, run scripts (the daemon runs subnet-up/-down), or decide protocol questions
(whether to accept, forward or retaliate against an ADD_SUBNET is the meta protocol's).
Not thread-safe.
"""
from __future__ import annotations

import bisect
import enum
import ipaddress
from dataclasses import dataclass, replace
from typing import Optional, Protocol

from tincapp.errors import WireError

# COMPAT: "Changing this default will affect ADD_SUBNET messages" -- it is never written out.
DEFAULT_WEIGHT = 10

# tinc adds these ownerless subnets at startup and on reload (net_setup.c); BroadcastSubnet
# lines add more.
DEFAULT_BROADCAST_SUBNETS = ("ff:ff:ff:ff:ff:ff", "255.255.255.255", "224.0.0.0/4", "ff00::/8")

# tinc copies the text into a 64-byte buffer before parsing.
_MAX_TEXT = 63

# tinc's lookup caches are fixed-size tables; a dict that starts over when full is close enough.
_CACHE_LIMIT = 0x10000


class SubnetType(enum.IntEnum):
    """Also the first sort key: MAC < IPv4 < IPv6."""

    MAC = 0
    IPV4 = 1
    IPV6 = 2


_ADDRESS_LEN = {SubnetType.MAC: 6, SubnetType.IPV4: 4, SubnetType.IPV6: 16}
_FULL_PREFIX = {SubnetType.MAC: 48, SubnetType.IPV4: 32, SubnetType.IPV6: 128}


@dataclass(frozen=True)
class Subnet:
    """One subnet (tinc subnet_t). `owner` None = an ownerless broadcast subnet.

    `address` is the raw bytes (6, 4 or 16); host bits may be set, as tinc accepts them from
    peers (only configuration is checked with `is_canonical`). MAC subnets have prefixlength 48.
    Lower weight wins among equal prefixes. Equality is tinc's identity: a subnet that differs
    only in weight is a different subnet.
    """

    type: SubnetType
    address: bytes
    prefixlength: int
    weight: int = DEFAULT_WEIGHT
    owner: Optional[str] = None

    @classmethod
    def parse(cls, text: str, owner: Optional[str] = None) -> Subnet:
        """tinc str2net. Raises WireError for text tinc rejects."""
        return _parse(text, owner)

    def __str__(self) -> str:
        """tinc net2str: canonical text, with `#weight` unless the weight is the default."""
        text = self.text_without_weight()
        if self.weight != DEFAULT_WEIGHT:
            text += f"#{self.weight}"
        return text

    def text_without_weight(self) -> str:
        """The SUBNET script variable: net2str up to the '#'."""
        if self.type == SubnetType.MAC:
            return ":".join(f"{b:02x}" for b in self.address)
        if self.type == SubnetType.IPV4:
            text = ".".join(str(b) for b in self.address)
        else:
            text = format_ipv6(self.address)
        if self.prefixlength != _FULL_PREFIX[self.type]:
            text += f"/{self.prefixlength}"
        return text

    def weight_text(self) -> str:
        """The WEIGHT script variable: empty for the default weight."""
        return "" if self.weight == DEFAULT_WEIGHT else str(self.weight)

    def is_canonical(self) -> bool:
        """tinc subnetcheck: no address bits set beyond the prefix (checked for configuration)."""
        if self.type == SubnetType.MAC:
            return True
        value = int.from_bytes(self.address, "big")
        host_bits = _FULL_PREFIX[self.type] - self.prefixlength
        return value & ((1 << host_bits) - 1) == 0

    def matches(self, address: bytes) -> bool:
        """tinc maskcmp == 0: the first `prefixlength` bits agree (MAC: all 48)."""
        bits = _FULL_PREFIX[self.type]
        shift = bits - self.prefixlength
        mine = int.from_bytes(self.address, "big") >> shift
        return int.from_bytes(address, "big") >> shift == mine

    def with_owner(self, owner: Optional[str]) -> Subnet:
        return replace(self, owner=owner)

    def sort_key(self) -> tuple:
        """tinc subnet_compare: type, prefix length descending, address, weight, owner.

        DEVIATION: tinc compares weights as a C int difference (wraps for far-apart weights).
        """
        return (self.type, -self.prefixlength, self.address, self.weight, self.owner or "")


def parse_subnet(text: str, owner: Optional[str] = None) -> Subnet:
    """tinc str2net (see Subnet.parse)."""
    return _parse(text, owner)


# --- parsing: tinc uses sscanf and inet_pton; their leniencies are part of the format -------

_C_SPACE = " \t\n\v\f\r"
_HEX = "0123456789abcdefABCDEF"
_ULONG_MAX = (1 << 64) - 1


def _c_long(value: int) -> int:
    """glibc's strtol clamps to the 64-bit long range."""
    return max(-(1 << 63), min((1 << 63) - 1, value))


def _to_int32(value: int) -> int:
    """sscanf("%d") stores the long into an int: two's-complement truncation."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _scan_number(text: str, pos: int, base: int) -> Optional[tuple[int, int]]:
    """One sscanf %d / %x conversion at `pos`: (value as strtol/strtoul sees it, end) or None.

    Leading whitespace and a sign are accepted; hex may carry a 0x prefix. The value is the
    mathematical one (sign applied); callers apply C's conversions.
    """
    while pos < len(text) and text[pos] in _C_SPACE:
        pos += 1
    negative = False
    if pos < len(text) and text[pos] in "+-":
        negative = text[pos] == "-"
        pos += 1
    digits = "0123456789" if base == 10 else _HEX
    prefixed = base == 16 and text[pos:pos + 2] in ("0x", "0X")
    if prefixed:
        # glibc counts the 0 as a digit and swallows the x even if no digit follows.
        pos += 2
    start = pos
    while pos < len(text) and text[pos] in digits:
        pos += 1
    if pos == start and not prefixed:
        return None
    value = int(text[start:pos] or "0", base)
    return (-value if negative else value), pos


def _scan_whole_int(text: str) -> Optional[int]:
    """sscanf(text, "%d%n") that must consume everything: the int value, or None."""
    scanned = _scan_number(text, 0, 10)
    if scanned is None or scanned[1] != len(text):
        return None
    return _to_int32(_c_long(scanned[0]))


def _scan_mac(text: str) -> Optional[bytes]:
    """sscanf("%hx:%hx:%hx:%hx:%hx:%hx%n") that must consume everything.

    COMPAT: old tinc wrote one-digit parts, so tinc accepts them; each part goes through
    strtoul, then unsigned short, then a byte, so "100" becomes 00 and "-1" becomes ff.
    """
    parts = []
    pos = 0
    for i in range(6):
        if i:
            if pos >= len(text) or text[pos] != ":":
                return None
            pos += 1
        scanned = _scan_number(text, pos, 16)
        if scanned is None:
            return None
        value, pos = scanned
        # strtoul: out of range saturates, a minus sign negates modulo 2^64.
        value = _ULONG_MAX if abs(value) > _ULONG_MAX else value % (1 << 64)
        parts.append(value & 0xFF)
    if pos != len(text):
        return None
    return bytes(parts)


def _parse(text: str, owner: Optional[str]) -> Subnet:
    s = text.split("\0", 1)[0][:_MAX_TEXT]

    weight = DEFAULT_WEIGHT
    if "#" in s:
        s, weight_text = s.split("#", 1)
        parsed = _scan_whole_int(weight_text)
        if parsed is None:
            raise WireError(f"bad subnet weight in {text!r}")
        weight = parsed

    prefixlength = -1
    if "/" in s:
        s, prefix_text = s.split("/", 1)
        parsed = _scan_whole_int(prefix_text)
        # COMPAT: "%d" wraps to 32 bits, so /4294967304 is read as /8.
        if parsed is None or parsed < 0:
            raise WireError(f"bad subnet prefix length in {text!r}")
        prefixlength = parsed

    mac = _scan_mac(s)
    if mac is not None:
        # COMPAT: MAC-shaped text with a prefix is rejected outright, not tried as IPv6.
        if prefixlength >= 0:
            raise WireError(f"MAC subnet with a prefix length: {text!r}")
        return Subnet(SubnetType.MAC, mac, 48, weight, owner)

    ipv4 = _inet_pton4(s)
    if ipv4 is not None:
        if prefixlength == -1:
            prefixlength = 32
        if prefixlength > 32:
            raise WireError(f"IPv4 prefix length over 32: {text!r}")
        return Subnet(SubnetType.IPV4, ipv4, prefixlength, weight, owner)

    ipv6 = _inet_pton6(s)
    if ipv6 is not None:
        if prefixlength == -1:
            prefixlength = 128
        if prefixlength > 128:
            raise WireError(f"IPv6 prefix length over 128: {text!r}")
        return Subnet(SubnetType.IPV6, ipv6, prefixlength, weight, owner)

    raise WireError(f"not a subnet: {text!r}")


def _inet_pton4(s: str) -> Optional[bytes]:
    # glibc inet_pton (not inet_aton): exactly four decimal octets, no leading zeros; Python's
    # ipaddress applies the same rules.
    if not s.isascii():
        return None
    try:
        return ipaddress.IPv4Address(s).packed
    except ValueError:
        return None


def _inet_pton6(s: str) -> Optional[bytes]:
    # Python would also accept a "%scope" suffix; inet_pton does not.
    if not s.isascii() or "%" in s:
        return None
    try:
        return ipaddress.IPv6Address(s).packed
    except ValueError:
        return None


def format_ipv6(address: bytes) -> str:
    """glibc inet_ntop(AF_INET6): the longest run (first of equals) of two or more zero groups
    becomes "::"; ::a.b.c.d and ::ffff:a.b.c.d keep the dotted quad (Python's ipaddress does
    not)."""
    words = [int.from_bytes(address[i:i + 2], "big") for i in range(0, 16, 2)]
    best_base, best_len = -1, 0
    cur_base, cur_len = -1, 0
    for i, w in enumerate(words + [1]):   # the sentinel closes a trailing run
        if w == 0:
            if cur_base == -1:
                cur_base, cur_len = i, 1
            else:
                cur_len += 1
        elif cur_base != -1:
            if best_base == -1 or cur_len > best_len:
                best_base, best_len = cur_base, cur_len
            cur_base = -1
    if best_len < 2:
        best_base = -1

    out = []
    for i, w in enumerate(words):
        if best_base != -1 and best_base <= i < best_base + best_len:
            if i == best_base:
                out.append(":")
            continue
        if i != 0:
            out.append(":")
        if i == 6 and best_base == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            out.append(".".join(str(b) for b in address[12:]))
            break
        out.append(f"{w:x}")
    if best_base != -1 and best_base + best_len == 8:
        out.append(":")
    return "".join(out)


# --- the table --------------------------------------------------------------------------------

class _Reachability(Protocol):
    generation: int

    def is_reachable(self, name: str) -> bool: ...


def _tinc_equal(a: Subnet, b: Subnet) -> bool:
    """subnet_compare() == 0: the owner only counts when both subnets have one."""
    if a.sort_key()[:4] != b.sort_key()[:4]:
        return False
    return a.owner is None or b.owner is None or a.owner == b.owner


class SubnetTable:
    """All known subnets plus tinc's lookup cache.

    `mesh` supplies `is_reachable(name)` and `generation` (a Graph); a new generation means
    graph() ran, which flushes every cache in tinc.
    """

    def __init__(self, mesh: _Reachability):
        self._mesh = mesh
        self._index: list[Subnet] = []                 # tinc's global subnet_tree, in order
        self._by_owner: dict[str, list[Subnet]] = {}   # each node's subnet_tree, in order
        self._caches: dict[SubnetType, dict[bytes, Subnet]] = {t: {} for t in SubnetType}
        self._cache_generation = mesh.generation
        self.version = 0          # bumped by every add/delete: caches of lookups follow it

    # --- changes -----------------------------------------------------------------------------

    def add(self, subnet: Subnet) -> bool:
        """subnet_add. False (and nothing changes) if the owner already has this subnet."""
        if subnet.owner is not None:
            owned = self._by_owner.setdefault(subnet.owner, [])
            if subnet in owned:
                return False
            bisect.insort(owned, subnet, key=Subnet.sort_key)
        # COMPAT: tinc's compare ignores the owner when either side has none, so a node's
        # subnet identical to a broadcast subnet (or the reverse) is refused by the global tree:
        # it stays in its owner's set but lookups and dumps never see it.
        if not any(_tinc_equal(subnet, s) for s in self._equal_range(subnet)):
            bisect.insort(self._index, subnet, key=Subnet.sort_key)
        self._flush_for(subnet)
        self.version += 1
        return True

    def delete(self, subnet: Subnet) -> bool:
        """subnet_del. False if the owner does not have this subnet."""
        if subnet.owner is not None:
            owned = self._by_owner.get(subnet.owner, [])
            if subnet not in owned:
                return False
            owned.remove(subnet)
            if not owned:
                del self._by_owner[subnet.owner]
        # DEVIATION: for a subnet the global tree refused, tinc's splay_delete finds the equal
        # ownerless entry and frees it; we only ever unindex the subnet itself.
        if subnet in self._index:
            self._index.remove(subnet)
        elif subnet.owner is None:
            return False
        self._flush_for(subnet)
        self.version += 1
        return True

    def delete_owner(self, owner: str) -> list[Subnet]:
        """Drop all subnets of a node (node_del during purge); returns them in tinc's order."""
        removed = list(self._by_owner.get(owner, []))
        for s in removed:
            self.delete(s)
        return removed

    def flush_cache(self) -> None:
        """subnet_cache_flush_tables."""
        for cache in self._caches.values():
            cache.clear()
        self._cache_generation = self._mesh.generation

    # --- queries -----------------------------------------------------------------------------

    def __iter__(self):
        """All indexed subnets in tinc's subnet_tree order (the dump order)."""
        return iter(list(self._index))

    def __len__(self) -> int:
        return len(self._index)

    def owned_by(self, owner: str) -> list[Subnet]:
        """A node's subnets in its subnet_tree order (the order subnet-up/-down run in)."""
        return list(self._by_owner.get(owner, []))

    def lookup(self, owner: str, subnet: Subnet) -> Optional[Subnet]:
        """lookup_subnet(owner, s): the owner's subnet equal to `subnet` (weight included)."""
        wanted = subnet.with_owner(owner)
        return wanted if wanted in self._by_owner.get(owner, []) else None

    def lookup_ipv4(self, address: bytes) -> Optional[Subnet]:
        """lookup_subnet_ipv4: the first match in tree order whose owner is reachable (or that
        has none); if every match has an unreachable owner, the last match."""
        return self._lookup(SubnetType.IPV4, address, self._index)

    def lookup_ipv6(self, address: bytes) -> Optional[Subnet]:
        """lookup_subnet_ipv6, same rules as IPv4."""
        return self._lookup(SubnetType.IPV6, address, self._index)

    def lookup_mac(self, address: bytes, owner: Optional[str] = None) -> Optional[Subnet]:
        """lookup_subnet_mac: exact MAC match, same preference rules.

        With `owner` only that node's subnets are searched (switch mode's learn_mac uses us).
        COMPAT: tinc consults and fills the one MAC cache either way, so a cached answer of
        either kind is returned to both kinds of caller.
        """
        subnets = self._index if owner is None else self._by_owner.get(owner, [])
        return self._lookup(SubnetType.MAC, address, subnets)

    def _lookup(self, stype: SubnetType, address: bytes,
                subnets: list[Subnet]) -> Optional[Subnet]:
        if self._cache_generation != self._mesh.generation:
            self.flush_cache()
        cache = self._caches[stype]
        found = cache.get(address)
        if found is not None:
            return found
        for s in subnets:
            if s.type != stype or not s.matches(address):
                continue
            found = s
            if s.owner is None or self._mesh.is_reachable(s.owner):
                break
        if found is not None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[address] = found
        return found

    def _equal_range(self, subnet: Subnet) -> list[Subnet]:
        # Indexed subnets that agree with `subnet` on everything before the owner.
        key = subnet.sort_key()[:4]
        lo = bisect.bisect_left(self._index, key, key=lambda s: s.sort_key()[:4])
        hi = bisect.bisect_right(self._index, key, key=lambda s: s.sort_key()[:4])
        return self._index[lo:hi]

    def _flush_for(self, subnet: Subnet) -> None:
        """subnet_cache_flush: a host route or a MAC only invalidates its own address."""
        if self._cache_generation != self._mesh.generation:
            self.flush_cache()
            return
        full = subnet.prefixlength == _FULL_PREFIX[subnet.type]
        if subnet.type == SubnetType.MAC or full:
            self._caches[subnet.type].pop(subnet.address, None)
            return
        # COMPAT: subnet_cache_flush_table clears the family's table and the MAC table.
        self._caches[subnet.type].clear()
        self._caches[SubnetType.MAC].clear()
