"""Address cache and candidate order (graph.md 9, tinc's address_cache.c)."""
from tincapp.mesh.address_cache import (MAX_CACHED_ADDRESSES, AddressCache,
                                        known_addresses)
from tincapp.mesh.graph import Graph, SockAddr

A, B, C = ("10.0.0.1", "655"), ("10.0.0.2", "655"), ("10.0.0.3", "656")


def test_add_recent_moves_to_front_and_caps_at_eight():
    c = AddressCache()
    assert c.add_recent(A) and c.add_recent(B)
    assert c.recent == [B, A]
    assert not c.add_recent(B)                 # already first: nothing to rewrite
    assert c.add_recent(A)
    assert c.recent == [A, B]
    for i in range(10):
        c.add_recent((f"192.0.2.{i}", "655"))
    assert len(c.recent) == MAX_CACHED_ADDRESSES
    assert c.recent[0] == ("192.0.2.9", "655") and A not in c.recent


def test_candidates_cache_then_unseen_known_then_configured():
    c = AddressCache([B, A])
    known = [C, A]                             # A is cached: not repeated
    configured = [("alpha.example", "655"), A]  # COMPAT: Address lines are not filtered
    assert c.candidates(known, configured) == [B, A, C, ("alpha.example", "655"), A]
    assert AddressCache().candidates([], [A]) == [A]


def test_known_addresses_come_from_paired_edges_in_reverse_name_order():
    g = Graph("me", now=0)
    # Edges from "n" to a, b, c; only a and c answered with a reverse edge.
    for peer, addr in (("a", "10.1.0.1"), ("b", "10.1.0.2"), ("c", "10.1.0.3"), ("d", None)):
        g.add_edge("n", peer, address=SockAddr(addr or "10.1.0.9", "655"))
        if peer != "b":
            g.add_edge(peer, "n", address=SockAddr("172.16.0.%d" % (ord(peer) - 96), "655")
                       if addr else SockAddr("x", "y", unknown=True))
    g.add_edge("e", "n", address=SockAddr("172.16.0.1", "655"))   # no pair: ignored
    # a -> n and c -> n say where they see n; d's address is not numeric.
    assert known_addresses(g, "n") == [("172.16.0.3", "655"), ("172.16.0.1", "655")]
    assert known_addresses(g, "nobody") == []


def test_known_addresses_are_deduplicated():
    g = Graph("me", now=0)
    for peer in ("a", "b"):
        g.add_edge("n", peer, address=SockAddr("10.1.0.1", "655"))
        g.add_edge(peer, "n", address=SockAddr("172.16.0.1", "655"))
    assert known_addresses(g, "n") == [("172.16.0.1", "655")]


def test_encode_decode_round_trip_and_garbage():
    c = AddressCache([A, C])
    assert AddressCache.decode(c.encode()).recent == [A, C]
    for bad in (None, b"", b"\x01\x00\x00\x00", b'{"version": 2, "addresses": []}',
                b'{"version": 1, "addresses": [[1]]}', b"[]",
                b'{"version": 1, "addresses": %s}' % str([["h", "1"]] * 9).replace("'", '"')
                .encode()):
        assert AddressCache.decode(bad).recent == []
