"""Graph invariants on random graphs (hypothesis).

Random graphs over up to 9 nodes: announced links (both halves, weights possibly different per
direction), one-way edges, INDIRECT options. Checked:

* reachable = the nodes connected to us through paired edges;
* the spanning tree is a tree over exactly the reachable nodes (n - 1 pairs, no cycle,
  connected) and, for a connected graph, the same tree whoever runs the algorithm;
* every reachable node's nexthop is a neighbour of ours that is its own nexthop, and its
  prevedge chain leads back to us;
* without INDIRECT edges: distance = hop count, weighted_distance = the lightest of the
  shortest paths, nexthop starts one of those paths, via is the node itself;
* nothing depends on the order edges were inserted in.
"""
import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from tincapp.mesh.graph import OPTION_INDIRECT, Graph

NAMES = ["alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi", "ivan"]
V7 = 0x700000C


@st.composite
def topologies(draw, indirect=True, one_way=True):
    """(node names, edge list [(from, to, weight, options)]), edges listed in a drawn order."""
    names = NAMES[:draw(st.integers(2, len(NAMES)))]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    weights = st.integers(0, 6)
    options = st.sampled_from([V7, V7, V7, V7 | OPTION_INDIRECT]) if indirect else st.just(V7)
    edges = []
    for a, b in chosen:
        kinds = ["pair", "pair", "pair", "a->b", "b->a"] if one_way else ["pair"]
        kind = draw(st.sampled_from(kinds))
        w = draw(weights)
        if kind in ("pair", "a->b"):
            edges.append((a, b, w, draw(options)))
        if kind in ("pair", "b->a"):
            w_back = draw(st.one_of(st.just(w), weights))
            edges.append((b, a, w_back, draw(options)))
    edges = draw(st.permutations(edges))
    return names, edges


def build(me, names, edges):
    g = Graph(me, options=V7)
    for name in names:
        g.ensure_node(name)
    for a, b, w, o in edges:
        g.add_edge(a, b, weight=w, options=o, connection=b if a == me else None)
    events = g.run(now=1.0)
    return g, events


def paired_neighbours(edges):
    directed = {(a, b) for a, b, _, _ in edges}
    adj = collections.defaultdict(set)
    for a, b in directed:
        if (b, a) in directed:
            adj[a].add(b)
    return adj


def reachable_from(me, adj):
    seen, todo = {me}, [me]
    while todo:
        n = todo.pop()
        for m in adj[n]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def snapshot(g, events):
    nodes = [(n.name, n.reachable, n.nexthop.name if n.nexthop else None,
              n.via.name if n.via else None, n.distance, n.weighted_distance, n.options,
              n.status_bits(),
              (n.prevedge.from_node.name, n.prevedge.to_node.name) if n.prevedge else None)
             for n in g.nodes()]
    tree = [(e.from_node.name, e.to_node.name) for e in g.mst_edges]
    return nodes, tree, events, sorted(g.mst_connections)


@settings(max_examples=300, deadline=None)
@given(topologies(), st.data())
def test_reachability_and_spanning_tree(topology, data):
    names, edges = topology
    me = data.draw(st.sampled_from(names))
    g, events = build(me, names, edges)
    adj = paired_neighbours(edges)
    expected = reachable_from(me, adj)

    assert {n.name for n in g.nodes() if n.reachable} == expected
    assert sorted(e.name for e in events if hasattr(e, "via")) == sorted(expected - {me})

    tree = [frozenset((e.from_node.name, e.to_node.name)) for e in g.mst_edges]
    assert len(set(tree)) == len(tree)                       # each link at most once
    assert len(tree) == len(expected) - 1
    for e in g.mst_edges:
        assert e.reverse is not None
        assert e.from_node.reachable and e.to_node.reachable
    # n - 1 links and connected over the reachable nodes => a spanning tree, no cycle.
    tree_adj = collections.defaultdict(set)
    for link in tree:
        a, b = tuple(link)
        tree_adj[a].add(b)
        tree_adj[b].add(a)
    assert reachable_from(me, tree_adj) == expected
    assert g.mst_connections == {b for a, b, _, _ in edges
                                 if a == me and frozenset((a, b)) in tree}


@settings(max_examples=300, deadline=None)
@given(topologies())
def test_every_node_builds_the_same_tree_on_a_connected_graph(topology):
    names, edges = topology
    adj = paired_neighbours(edges)
    if reachable_from(names[0], adj) != set(names):
        return
    trees = set()
    for me in names:
        g, _ = build(me, names, edges)
        trees.add(frozenset(frozenset((e.from_node.name, e.to_node.name)) for e in g.mst_edges))
    assert len(trees) == 1


@settings(max_examples=300, deadline=None)
@given(topologies(), st.data())
def test_paths_lead_back_to_us(topology, data):
    names, edges = topology
    me = data.draw(st.sampled_from(names))
    g, _ = build(me, names, edges)
    myself = g.myself
    for n in g.nodes():
        if not n.reachable or n is myself:
            continue
        # A neighbour, and its own nexthop. (Not necessarily at distance 1: COMPAT, a neighbour
        # behind an INDIRECT edge that is also reached directly through another neighbour
        # takes that longer direct path's distance but keeps itself as nexthop.)
        hop = n.nexthop
        assert hop.reachable and hop.nexthop is hop
        assert myself.edges[hop.name].reverse is not None
        assert n.via.reachable
        if not n.indirect:
            assert n.via is n
        node, steps = n, 0
        while node is not myself:
            edge = node.prevedge
            assert edge.to_node is node and edge.reverse is not None
            node = edge.from_node
            steps += 1
            assert steps <= len(names)


@settings(max_examples=300, deadline=None)
@given(topologies(indirect=False), st.data())
def test_shortest_paths_without_indirect_edges(topology, data):
    names, edges = topology
    me = data.draw(st.sampled_from(names))
    g, _ = build(me, names, edges)

    # Model: breadth-first layers over paired edges (never back into us); in each layer the
    # lightest accumulated weight, and the set of first hops that achieve it.
    weight = {(a, b): w for a, b, w, _ in edges}
    adj = paired_neighbours(edges)
    dist, wd, first = {me: 0}, {me: 0}, {me: set()}
    layer = [me]
    while layer:
        following = {}
        for n in layer:
            for t in adj[n]:
                if t == me or (t in dist and dist[t] <= dist[n]):
                    continue
                w = wd[n] + weight[(n, t)]
                hops = {t} if n == me else first[n]
                if t not in following or w < following[t][0]:
                    following[t] = (w, set(hops))
                elif w == following[t][0]:
                    following[t][1].update(hops)
        for t, (w, hops) in following.items():
            dist[t], wd[t], first[t] = dist[n] + 1, w, hops
        layer = list(following)

    for n in g.nodes():
        if n.name not in dist:
            assert n.distance == -1
            continue
        assert n.distance == dist[n.name]
        assert n.weighted_distance == wd[n.name]
        assert n.via is n
        if n is not g.myself:
            assert n.nexthop.name in first[n.name]


@settings(max_examples=200, deadline=None)
@given(topologies(), st.data())
def test_insertion_order_does_not_matter(topology, data):
    names, edges = topology
    me = data.draw(st.sampled_from(names))
    shuffled = data.draw(st.permutations(edges))
    g1, events1 = build(me, names, edges)
    g2, events2 = build(me, list(reversed(names)), shuffled)
    assert snapshot(g1, events1) == snapshot(g2, events2)


@settings(max_examples=100, deadline=None)
@given(topologies(), st.data())
def test_removing_and_restoring_edges_returns_to_the_same_state(topology, data):
    names, edges = topology
    me = data.draw(st.sampled_from(names))
    g, _ = build(me, names, edges)
    before = snapshot(g, [])[:2]
    if not edges:
        return
    removed = data.draw(st.lists(st.sampled_from(edges), unique=True, min_size=1))
    for a, b, _, _ in removed:
        g.del_edge(a, b)
    g.run(now=2.0)
    for a, b, w, o in removed:
        g.add_edge(a, b, weight=w, options=o, connection=b if a == me else None)
    g.run(now=3.0)
    after_nodes, after_tree = snapshot(g, [])[:2]
    # Reachable nodes come back exactly; nodes that were never reachable are unchanged.
    assert after_tree == before[1]
    assert [x for x in after_nodes if x[1]] == [x for x in before[0] if x[1]]
