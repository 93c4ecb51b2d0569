"""Outgoing meta connections (tinc's outgoing_t, net_socket.c do_outgoing_connection,
retry_outgoing, setup_outgoing_connection, and net.c retry()).

Owns every outgoing entry (ConnectTo and AutoConnect): its address candidates and the index
of the next one to try, the back-off timeout, the retry deadline, the connect in progress
(with its own give-up deadline) and which connection carries the entry once connected.

The shell turns `Connect` actions into TCP connects and reports back with `connected()` or
`connect_failed()`; `Abandon` tells it to drop a connect in progress without reporting.
Connections are opaque hashable objects to this module.

No I/O, no clock: `now` is an argument. Not thread-safe.
"""
import enum
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

RETRY_STEP_S = 5          # COMPAT: retry_outgoing adds 5 s per exhausted round of addresses

DEBUG_CONNECTIONS = 1     # tinc's debug level for these log lines


@dataclass(frozen=True)
class Connect:
    """Open a TCP connection to host:port for entry `name`; report with `attempt`."""
    name: str
    host: str
    port: str
    timeout_s: float
    attempt: int


@dataclass(frozen=True)
class Abandon:
    """Drop the connect `attempt` still in progress; do not report on it."""
    name: str
    attempt: int


class State(enum.Enum):
    IDLE = "idle"                # waiting for retry_at, or for nothing (see _advance)
    AWAIT_CONNECT = "connect"    # a TCP connect is in progress
    CONNECTED = "connected"      # a connection carries the entry


@dataclass
class Entry:
    name: str
    timeout_s: int = 0
    candidates: list = field(default_factory=list)
    index: int = 0
    retry_at: Optional[float] = None
    state: State = State.IDLE
    attempt: int = 0
    target: tuple = ()                  # (host, port) of the connect in progress
    give_up_at: Optional[float] = None  # the connect in progress times out
    conn: Optional[Hashable] = None


class Outgoings:
    """All outgoing entries of one daemon.

    candidates(name) -> [(host, port), ...]: where to try, in order (address cache first).
    connection_for(name) -> conn | None: an active connection to that node, if any.
    log(level, text): tinc-style debug log.
    """

    def __init__(self, *, candidates: Callable, connection_for: Callable, log: Callable,
                 max_timeout_s: int, connect_timeout_s: float):
        self._candidates = candidates
        self._connection_for = connection_for
        self._log = log
        self.max_timeout_s = max_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._entries: dict[str, Entry] = {}
        self._carriers: dict[Hashable, str] = {}     # conn -> name of the entry it carries
        self._actions: list = []
        self._attempts = 0

    # --- queries ---------------------------------------------------------------------------

    def __contains__(self, name) -> bool:
        return name in self._entries

    def names(self) -> list:
        return list(self._entries)

    def entry(self, name) -> Optional[Entry]:
        """The entry's state, for inspection (tests, dumps); do not modify it."""
        return self._entries.get(name)

    def in_progress(self, name) -> bool:
        """Connecting or connected (tinc: the outgoing has a connection)."""
        e = self._entries.get(name)
        return e is not None and e.state is not State.IDLE

    def carried_by(self, conn) -> Optional[str]:
        """The name of the entry `conn` carries (tinc's c->outgoing), or None."""
        return self._carriers.get(conn)

    def pop_actions(self) -> list:
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> Optional[float]:
        deadlines = [d for e in self._entries.values() for d in (e.retry_at, e.give_up_at)
                     if d is not None]
        return min(deadlines, default=None)

    # --- entries ---------------------------------------------------------------------------

    def add(self, name, now) -> bool:
        """A new ConnectTo (or AutoConnect choice): the first attempt is immediate.
        False if the entry exists."""
        if name in self._entries:
            return False
        e = self._entries[name] = Entry(name)
        self._advance(e, now)
        return True

    def remove(self, name) -> Optional[Hashable]:
        """Forget the entry; abandon its connect in progress. Returns the connection that
        carried it (the caller decides whether to close it); it will not be reconnected."""
        e = self._entries.pop(name, None)
        if e is None:
            return None
        if e.state is State.AWAIT_CONNECT:
            self._actions.append(Abandon(name, e.attempt))
        conn = e.conn
        if conn is not None:
            self._carriers.pop(conn, None)
        return conn

    def reload(self, names, now) -> list:
        """Called on reload with the configured ConnectTo names. Returns the connections of
        the dropped entries, for the caller to close."""
        # COMPAT: try_outgoing_connections keeps only ConnectTo entries (AutoConnect's are
        # dropped too and it makes new ones), resets the back-off of the kept ones without
        # reconnecting them, and starts the new ones at once.
        dropped = []
        for name in list(self._entries):
            if name not in names:
                conn = self.remove(name)
                if conn is not None:
                    dropped.append(conn)
            else:
                self._entries[name].timeout_s = 0
        for name in names:
            self.add(name, now)
        return dropped

    def stop(self) -> None:
        """Called at shutdown: abandon connects in progress, forget everything."""
        for name in list(self._entries):
            self.remove(name)

    # --- connect results and connection events ---------------------------------------------

    def connected(self, name, attempt, conn) -> bool:
        """Called when the connect `attempt` succeeded with connection `conn`. False if the
        attempt is stale (abandoned or the entry removed): `conn` carries nothing."""
        e = self._entries.get(name)
        if e is None or e.state is not State.AWAIT_CONNECT or e.attempt != attempt:
            return False
        self._carry(e, conn)
        return True

    def connect_failed(self, name, attempt, now, reason) -> None:
        """Called when the connect `attempt` failed: go on with the next address."""
        e = self._entries.get(name)
        if e is None or e.state is not State.AWAIT_CONNECT or e.attempt != attempt:
            return
        host, port = e.target
        self._log(DEBUG_CONNECTIONS, f"Could not connect to {name} ({host} port {port}): "
                  f"{reason}")
        e.state, e.give_up_at = State.IDLE, None
        self._advance(e, now)

    def adopt(self, name, conn) -> None:
        """Called when `conn` (an incoming connection) takes over the entry from the
        connection that carried it (COMPAT: ack_h moves c->outgoing to the new one)."""
        e = self._entries.get(name)
        if e is None:
            return
        if e.state is State.AWAIT_CONNECT:
            self._actions.append(Abandon(name, e.attempt))
        self._carry(e, conn)

    def connection_ended(self, conn, now) -> None:
        """Called when a connection closed. If it carried an entry, reconnect at once with
        the next address (COMPAT: terminate_connection calls do_outgoing_connection, which
        goes on in the address cache where the last connect left it)."""
        name = self._carriers.pop(conn, None)
        e = self._entries.get(name) if name is not None else None
        if e is None or e.conn is not conn:
            return
        e.conn, e.state = None, State.IDLE
        self._advance(e, now)

    def pong(self, conn) -> bool:
        """Called when `conn` got a PONG. True if that reset its entry's back-off (the caller
        then remembers the address in the cache)."""
        name = self._carriers.get(conn)
        e = self._entries.get(name) if name is not None else None
        if e is None or not e.timeout_s:
            return False
        # COMPAT: pong_h: after a retry the address works: reset the back-off and start the
        # candidates over (the cache now lists this address first).
        e.timeout_s = 0
        e.index = 0
        return True

    def retry(self, now) -> None:
        """SIGALRM / RETRY: reset every back-off and connect now."""
        for e in list(self._entries.values()):
            e.timeout_s = 0
            if e.state is State.AWAIT_CONNECT:
                host, port = e.target
                self._log(DEBUG_CONNECTIONS, f"Abandoned connecting to {e.name} ({host} port "
                          f"{port})")
                self._actions.append(Abandon(e.name, e.attempt))
                # DEVIATION: tinc times the connect out, goes on with the next address and,
                # with none left, backs off 5 s. RETRY means "connect now": start over at the
                # first address (a connect into a link that was down may never finish).
                e.state, e.give_up_at, e.index = State.IDLE, None, 0
                self._advance(e, now)
            elif e.state is State.IDLE:
                e.index, e.retry_at = 0, None
                self._advance(e, now)

    def handle_deadline(self, now) -> None:
        """Called when next_deadline() has passed: connects time out, back-offs end."""
        for e in list(self._entries.values()):
            if e.give_up_at is not None and now >= e.give_up_at:
                self._actions.append(Abandon(e.name, e.attempt))
                self.connect_failed(e.name, e.attempt, now, "timed out")
            elif e.retry_at is not None and now >= e.retry_at:
                e.retry_at = None
                self._advance(e, now)

    # --- internals -------------------------------------------------------------------------

    def _carry(self, e, conn):
        if e.conn is not None:
            self._carriers.pop(e.conn, None)
        e.conn, e.state, e.give_up_at, e.retry_at = conn, State.CONNECTED, None, None
        self._carriers[conn] = e.name

    def _advance(self, e, now):
        """tinc's setup_outgoing_connection + do_outgoing_connection: start the next connect
        of idle entry `e`, or back off when its addresses are exhausted."""
        e.retry_at = None
        existing = self._connection_for(e.name)
        if existing is not None:
            self._log(DEBUG_CONNECTIONS, f"Already connected to {e.name}")
            # That connection (maybe an incoming one) now carries the reconnect duty, unless
            # it carries another entry already; then this one waits for a RETRY.
            if self._carriers.get(existing) in (None, e.name):
                self._carry(e, existing)
            return
        if e.index == 0 or e.index >= len(e.candidates):
            if e.index == 0:
                e.candidates = list(self._candidates(e.name))
            if e.index or not e.candidates:
                if not e.candidates:
                    self._log(DEBUG_CONNECTIONS, f"Could not set up a meta connection to "
                              f"{e.name}: no known address")
                self._back_off(e, now)
                return
        host, port = e.candidates[e.index]
        e.index += 1
        self._log(DEBUG_CONNECTIONS, f"Trying to connect to {e.name} ({host} port {port})")
        self._attempts += 1
        e.attempt, e.target, e.state = self._attempts, (host, port), State.AWAIT_CONNECT
        # COMPAT: tinc's ping timer gives up on a connecting socket after PingTimeout.
        e.give_up_at = now + self.connect_timeout_s
        self._actions.append(Connect(e.name, str(host), str(port), self.connect_timeout_s,
                                     e.attempt))

    def _back_off(self, e, now):
        # COMPAT: retry_outgoing: 5 s more per exhausted round, capped at MaxTimeout.
        e.index = 0
        e.state = State.IDLE
        e.timeout_s = min(e.timeout_s + RETRY_STEP_S, self.max_timeout_s)
        e.retry_at = now + e.timeout_s
        self._log(DEBUG_CONNECTIONS, f"Trying to re-establish outgoing connection in "
                  f"{e.timeout_s} seconds")
