"""AutoConnect policy (graph.md 7; tinc's autoconnect.c, run from net.c's periodic_handler).

Owns only its deadline. Every PERIOD_S the shell hands it a snapshot of the mesh (`MeshView`:
the known nodes, the meta connections in creation order and the outgoing entries in list
order) and gets back the actions tinc would take: open an outgoing connection to a node,
drop a surplus outgoing connection, or cancel outgoing entries that wait for a retry.

No I/O, no clock, no global randomness: `rng(n) -> n bytes`. Not thread-safe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

PERIOD_S = 5.0          # COMPAT: periodic_handler runs every 5 s (plus jitter)
TARGET = 3              # COMPAT: do_autoconnect aims at exactly three active connections
JITTER_US = 131072      # COMPAT: jitter() adds 0..131071 microseconds to periodic timers


@dataclass(frozen=True)
class NodeInfo:
    """One node of tinc's node_tree (including ourselves)."""
    name: str
    reachable: bool = False
    has_address: bool = False      # its host file has an Address line (load_all_nodes)
    connected: bool = False        # n->connection: an active meta connection exists


@dataclass(frozen=True)
class ConnInfo:
    """One entry of tinc's connection_list (control connections excluded)."""
    name: Optional[str]
    active: bool                   # c->edge: the connection was activated (ACK)
    outgoing: bool                 # c->outgoing: it carries an outgoing entry
    peer_edges: int = 0            # c->node->edge_tree.count


@dataclass(frozen=True)
class OutgoingInfo:
    """One entry of tinc's outgoing_list."""
    name: str
    in_progress: bool              # a connection (connecting or established) carries it


@dataclass
class MeshView:
    myself: str
    nodes: list[NodeInfo] = field(default_factory=list)
    connections: list[ConnInfo] = field(default_factory=list)
    outgoing: list[OutgoingInfo] = field(default_factory=list)


# --- actions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConnectTo:
    """Add an outgoing entry for `name` and start connecting ("Autoconnecting to NAME")."""
    name: str


@dataclass(frozen=True)
class DropConnection:
    """Remove the outgoing entry of the active connection to `name` and close it, announcing
    the lost edge ("Autodisconnecting from NAME")."""
    name: str


@dataclass(frozen=True)
class CancelOutgoing:
    """Remove the outgoing entry for `name`, which waits for a retry with no connection
    ("Cancelled outgoing connection to NAME")."""
    name: str


def _prng(rng, n: int) -> int:
    """tinc's prng(n): uniform-enough in [0, n). 64 random bits make the modulo bias
    negligible."""
    return int.from_bytes(rng(8), "little") % n


class AutoConnect:
    """The AutoConnect timer and decisions. `enabled` follows the AutoConnect setting
    (COMPAT: tinc 1.1 defaults it to yes, net_setup.c)."""

    def __init__(self, *, rng, now: float, enabled: bool = True):
        self._rng = rng
        self.enabled = enabled
        self._next_at = now + PERIOD_S + self._jitter()

    def _jitter(self) -> float:
        return _prng(self._rng, JITTER_US) / 1e6

    def next_deadline(self) -> Optional[float]:
        return self._next_at if self.enabled else None

    def due(self, now: float) -> bool:
        return self.enabled and now >= self._next_at

    def handle_deadline(self, now: float, view: MeshView) -> list:
        """Called when next_deadline() has passed, with the mesh as it is now. Returns the
        actions in the order tinc takes them."""
        if not self.due(now):
            return []
        self._next_at = now + PERIOD_S + self._jitter()
        # COMPAT: net.c runs do_autoconnect only when node_tree holds more than ourselves.
        if len(view.nodes) <= 1:
            return []
        return self.decide(view)

    def decide(self, view: MeshView) -> list:
        """tinc's do_autoconnect on `view`; the view is not modified."""
        nodes = sorted(view.nodes, key=lambda n: n.name)       # node_tree order
        connected = {n.name for n in nodes if n.connected}
        outgoing = [o for o in view.outgoing]
        conns = list(view.connections)
        active = sum(1 for c in conns if c.active)
        actions: list = []

        if active < TARGET:
            # Eagerly try to make a new one.
            self._make_new_connection(view.myself, nodes, connected, outgoing, actions)
            return actions
        if active > TARGET:
            dropped = self._drop_superfluous_outgoing(conns, actions)
            if dropped is not None:
                connected.discard(dropped)
                outgoing = [o for o in outgoing if o.name != dropped]
        # Entries waiting for a retry go: with enough connections they are not needed.
        for o in outgoing:
            if not o.in_progress:
                actions.append(CancelOutgoing(o.name))
        outgoing = [o for o in outgoing if o.in_progress]
        self._connect_to_unreachable(view.myself, nodes, connected, outgoing, actions)
        return actions

    def _make_new_connection(self, myself, nodes, connected, outgoing, actions):
        candidates = [n for n in nodes if n.name != myself and n.name not in connected
                      and (n.has_address or n.reachable)]
        if not candidates:
            return
        n = candidates[_prng(self._rng, len(candidates))]
        # COMPAT: if the chosen node already has an outgoing entry, tinc does nothing this
        # round rather than choosing another.
        if not any(o.name == n.name for o in outgoing):
            actions.append(ConnectTo(n.name))

    def _drop_superfluous_outgoing(self, conns, actions) -> Optional[str]:
        # Only peers with at least one other edge: dropping them keeps them in the mesh.
        candidates = [c for c in conns if c.active and c.outgoing and c.name is not None
                      and c.peer_edges >= 2]
        if not candidates:
            return None
        c = candidates[_prng(self._rng, len(candidates))]
        actions.append(DropConnection(c.name))
        return c.name

    def _connect_to_unreachable(self, myself, nodes, connected, outgoing, actions):
        # COMPAT: one node is drawn among *all* known nodes (ourselves included) and we give
        # up unless it qualifies: with many reachable nodes, few of them try at once.
        n = nodes[_prng(self._rng, len(nodes))]
        if (n.name == myself or n.name in connected or n.reachable or not n.has_address
                or any(o.name == n.name for o in outgoing)):
            return
        actions.append(ConnectTo(n.name))
