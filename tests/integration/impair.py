"""An impairment relay for fault-injection tests, and the client that starts and steers it.

The kernel here has no netem, iptables or tc actions, so faults are made in userspace: this
program runs in a "relay" network namespace with a veth to each node's namespace, forwards the
UDP and TCP of node pairs ("links") and drops, duplicates, reorders, delays, corrupts, replays
and injects on command. It owns only its own sockets; it never forwards anything at IP level
(the relay namespace keeps ip_forward off), and it sends only to the node addresses in its
configuration.

Addressing is a 1:1 NAT with fixed ports. A link joins end `a` (node A at A_ADDR:A_PORT) and end
`b`. The relay holds an address on each side: R_A on the veth facing A, R_B facing B. A's host
file for B says `Address = R_A`, `Port = B_PORT`; B's for A says `Address = R_B`, `Port =
A_PORT`. The relay listens (TCP and UDP) on R_A:B_PORT and R_B:A_PORT; what A sends to
R_A:B_PORT leaves from R_B:A_PORT toward B_ADDR:B_PORT, and the other way round, so each node
sees the other at a relay address and all their traffic crosses the relay. Several links may
share one relay (give each a distinct relay address or port on a shared side).

Run (normally through `ImpairRelay.start`, inside the relay namespace):
    python impair.py --control PATH --config JSON|@FILE
Configuration:
    {"seed": 1,
     "links": [{"a": {"name": "a", "addr": "192.0.2.1", "port": 655, "relay": "192.0.2.254"},
                "b": {"name": "b", "addr": "198.51.100.2", "port": 655,
                      "relay": "198.51.100.254"}}]}
    Each end may also give "relay_port" (default: the other end's port). End names must be
    unique per link; a direction is named "SRC>DST" by end names, a link "SRC-DST".
It prints one JSON line ({"ready": true, ...}) on stdout once every socket is bound, then
serves JSON lines on the UNIX socket PATH: one command object per line, one reply per line
({"ok": true, ...} or {"ok": false, "error": "..."}). The first connection owns the relay: when
it closes, the relay exits (so a test that dies takes the relay with it); so do SIGTERM, SIGINT
and the "stop" command. It removes its socket file on exit, and the --workdir (the client's
temporary directory) when its owner went away without "stop".

Commands ("sel" selects directions: "a>b", a link "a-b" = both its directions, or "*"):
    {"cmd": "set", "sel": "a>b", "proto": "udp"|"tcp", <parameter>: value, ...}
        UDP: drop, duplicate, reorder, corrupt, replay (probabilities 0..1);
             reorder_gap (a held datagram goes out after this many later ones, default 1),
             reorder_hold_s (or after this long, default 0.2); delay_s, jitter_s (each datagram
             waits delay_s + uniform(-jitter_s, jitter_s), so jitter also reorders);
             corrupt_bits (bits flipped per corrupted datagram, default 1), keep_prefix (default
             true: never touch the first 12 bytes, tinc's node-ID prefix, so the receiver still
             attributes the datagram to its peer and the SPTPS record takes the damage);
             replay_delay_s (a replayed copy goes out this long after the original, default
             0.5); capture (record the SPTPS seqnos, bytes 12..16, of what goes out).
        TCP: delay_s, jitter_s (byte order is kept: a chunk never overtakes an earlier one).
    {"cmd": "reset", "sel": "*"}                     all impairments off (counters stay)
    {"cmd": "partition", "on": true, "sel": "*", "tcp": "hold"|"reset"}
        Cable cut on the selected links: no UDP crosses either way; TCP stops moving bytes
        either way but the connections stay open, and new ones are accepted but not joined
        through, until healed ("on": false), when held bytes flow again. "tcp": "reset"
        instead resets every connection and resets new ones while the partition lasts.
    {"cmd": "kill_tcp", "sel": "*"}                  reset (RST) both halves of every connection
    {"cmd": "inject", "sel": "a>b", "rate": 10000, "duration_s": 1.0 | "count": N,
     "mode": "random"|"replay", "size": 100, "prefix": "hex", "wait": false}
        Forged datagrams toward b that look like a's: sent from the relay's address that b
        knows a by. "random": the 12-byte prefix (default: that of the last real datagram a
        sent b) + random bytes up to `size` (default: the last real datagram's length);
        "replay": copies of the last real datagrams a sent b (the last `last`, default all the
        relay keeps: 256), in turn. With "wait" the reply comes when all are sent.
    {"cmd": "stats", "sel": "*"}   {"stats": {"a>b": {counter: n, ...}, ...}}
    {"cmd": "capture", "sel": "a>b", "clear": false}
        {"capture": {"a>b": {"forwarded": [seqno...], "duplicated": [...], "replayed": [...],
                             "injected": [...]}}}
    {"cmd": "stop"}
Counters per direction: received, forwarded, dropped, duplicated, reordered, delayed,
corrupted, replayed, injected, bytes (UDP payload bytes sent), send_errors, stray (from a
source other than the node), tcp_accepted, tcp_bytes, tcp_killed.

Client: `relay = ImpairRelay.start(netns, config)`; `relay.set(sel, proto="udp", **params)`,
`relay.reset(sel="*")`, `relay.partition(on=True, sel="*", tcp="hold")`, `relay.kill_tcp()`,
`relay.inject(sel, rate=..., duration_s=..., mode=..., wait=...)`, `relay.stats(sel="*")`,
`relay.capture(sel, clear=False)`, `relay.stop()` (also a context manager). `netns_socket()`
opens a socket inside a namespace, for test endpoints that need no process of their own.

Standard library only, so it runs as a plain script. Single-threaded asyncio.
"""
import argparse
import asyncio
import collections
import ctypes
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading

NODE_ID_PREFIX_LEN = 12          # dst id (6) + src id (6), data-path.md §4
SEQNO_LEN = 4                    # SPTPS datagram: seqno (4, big-endian) first
RECENT_MAX = 256                 # real datagrams kept per direction for "replay" injection
CAPTURE_MAX = 1_000_000          # seqnos kept per kind and direction
READ_BATCH = 64                  # datagrams read per readiness event
MAX_DATAGRAM = 65535
SOCKET_BUFFER = 4 << 20          # UDP buffers: bursts of tens of thousands of datagrams/s
TCP_QUEUE_MAX = 1 << 20          # bytes held per TCP half before reading from it pauses
TCP_CONNECT_TIMEOUT_S = 10
OWNER_WAIT_S = 30                # exit if nobody takes the control socket by then
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33     # Linux; not in the socket module

UDP_DEFAULTS = {
    "drop": 0.0, "duplicate": 0.0, "reorder": 0.0, "reorder_gap": 1, "reorder_hold_s": 0.2,
    "delay_s": 0.0, "jitter_s": 0.0, "corrupt": 0.0, "corrupt_bits": 1, "keep_prefix": True,
    "replay": 0.0, "replay_delay_s": 0.5, "capture": False,
}
TCP_DEFAULTS = {"delay_s": 0.0, "jitter_s": 0.0}
COUNTERS = ("received", "forwarded", "dropped", "duplicated", "reordered", "delayed",
            "corrupted", "replayed", "injected", "bytes", "send_errors", "stray",
            "tcp_accepted", "tcp_bytes", "tcp_killed")
CAPTURE_KINDS = ("forwarded", "duplicated", "replayed", "injected")


class CommandError(Exception):
    """A control command that cannot be carried out; its text goes back to the client."""


# --- the relay program -----------------------------------------------------------------------

def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _grow_buffers(sock):
    # SO_*BUFFORCE (root) passes the sysctl caps; fall back to the capped request.
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                         (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def _reset(transport):
    """Close a TCP transport with an RST (zero linger), not a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class End:
    """One side of a link: the node's address and the relay's address facing it."""

    def __init__(self, spec, other_port):
        self.name = str(spec["name"])
        # Canonical text, as recvfrom reports it, for the source check.
        self.addr = socket.inet_ntop(_family(spec["addr"]),
                                     socket.inet_pton(_family(spec["addr"]), spec["addr"]))
        self.port = int(spec["port"])
        self.relay = spec["relay"]
        self.relay_port = int(spec.get("relay_port", other_port))
        self.udp = None            # the relay's UDP socket at relay:relay_port


class Direction:
    """Traffic from one end's node to the other's: impairments, counters, capture."""

    def __init__(self, relay, link, src, dst, seed):
        self.relay, self.link, self.src, self.dst = relay, link, src, dst
        self.name = f"{src.name}>{dst.name}"
        self.rng = random.Random(seed)
        self.inject_rng = random.Random(seed ^ 0x5A5A5A5A)
        self.udp = dict(UDP_DEFAULTS)
        self.tcp = dict(TCP_DEFAULTS)
        self.impaired = False
        self.count = dict.fromkeys(COUNTERS, 0)
        self.recent = collections.deque(maxlen=RECENT_MAX)
        self.held = []               # reordered datagrams: [data, kind, datagrams to pass]
        self.capture = {k: [] for k in CAPTURE_KINDS}

    @property
    def dst_addr(self):
        return (self.dst.addr, self.dst.port)

    def configure(self, proto, params):
        table = self.udp if proto == "udp" else self.tcp
        for key in params:
            if key not in table:
                raise CommandError(f"unknown {proto} parameter {key!r}")
        for key, value in params.items():
            table[key] = type(table[key])(value)
        self.impaired = any(self.udp[k] for k in ("drop", "duplicate", "reorder", "delay_s",
                                                  "jitter_s", "corrupt", "replay", "capture"))
        if not self.udp["reorder"]:
            self._release_held()

    def reset(self):
        self.udp = dict(UDP_DEFAULTS)
        self.tcp = dict(TCP_DEFAULTS)
        self.impaired = False
        self._release_held()

    # UDP path. Called for every datagram the source node sends toward the destination.
    def receive_udp(self, data):
        count = self.count
        count["received"] += 1
        if self.link.partitioned:
            count["dropped"] += 1
            return
        self.recent.append(data)
        if not self.impaired:
            self._send(data, "forwarded")
            return
        p, rng = self.udp, self.rng
        if p["drop"] and rng.random() < p["drop"]:
            count["dropped"] += 1
            return
        if p["corrupt"] and rng.random() < p["corrupt"]:
            data = self._corrupt(data)
            count["corrupted"] += 1
        copies = ["forwarded"]
        if p["duplicate"] and rng.random() < p["duplicate"]:
            copies.append("duplicated")
        for kind in copies:
            self._emit(data, kind)
        if p["replay"] and rng.random() < p["replay"]:
            self.relay.loop.call_later(p["replay_delay_s"], self._send, data, "replayed")

    def _corrupt(self, data):
        start = NODE_ID_PREFIX_LEN if self.udp["keep_prefix"] else 0
        if len(data) <= start:
            return data
        buf = bytearray(data)
        nbits = (len(buf) - start) * 8
        for bit in self.rng.sample(range(nbits), min(self.udp["corrupt_bits"], nbits)):
            buf[start + bit // 8] ^= 1 << (bit % 8)
        return bytes(buf)

    def _emit(self, data, kind):
        """Reorder, then delay, then send."""
        p = self.udp
        if p["reorder"] and self.rng.random() < p["reorder"]:
            entry = [data, kind, max(1, p["reorder_gap"])]
            self.held.append(entry)
            self.count["reordered"] += 1
            self.relay.loop.call_later(p["reorder_hold_s"], self._release_entry, entry)
            return
        self._delay(data, kind)
        if self.held:
            due = []
            for entry in self.held:
                entry[2] -= 1
                if entry[2] <= 0:
                    due.append(entry)
            for entry in due:
                self._release_entry(entry)

    def _release_entry(self, entry):
        if entry in self.held:
            self.held.remove(entry)
            self._delay(entry[0], entry[1])

    def _release_held(self):
        for entry in list(self.held):
            self._release_entry(entry)

    def _delay(self, data, kind):
        p = self.udp
        if p["delay_s"] or p["jitter_s"]:
            wait = max(0.0, p["delay_s"] + self.rng.uniform(-p["jitter_s"], p["jitter_s"]))
            self.count["delayed"] += 1
            self.relay.loop.call_later(wait, self._send, data, kind)
        else:
            self._send(data, kind)

    def _send(self, data, kind):
        """Called when a datagram (real, copied or forged) goes out to the destination."""
        if kind != "injected" and self.link.partitioned:
            self.count["dropped"] += 1
            return
        try:
            self.dst.udp.sendto(data, self.dst_addr)
        except OSError:          # full buffer or no route: the datagram is lost, as on a wire
            self.count["send_errors"] += 1
            return
        self.count[kind] += 1
        self.count["bytes"] += len(data)
        if self.udp["capture"] and len(data) >= NODE_ID_PREFIX_LEN + SEQNO_LEN:
            seen = self.capture[kind]
            if len(seen) < CAPTURE_MAX:
                seen.append(int.from_bytes(
                    data[NODE_ID_PREFIX_LEN:NODE_ID_PREFIX_LEN + SEQNO_LEN], "big"))

    async def inject(self, rate, count, mode, size, prefix, last):
        """Send `count` forged datagrams at `rate` per second (paced per millisecond)."""
        loop = self.relay.loop
        if mode == "replay":
            pool = list(self.recent)[-last:] if last else list(self.recent)
            if not pool:
                raise CommandError(f"{self.name}: no real datagram seen yet to replay")
        elif mode == "random":
            last = self.recent[-1] if self.recent else None
            if prefix is None:
                if last is None:
                    raise CommandError(f"{self.name}: no datagram seen yet; give a prefix")
                prefix = last[:NODE_ID_PREFIX_LEN]
            if size is None:
                size = len(last) if last is not None else 100
            body_len = max(0, size - len(prefix))
        else:
            raise CommandError(f"unknown inject mode {mode!r}")
        start, sent = loop.time(), 0
        while sent < count:
            due = min(count, int((loop.time() - start) * rate) + 1)
            while sent < due:
                if mode == "replay":
                    data = pool[sent % len(pool)]
                else:
                    data = prefix + self.inject_rng.randbytes(body_len)
                self._send(data, "injected")
                sent += 1
            if sent < count:
                await asyncio.sleep(0.001)
        return sent


class TcpHalf(asyncio.Protocol):
    """One TCP connection of a joined pair: what it reads waits in `queue` (for the direction's
    delay) and is written to the other half."""

    def __init__(self, joint, direction):
        self.joint, self.direction = joint, direction
        self.other = None
        self.transport = None
        self.queue = collections.deque()        # (release_at, bytes)
        self.queued = 0
        self.release_at = 0.0
        self.eof = False           # our node half-closed
        self.eof_passed = False    # ... and the other half has been told
        self.closed = False
        self.write_blocked = False
        self.reading = True
        self.timer = None

    def connection_made(self, transport):
        """Called when the connection is up (accepted, or our connect completed)."""
        self.transport = transport
        self.joint.half_made(self)

    def data_received(self, data):
        """Called with bytes from our node."""
        p = self.direction.tcp
        now = self.joint.loop.time()
        at = now
        if p["delay_s"] or p["jitter_s"]:
            at = now + max(0.0, p["delay_s"] + self.direction.rng.uniform(-p["jitter_s"],
                                                                          p["jitter_s"]))
        self.release_at = at = max(at, self.release_at)   # never overtake earlier bytes
        self.queue.append((at, data))
        self.queued += len(data)
        self.pump()

    def eof_received(self):
        """Called when our node half-closes: pass it on once the queue is empty."""
        self.eof = True
        self.pump()
        return True

    def connection_lost(self, exc):
        """Called when the connection is gone (closed by us, reset, or failed)."""
        self.closed = True
        if self.timer:
            self.timer.cancel()
        self.joint.half_lost(self, exc)

    def pause_writing(self):
        """Called when our transport's write buffer is full: stop reading the other half."""
        self.write_blocked = True
        if self.other:
            self.other.update_reading()

    def resume_writing(self):
        self.write_blocked = False
        if self.other:
            self.other.pump()

    def pump(self):
        """Write what is due to the other half; re-arm the timer for the rest."""
        if self.timer:
            self.timer.cancel()
            self.timer = None
        other = self.other
        if (other is not None and other.transport is not None and not other.closed
                and not other.transport.is_closing() and not self.joint.link.partitioned):
            now = self.joint.loop.time()
            while self.queue:
                at, data = self.queue[0]
                if at > now:
                    self.timer = self.joint.loop.call_at(at, self.pump)
                    break
                self.queue.popleft()
                self.queued -= len(data)
                other.transport.write(data)
                self.direction.count["tcp_bytes"] += len(data)
            if not self.queue and self.eof and not self.eof_passed:
                self.eof_passed = True
                if other.transport.can_write_eof():
                    other.transport.write_eof()
                self.joint.maybe_close()
        self.update_reading()

    def update_reading(self):
        if self.transport is None or self.closed or self.transport.is_closing():
            return
        other = self.other
        want = (not self.joint.link.partitioned and other is not None
                and other.transport is not None and not other.write_blocked
                and self.queued < TCP_QUEUE_MAX)
        if want != self.reading:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()


class TcpJoint:
    """A connection accepted from one end's node, joined to one the relay opens to the other's
    node from the relay's address on that side."""

    def __init__(self, relay, link, src, dst):
        self.relay, self.loop, self.link, self.src, self.dst = relay, relay.loop, link, src, dst
        self.accepted = TcpHalf(self, link.direction(src, dst))
        self.outgoing = TcpHalf(self, link.direction(dst, src))
        self.accepted.other, self.outgoing.other = self.outgoing, self.accepted
        self.connecting = None
        self.done = False

    def half_made(self, half):
        """Called when a half is connected."""
        if half is self.accepted:
            self.link.joints.add(self)
            self.link.direction(self.src, self.dst).count["tcp_accepted"] += 1
            if self.link.partitioned and self.link.partition_tcp == "reset":
                self.kill()
                return
            half.update_reading()
            if not self.link.partitioned:
                self.connect()
        elif self.accepted.closed:
            half.transport.close()         # its caller went away while we connected
        else:
            self.accepted.pump()
            self.outgoing.pump()

    def connect(self):
        """Called when an accepted connection may go through: open the outgoing one."""
        if self.connecting is None and not self.done:
            self.connecting = self.loop.create_task(self._connect())

    async def _connect(self):
        try:
            await asyncio.wait_for(self.loop.create_connection(
                lambda: self.outgoing, self.dst.addr, self.dst.port,
                local_addr=(self.dst.relay, 0)), TCP_CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            # Refused or unreachable: the caller learns it the way a direct connect would.
            if not self.accepted.closed:
                _reset(self.accepted.transport)

    def heal(self):
        """Called when the link's partition ends."""
        if self.outgoing.transport is None:
            self.connect()
        for half in (self.accepted, self.outgoing):
            half.pump()

    def maybe_close(self):
        if self.accepted.eof_passed and self.outgoing.eof_passed:
            for half in (self.accepted, self.outgoing):
                if half.transport is not None and not half.closed:
                    half.transport.close()

    def half_lost(self, half, exc):
        """Called when one half is gone: a reset is passed on as a reset; a clean close, once
        the other half's queue has drained, as a close."""
        other = half.other
        if other.transport is not None and not other.transport.is_closing():
            if exc is not None:
                _reset(other.transport)
            else:
                half.eof = True
                half.pump()
                other.transport.close()
        if other.closed or other.transport is None:
            self.finish()

    def finish(self):
        self.done = True
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        self.link.joints.discard(self)

    def kill(self):
        """Reset both halves."""
        self.link.direction(self.src, self.dst).count["tcp_killed"] += 1
        for half in (self.accepted, self.outgoing):
            if half.transport is not None and not half.closed:
                _reset(half.transport)
        self.finish()


class Link:
    def __init__(self, relay, spec, index, seed):
        self.a = End(spec["a"], int(spec["b"]["port"]))
        self.b = End(spec["b"], int(spec["a"]["port"]))
        if self.a.name == self.b.name:
            raise ValueError(f"link {index}: both ends are named {self.a.name!r}")
        self.name = f"{self.a.name}-{self.b.name}"
        self.directions = {
            (self.a, self.b): Direction(relay, self, self.a, self.b, seed * 1000 + 2 * index),
            (self.b, self.a): Direction(relay, self, self.b, self.a, seed * 1000 + 2 * index + 1),
        }
        self.partitioned = False
        self.partition_tcp = "hold"
        self.joints = set()
        self.servers = []

    def direction(self, src, dst):
        return self.directions[(src, dst)]

    def partition(self, on, tcp):
        if tcp not in ("hold", "reset"):
            raise CommandError(f"partition tcp must be 'hold' or 'reset', not {tcp!r}")
        self.partitioned, self.partition_tcp = bool(on), tcp
        for joint in list(self.joints):
            if on and tcp == "reset":
                joint.kill()
            elif on:
                for half in (joint.accepted, joint.outgoing):
                    half.update_reading()
            else:
                joint.heal()


class Relay:
    def __init__(self, config, control_path, workdir=None):
        self.loop = asyncio.get_running_loop()
        self.seed = int(config.get("seed", 1))
        self.links = [Link(self, spec, i, self.seed) for i, spec in enumerate(config["links"])]
        self.directions = {d.name: d for link in self.links for d in link.directions.values()}
        if len(self.directions) != 2 * len(self.links):
            raise ValueError("two links have the same pair of end names")
        self.control_path = control_path
        self.workdir = workdir
        self.orphaned = False      # the owner went away without "stop"
        self.stopped = asyncio.Event()
        self.control_server = None
        self.owner = None
        self.tasks = set()
        self.sockets = []

    async def open(self):
        for link in self.links:
            for src, dst in ((link.a, link.b), (link.b, link.a)):
                sock = socket.socket(_family(src.relay), socket.SOCK_DGRAM)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                _grow_buffers(sock)
                sock.bind((src.relay, src.relay_port))
                sock.setblocking(False)
                src.udp = sock
                self.loop.add_reader(sock.fileno(), self._udp_readable, sock, src.addr,
                                     link.direction(src, dst))
                server = await self.loop.create_server(
                    lambda link=link, src=src, dst=dst: TcpJoint(self, link, src, dst).accepted,
                    src.relay, src.relay_port, reuse_address=True)
                link.servers.append(server)
        self.control_server = await asyncio.start_unix_server(self._control_client,
                                                              self.control_path)
        self.loop.call_later(OWNER_WAIT_S, self._owner_deadline)

    def _udp_readable(self, sock, node_addr, direction):
        """Called when a relay UDP socket has datagrams: read a batch, forward each."""
        if direction.impaired or direction.link.partitioned:
            for _ in range(READ_BATCH):
                try:
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:          # e.g. an ICMP error queued on the socket
                    continue
                if addr[0] != node_addr:
                    direction.count["stray"] += 1
                    continue
                direction.receive_udp(data)
            return
        # Fast path, nothing to impair: the same as receive_udp + _send, counted per batch.
        out, dst, recent = direction.dst.udp, direction.dst_addr, direction.recent
        sent = nbytes = stray = errors = 0
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            if addr[0] != node_addr:
                stray += 1
                continue
            recent.append(data)
            try:
                out.sendto(data, dst)
            except OSError:
                errors += 1
                continue
            sent += 1
            nbytes += len(data)
        count = direction.count
        count["received"] += sent + errors
        count["forwarded"] += sent
        count["bytes"] += nbytes
        count["send_errors"] += errors
        count["stray"] += stray

    def _owner_deadline(self):
        if self.owner is None:
            print("impair: nobody took the control socket; exiting", file=sys.stderr)
            self.stopped.set()

    def select(self, sel):
        """Directions chosen by "a>b", "a-b" (both ways) or "*"."""
        if sel in (None, "*"):
            return list(self.directions.values())
        if sel in self.directions:
            return [self.directions[sel]]
        for link in self.links:
            if sel in (link.name, f"{link.b.name}-{link.a.name}"):
                return list(link.directions.values())
        raise CommandError(f"no direction or link {sel!r}")

    def select_links(self, sel):
        return list({id(d.link): d.link for d in self.select(sel)}.values())

    async def _control_client(self, reader, writer):
        owner = self.owner is None
        if owner:
            self.owner = writer
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    reply = await self.command(json.loads(line))
                    reply["ok"] = True
                except (CommandError, ValueError, KeyError, TypeError) as e:
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            if owner:
                self.orphaned = not self.stopped.is_set()
                self.stopped.set()

    async def command(self, msg):
        cmd = msg.get("cmd")
        sel = msg.get("sel", "*")
        if cmd == "ping":
            return {}
        if cmd == "set":
            proto = msg.get("proto", "udp")
            if proto not in ("udp", "tcp"):
                raise CommandError(f"proto must be 'udp' or 'tcp', not {proto!r}")
            params = {k: v for k, v in msg.items() if k not in ("cmd", "sel", "proto")}
            for d in self.select(sel):
                d.configure(proto, params)
            return {}
        if cmd == "reset":
            for d in self.select(sel):
                d.reset()
            return {}
        if cmd == "partition":
            for link in self.select_links(sel):
                link.partition(msg.get("on", True), msg.get("tcp", "hold"))
            return {}
        if cmd == "kill_tcp":
            killed = 0
            for link in self.select_links(sel):
                for joint in list(link.joints):
                    joint.kill()
                    killed += 1
            return {"killed": killed}
        if cmd == "inject":
            dirs = self.select(sel)
            if len(dirs) != 1:
                raise CommandError("inject needs one direction, like 'a>b'")
            rate = float(msg.get("rate", 1000))
            if rate <= 0:
                raise CommandError("inject rate must be positive")
            count = msg.get("count")
            count = int(count if count is not None else rate * float(msg.get("duration_s", 1)))
            prefix = msg.get("prefix")
            prefix = bytes.fromhex(prefix) if prefix is not None else None
            task = self.loop.create_task(dirs[0].inject(
                rate, count, msg.get("mode", "random"), msg.get("size"), prefix,
                int(msg.get("last", 0))))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            if msg.get("wait"):
                return {"sent": await task}
            await asyncio.sleep(0)        # let argument errors surface now
            if task.done():
                return {"sent": task.result()}
            return {}
        if cmd == "stats":
            return {"stats": {d.name: dict(d.count) for d in self.select(sel)}}
        if cmd == "capture":
            out = {}
            for d in self.select(sel):
                out[d.name] = {k: list(v) for k, v in d.capture.items()}
                if msg.get("clear"):
                    for v in d.capture.values():
                        v.clear()
            return {"capture": out}
        if cmd == "stop":
            self.stopped.set()
            return {}
        raise CommandError(f"unknown command {cmd!r}")

    async def close(self):
        for task in list(self.tasks):
            task.cancel()
        for link in self.links:
            for joint in list(link.joints):
                joint.kill()
            for server in link.servers:
                server.close()
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        if self.control_server is not None:
            self.control_server.close()
        try:
            os.unlink(self.control_path)
        except FileNotFoundError:
            pass
        if self.orphaned and self.workdir:
            # Nobody is left to read the log or remove the directory.
            shutil.rmtree(self.workdir, ignore_errors=True)


async def serve(config, control_path, workdir=None):
    relay = Relay(config, control_path, workdir)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stopped.set)
    try:
        await relay.open()
        print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
        await relay.stopped.wait()
    finally:
        await relay.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--control", required=True, help="UNIX socket path for commands")
    ap.add_argument("--config", required=True, help="JSON text, or @FILE")
    ap.add_argument("--workdir", help="a directory to remove on exit if the owner of the "
                    "control socket went away without a stop command")
    args = ap.parse_args(argv)
    text = args.config
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    asyncio.run(serve(json.loads(text), args.control, args.workdir))


# --- the client ------------------------------------------------------------------------------

class RelayError(Exception):
    """The relay refused a command or is gone."""


class ImpairRelay:
    """A running relay process and its owning control connection."""

    def __init__(self, proc, workdir, sock):
        self.proc, self.workdir, self.sock = proc, workdir, sock
        self.file = sock.makefile("rwb")

    @classmethod
    def start(cls, netns, config, timeout_s=10.0):
        """Start the relay inside namespace `netns` (a name for `ip netns exec`; None: here)
        with `config` (a dict, see the module docstring); returns it when it is ready."""
        workdir = tempfile.mkdtemp(prefix="impair-")
        control = os.path.join(workdir, "control.sock")
        argv = [sys.executable, os.path.abspath(__file__), "--control", control,
                "--config", json.dumps(config), "--workdir", workdir]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        with open(os.path.join(workdir, "relay.log"), "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=log)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
            line = proc.stdout.readline() if ready else b""
            if not line.startswith(b"{"):
                raise RelayError(f"relay did not start: {cls._log(workdir)}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            sock.connect(control)
        except BaseException:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return cls(proc, workdir, sock)

    @staticmethod
    def _log(workdir):
        try:
            with open(os.path.join(workdir, "relay.log"), "rb") as f:
                return f.read().decode(errors="replace")[-3000:]
        except OSError:
            return ""

    def log(self):
        """The relay's stderr so far (for failure messages)."""
        return self._log(self.workdir)

    def command(self, cmd, **args):
        """One command; its reply (without "ok"). Raises RelayError on refusal."""
        self.file.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self.file.flush()
        line = self.file.readline()
        if not line:
            raise RelayError(f"relay closed the control socket: {self.log()}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RelayError(reply["error"])
        return reply

    def set(self, sel, proto="udp", **params):
        """Set impairments (module docstring lists them) on directions `sel`."""
        self.command("set", sel=sel, proto=proto, **params)

    def reset(self, sel="*"):
        self.command("reset", sel=sel)

    def partition(self, on=True, sel="*", tcp="hold"):
        self.command("partition", on=on, sel=sel, tcp=tcp)

    def kill_tcp(self, sel="*"):
        """Reset every relayed TCP connection; how many there were."""
        return self.command("kill_tcp", sel=sel)["killed"]

    def inject(self, sel, rate, duration_s=None, count=None, mode="random", size=None,
               prefix=None, last=None, wait=False):
        """Forge datagrams in direction `sel` ("a>b": toward b, as if from a). With `wait`,
        returns when done, with how many were sent."""
        args = {"rate": rate, "mode": mode, "wait": wait}
        if last is not None:
            args["last"] = last
        if duration_s is not None:
            args["duration_s"] = duration_s
        if count is not None:
            args["count"] = count
        if size is not None:
            args["size"] = size
        if prefix is not None:
            args["prefix"] = prefix.hex() if isinstance(prefix, bytes) else prefix
        old = self.sock.gettimeout()
        if wait:
            self.sock.settimeout(None)
        try:
            return self.command("inject", sel=sel, **args).get("sent")
        finally:
            self.sock.settimeout(old)

    def stats(self, sel="*"):
        """{direction: {counter: n}}"""
        return self.command("stats", sel=sel)["stats"]

    def capture(self, sel, clear=False):
        """{direction: {kind: [seqno, ...]}} for directions with capture on."""
        return self.command("capture", sel=sel, clear=clear)["capture"]

    def stop(self):
        """Stop the relay and remove everything it made; its exit code."""
        if self.proc.poll() is None:
            try:
                self.command("stop")
            except (OSError, RelayError, ValueError):
                pass
        for closing in (self.file, self.sock):
            try:
                closing.close()
            except OSError:
                pass
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


CLONE_NEWNET = 0x40000000


def netns_socket(netns, family=socket.AF_INET, type=socket.SOCK_DGRAM):
    """A socket created inside network namespace `netns` (a name under /var/run/netns), for a
    test endpoint without a process of its own. A socket stays in the namespace it was made
    in, so a short-lived thread enters the namespace (setns is per thread) and makes it."""
    result = {}

    def make():
        fd = os.open(os.path.join("/var/run/netns", netns), os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            result["sock"] = socket.socket(family, type)
        except BaseException as e:
            result["error"] = e
        finally:
            os.close(fd)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]


if __name__ == "__main__":
    main()
