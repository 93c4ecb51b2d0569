"""The node/edge graph and tinc's graph algorithms (src/graph.c, edge.c, node.c).

Owns: every known node and edge, the graph-owned node status bits (visited, reachable,
indirect, sptps), each node's nexthop/via/prevedge/distance, its UDP address as learned from
edges (plus the by-address index the data path looks senders up in), and the spanning tree.
`Graph.run(now)` is tinc's `graph()`: shortest paths, reachability changes, spanning tree. It
returns past-tense events; the daemon turns them into tunnel resets, scripts and device
standby. Subnet caches follow `Graph.generation` (tinc flushes them at the start of graph()).

Must not: do I/O, read the clock, run scripts, touch tunnel or MTU state (other status bits
such as validkey or udp_confirmed belong to the per-node tunnel policy; events tell it when
tinc would reset them). Not thread-safe: one daemon loop owns the graph.

Order: tinc walks splay trees, so every iteration here is in tinc's order: nodes by name
(`strcmp`; names are [A-Za-z0-9_] so Python's string order is the byte order), a node's edges
by the `to` name, the spanning-tree edge list by (weight, from name, to name).
"""
from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass
from typing import Hashable, Optional

# ACK/edge option bits (meta-protocol.md 3.3). TCPOnly senders also set INDIRECT, so the graph
# only ever looks at INDIRECT.
OPTION_INDIRECT = 0x0001
OPTION_TCPONLY = 0x0002
OPTION_PMTU_DISCOVERY = 0x0004
OPTION_CLAMP_MSS = 0x0008


def node_id(name: str) -> bytes:
    """The 6-byte node ID: the first bytes of SHA-512 of the name (data-path.md 3)."""
    return hashlib.sha512(name.encode()).digest()[:6]


def option_version(options: int) -> int:
    """The protocol minor carried in the top byte of an options word (tinc OPTION_VERSION)."""
    return (options >> 24) & 0xFF


# Node status word, little-endian bit-field numbering (graph.md 1). Only the bits the graph
# owns are set here; the tunnel policy ORs in the rest for control dumps.
STATUS_VALIDKEY = 1 << 1
STATUS_WAITINGFORKEY = 1 << 2
STATUS_VISITED = 1 << 3
STATUS_REACHABLE = 1 << 4
STATUS_INDIRECT = 1 << 5
STATUS_SPTPS = 1 << 6
STATUS_UDP_CONFIRMED = 1 << 7
STATUS_SEND_LOCALLY = 1 << 8
STATUS_UDPPACKET = 1 << 9
STATUS_VALIDKEY_IN = 1 << 10
STATUS_HAS_ADDRESS = 1 << 11
STATUS_PING_SENT = 1 << 12


@dataclass(frozen=True)
class SockAddr:
    """An address as tinc's sockaddr_t holds it once parsed; "unset" (AF_UNSPEC) is None.

    `host` is numeric text (IPv6 without brackets or scope), `port` decimal text. With
    `unknown` (tinc's AF_UNKNOWN: text from ADD_EDGE that is not a numeric address) both are
    kept verbatim and echoed as received.
    """

    host: str
    port: str
    unknown: bool = False

    def hostname(self) -> str:
        """tinc's sockaddr2hostname with Hostnames = no: "<host> port <port>"."""
        return f"{self.host} port {self.port}"


def sockaddr_hostname(address: Optional[SockAddr]) -> str:
    """sockaddr2hostname, including the unset case (edges dump it as "unspec port unspec")."""
    return "unspec port unspec" if address is None else address.hostname()


def sockaddr_strings(address: Optional[SockAddr]) -> tuple[str, str]:
    """sockaddr2str: (REMOTEADDRESS, REMOTEPORT) as scripts see them."""
    if address is None:
        return ("unspec", "unspec")
    return (address.host, address.port)


class Edge:
    """A directed edge `from -> to` as one endpoint announced it (tinc edge_t).

    `address` is `to`'s address with its UDP port as `from` sees it; `local_address` is the
    address `from` used, with `from`'s UDP port. `connection` is an opaque token of our own
    meta connection for edges from us (None for edges learnt from others). `reverse` is set by
    the graph when the opposite edge exists; only paired edges carry traffic or broadcasts.
    """

    __slots__ = ("from_node", "to_node", "address", "local_address", "options", "weight",
                 "connection", "reverse")

    def __init__(self, from_node: Node, to_node: Node, address: Optional[SockAddr],
                 local_address: Optional[SockAddr], options: int, weight: int,
                 connection: Optional[Hashable]):
        self.from_node = from_node
        self.to_node = to_node
        self.address = address
        self.local_address = local_address
        self.options = options
        self.weight = weight
        self.connection = connection
        self.reverse: Optional[Edge] = None

    def weight_key(self) -> tuple[int, str, str]:
        # DEVIATION: tinc compares `a->weight - b->weight` in C int arithmetic, which wraps
        # for weights more than 2^31 apart; we compare mathematically.
        return (self.weight, self.from_node.name, self.to_node.name)

    def __repr__(self) -> str:
        return (f"Edge({self.from_node.name}->{self.to_node.name} "
                f"w={self.weight} o={self.options:x})")


class Node:
    """One node as tinc keeps it (node_t), restricted to what the graph owns.

    Read freely; change only through `Graph` methods.
    """

    __slots__ = ("name", "options", "visited", "reachable", "indirect", "sptps", "distance",
                 "weighted_distance", "nexthop", "via", "prevedge", "address", "hostname",
                 "last_state_change", "edges", "_udp_indexed")

    def __init__(self, name: str):
        self.name = name
        self.options = 0
        # Status bits the graph owns (tinc: n->status.*). A fresh node has all bits clear.
        self.visited = False
        self.reachable = False
        self.indirect = False
        self.sptps = False
        # tinc allocates nodes zeroed: distance 0 and no nexthop/via until a graph run says
        # otherwise. Unreachable nodes keep stale nexthop/via (dumps show them).
        self.distance = 0
        self.weighted_distance = 0
        self.nexthop: Optional[Node] = None
        self.via: Optional[Node] = None
        self.prevedge: Optional[Edge] = None
        # UDP address learnt from the edge that reached it (or from the data path), and tinc's
        # `hostname` text for dumps: None means never set ("unknown port unknown").
        self.address: Optional[SockAddr] = None
        self.hostname: Optional[str] = None
        self.last_state_change = 0.0
        # Outgoing edges, keyed by the `to` name (tinc's per-node edge_tree).
        self.edges: dict[str, Edge] = {}
        self._udp_indexed = False

    def status_bits(self) -> int:
        """The graph-owned part of tinc's node status word (graph.md 1)."""
        return ((STATUS_VISITED if self.visited else 0)
                | (STATUS_REACHABLE if self.reachable else 0)
                | (STATUS_INDIRECT if self.indirect else 0)
                | (STATUS_SPTPS if self.sptps else 0))

    def sorted_edges(self) -> list[Edge]:
        return [self.edges[to] for to in sorted(self.edges)]

    def __repr__(self) -> str:
        return f"Node({self.name}{' reachable' if self.reachable else ''})"


# --- Events (returned by Graph.run, in the order tinc performs the side effects) -----------

@dataclass(frozen=True)
class NodeUdpAddressChanged:
    """The shortest-path search (re)set the UDP address of a node that was already reachable.

    tinc's update_node_udp: the data path must forget UDP confirmation and restart MTU state for
    that node. Nodes that become reachable in the same run get NodeBecameReachable instead.
    """

    name: str
    address: Optional[SockAddr]


@dataclass(frozen=True)
class NodeBecameReachable:
    """A node became reachable (graph.md 4).

    The daemon: remembers the meta connection's address if it is an outgoing one, resets the
    node's tunnel key and UDP/MTU state, runs host-up, hosts/NAME-up (REMOTEADDRESS/REMOTEPORT
    from `address`), then subnet-up for each of its subnets.
    """

    name: str
    address: Optional[SockAddr]
    via: str
    nexthop: str
    options: int


@dataclass(frozen=True)
class NodeBecameUnreachable:
    """A node became unreachable (graph.md 4).

    The daemon: resets the node's tunnel key and UDP/MTU state and every status bit it owns,
    runs host-down, hosts/NAME-down, then subnet-down for each of its subnets. `address` is the
    address it had, which the scripts report. Its edges and subnets stay known.
    """

    name: str
    address: Optional[SockAddr]


@dataclass(frozen=True)
class MeshBecameEmpty:
    """No other node is reachable any more and at least one became unreachable in this run.

    With DeviceStandby the daemon disables the device and runs tinc-down.
    """


@dataclass(frozen=True)
class MeshBecameNonEmpty:
    """Other nodes are reachable and every one of them became reachable in this run.

    With DeviceStandby the daemon enables the device and runs tinc-up.
    """


GraphEvent = (NodeUdpAddressChanged | NodeBecameReachable | NodeBecameUnreachable
              | MeshBecameEmpty | MeshBecameNonEmpty)

_KEEP = object()   # "leave this field alone" for update_edge


class Graph:
    """Nodes, edges and the results of tinc's graph algorithms, seen from `myself`.

    Single-threaded. Call `run(now)` wherever tinc calls graph(): after an ADD_EDGE/DEL_EDGE
    that changed something, after activating or closing a connection with an edge.
    """

    def __init__(self, myself: str, *, options: int = 0, tcp_port: str = "655",
                 now: float = 0.0):
        self._nodes: dict[str, Node] = {}
        self._by_udp_address: dict[Optional[SockAddr], set[str]] = {}
        self.generation = 0
        self.mst_edges: tuple[Edge, ...] = ()
        self.mst_connections: frozenset = frozenset()
        me = Node(myself)
        # COMPAT: setup_myself: reachable from the start, its own nexthop and via, SPTPS
        # capable; our options carry our protocol minor in the top byte (set by the caller).
        me.options = options
        me.reachable = True
        me.sptps = True
        me.nexthop = me
        me.via = me
        me.last_state_change = now
        me.hostname = f"MYSELF port {tcp_port}"
        self.myself = me
        self._nodes[myself] = me

    # --- nodes -------------------------------------------------------------------------------

    def node(self, name: str) -> Optional[Node]:
        return self._nodes.get(name)

    def ensure_node(self, name: str) -> Node:
        """lookup_node, or new_node + node_add when unknown (ADD_EDGE, ADD_SUBNET, host files)."""
        n = self._nodes.get(name)
        if n is None:
            n = Node(name)
            self._nodes[name] = n
        return n

    def node_count(self) -> int:
        return len(self._nodes)

    def nodes(self) -> list[Node]:
        """All nodes in tinc's node_tree order (by name)."""
        return [self._nodes[name] for name in sorted(self._nodes)]

    def is_reachable(self, name: str) -> bool:
        n = self._nodes.get(name)
        return n is not None and n.reachable

    def remove_node(self, name: str) -> None:
        """node_del (purge): drop a node and its outgoing edges. Its subnets are the caller's.

        tinc's purge only deletes nodes no remaining edge points to; we refuse otherwise.
        """
        n = self._nodes.get(name)
        if n is None:
            raise KeyError(name)
        if n is self.myself:
            raise ValueError("cannot remove myself")
        if any(name in other.edges for other in self._nodes.values()):
            raise ValueError(f"edges still point to {name}")
        for e in list(n.edges.values()):
            self._unlink_edge(e)
        self._udp_unindex(n)
        del self._nodes[name]

    def set_myself_port(self, tcp_port: str) -> None:
        """Called when the listening sockets are up: tinc shows us as "MYSELF port <port>"."""
        self.myself.hostname = f"MYSELF port {tcp_port}"

    def set_udp_address(self, name: str, address: Optional[SockAddr]) -> None:
        """Called when the data path learns a node's UDP address (tinc update_node_udp).

        The caller resets its own UDP confirmation and MTU state, as tinc does in the same call.
        """
        self._update_node_udp(self._nodes[name], address)

    def node_by_udp_address(self, address: Optional[SockAddr]) -> Optional[Node]:
        """lookup_node_udp: a node whose current UDP address is `address`.

        DEVIATION: tinc's splay search returns whichever of several nodes sharing an address
        its tree shape yields first; we return the first by name.
        """
        names = self._by_udp_address.get(address)
        return self._nodes[min(names)] if names else None

    # --- edges -------------------------------------------------------------------------------

    def edge(self, from_name: str, to_name: str) -> Optional[Edge]:
        n = self._nodes.get(from_name)
        return None if n is None else n.edges.get(to_name)

    def edges(self) -> list[Edge]:
        """All edges in tinc's dump order: by `from` name, then `to` name."""
        return [e for n in self.nodes() for e in n.sorted_edges()]

    def edges_by_weight(self) -> list[Edge]:
        """tinc's edge_weight_tree order: weight, then `from` name, then `to` name."""
        return sorted((e for n in self._nodes.values() for e in n.edges.values()),
                      key=Edge.weight_key)

    def add_edge(self, from_name: str, to_name: str, *, address: Optional[SockAddr] = None,
                 local_address: Optional[SockAddr] = None, options: int = 0, weight: int = 0,
                 connection: Optional[Hashable] = None) -> Edge:
        """edge_add: create `from -> to` (creating unknown nodes) and pair it with its reverse."""
        if from_name == to_name:
            raise ValueError("an edge needs two different nodes")
        from_node = self.ensure_node(from_name)
        to_node = self.ensure_node(to_name)
        if to_name in from_node.edges:
            raise ValueError(f"edge {from_name} -> {to_name} already exists")
        e = Edge(from_node, to_node, address, local_address, options, weight, connection)
        from_node.edges[to_name] = e
        e.reverse = to_node.edges.get(from_name)
        if e.reverse is not None:
            e.reverse.reverse = e
        return e

    def update_edge(self, from_name: str, to_name: str, *, options=_KEEP, address=_KEEP,
                    local_address=_KEEP, weight=_KEEP, connection=_KEEP) -> Edge:
        """Change fields of an existing edge (ADD_EDGE for a known edge that differs).

        Which fields a received ADD_EDGE may change is the meta protocol's decision
        (meta-protocol.md 4.5); the weight order is recomputed at the next run.
        """
        e = self._nodes[from_name].edges[to_name]
        if options is not _KEEP:
            e.options = options
        if address is not _KEEP:
            e.address = address
        if local_address is not _KEEP:
            e.local_address = local_address
        if weight is not _KEEP:
            e.weight = weight
        if connection is not _KEEP:
            e.connection = connection
        return e

    def del_edge(self, from_name: str, to_name: str) -> Edge:
        """edge_del: remove `from -> to`; its reverse loses its pairing."""
        e = self._nodes[from_name].edges[to_name]
        self._unlink_edge(e)
        return e

    def _unlink_edge(self, e: Edge) -> None:
        if e.reverse is not None:
            e.reverse.reverse = None
            e.reverse = None
        del e.from_node.edges[e.to_node.name]

    # --- the algorithms (tinc graph()) -------------------------------------------------------

    def run(self, now: float) -> list[GraphEvent]:
        """Called where tinc calls graph(): recompute paths, reachability and the spanning tree.

        `now` stamps nodes whose reachability changed (tinc's last_state_change).
        """
        # tinc flushes the subnet lookup caches first; SubnetTable watches this counter.
        self.generation += 1
        events: list[GraphEvent] = []
        self._sssp_bfs(events)
        self._check_reachability(now, events)
        self._mst_kruskal()
        return events

    def _sssp_bfs(self, events: list[GraphEvent]) -> None:
        """tinc sssp_bfs: breadth-first search with accumulated weights as tie-break (graph.md 3).

        A node may be queued several times: whenever a path improves it, it is re-examined.
        """
        for n in self._nodes.values():
            n.visited = False
            n.indirect = True
            n.distance = -1

        me = self.myself
        me.visited = True
        me.indirect = False
        me.nexthop = me
        me.prevedge = None
        me.via = me
        me.distance = 0
        me.weighted_distance = 0

        udp_changed: dict[str, Node] = {}
        todo = collections.deque([me])
        while todo:
            n = todo.popleft()
            for e in n.sorted_edges():
                # One-way edges do not count, nor do paths back to us.
                if e.reverse is None or e.to_node is me:
                    continue
                t = e.to_node
                indirect = n.indirect or bool(e.options & OPTION_INDIRECT)
                w = n.weighted_distance + e.weight

                # Keep what t has unless this path is its first, or turns an indirect path into
                # a direct one, or has the same hop count and a smaller accumulated weight.
                if (t.visited and (not t.indirect or indirect)
                        and (t.distance != n.distance + 1 or t.weighted_distance <= w)):
                    continue

                # COMPAT: nexthop (and weighted_distance) only change for a first visit or a
                # lighter path of equal length; a direct path replacing an indirect one of a
                # different length updates distance, via and prevedge but keeps the old nexthop.
                if not t.visited or (t.distance == n.distance + 1 and t.weighted_distance > w):
                    t.nexthop = t if n.nexthop is me else n.nexthop
                    t.weighted_distance = w

                t.visited = True
                t.indirect = indirect
                t.prevedge = e
                t.via = n.via if indirect else t
                t.options = e.options
                t.distance = n.distance + 1

                # COMPAT: a reachable node keeps its (possibly UDP-learnt) address; an unset one
                # is refreshed from any edge whose address is not of unknown type -- an unset
                # edge address included, so such a node is reset at every run.
                if not t.reachable or (t.address is None
                                       and not (e.address is not None and e.address.unknown)):
                    self._update_node_udp(t, e.address)
                    if t.reachable:
                        udp_changed[t.name] = t

                todo.append(t)

        for t in udp_changed.values():
            events.append(NodeUdpAddressChanged(t.name, t.address))

    def _check_reachability(self, now: float, events: list[GraphEvent]) -> None:
        """tinc check_reachability: toggle `reachable` where the search disagrees (graph.md 4)."""
        reachable_count = 0
        became_reachable_count = 0
        became_unreachable_count = 0

        for n in self.nodes():
            if n.visited != n.reachable:
                n.reachable = not n.reachable
                n.last_state_change = now
                if n is not self.myself:
                    if n.reachable:
                        became_reachable_count += 1
                    else:
                        became_unreachable_count += 1

                # tinc 1.1 always runs "experimental" (it has an Ed25519 key): a peer whose
                # protocol minor is 2 or more speaks SPTPS.
                if option_version(n.options) >= 2:
                    n.sptps = True

                if n.reachable:
                    events.append(NodeBecameReachable(
                        n.name, n.address, n.via.name, n.nexthop.name, n.options))
                else:
                    events.append(NodeBecameUnreachable(n.name, n.address))
                    # COMPAT: update_node_udp(n, NULL) takes the node out of the by-address
                    # index but leaves n->address and n->hostname alone, so dumps keep showing
                    # the last address (the spec's "clear its UDP address" is only the index).
                    self._udp_unindex(n)
                    n.visited = n.reachable = n.indirect = n.sptps = False
                    n.options = 0

            if n.reachable and n is not self.myself:
                reachable_count += 1

        if reachable_count == 0 and became_unreachable_count > 0:
            events.append(MeshBecameEmpty())
        elif reachable_count > 0 and reachable_count == became_reachable_count:
            events.append(MeshBecameNonEmpty())

    def _mst_kruskal(self) -> None:
        """tinc mst_kruskal, really Prim-like growth over the weight-ordered list (graph.md 5).

        After each added edge that followed a skipped one, the scan restarts from the lightest
        edge, so every added edge is the lightest paired edge leaving the tree so far.
        """
        for n in self._nodes.values():
            n.visited = False

        edges = self.edges_by_weight()
        # COMPAT: the tree starts at the `from` of the lightest edge whose `from` is reachable,
        # paired or not.
        for e in edges:
            if e.from_node.reachable:
                e.from_node.visited = True
                break

        added: list[Edge] = []
        connections = set()
        skipped = False
        i = 0
        while i < len(edges):
            e = edges[i]
            i += 1
            if e.reverse is None or e.from_node.visited == e.to_node.visited:
                skipped = True
                continue
            e.from_node.visited = True
            e.to_node.visited = True
            added.append(e)
            if e.connection is not None:
                connections.add(e.connection)
            if e.reverse.connection is not None:
                connections.add(e.reverse.connection)
            if skipped:
                skipped = False
                i = 0

        self.mst_edges = tuple(added)
        self.mst_connections = frozenset(connections)

    # --- UDP address bookkeeping (tinc update_node_udp and node_udp_tree) --------------------

    def _update_node_udp(self, n: Node, address: Optional[SockAddr]) -> None:
        if n is self.myself:
            # tinc logs "Trying to update UDP address of myself!" and ignores it.
            return
        self._udp_unindex(n)
        n.address = address
        n.hostname = sockaddr_hostname(address)
        self._by_udp_address.setdefault(address, set()).add(n.name)
        n._udp_indexed = True

    def _udp_unindex(self, n: Node) -> None:
        if n._udp_indexed:
            names = self._by_udp_address[n.address]
            names.discard(n.name)
            if not names:
                del self._by_udp_address[n.address]
            n._udp_indexed = False
