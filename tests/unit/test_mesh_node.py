"""The node core driven without sockets: fake connections deliver each SendTo to the node at
the other end (as RequestReceived would), with a hand-advanced clock."""
import itertools

from tincapp.mesh.node import Close, Node, RunScript, SendTo, Sleep, ToDataPlane, TunnelReset
from tincapp.mesh.subnets import Subnet
from tincapp.meta.events import Activated
from tincapp.meta.messages import (AddEdge, AddSubnet, DelEdge, ReqSptpsStart, format, parse)

MINOR = 7 << 24


class FakeConn:
    """One end of a meta connection between two nodes of a Mesh."""

    def __init__(self, owner, peer):
        self.owner, self.peer = owner, peer
        self.other = None
        self.closed = False

    def __repr__(self):
        return f"<{self.owner}->{self.peer}>"


class Mesh:
    def __init__(self, subnets=None, **kw):
        self.now = 0.0
        self.nodes = {}
        self.scripts = {}
        self.sent = []                 # (conn, line) delivered
        self.queue = []
        self.closed = []
        counter = itertools.count(1)
        self.rng = lambda n: next(counter).to_bytes(n, "big")
        self.kw = kw
        self.subnets = subnets or {}

    def add(self, name, **kw):
        own = [Subnet.parse(s) for s in self.subnets.get(name, ())]
        self.nodes[name] = Node(name, rng=self.rng, now=self.now, options=MINOR,
                                own_subnets=own, **{**self.kw, **kw})
        self.scripts[name] = []
        return self.nodes[name]

    def connect(self, a, b):
        ca, cb = FakeConn(a, b), FakeConn(b, a)
        ca.other, cb.other = cb, ca
        self.nodes[a].connection_opened(ca, outgoing=True, name=b)
        self.nodes[b].connection_opened(cb, outgoing=False)
        for x, c, y in ((a, ca, b), (b, cb, a)):
            ev = Activated(name=y, port="655", peer_weight=10, my_weight=10, weight=10,
                           options=MINOR)
            self.nodes[x].connection_activated(c, ev, remote_host=f"127.0.0.{ord(y[0])}",
                                               local_host="127.0.0.1", my_udp_port="655",
                                               now=self.now)
        # Each side's ACK precedes its requests on the stream: both are active first.
        self.pump()
        return ca, cb

    def drop(self, conn):
        """The TCP connection breaks: both ends notice."""
        for c in (conn, conn.other):
            if not c.closed:
                c.closed = True
                self.nodes[c.owner].connection_closed(c, self.now)
        self.pump()

    def pump(self):
        progress = True
        while progress:
            progress = False
            for name, node in self.nodes.items():
                for act in node.pop_actions():
                    progress = True
                    if isinstance(act, SendTo):
                        line = act.line if act.line is not None else format(act.msg)
                        if not act.conn.closed:
                            self.queue.append((act.conn.other, line))
                    elif isinstance(act, RunScript):
                        self.scripts[name].append((act.name, act.env))
                    elif isinstance(act, Close):
                        self.closed.append(act.conn)
                        act.conn.closed = True
            while self.queue:
                progress = True
                conn, line = self.queue.pop(0)
                self.sent.append((conn, line))
                if not conn.closed:
                    self.nodes[conn.owner].request_received(conn, parse(line), line, self.now)

    def edges(self, name):
        return sorted((e.from_node.name, e.to_node.name) for e in self.nodes[name].graph.edges())

    def reachable(self, name):
        return sorted(n.name for n in self.nodes[name].graph.nodes() if n.reachable)


def test_two_nodes_exchange_edges_and_subnets_and_run_scripts():
    m = Mesh(subnets={"alice": ["10.1.0.0/16"], "bob": ["10.2.0.0/16#5"]})
    m.add("alice"), m.add("bob")
    m.connect("alice", "bob")
    for n in ("alice", "bob"):
        assert m.edges(n) == [("alice", "bob"), ("bob", "alice")]
        assert m.reachable(n) == ["alice", "bob"]
        assert sorted(str(s) for s in m.nodes[n].subnets) == ["10.1.0.0/16", "10.2.0.0/16#5"]
    names = [s for s, _ in m.scripts["alice"]]
    assert names == ["host-up", "hosts/bob-up", "subnet-up"]
    env = m.scripts["alice"][2][1]
    assert env["SUBNET"] == "10.2.0.0/16" and env["WEIGHT"] == "5" and env["NODE"] == "bob"
    assert m.scripts["alice"][0][1]["REMOTEADDRESS"] == "127.0.0.98"


def test_start_and_stop_scripts_for_own_subnets():
    m = Mesh(subnets={"alice": ["10.1.0.0/16"]})
    a = m.add("alice")
    a.start()
    a.stop()
    acts = a.pop_actions()
    assert [x.name for x in acts] == ["tinc-up", "subnet-up", "subnet-down", "tinc-down"]
    assert "REMOTEADDRESS" not in acts[1].env and acts[1].env["NODE"] == "alice"


def test_line_of_three_everyone_sees_the_full_graph():
    m = Mesh(subnets={"a": ["10.0.0.1"], "b": ["10.0.0.2"], "c": ["10.0.0.3"]})
    for n in "abc":
        m.add(n)
    m.connect("a", "b")
    m.connect("b", "c")
    full = [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]
    for n in "abc":
        assert m.edges(n) == full
        assert m.reachable(n) == ["a", "b", "c"]
        assert len(m.nodes[n].subnets) == 3
    assert m.nodes["a"].graph.node("c").nexthop.name == "b"


def test_flooding_is_deduplicated_in_a_ring():
    m = Mesh()
    for n in "abc":
        m.add(n)
    m.connect("a", "b")
    m.connect("b", "c")
    m.connect("c", "a")
    for n in "abc":
        assert len(m.edges(n)) == 6
    # Every node received each distinct ADD_EDGE line at most once per connection: the ring
    # terminates, and a resent seen line is not forwarded again.
    before = len(m.sent)
    conn, line = next((c, l) for c, l in m.sent if l.startswith(b"12 "))
    m.nodes[conn.owner].request_received(conn, parse(line), line, m.now)
    m.pump()
    assert len(m.sent) == before


def test_lost_connection_removes_edges_and_makes_nodes_unreachable():
    m = Mesh(subnets={"c": ["10.0.0.3"]})
    for n in "abc":
        m.add(n)
    m.connect("a", "b")
    bc, cb = m.connect("b", "c")
    m.scripts["a"].clear()
    m.now = 10.0
    m.drop(bc)
    for n in "ab":
        assert m.edges(n) == [("a", "b"), ("b", "a")]
        assert m.reachable(n) == ["a", "b"]
    assert m.reachable("c") == ["c"]
    assert [s for s, _ in m.scripts["a"]] == ["host-down", "hosts/c-down", "subnet-down"]
    # Subnets of unreachable nodes stay known until a purge.
    assert len(m.nodes["a"].subnets) == 1
    m.nodes["a"].purge()
    m.pump()
    assert m.nodes["a"].graph.node("c") is None and len(m.nodes["a"].subnets) == 0
    # Rejoin.
    m.connect("c", "b")
    assert m.reachable("a") == ["a", "b", "c"]


def test_contradicted_own_edge_is_corrected():
    m = Mesh()
    m.add("a"), m.add("b")
    ab, ba = m.connect("a", "b")
    # b claims an edge from a that does not exist: a answers with DEL_EDGE.
    line = format(AddEdge(0x1234, "a", "x", "1.2.3.4", "655", MINOR, 5))
    m.nodes["a"].request_received(ab, parse(line), line, m.now)
    acts = m.nodes["a"].pop_actions()
    assert len(acts) == 1 and isinstance(acts[0].msg, DelEdge) and acts[0].conn is ab
    # b deletes our real edge: a re-announces it.
    line = format(DelEdge(0x99, "a", "b"))
    m.nodes["a"].request_received(ab, parse(line), line, m.now)
    acts = m.nodes["a"].pop_actions()
    assert isinstance(acts[0].msg, AddEdge) and acts[0].msg.to_name == "b"
    assert m.edges("a") == [("a", "b"), ("b", "a")]
    # Someone adds a subnet for us: DEL_SUBNET back.
    line = format(AddSubnet(0x77, "a", Subnet.parse("10.9.0.0/16")))
    m.nodes["a"].request_received(ab, parse(line), line, m.now)
    acts = m.nodes["a"].pop_actions()
    assert acts[0].msg.request.name == "DEL_SUBNET"


def test_strict_subnets_floods_but_does_not_add():
    m = Mesh()
    m.add("a", strict_subnets=True), m.add("b")
    ab, _ = m.connect("a", "b")
    line = format(AddSubnet(0x5, "b", Subnet.parse("10.2.0.0/16")))
    m.nodes["a"].request_received(ab, parse(line), line, m.now)
    assert len(m.nodes["a"].subnets) == 0


def test_req_key_is_routed_to_the_nexthop_or_handed_over_when_for_us():
    m = Mesh()
    for n in "abc":
        m.add(n)
    m.connect("a", "b")
    m.connect("b", "c")
    msg = ReqSptpsStart("a", "c", "AAAA")
    line = format(msg)
    ba = m.nodes["b"].connection_for("a")
    m.nodes["b"].request_received(ba, parse(line), line, m.now)
    acts = m.nodes["b"].pop_actions()
    assert acts == [SendTo(m.nodes["b"].connection_for("c"), line=line)]
    cb = m.nodes["c"].connection_for("b")
    m.nodes["c"].request_received(cb, parse(line), line, m.now)
    acts = m.nodes["c"].pop_actions()
    assert isinstance(acts[0], ToDataPlane) and acts[0].for_us


def test_second_connection_replaces_the_first_without_del_edge():
    m = Mesh()
    m.add("a"), m.add("b")
    ab, ba = m.connect("a", "b")
    m.connect("a", "b")
    assert ab in m.closed or ba in m.closed
    assert m.edges("a") == [("a", "b"), ("b", "a")]
    assert m.reachable("a") == ["a", "b"]


def test_tunnel_reset_on_reachability_change():
    m = Mesh()
    a = m.add("a")
    m.add("b")
    m.connect("a", "b")
    # pump() drained the actions; check the graph state and the scripts instead.
    assert ("host-up", {"NODE": "b", "REMOTEADDRESS": "127.0.0.98", "REMOTEPORT": "655"}) \
        in m.scripts["a"]
    assert isinstance(TunnelReset("b"), TunnelReset) and a.graph.is_reachable("b")


def test_reload_announces_changed_own_subnets():
    m = Mesh(subnets={"a": ["10.1.0.0/16", "10.2.0.0/16"]})
    a, _ = m.add("a"), m.add("b")
    m.connect("a", "b")
    m.scripts["a"].clear()
    a.set_own_subnets([Subnet.parse("10.2.0.0/16"), Subnet.parse("10.3.0.0/16")])
    m.pump()
    assert [(n, e["SUBNET"]) for n, e in m.scripts["a"]] == [
        ("subnet-down", "10.1.0.0/16"), ("subnet-up", "10.3.0.0/16")]
    assert sorted(str(s) for s in m.nodes["b"].subnets.owned_by("a")) == [
        "10.2.0.0/16", "10.3.0.0/16"]


def test_many_contradictions_make_the_node_sleep_with_growing_time():
    m = Mesh()
    a, _ = m.add("a"), m.add("b")
    ab, _ = m.connect("a", "b")
    m.pump()

    def fight(nonce0):
        for i in range(101):
            for msg in (AddEdge(nonce0 + i, "a", "x", "1.2.3.4", "655", MINOR, 5),
                        DelEdge(nonce0 + i, "a", "b")):
                line = format(msg)
                a.request_received(ab, parse(line), line, m.now)
        a.pop_actions()

    fight(0x1000)
    m.now = a.next_deadline()
    assert m.now == 5.0
    a.handle_deadline(m.now)
    assert a.pop_actions() == [Sleep(10)]
    fight(0x2000)
    m.now = 10.0
    a.handle_deadline(m.now)
    assert a.pop_actions() == [Sleep(20)]
    m.now = 15.0
    a.handle_deadline(m.now)            # calm: no sleep, the time halves again
    assert a.pop_actions() == []


def test_broadcast_subnets_are_ownerless_and_never_announced():
    m = Mesh()
    a = m.add("a", broadcast_subnets=[Subnet.parse("255.255.255.255")])
    m.add("b")
    m.connect("a", "b")
    assert [(str(s), s.owner) for s in a.subnets] == [("255.255.255.255", None)]
    assert len(m.nodes["b"].subnets) == 0


def test_strict_subnets_come_from_host_files_and_follow_reloads():
    m = Mesh(subnets={"b": ["10.2.0.0/16", "10.9.9.9/32"]}, strict_subnets=True)
    a, b = m.add("a"), m.add("b")
    a.set_authorized_subnets({"b": [Subnet.parse("10.2.0.0/16")],
                              "a": [Subnet.parse("10.1.0.0/16")]})   # ours: not from here
    assert [str(s) for s in a.subnets.owned_by("b")] == ["10.2.0.0/16"]
    assert a.subnets.owned_by("a") == []
    m.connect("a", "b")
    # b announces both; only the authorized one is b's at a (the other is forwarded only).
    assert [str(s) for s in a.subnets.owned_by("b")] == ["10.2.0.0/16"]
    assert ("subnet-up", "b", "10.2.0.0/16") in [(n, e.get("NODE"), e.get("SUBNET"))
                                                for n, e in m.scripts["a"]]
    m.scripts["a"].clear()
    a.set_authorized_subnets({"b": [Subnet.parse("10.3.0.0/16")]})
    m.pump()
    assert [str(s) for s in a.subnets.owned_by("b")] == ["10.3.0.0/16"]
    assert [(n, e["SUBNET"]) for n, e in m.scripts["a"]] == [("subnet-down", "10.2.0.0/16"),
                                                            ("subnet-up", "10.3.0.0/16")]


def test_authorized_subnets_are_ignored_without_strict_subnets():
    m = Mesh()
    a = m.add("a")
    a.set_authorized_subnets({"b": [Subnet.parse("10.2.0.0/16")]})
    assert a.subnets.owned_by("b") == []
