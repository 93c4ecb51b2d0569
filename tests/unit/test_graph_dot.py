"""Control dump lines (node.c, edge.c, subnet.c) and the CLI's dump output (tincctl.c cmd_dump)."""
import pytest

from tincapp.mesh.graph import OPTION_INDIRECT, STATUS_VALIDKEY, Graph, SockAddr
from tincapp.mesh.graph_dot import (DumpParseError, NodeRuntime, dump_edges_lines, dump_graph,
                                    dump_nodes_lines, dump_subnets_lines, format_dump,
                                    format_graph, node_id)
from tincapp.mesh.subnets import DEFAULT_BROADCAST_SUBNETS, SubnetTable, parse_subnet

DEFAULT = 0x700000C
BOB = SockAddr("198.51.100.7", "655")
ALICE_LOCAL = SockAddr("192.168.1.10", "655")


def mesh():
    """alice (us) - bob (direct) - carol (behind an INDIRECT edge); dave known but unreachable."""
    g = Graph("alice", options=DEFAULT, tcp_port="655", now=1700000000.0)
    g.add_edge("alice", "bob", address=BOB, local_address=ALICE_LOCAL, options=DEFAULT,
               weight=41, connection="c-bob")
    g.add_edge("bob", "alice", address=SockAddr("203.0.113.1", "655"), options=DEFAULT, weight=41)
    g.add_edge("bob", "carol", address=SockAddr("203.0.113.3", "655"),
               options=DEFAULT | OPTION_INDIRECT, weight=10)
    g.add_edge("carol", "bob", address=SockAddr("203.0.113.2", "655"), options=DEFAULT, weight=10)
    g.ensure_node("dave")
    g.run(now=1700000100.0)
    return g


def test_node_id_matches_tinc():
    assert node_id("alice").hex() == "408b27d3097e"     # control-and-cli.md 3.1 example


def test_dump_nodes_lines():
    g = mesh()
    runtime = {"bob": NodeRuntime(status=STATUS_VALIDKEY, minmtu=1400, mtu=1400, maxmtu=1400,
                                  udp_ping_rtt=1234, in_packets=3, in_bytes=300,
                                  out_packets=4, out_bytes=400)}
    assert dump_nodes_lines(g, runtime) == [
        "18 3 alice 408b27d3097e MYSELF port 655 0 0 0 0 700000c 58 alice alice 0 1518 0 1518 "
        "1700000000 -1 0 0 0 0",
        f"18 3 bob {node_id('bob').hex()} 198.51.100.7 port 655 0 0 0 0 700000c 5a bob bob 1 "
        "1400 1400 1400 1700000100 1234 3 300 4 400",
        f"18 3 carol {node_id('carol').hex()} 203.0.113.3 port 655 0 0 0 0 700000d 78 bob bob 2 "
        "1518 0 1518 1700000100 -1 0 0 0 0",
        f"18 3 dave {node_id('dave').hex()} unknown port unknown 0 0 0 0 0 20 - - -1 "
        "1518 0 1518 0 -1 0 0 0 0",
        "18 3",
    ]


def test_dump_edges_lines():
    assert dump_edges_lines(mesh()) == [
        "18 4 alice bob 198.51.100.7 port 655 192.168.1.10 port 655 700000c 41",
        "18 4 bob alice 203.0.113.1 port 655 unspec port unspec 700000c 41",
        "18 4 bob carol 203.0.113.3 port 655 unspec port unspec 700000d 10",
        "18 4 carol bob 203.0.113.2 port 655 unspec port unspec 700000c 10",
        "18 4",
    ]


def test_dump_subnets_lines_and_cli_output():
    t = SubnetTable(mesh())
    for s in DEFAULT_BROADCAST_SUBNETS:
        t.add(parse_subnet(s))
    t.add(parse_subnet("10.1.0.0/16", "alice"))
    t.add(parse_subnet("10.2.0.0/16#5", "bob"))
    lines = dump_subnets_lines(t)
    assert lines == [
        "18 5 ff:ff:ff:ff:ff:ff (broadcast)", "18 5 255.255.255.255 (broadcast)",
        "18 5 10.1.0.0/16 alice", "18 5 10.2.0.0/16#5 bob", "18 5 224.0.0.0/4 (broadcast)",
        "18 5 ff00::/8 (broadcast)", "18 5"]
    assert format_dump(lines) == [
        "ff:ff:ff:ff:ff:ff owner (broadcast)", "255.255.255.255 owner (broadcast)",
        "10.1.0.0/16 owner alice",
        "10.2.0.0/16#5 owner bob",          # COMPAT: only a literal "#10" would be stripped
        "224.0.0.0/4 owner (broadcast)", "ff00::/8 owner (broadcast)"]
    assert format_dump(["18 5 10.0.0.0/8#10 bob", "18 5"]) == ["10.0.0.0/8 owner bob"]


def test_cli_dump_nodes_and_reachable_nodes():
    lines = dump_nodes_lines(mesh(), {"bob": NodeRuntime(udp_ping_rtt=1234)})
    out = format_dump(lines)
    assert out[0] == ("alice id 408b27d3097e at MYSELF port 655 cipher 0 digest 0 maclength 0 "
                      "compression 0 options 700000c status 0058 nexthop alice via alice "
                      "distance 0 pmtu 1518 (min 0 max 1518) rx 0 0 tx 0 0")
    assert out[1].endswith("rx 0 0 tx 0 0 rtt 1.234")
    assert out[3].startswith("dave id ") and " at unknown port unknown " in out[3]
    assert " status 0020 nexthop - via - distance -1 " in out[3]
    assert [line.split()[0] for line in format_dump(lines, only_reachable=True)] == [
        "alice", "bob", "carol"]


def test_cli_dump_edges():
    assert format_dump(dump_edges_lines(mesh()))[0] == (
        "alice to bob at 198.51.100.7 port 655 local 192.168.1.10 port 655 "
        "options 700000c weight 41")


def test_dump_graph():
    runtime = {"bob": NodeRuntime(status=STATUS_VALIDKEY, minmtu=1400)}
    assert dump_graph(mesh(), runtime) == (
        "graph {\n"
        ' "alice" [label = "alice", color = "green", style = "filled"];\n'
        ' "bob" [label = "bob", color = "green"];\n'
        ' "carol" [label = "carol", color = "orange"];\n'
        ' "dave" [label = "dave", color = "red"];\n'
        ' "bob" -- "alice" [w = 1599.438965, weight = 1599.438965];\n'
        ' "carol" -- "bob" [w = 6554.600098, weight = 6554.600098];\n'
        "}\n")


def test_dump_digraph_shows_every_edge_and_odd_weights():
    g = Graph("alice")
    g.add_edge("alice", "bob", weight=0)
    g.add_edge("bob", "alice", weight=-7)
    g.add_edge("alice", "carol", weight=3)     # one-way: only the digraph shows it
    g.run(now=0.0)
    assert dump_graph(g, directed=True).splitlines()[-4:] == [
        ' "alice" -> "bob" [w = inf, weight = inf];',
        ' "alice" -> "carol" [w = 21846.333984, weight = 21846.333984];',
        ' "bob" -> "alice" [w = -9361.286133, weight = -9361.286133];',
        "}"]
    undirected = dump_graph(g).splitlines()
    assert ' "bob" -- "alice" [w = -9361.286133, weight = -9361.286133];' in undirected
    assert not any("carol\" [w" in line or "-- \"carol\"" in line for line in undirected)


def test_graph_colour_rules():
    def colour(status, via="bob", minmtu=0):
        line = (f"18 3 bob 000000000000 1.2.3.4 port 655 0 0 0 0 700000c {status:x} bob {via} 1 "
                f"1518 {minmtu} 1518 0 -1 0 0 0 0")
        return format_graph([line, "18 3", "18 4"]).splitlines()[1].split('color = "')[1][:-3]

    assert colour(0x00) == "red"
    assert colour(0x10, via="alice") == "orange"
    assert colour(0x10) == "black"
    assert colour(0x12) == "black"
    assert colour(0x12, minmtu=1400) == "green"


def test_cli_errors():
    with pytest.raises(DumpParseError, match="Unable to parse node dump from tincd: 18 3 x"):
        format_dump(["18 3 x"])
    with pytest.raises(DumpParseError, match="Unable to parse edge dump"):
        format_dump(["18 4 a b c"])
    with pytest.raises(DumpParseError) as err:
        format_dump(["18 5 10.0.0.0/8 bob"])          # connection closed before the terminator
    assert str(err.value) == "Error receiving dump."
    assert err.value.printed == ["10.0.0.0/8 owner bob"]
    with pytest.raises(DumpParseError) as err:
        format_graph(["18 3"])
    assert err.value.printed == ["graph {"]
