"""tinc's graph algorithms on hand-worked topologies (graph.md 3-5, src/graph.c).

Each test builds a graph seen from "alice" (unless said otherwise), runs it and checks
reachability, nexthop, via, distance, the spanning tree and the events against results worked
out by hand from tinc's sssp_bfs / check_reachability / mst_kruskal.
"""
import pytest

from tincapp.mesh.graph import (OPTION_INDIRECT, STATUS_INDIRECT, STATUS_REACHABLE,
                                STATUS_SPTPS, STATUS_VISITED, Graph, MeshBecameEmpty,
                                MeshBecameNonEmpty, NodeBecameReachable, NodeBecameUnreachable,
                                NodeUdpAddressChanged, SockAddr)

V7 = 0x7000000          # protocol minor 7 in the top byte
DEFAULT = V7 | 0xC      # PMTU_DISCOVERY | CLAMP_MSS, what a default tinc 1.1 sends


def addr(name):
    """A distinct documentation address per node, as the edge pointing to it would carry."""
    return SockAddr(f"192.0.2.{sum(name.encode()) % 250 + 1}", "655")


def link(g, a, b, weight=10, options=DEFAULT, weight_back=None, options_back=None):
    """Both halves of a meta connection a <-> b, as the two endpoints announce them."""
    g.add_edge(a, b, address=addr(b), options=options, weight=weight,
               connection=f"{a}-{b}" if a == g.myself.name else None)
    g.add_edge(b, a, address=addr(a),
               options=options if options_back is None else options_back,
               weight=weight if weight_back is None else weight_back,
               connection=f"{b}-{a}" if b == g.myself.name else None)


def unlink(g, a, b):
    g.del_edge(a, b)
    g.del_edge(b, a)


def state(g, name):
    n = g.node(name)
    return (n.reachable, n.nexthop.name if n.nexthop else None,
            n.via.name if n.via else None, n.distance)


def mst_pairs(g):
    return {frozenset((e.from_node.name, e.to_node.name)) for e in g.mst_edges}


def pairs(*names):
    return {frozenset(p.split("-")) for p in names}


# --- basic shapes ---------------------------------------------------------------------------

def test_fresh_graph_has_only_us():
    g = Graph("alice", options=DEFAULT, tcp_port="655", now=5.0)
    assert [n.name for n in g.nodes()] == ["alice"]
    me = g.myself
    assert me.reachable and me.nexthop is me and me.via is me and me.distance == 0
    assert me.hostname == "MYSELF port 655"
    assert g.run(now=6.0) == []
    assert me.last_state_change == 5.0
    # No edges: no spanning-tree start, so even we are left unvisited (tinc: status 0x50).
    assert me.status_bits() == STATUS_REACHABLE | STATUS_SPTPS
    assert g.mst_edges == ()


def test_line():
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "bob", "carol")
    link(g, "carol", "dave")
    events = g.run(now=100.0)

    assert events == [
        NodeBecameReachable("bob", addr("bob"), via="bob", nexthop="bob", options=DEFAULT),
        NodeBecameReachable("carol", addr("carol"), via="carol", nexthop="bob", options=DEFAULT),
        NodeBecameReachable("dave", addr("dave"), via="dave", nexthop="bob", options=DEFAULT),
        MeshBecameNonEmpty(),
    ]
    assert state(g, "bob") == (True, "bob", "bob", 1)
    assert state(g, "carol") == (True, "bob", "carol", 2)
    assert state(g, "dave") == (True, "bob", "dave", 3)
    assert g.node("dave").prevedge is g.edge("carol", "dave")
    assert g.node("carol").weighted_distance == 20
    assert mst_pairs(g) == pairs("alice-bob", "bob-carol", "carol-dave")
    assert g.mst_connections == {"alice-bob"}
    for name in ("bob", "carol", "dave"):
        n = g.node(name)
        assert n.last_state_change == 100.0
        assert n.sptps            # minor 7 >= 2
        assert n.status_bits() == STATUS_VISITED | STATUS_REACHABLE | STATUS_SPTPS
        assert n.hostname == addr(name).hostname()

    # A second run with nothing changed reports nothing.
    assert g.run(now=101.0) == []


def test_star_with_us_in_the_middle():
    g = Graph("alice")
    for leaf in ("dave", "bob", "carol"):
        link(g, "alice", leaf)
    events = g.run(now=1.0)
    up = [e.name for e in events if isinstance(e, NodeBecameReachable)]
    assert up == ["bob", "carol", "dave"]
    for leaf in ("bob", "carol", "dave"):
        assert state(g, leaf) == (True, leaf, leaf, 1)
    assert mst_pairs(g) == pairs("alice-bob", "alice-carol", "alice-dave")
    assert g.mst_connections == {"alice-bob", "alice-carol", "alice-dave"}


def test_star_with_us_as_a_leaf():
    g = Graph("alice")
    for leaf in ("alice", "bob", "carol"):
        link(g, "hub", leaf)
    g.run(now=1.0)
    assert state(g, "hub") == (True, "hub", "hub", 1)
    assert state(g, "bob") == (True, "hub", "bob", 2)
    assert state(g, "carol") == (True, "hub", "carol", 2)
    assert mst_pairs(g) == pairs("hub-alice", "hub-bob", "hub-carol")
    # Our only connection is in the tree; edges between others carry no connection token.
    assert g.mst_connections == {"alice-hub"}


# --- tie-breaking -----------------------------------------------------------------------------

def test_ring_equal_weights_first_found_path_wins():
    # alice - bob - carol - dave - alice. carol is two hops either way; alice examines her
    # edges in name order (bob before dave), so bob's path is found first and kept.
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "bob", "carol")
    link(g, "carol", "dave")
    link(g, "dave", "alice")
    g.run(now=1.0)
    assert state(g, "carol") == (True, "bob", "carol", 2)
    assert g.node("carol").prevedge is g.edge("bob", "carol")
    assert state(g, "dave") == (True, "dave", "dave", 1)


def test_ring_lighter_accumulated_weight_wins_among_equal_hops():
    # Same ring, but the path through dave is lighter in total (5 + 5 < 10 + 10): the head's
    # tie-break compares accumulated path weights, so carol is reached through dave.
    g = Graph("alice")
    link(g, "alice", "bob", weight=10)
    link(g, "bob", "carol", weight=10)
    link(g, "carol", "dave", weight=5)
    link(g, "dave", "alice", weight=5)
    g.run(now=1.0)
    assert state(g, "carol") == (True, "dave", "carol", 2)
    assert g.node("carol").weighted_distance == 10
    assert g.node("carol").prevedge is g.edge("dave", "carol")


def test_fewer_hops_beat_lighter_weights():
    # alice-bob (100) is one hop; alice-carol-bob (1 + 1) is two: hop count decides first.
    g = Graph("alice")
    link(g, "alice", "bob", weight=100)
    link(g, "alice", "carol", weight=1)
    link(g, "carol", "bob", weight=1)
    g.run(now=1.0)
    assert state(g, "bob") == (True, "bob", "bob", 1)
    assert g.node("bob").weighted_distance == 100


def test_full_mesh_equal_weights_tree_is_broken_by_names():
    # All edges weigh 10: the weight order is by from name then to name, so the tree grows
    # from alice's edges: a star around alice, whoever we are.
    names = ["alice", "bob", "carol", "dave"]
    for me in names:
        g = Graph(me)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                link(g, a, b)
        g.run(now=1.0)
        assert mst_pairs(g) == pairs("alice-bob", "alice-carol", "alice-dave"), me
        for other in names:
            if other != me:
                assert state(g, other) == (True, other, other, 1)


def test_spanning_tree_restarts_after_skipping():
    # Weight order: carol-dave 1, alice-bob 2, bob-carol 3, alice-dave 4. The tree starts at
    # carol (the lightest edge's from), skips alice-bob (neither side in the tree yet), adds
    # bob-carol, then restarts and picks alice-bob up; alice-dave would close a cycle.
    g = Graph("alice")
    link(g, "carol", "dave", weight=1)
    link(g, "alice", "bob", weight=2)
    link(g, "bob", "carol", weight=3)
    link(g, "alice", "dave", weight=4)
    g.run(now=1.0)
    assert [(e.from_node.name, e.to_node.name) for e in g.mst_edges] == [
        ("carol", "dave"), ("bob", "carol"), ("alice", "bob")]
    assert g.mst_connections == {"alice-bob"}


def test_edges_by_weight_order():
    g = Graph("alice")
    link(g, "bob", "alice", weight=5)
    link(g, "alice", "carol", weight=5)
    link(g, "bob", "carol", weight=1)
    assert [(e.from_node.name, e.to_node.name) for e in g.edges_by_weight()] == [
        ("bob", "carol"), ("carol", "bob"),
        ("alice", "bob"), ("alice", "carol"), ("bob", "alice"), ("carol", "alice")]
    assert [(e.from_node.name, e.to_node.name) for e in g.edges()] == [
        ("alice", "bob"), ("alice", "carol"), ("bob", "alice"), ("bob", "carol"),
        ("carol", "alice"), ("carol", "bob")]


# --- partitions and one-way edges -------------------------------------------------------------

def test_partition_then_heal():
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "bob", "carol")
    link(g, "carol", "dave")
    g.run(now=1.0)

    unlink(g, "bob", "carol")
    events = g.run(now=2.0)
    assert events == [NodeBecameUnreachable("carol", addr("carol")),
                      NodeBecameUnreachable("dave", addr("dave"))]
    for name in ("carol", "dave"):
        n = g.node(name)
        assert not n.reachable and n.distance == -1 and n.last_state_change == 2.0
        assert n.options == 0 and n.status_bits() == 0
        # COMPAT: the address and hostname stay (dumps keep showing them), as do stale
        # nexthop/via; only the by-address index forgets the node.
        assert n.address == addr(name) and n.hostname == addr(name).hostname()
        assert n.nexthop.name == "bob"
        assert g.node_by_udp_address(addr(name)) is None
    assert g.node_by_udp_address(addr("bob")) is g.node("bob")
    # The far side keeps its own edge carol<->dave, it is just unreachable from here.
    assert g.edge("carol", "dave") is not None
    assert mst_pairs(g) == pairs("alice-bob")

    # At the next run, still-unreachable nodes carry tinc's "indirect" bit from the search.
    assert g.run(now=3.0) == []
    assert g.node("carol").status_bits() == STATUS_INDIRECT

    link(g, "bob", "carol")
    events = g.run(now=4.0)
    assert [type(e).__name__ for e in events] == ["NodeBecameReachable", "NodeBecameReachable"]
    assert state(g, "dave") == (True, "bob", "dave", 3)


def test_losing_everyone_reports_empty_mesh():
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "bob", "carol")
    g.run(now=1.0)
    unlink(g, "alice", "bob")
    assert g.run(now=2.0) == [NodeBecameUnreachable("bob", addr("bob")),
                              NodeBecameUnreachable("carol", addr("carol")),
                              MeshBecameEmpty()]
    assert g.mst_edges == ()


def test_partial_loss_is_not_an_empty_mesh_and_partial_gain_not_a_new_one():
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "alice", "carol")
    g.run(now=1.0)
    unlink(g, "alice", "carol")
    assert g.run(now=2.0) == [NodeBecameUnreachable("carol", addr("carol"))]
    link(g, "alice", "carol")
    events = g.run(now=3.0)
    assert [type(e) for e in events] == [NodeBecameReachable]


def test_one_way_edge_is_ignored():
    g = Graph("alice")
    g.add_edge("alice", "bob", address=addr("bob"), options=DEFAULT, weight=10)
    assert g.run(now=1.0) == []
    assert not g.node("bob").reachable
    assert g.edge("alice", "bob").reverse is None

    g.add_edge("bob", "alice", address=addr("alice"), options=DEFAULT, weight=10)
    assert g.edge("alice", "bob").reverse is g.edge("bob", "alice")
    assert [type(e) for e in g.run(now=2.0)] == [NodeBecameReachable, MeshBecameNonEmpty]

    # Deleting one half unpairs the other: bob is gone again.
    g.del_edge("bob", "alice")
    assert g.edge("alice", "bob").reverse is None
    assert g.run(now=3.0) == [NodeBecameUnreachable("bob", addr("bob")), MeshBecameEmpty()]


def test_one_way_edge_behind_a_neighbour():
    g = Graph("alice")
    link(g, "alice", "bob")
    g.add_edge("bob", "carol", weight=1)       # carol never announced her half
    g.run(now=1.0)
    assert g.node("carol").reachable is False
    assert mst_pairs(g) == pairs("alice-bob")


# --- IndirectData / TCPOnly -------------------------------------------------------------------

def test_indirect_neighbour_uses_us_as_via():
    # Our edge to bob carries INDIRECT (IndirectData or TCPOnly for bob): no direct UDP to bob;
    # via == us means "relay through the next hop". Behind bob, everything inherits it.
    g = Graph("alice")
    link(g, "alice", "bob", options=DEFAULT | OPTION_INDIRECT, options_back=DEFAULT)
    link(g, "bob", "carol")
    g.run(now=1.0)
    assert state(g, "bob") == (True, "bob", "alice", 1)
    assert state(g, "carol") == (True, "bob", "alice", 2)
    assert g.node("bob").indirect and g.node("carol").indirect
    assert g.node("bob").options == DEFAULT | OPTION_INDIRECT


def test_indirect_edge_further_away_relays_through_the_last_direct_node():
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "bob", "carol", options=DEFAULT | OPTION_INDIRECT, options_back=DEFAULT)
    link(g, "carol", "dave")
    g.run(now=1.0)
    assert state(g, "bob") == (True, "bob", "bob", 1)
    assert state(g, "carol") == (True, "bob", "bob", 2)
    assert state(g, "dave") == (True, "bob", "bob", 3)
    # Only the announcer's half counts: carol's own edge back to bob is direct.
    assert not g.node("bob").indirect


def test_direct_path_replaces_indirect_one_but_keeps_its_nexthop():
    # carol is first reached indirectly in 2 hops (bob -INDIRECT-> carol), then directly in 3
    # hops (alice-dave-eve-carol). COMPAT: the direct path wins for via, distance and prevedge,
    # but nexthop only changes on an equal-length lighter path, so it stays bob.
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "bob", "carol", options=DEFAULT | OPTION_INDIRECT, options_back=DEFAULT)
    link(g, "alice", "dave")
    link(g, "dave", "eve")
    link(g, "eve", "carol")
    g.run(now=1.0)
    carol = g.node("carol")
    assert not carol.indirect
    assert state(g, "carol") == (True, "bob", "carol", 3)
    assert carol.prevedge is g.edge("eve", "carol")
    assert carol.weighted_distance == 20      # still the weight of the bob path


def test_indirect_neighbour_also_reached_directly_gets_the_longer_distance():
    # COMPAT: our edge to carol is INDIRECT, bob reaches her directly. The direct two-hop path
    # replaces the indirect one-hop path: carol is at distance 2 with via carol, yet remains
    # her own nexthop (meta requests still go straight to her).
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "alice", "carol", options=DEFAULT | OPTION_INDIRECT, options_back=DEFAULT)
    link(g, "bob", "carol")
    g.run(now=1.0)
    assert state(g, "carol") == (True, "carol", "carol", 2)
    assert not g.node("carol").indirect
    assert g.node("carol").prevedge is g.edge("bob", "carol")
    assert g.node("carol").options == DEFAULT


def test_lighter_indirect_path_of_equal_length_replaces_a_direct_one():
    g = Graph("alice")
    link(g, "alice", "bob", weight=10)
    link(g, "bob", "dave", weight=10)
    link(g, "alice", "carol", weight=1)
    link(g, "carol", "dave", weight=1, options=DEFAULT | OPTION_INDIRECT, options_back=DEFAULT)
    g.run(now=1.0)
    assert state(g, "dave") == (True, "carol", "carol", 2)
    assert g.node("dave").indirect


# --- addresses ----------------------------------------------------------------------------------

def test_address_comes_from_the_edge_that_reached_it_and_sticks():
    g = Graph("alice")
    link(g, "alice", "bob")
    g.run(now=1.0)
    new = SockAddr("198.51.100.9", "655")
    g.update_edge("alice", "bob", address=new)
    assert g.run(now=2.0) == []
    assert g.node("bob").address == addr("bob")     # a reachable node keeps its address

    g.set_udp_address("bob", new)                    # e.g. learnt from an authentic packet
    assert g.node("bob").address == new
    assert g.node_by_udp_address(new) is g.node("bob")
    assert g.node_by_udp_address(addr("bob")) is None


def test_unset_address_is_refreshed_every_run():
    # COMPAT: a reachable node whose address is unset gets update_node_udp at every graph run
    # (an unset edge address is not of "unknown" type), resetting its UDP state each time.
    g = Graph("alice")
    g.add_edge("alice", "bob", address=None, options=DEFAULT, weight=10)
    g.add_edge("bob", "alice", address=None, options=DEFAULT, weight=10)
    events = g.run(now=1.0)
    assert events[0] == NodeBecameReachable("bob", None, "bob", "bob", DEFAULT)
    assert g.node("bob").hostname == "unspec port unspec"
    assert g.run(now=2.0) == [NodeUdpAddressChanged("bob", None)]

    g.update_edge("alice", "bob", address=SockAddr("203.0.113.5", "655"))
    assert g.run(now=3.0) == [NodeUdpAddressChanged("bob", SockAddr("203.0.113.5", "655"))]
    assert g.run(now=4.0) == []


def test_unknown_type_edge_address_does_not_fill_an_unset_one():
    g = Graph("alice")
    g.add_edge("alice", "bob", address=None, options=DEFAULT, weight=10)
    g.add_edge("bob", "alice", address=None, options=DEFAULT, weight=10)
    g.run(now=1.0)
    g.update_edge("alice", "bob", address=SockAddr("some.host", "x", unknown=True))
    assert g.run(now=2.0) == []
    assert g.node("bob").address is None


def test_old_protocol_minor_is_not_sptps():
    g = Graph("alice")
    link(g, "alice", "bob", options=0x1000000 | 0xC)
    g.run(now=1.0)
    assert not g.node("bob").sptps


# --- changes and removal ------------------------------------------------------------------------

def test_add_edge_rules():
    g = Graph("alice")
    g.add_edge("alice", "bob")
    with pytest.raises(ValueError):
        g.add_edge("alice", "bob")
    with pytest.raises(ValueError):
        g.add_edge("bob", "bob")
    assert g.node("bob") is not None          # created on demand


def test_weight_change_reorders_the_tree():
    g = Graph("alice")
    link(g, "alice", "bob", weight=1)
    link(g, "alice", "carol", weight=2)
    link(g, "bob", "carol", weight=3)
    g.run(now=1.0)
    assert mst_pairs(g) == pairs("alice-bob", "alice-carol")
    g.update_edge("bob", "carol", weight=0)
    g.update_edge("carol", "bob", weight=0)
    g.run(now=2.0)
    assert mst_pairs(g) == pairs("alice-bob", "bob-carol")


def test_node_removal():
    g = Graph("alice")
    link(g, "alice", "bob")
    link(g, "bob", "carol")
    g.run(now=1.0)
    unlink(g, "bob", "carol")
    g.run(now=2.0)

    with pytest.raises(ValueError):
        g.remove_node("alice")
    g.add_edge("bob", "carol")
    with pytest.raises(ValueError):           # bob's edge still points to carol
        g.remove_node("carol")
    g.del_edge("bob", "carol")

    g.add_edge("carol", "bob")                # carol's own edges go with her
    g.remove_node("carol")
    assert g.node("carol") is None
    assert g.edge("carol", "bob") is None
    assert g.edge("bob", "alice").reverse is g.edge("alice", "bob")
    assert g.run(now=3.0) == []
    with pytest.raises(KeyError):
        g.remove_node("carol")


def test_results_do_not_depend_on_insertion_order():
    links = [("alice", "bob", 5), ("bob", "carol", 5), ("carol", "dave", 1),
             ("dave", "alice", 9), ("bob", "dave", 5), ("eve", "carol", 2)]

    def build(order):
        g = Graph("alice")
        for a, b, w in order:
            link(g, a, b, weight=w)
        events = g.run(now=1.0)
        return (events, [state(g, n.name) for n in g.nodes()],
                [(e.from_node.name, e.to_node.name) for e in g.mst_edges])

    assert build(links) == build(list(reversed(links))) == build(links[3:] + links[:3])
