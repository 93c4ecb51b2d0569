"""AutoConnect policy (graph.md 7, tinc's autoconnect.c) with a scripted rng and a fake clock."""
from tincapp.mesh.autoconnect import (PERIOD_S, AutoConnect, CancelOutgoing, ConnectTo,
                                      ConnInfo, DropConnection, MeshView, NodeInfo,
                                      OutgoingInfo)


class ScriptedRng:
    """rng(n) -> n bytes whose little-endian value is the next scripted number."""

    def __init__(self, *values):
        self.values = list(values)
        self.calls = 0

    def __call__(self, n):
        self.calls += 1
        v = self.values.pop(0) if self.values else 0
        return v.to_bytes(n, "little")


def node(name, **kw):
    return NodeInfo(name, **kw)


def conn(name, outgoing=True, edges=1, active=True):
    return ConnInfo(name, active=active, outgoing=outgoing, peer_edges=edges)


def view(nodes, conns=(), outgoing=()):
    return MeshView("me", [node("me", reachable=True)] + list(nodes), list(conns), list(outgoing))


def test_fewer_than_three_connects_to_a_random_candidate_in_name_order():
    # Candidates: not us, not connected, reachable or with an Address. Sorted: b, c, e.
    v = view([node("e", has_address=True), node("b", reachable=True),
              node("c", has_address=True), node("d"), node("a", has_address=True,
                                                             connected=True)],
             [conn("a")])
    for r, want in ((0, "b"), (1, "c"), (2, "e"), (4, "c")):
        assert AutoConnect(rng=ScriptedRng(0, r), now=0).decide(v) == [ConnectTo(want)]


def test_fewer_than_three_does_nothing_when_the_choice_already_has_an_outgoing_entry():
    v = view([node("b", has_address=True), node("c", has_address=True)],
             outgoing=[OutgoingInfo("b", in_progress=False)])
    # COMPAT: tinc does not draw again this round.
    assert AutoConnect(rng=ScriptedRng(0, 0), now=0).decide(v) == []
    assert AutoConnect(rng=ScriptedRng(0, 1), now=0).decide(v) == [ConnectTo("c")]


def test_no_candidates_no_action():
    v = view([node("b"), node("c", connected=True, reachable=True)], [conn("c")])
    assert AutoConnect(rng=ScriptedRng(), now=0).decide(v) == []


def test_exactly_three_cancels_waiting_entries_then_maybe_dials_an_unreachable_node():
    nodes = [node(n, reachable=True, connected=True) for n in "abc"]
    nodes += [node("x", has_address=True), node("y", reachable=True)]
    conns = [conn(n) for n in "abc"]
    outs = [OutgoingInfo("a", True), OutgoingInfo("y", False), OutgoingInfo("b", True)]
    v = view(nodes, conns, outs)
    # node_tree order: a b c me x y; index 4 = x (unreachable, has an Address): dial it.
    assert AutoConnect(rng=ScriptedRng(0, 4), now=0).decide(v) == [CancelOutgoing("y"),
                                                                   ConnectTo("x")]
    # Drawing anything else (ourselves, a reachable node) does nothing more.
    for r in (0, 3, 5):
        assert AutoConnect(rng=ScriptedRng(0, r), now=0).decide(v) == [CancelOutgoing("y")]


def test_unreachable_node_with_an_outgoing_entry_in_progress_is_left_alone():
    nodes = [node(n, reachable=True, connected=True) for n in "abc"] + [node("x", has_address=True)]
    v = view(nodes, [conn(n) for n in "abc"], [OutgoingInfo("x", True)])
    assert AutoConnect(rng=ScriptedRng(0, 4), now=0).decide(v) == []


def test_more_than_three_drops_a_random_outgoing_connection_whose_peer_has_other_edges():
    nodes = [node(n, reachable=True, connected=True) for n in "abcd"]
    # a: incoming; b: only its edge to us; c, d: outgoing with 2+ edges -> candidates c, d.
    conns = [conn("a", outgoing=False, edges=3), conn("b", edges=1), conn("c", edges=2),
             conn("d", edges=3)]
    outs = [OutgoingInfo(n, True) for n in "bcd"]
    v = view(nodes, conns, outs)
    acts = AutoConnect(rng=ScriptedRng(0, 1, 0), now=0).decide(v)
    assert acts == [DropConnection("d")]
    acts = AutoConnect(rng=ScriptedRng(0, 0, 0), now=0).decide(v)
    assert acts == [DropConnection("c")]


def test_inactive_connections_do_not_count():
    nodes = [node(n, reachable=True, connected=(n != "c")) for n in "abc"]
    conns = [conn(n, active=(n != "c")) for n in "abc"]
    acts = AutoConnect(rng=ScriptedRng(0, 0), now=0).decide(view(nodes, conns))
    assert acts == [ConnectTo("c")]


def test_timer_runs_every_period_plus_jitter_and_only_with_other_nodes():
    rng = ScriptedRng(100_000)                   # first jitter: 0.1 s
    ac = AutoConnect(rng=rng, now=10.0)
    assert ac.next_deadline() == 10.0 + PERIOD_S + 0.1
    lonely = MeshView("me", [node("me", reachable=True)])
    assert ac.handle_deadline(14.0, lonely) == []          # not due yet: no change
    assert ac.next_deadline() == 10.0 + PERIOD_S + 0.1
    # COMPAT: net.c skips do_autoconnect when we are the only node.
    assert ac.handle_deadline(15.1, lonely) == []
    assert ac.next_deadline() == 15.1 + PERIOD_S      # scripted jitter 0 from now on
    v = view([node("b", has_address=True)])
    assert ac.handle_deadline(20.1, v) == [ConnectTo("b")]


def test_disabled_has_no_deadline():
    ac = AutoConnect(rng=ScriptedRng(), now=0, enabled=False)
    assert ac.next_deadline() is None
    assert ac.handle_deadline(100.0, view([node("b", has_address=True)])) == []
