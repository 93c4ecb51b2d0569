"""Control-socket dump lines and the CLI's `dump` output, byte for byte as tinc prints them.

Daemon side (node.c dump_nodes, edge.c dump_edges, subnet.c dump_subnets): `dump_*_lines`
turn graph and subnet state into the `18 <type> ...` reply lines, terminator included.
CLI side (tincctl.c cmd_dump): `format_dump` and `format_graph` turn such reply lines, from us
or from a real tincd, into what `tinc dump nodes|reachable nodes|edges|subnets|graph|digraph`
prints. `dump_graph` chains the two for a local graph.

Must not: do I/O or hold state. Figures the graph does not own (tunnel status bits, MTU,
counters, compression) come in as NodeRuntime values with tinc's defaults.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from tincapp.mesh.graph import (STATUS_REACHABLE, STATUS_VALIDKEY, Graph, node_id,
                                sockaddr_hostname)
from tincapp.mesh.subnets import SubnetTable

CONTROL = 18
REQ_DUMP_NODES = 3
REQ_DUMP_EDGES = 4
REQ_DUMP_SUBNETS = 5

MTU = 1518   # tinc's default maxmtu/mtu for a node


@dataclass(frozen=True)
class NodeRuntime:
    """Per-node dump fields owned outside the graph, defaulting to a fresh tinc node."""

    compression: int = 0
    status: int = 0          # non-graph status bits (validkey, udp_confirmed, ...)
    mtu: int = MTU
    minmtu: int = 0
    maxmtu: int = MTU
    udp_ping_rtt: int = -1   # microseconds, -1 = unknown
    in_packets: int = 0
    in_bytes: int = 0
    out_packets: int = 0
    out_bytes: int = 0


_FRESH = NodeRuntime()


# --- daemon side ----------------------------------------------------------------------------

def dump_nodes_lines(graph: Graph, runtime: Optional[Mapping[str, NodeRuntime]] = None, *,
                     wall_offset_s: float = 0.0) -> list[str]:
    """DUMP_NODES reply: one line per node in name order, then `18 3`.

    `wall_offset_s` converts the graph's `now` stamps into the wall-clock seconds tinc shows.
    """
    runtime = runtime or {}
    lines = []
    for n in graph.nodes():
        r = runtime.get(n.name, _FRESH)
        # tinc's status word is a uint32 and options a uint32; both print as %x.
        status = (n.status_bits() | r.status) & 0xFFFFFFFF
        lines.append(
            f"{CONTROL} {REQ_DUMP_NODES} {n.name} {node_id(n.name).hex()} "
            f"{n.hostname if n.hostname is not None else 'unknown port unknown'} "
            f"0 0 0 {r.compression} {n.options & 0xFFFFFFFF:x} {status:x} "
            f"{n.nexthop.name if n.nexthop else '-'} {n.via.name if n.via else '-'} "
            f"{n.distance} {r.mtu} {r.minmtu} {r.maxmtu} "
            f"{int(n.last_state_change + wall_offset_s)} {r.udp_ping_rtt} "
            f"{r.in_packets} {r.in_bytes} {r.out_packets} {r.out_bytes}")
    lines.append(f"{CONTROL} {REQ_DUMP_NODES}")
    return lines


def dump_edges_lines(graph: Graph) -> list[str]:
    """DUMP_EDGES reply: by `from` name then `to` name, then `18 4`."""
    lines = [
        f"{CONTROL} {REQ_DUMP_EDGES} {e.from_node.name} {e.to_node.name} "
        f"{sockaddr_hostname(e.address)} {sockaddr_hostname(e.local_address)} "
        f"{e.options & 0xFFFFFFFF:x} {e.weight}"
        for e in graph.edges()
    ]
    lines.append(f"{CONTROL} {REQ_DUMP_EDGES}")
    return lines


def dump_subnets_lines(subnets: SubnetTable) -> list[str]:
    """DUMP_SUBNETS reply: tinc's subnet order, `#weight` when not 10, then `18 5`."""
    lines = [f"{CONTROL} {REQ_DUMP_SUBNETS} {s} "
             f"{s.owner if s.owner is not None else '(broadcast)'}"
             for s in subnets]
    lines.append(f"{CONTROL} {REQ_DUMP_SUBNETS}")
    return lines


# --- CLI side -------------------------------------------------------------------------------

class DumpParseError(ValueError):
    """A reply the CLI cannot parse; the message is the one tinc prints to stderr.

    `printed` holds the output lines tinc would already have printed before failing.
    """

    def __init__(self, message: str, printed: Optional[list[str]] = None):
        super().__init__(message)
        self.printed = printed or []


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _short(value: int) -> int:
    # The CLI reads pmtu/minmtu/maxmtu with %hd.
    value &= 0xFFFF
    return value - 0x10000 if value & 0x8000 else value


def _f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _edge_w(weight: int) -> str:
    # tincctl: float w = 1.0f + 65536.0f / (float)weight, printed with %f. Each float
    # operation rounds to single precision (done in double and rounded: exact for / and +).
    if weight == 0:
        quotient = float("inf")
    else:
        quotient = _f32(65536.0 / _f32(float(weight)))
    return "%f" % _f32(1.0 + quotient)


class _NodeLine:
    __slots__ = ("name", "id", "host", "port", "cipher", "digest", "maclength", "compression",
                 "options", "status", "nexthop", "via", "distance", "pmtu", "minmtu", "maxmtu",
                 "last_state_change", "udp_ping_rtt", "in_packets", "in_bytes", "out_packets",
                 "out_bytes")


def _parse_node(line: str) -> _NodeLine:
    t = line.split()
    try:
        if len(t) < 25 or t[5] != "port":
            raise ValueError
        n = _NodeLine()
        n.name, n.id, n.host, n.port = t[2], t[3], t[4], t[6]
        n.cipher, n.digest, n.maclength, n.compression = (int(x) for x in t[7:11])
        n.options, n.status = int(t[11], 16) & 0xFFFFFFFF, int(t[12], 16) & 0xFFFFFFFF
        n.nexthop, n.via = t[13], t[14]
        n.distance = int(t[15])
        n.pmtu, n.minmtu, n.maxmtu = (_short(int(x)) for x in t[16:19])
        n.last_state_change, n.udp_ping_rtt = int(t[19]), int(t[20])
        n.in_packets, n.in_bytes, n.out_packets, n.out_bytes = (int(x) for x in t[21:25])
        return n
    except ValueError:
        raise DumpParseError(f"Unable to parse node dump from tincd: {line}") from None


def _parse_edge(line: str) -> tuple:
    t = line.split()
    try:
        if len(t) < 12 or t[5] != "port" or t[8] != "port":
            raise ValueError
        # from, to, host, port, local host, local port, options, weight
        return (t[2], t[3], t[4], t[6], t[7], t[9], int(t[10], 16) & 0xFFFFFFFF, int(t[11]))
    except ValueError:
        raise DumpParseError("Unable to parse edge dump from tincd.") from None


def _strip_weight(netstr: str) -> str:
    # COMPAT: info.c strip_weight only drops a literal "#10" suffix, which tincd never sends
    # (the default weight is omitted), so other weights are shown.
    return netstr[:-3] if netstr.endswith("#10") else netstr


def _split_header(line: str) -> Optional[tuple[int, list[str]]]:
    t = line.split()
    try:
        if len(t) < 2:
            return None
        int(t[0])
        return int(t[1]), t
    except ValueError:
        return None


def format_dump(lines: Iterable[str], *, only_reachable: bool = False) -> list[str]:
    """What `tinc dump nodes|edges|subnets` (or `dump reachable nodes`) prints, one string per
    output line (no newline), from the daemon's reply lines up to their terminator."""
    out: list[str] = []
    try:
        _format_dump_into(out, lines, only_reachable)
    except DumpParseError as e:
        raise DumpParseError(str(e), out) from None
    return out


def _format_dump_into(out: list[str], lines: Iterable[str], only_reachable: bool) -> None:
    for line in lines:
        header = _split_header(line)
        if header is None:
            break
        req, t = header
        if len(t) == 2:
            return
        if req == REQ_DUMP_NODES:
            n = _parse_node(line)
            if only_reachable and not n.status & STATUS_REACHABLE:
                continue
            text = (f"{n.name} id {n.id} at {n.host} port {n.port} cipher {n.cipher} "
                    f"digest {n.digest} maclength {n.maclength} compression {n.compression} "
                    f"options {n.options:x} status {n.status:04x} nexthop {n.nexthop} "
                    f"via {n.via} distance {n.distance} pmtu {n.pmtu} (min {n.minmtu} "
                    f"max {n.maxmtu}) rx {n.in_packets} {n.in_bytes} tx {n.out_packets} "
                    f"{n.out_bytes}")
            if n.udp_ping_rtt != -1:
                rtt = n.udp_ping_rtt
                text += f" rtt {_c_div(rtt, 1000)}.{rtt - 1000 * _c_div(rtt, 1000):03d}"
            out.append(text)
        elif req == REQ_DUMP_EDGES:
            frm, to, host, port, lhost, lport, options, weight = _parse_edge(line)
            out.append(f"{frm} to {to} at {host} port {port} local {lhost} port {lport} "
                       f"options {options:x} weight {weight}")
        elif req == REQ_DUMP_SUBNETS:
            if len(t) < 4:
                raise DumpParseError("Unable to parse subnet dump from tincd.")
            out.append(f"{_strip_weight(t[2])} owner {t[3]}")
        else:
            raise DumpParseError("Unable to parse dump from tincd.")
    raise DumpParseError("Error receiving dump.")


def format_graph(lines: Iterable[str], *, directed: bool = False) -> str:
    """What `tinc dump graph` (or `dump digraph`) prints, from the DUMP_NODES reply followed by
    the DUMP_EDGES reply.

    Node colours: us green and filled; unreachable red; reached through a relay (via is not
    itself) orange; no valid key black; a probed MTU green; otherwise black. Undirected graphs
    show each edge once, from the node whose name sorts higher; edge length w = 1 + 65536/weight.
    """
    out = ["digraph {" if directed else "graph {"]
    try:
        _format_graph_into(out, lines, directed)
    except DumpParseError as e:
        raise DumpParseError(str(e), list(out)) from None
    return "".join(s + "\n" for s in out)


def _format_graph_into(out: list[str], lines: Iterable[str], directed: bool) -> None:
    for line in lines:
        header = _split_header(line)
        if header is None:
            break
        req, t = header
        if len(t) == 2:
            if req == REQ_DUMP_NODES:
                continue
            out.append("}")
            return
        if req == REQ_DUMP_NODES:
            n = _parse_node(line)
            if n.host == "MYSELF":
                color = "green"
            elif not n.status & STATUS_REACHABLE:
                color = "red"
            elif n.via != n.name:
                color = "orange"
            elif not n.status & STATUS_VALIDKEY:
                color = "black"
            elif n.minmtu > 0:
                color = "green"
            else:
                color = "black"
            style = ', style = "filled"' if n.host == "MYSELF" else ""
            out.append(f' "{n.name}" [label = "{n.name}", color = "{color}"{style}];')
        elif req == REQ_DUMP_EDGES:
            frm, to, *_, weight = _parse_edge(line)
            w = _edge_w(weight)
            if directed:
                out.append(f' "{frm}" -> "{to}" [w = {w}, weight = {w}];')
            elif frm > to:
                out.append(f' "{frm}" -- "{to}" [w = {w}, weight = {w}];')
        else:
            raise DumpParseError("Unable to parse dump from tincd.")
    raise DumpParseError("Error receiving dump.")


def dump_graph(graph: Graph, runtime: Optional[Mapping[str, NodeRuntime]] = None, *,
               directed: bool = False) -> str:
    """`tinc dump graph|digraph` for a local graph."""
    return format_graph(dump_nodes_lines(graph, runtime) + dump_edges_lines(graph),
                        directed=directed)
