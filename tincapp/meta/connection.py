"""One meta connection's state machine (tinc: connection_t + meta.c + protocol_auth.c), sans-I/O.

Owns, for one TCP connection: the ID exchange, the stream-mode SPTPS session, the ACK exchange,
the framing of requests into SPTPS records (and of the data that follows PACKET and
SPTPS_PACKET), answering PINGs and the PING/PONG and authentication timeouts. It does not own
the graph, flooding, routing or key files: it reports events (events.py) and the daemon
decides. No sockets, no clock (`now` is an argument, monotonic seconds), no global randomness
(`rng(n)` is injected). Not thread-safe.

Stream layout (spec meta-protocol.md 2.1, 3, 4.8, 4.9):

    plain text    "0 <name> 17.7\\n"                       ID, one line each way
    then SPTPS    [len:2|type:1|...]                       handshake, then records of type 0
                  record = "<request text>\\n"             exactly one request per record
                  record "17 <n>\\n" -> next record = n-byte frame        (PACKET)
                  record "21 <n>\\n" -> next n bytes raw, outside SPTPS    (SPTPS_PACKET)

The initiator (the side that called connect()) sends its ID first; the responder answers with
its ID only after accepting the initiator's. Both then start SPTPS at once, so the responder's
KEX may follow its ID line in the same segment: line mode ends at the exact byte after "\\n".

Use:
    c = MetaConnection(my_name=..., my_key=..., outgoing=True, peer_name="bob",
                       lookup_peer=settings_for, udp_port="655", rng=os.urandom, now=now)
    c.start(now)                       # outgoing, once the TCP connect completed
    c.receive(data, now)               # bytes from the socket
    while (ev := c.next_event()) is not None: ...
    sock.send(c.data_to_send())
    timer.at(c.next_deadline())  ->  c.handle_deadline(now)
"""
import enum
from collections import deque
from dataclasses import dataclass
from typing import Callable

from tincapp.errors import SptpsError, WireError
from tincapp.meta.events import (Activated, ConnectionFailed, PacketReceived, PongReceived,
                                 RequestReceived, SptpsPacketReceived)
from tincapp.meta.messages import (INT16_MAX, MAX_REQUEST_LEN, OPTION_CLAMP_MSS,
                                   OPTION_FLAGS_MASK, OPTION_INDIRECT, OPTION_PMTU_DISCOVERY,
                                   OPTION_TCPONLY, PROT_MAJOR, PROT_MINOR, Ack, Id, Message,
                                   Packet, Ping, Pong, Request, SptpsPacket, Termreq,
                                   options_minor, request_number, request_text)
from tincapp.meta.messages import format as format_request
from tincapp.meta.messages import parse as parse_request
from tincapp.sptps.session import HandshakeCompleted, RecordReceived, SptpsSession
from tincapp.sptps.wire import meta_label

PING_INTERVAL_S = 60.0
PING_TIMEOUT_S = 5.0

# SPTPS_PACKET: the raw part starts with two 6-byte node IDs; tinc closes on anything shorter.
MIN_SPTPS_PACKET_LEN = 12
# What we send at most: a standard tinc buffers the raw part in its MAXBUFSIZE (2176-byte)
# input buffer and closes the connection when more is announced.
MAX_SPTPS_PACKET_SEND_LEN = MAX_REQUEST_LEN
# DEVIATION: we accept anything %hd can announce (tinc: its buffer size). Jumbogram tinc
# builds have a larger buffer; refusing early buys nothing.

# Requests the connection answers itself or that need a payload: not for send_request().
_OWN_REQUESTS = (Id, Ack, Ping, Pong, Packet, SptpsPacket)


class State(enum.Enum):
    """What the connection awaits."""
    AWAIT_CONNECT = "await connect"      # outgoing: the TCP connect has not completed yet
    AWAIT_ID = "await ID"                # plain-text line mode until the peer's ID line
    AWAIT_HANDSHAKE = "await handshake"  # SPTPS started; its first handshake is running
    AWAIT_ACK = "await ACK"              # our ACK is out; only the peer's ACK is allowed
    ACTIVE = "active"                    # every request allowed (tinc: allow_request = ALL)
    CLOSED = "closed"                    # failed or closed: inert


@dataclass(frozen=True)
class PeerSettings:
    """What the daemon knows about a peer from hosts/<name> and our own configuration.

    public_key: the peer's Ed25519 key, None if hosts/<name> has none.
    options:    our option flags for this connection, computed as tinc's send_ack does
                (IndirectData/TCPOnly from our config or the peer's host file, PMTUDiscovery,
                ClampMSS). The protocol minor is added here.
    weight:     the Weight override (peer's host file first, then ours); None = measure.
    clamp_mss:  ClampMSS from the peer's host file: forces CLAMP_MSS on the edge options.
    """
    public_key: bytes | None
    options: int = OPTION_PMTU_DISCOVERY | OPTION_CLAMP_MSS
    weight: int | None = None
    clamp_mss: bool | None = None

    def __post_init__(self):
        if self.public_key is not None and len(self.public_key) != 32:
            raise ValueError("public_key must be 32 bytes")
        if not 0 <= self.options <= OPTION_FLAGS_MASK:
            raise ValueError("options are the low 24 bits; the minor is added on sending")


class _Failure(Exception):
    """Unwinds the receive path to _fail(); never leaves this module."""

    def __init__(self, reason, tarpit=True):
        super().__init__(reason)
        self.reason = reason
        self.tarpit = tarpit


def _c_half(n: int) -> int:
    """n / 2 with C's truncation toward zero."""
    return -((-n) // 2) if n < 0 else n // 2


class MetaConnection:
    """One meta connection, from the ID exchange to its end."""

    def __init__(self, *, my_name: str, my_key, outgoing: bool,
                 lookup_peer: Callable[[str], PeerSettings | None], udp_port: str, rng,
                 now: float, peer_name: str | None = None,
                 ping_interval_s: float = PING_INTERVAL_S,
                 ping_timeout_s: float = PING_TIMEOUT_S):
        if outgoing and peer_name is None:
            raise ValueError("an outgoing connection needs the name of the node it calls")
        try:
            Id(my_name)
            Ack(udp_port, 0, 0)
        except WireError as e:
            raise ValueError(f"bad own name or port: {e}") from None
        self.my_name = my_name
        self.outgoing = bool(outgoing)
        self.peer_name = peer_name
        self.udp_port = udp_port
        self.ping_interval_s = float(ping_interval_s)
        self.ping_timeout_s = float(ping_timeout_s)
        self._my_key = my_key
        self._lookup_peer = lookup_peer
        self._rng = rng

        self.state = State.AWAIT_CONNECT if self.outgoing else State.AWAIT_ID
        self._settings = None          # PeerSettings, once the peer's ID was accepted
        self._sptps = None
        self._id_sent_at = None        # tinc's c->start: the weight is measured from here
        self._my_options = 0           # our flags as sent in ACK (without the minor)
        self._my_weight = None
        self.options = None            # the edge options, once active
        # tinc sets last_ping_time when the connection is created; the authentication
        # timeout and the first PING both count from it.
        self._created_at = now
        self._last_ping_at = now
        self._pinged = False           # a PING is outstanding

        self._line = bytearray()       # the peer's ID line while in AWAIT_ID
        self._frame_len = 0            # > 0: the next record is a PACKET frame of this length
        self._raw_len = 0              # > 0: this many raw SPTPS_PACKET bytes follow
        self._raw = bytearray()
        self._outbuf = bytearray()
        self._events = deque()

    def __repr__(self):
        role = "outgoing" if self.outgoing else "incoming"
        return f"<MetaConnection {role} {self.peer_name or '?'} {self.state.name}>"

    # --- output to the shell and the daemon ------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the TCP stream since the last call."""
        out = bytes(self._outbuf)
        self._outbuf.clear()
        return out

    @property
    def pending_output_len(self) -> int:
        """Bytes queued and not yet drained (for tinc's random early drop of PACKETs)."""
        return len(self._outbuf)

    def next_event(self):
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def pop_events(self) -> list:
        """All events not yet taken, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    @property
    def active(self) -> bool:
        return self.state is State.ACTIVE

    @property
    def pinged(self) -> bool:
        """A PING of ours is waiting for its PONG (DUMP_CONNECTIONS shows this)."""
        return self._pinged

    @property
    def peer_minor(self) -> int | None:
        """The protocol minor from the peer's ACK, once active."""
        return None if self.options is None else options_minor(self.options)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Called by the shell when the outgoing TCP connect completed: send our ID."""
        if self.state is not State.AWAIT_CONNECT:
            raise RuntimeError(f"start() in state {self.state.name}")
        self._send_id(now)                           # emits ID
        self.state = State.AWAIT_ID

    def close(self) -> None:
        """Called when the daemon ends the connection. Queued output stays for the shell to
        flush; no event is reported."""
        self.state = State.CLOSED                                 # closed by the daemon

    def _fail(self, reason, tarpit):
        activated = self.state is State.ACTIVE
        self.state = State.CLOSED                                 # emits ConnectionFailed
        self._outbuf.clear()
        self._events.append(ConnectionFailed(self.peer_name, reason, tarpit, activated))

    # --- sending ---------------------------------------------------------------------------

    def _send_id(self, now):
        # The project always announces 17.7 (tinc would send 17.1 to a node whose key it
        # lacks; we never connect to such a node).
        self._outbuf += format_request(Id(self.my_name, PROT_MAJOR, PROT_MINOR)) + b"\n"
        self._id_sent_at = now

    def _drain_sptps(self):
        for _type, data in self._sptps.pop_outgoing():
            self._outbuf += data

    def _send_record(self, data: bytes):
        # COMPAT: tinc sends every request, and every PACKET frame, as one record of type 0.
        self._sptps.send_record(0, data)
        self._drain_sptps()

    def _send_message(self, msg: Message):
        # One request per record, with its newline (tinc's send_request + send_meta).
        self._send_record(format_request(msg) + b"\n")

    def _usable(self) -> bool:
        """True if the daemon may send; False (drop silently) once closed."""
        if self.state is State.CLOSED:
            return False
        if self.state is not State.ACTIVE:
            raise RuntimeError(f"cannot send on a connection in state {self.state.name}")
        return True

    def send_request(self, msg: Message) -> None:
        """Queue one request. Only once active (tinc sends nothing but the ACK before);
        dropped silently once closed. ID, ACK, PING and PONG are the connection's own;
        PACKET and SPTPS_PACKET go through send_packet / send_sptps_packet."""
        if isinstance(msg, _OWN_REQUESTS):
            raise ValueError(f"{msg.request.name} is sent by the connection itself")
        if self._usable():
            self._send_message(msg)

    def forward_request(self, line: bytes) -> None:
        """Queue a received request text unchanged (flooding and routing forward the exact
        text, not a re-formatted message)."""
        if self._usable():
            self._send_record(request_text(line) + b"\n")

    def send_packet(self, frame: bytes) -> None:
        """Queue a VPN frame as PACKET: "17 <len>", then the frame as the next record."""
        if not len(frame) or len(frame) > INT16_MAX:
            # "17 0" would announce no frame at all (the peer reads no record for it).
            raise ValueError(f"PACKET frame of {len(frame)} bytes")
        if self._usable():
            self._send_message(Packet(len(frame)))
            self._send_record(bytes(frame))

    def send_sptps_packet(self, data: bytes) -> None:
        """Queue "21 <len>" and then `data` (dst id, src id, datagram) raw on the stream.
        Only for peers that announced minor >= 7; older ones need REQ_KEY subtype 21."""
        if not MIN_SPTPS_PACKET_LEN <= len(data) <= MAX_SPTPS_PACKET_SEND_LEN:
            raise ValueError(f"SPTPS_PACKET of {len(data)} bytes")
        if self._usable():
            if self.peer_minor < 7:
                raise RuntimeError(f"peer minor {self.peer_minor} < 7: binary SPTPS_PACKET "
                                   "unsupported")
            self._send_message(SptpsPacket(len(data)))
            # The raw bytes bypass SPTPS; the record above is already in the buffer.
            self._outbuf += data

    # --- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Called when bytes arrived on the TCP stream (in order, any split). Events are
        queued; a protocol violation ends in a ConnectionFailed event, never an exception."""
        if self.state is State.AWAIT_CONNECT:
            raise RuntimeError("receive() before start()")
        view = memoryview(bytes(data))
        try:
            while view and self.state is not State.CLOSED:
                if self.state is State.AWAIT_ID:
                    used = self._receive_line_bytes(view, now)
                elif self._raw_len:
                    used = self._receive_raw(view)
                else:
                    used, events = self._sptps.receive_stream_record(view)
                    self._drain_sptps()
                    for ev in events:
                        self._handle_sptps_event(ev, now)
                        if self.state is State.CLOSED:
                            break
                view = view[used:]
        except _Failure as f:
            self._fail(f.reason, f.tarpit)
        except SptpsError as e:
            self._fail(f"SPTPS: {e}", tarpit=True)
        except WireError as e:
            self._fail(f"bad request: {e}", tarpit=True)

    def _receive_line_bytes(self, view, now):
        """Called when bytes arrive in AWAIT_ID: collect the ID line; return the bytes used
        (up to and including its \\n)."""
        end = bytes(view[:MAX_REQUEST_LEN]).find(b"\n")
        if end < 0:
            self._line += view
            # COMPAT: tinc's line buffer holds MAXBUFSIZE bytes ("Input buffer full").
            if len(self._line) >= MAX_REQUEST_LEN:
                raise _Failure("ID line too long")
            return len(view)
        self._line += view[:end + 1]
        if len(self._line) > MAX_REQUEST_LEN:
            raise _Failure("ID line too long")
        line = request_text(self._line)
        self._line.clear()
        self._receive_id(line, now)
        return end + 1

    def _receive_id(self, line, now):
        """Called when the peer's first line is complete (tinc's id_h, in its order of
        checks)."""
        request = request_number(line)
        if request is not Request.ID:
            raise _Failure(f"unauthorized request {request.name}: expected ID")
        msg = parse_request(line)
        if msg.is_control or msg.is_invitation:
            raise _Failure("control and invitation connections are not handled by "
                           "MetaConnection", tarpit=False)
        if msg.name == self.my_name:
            raise _Failure(f"peer claims our own name {msg.name}")
        if self.outgoing and msg.name != self.peer_name:
            raise _Failure(f"peer is {msg.name} instead of {self.peer_name}")
        self.peer_name = msg.name
        minor = 0 if msg.minor is None else msg.minor
        if msg.major != PROT_MAJOR:
            raise _Failure(f"peer uses incompatible version {msg.major}.{minor}")
        settings = self._lookup_peer(msg.name)
        if settings is None:
            raise _Failure(f"peer had unknown identity ({msg.name})")
        # DEVIATION: tinc would continue with the legacy RSA protocol in the next two cases
        # (it lowers the minor to 1 when it lacks the peer's key); tincapp does not implement
        # it and closes without tarpitting, so the peer sees the refusal at once.
        if settings.public_key is None:
            raise _Failure(f"no Ed25519 public key known for {msg.name}; tinc would fall back "
                           "to the legacy protocol, which tincapp does not implement",
                           tarpit=False)
        if minor < 1:
            # COMPAT: tinc's rollback protection for nodes whose Ed25519 key it knows.
            raise _Failure(f"peer tries to roll back protocol version to {msg.major}.{minor}")
        if minor < 2:
            raise _Failure(f"peer speaks the legacy protocol ({msg.major}.{minor}): it lacks "
                           "our Ed25519 key or runs with ExperimentalProtocol = no",
                           tarpit=False)
        self._settings = settings
        if not self.outgoing:
            self._send_id(now)                                     # emits ID (responder)
        if self.outgoing:
            label = meta_label(self.my_name, self.peer_name)
        else:
            label = meta_label(self.peer_name, self.my_name)
        self._sptps = SptpsSession(initiator=self.outgoing, datagram=False, label=label,
                                   my_key=self._my_key, peer_public=settings.public_key,
                                   rng=self._rng)
        self._sptps.start()                                        # emits our KEX
        self._drain_sptps()
        self.state = State.AWAIT_HANDSHAKE                         # consumed the peer's ID

    def _handle_sptps_event(self, ev, now):
        """Called when the SPTPS session reports an event for one received record."""
        if isinstance(ev, HandshakeCompleted):
            if self.state is State.AWAIT_HANDSHAKE:
                self._send_ack(now)                                # emits ACK
                self.state = State.AWAIT_ACK
            # A later handshake (a rekey the peer started) changes nothing here.
        elif isinstance(ev, RecordReceived):
            self._receive_record(ev.data, now)

    def _send_ack(self, now):
        s = self._settings
        flags = s.options
        # COMPAT: send_ack: TCPONLY implies INDIRECT and excludes PMTU_DISCOVERY.
        if flags & OPTION_TCPONLY:
            flags = (flags | OPTION_INDIRECT) & ~OPTION_PMTU_DISCOVERY
        if s.weight is not None:
            weight = s.weight
        else:
            # tinc: milliseconds since we sent our ID, a rough RTT estimate, computed from
            # whole microseconds (as from a timeval) so that float noise cannot lose a ms.
            weight = max(0, round((now - self._id_sent_at) * 1e6) // 1000)
        self._my_options = flags
        self._my_weight = weight
        self._send_message(Ack(self.udp_port, weight, flags | PROT_MINOR << 24))

    def _receive_record(self, data, now):
        """Called when one application record arrived (any type 0..127: tinc ignores the
        record type on meta connections)."""
        if self._frame_len:
            # The record after "17 <len>" is the frame, whatever it contains.
            if len(data) != self._frame_len:
                raise _Failure(f"PACKET announced {self._frame_len} bytes, the record has "
                               f"{len(data)}")
            self._frame_len = 0
            self._events.append(PacketReceived(bytes(data)))
            return
        line = request_text(data)
        request = request_number(line)
        if self.state is State.AWAIT_ACK:
            if request is not Request.ACK:
                raise _Failure(f"unauthorized request {request.name}: expected ACK")
            self._receive_ack(parse_request(line))
            return
        msg = parse_request(line)
        if isinstance(msg, (Id, Ack)):
            # DEVIATION: tinc would run id_h/ack_h again on an active connection.
            raise _Failure(f"{request.name} on an active connection")
        if isinstance(msg, Ping):
            self._send_message(Pong())                            # consumes PING, emits PONG
        elif isinstance(msg, Pong):
            self._pinged = False                                  # consumes PONG
            self._events.append(PongReceived())
        elif isinstance(msg, Termreq):
            # COMPAT: termreq_h "fails", so tinc closes (and tarpits) like on any error.
            raise _Failure("peer sent TERMREQ")
        elif isinstance(msg, Packet):
            # COMPAT: "17 0" announces nothing; the next record is a request again.
            self._frame_len = msg.length
        elif isinstance(msg, SptpsPacket):
            if msg.length and msg.length < MIN_SPTPS_PACKET_LEN:
                # tinc reads the bytes first and then closes; the outcome is the same.
                raise _Failure(f"SPTPS_PACKET of {msg.length} bytes is too short")
            self._raw_len = msg.length                            # COMPAT: 0 = nothing
        else:
            self._events.append(RequestReceived(msg, line))

    def _receive_ack(self, msg):
        """Called when the peer's ACK arrived (tinc's ack_h): combine options, activate."""
        s = self._settings
        mine, theirs = self._my_options, msg.options
        # PMTU_DISCOVERY survives only if both sides want it.
        if not mine & theirs & OPTION_PMTU_DISCOVERY:
            mine &= ~OPTION_PMTU_DISCOVERY
            theirs &= ~OPTION_PMTU_DISCOVERY
        options = mine | theirs
        if s.clamp_mss is not None:
            options = options | OPTION_CLAMP_MSS if s.clamp_mss else options & ~OPTION_CLAMP_MSS
        self.options = options
        self.state = State.ACTIVE                                 # consumes ACK
        self._events.append(Activated(
            name=self.peer_name, port=msg.port, peer_weight=msg.weight,
            my_weight=self._my_weight, weight=_c_half(msg.weight + self._my_weight),
            options=options))

    def _receive_raw(self, view):
        """Called when bytes arrive while SPTPS_PACKET bytes are due: collect them; return
        the bytes used."""
        take = min(self._raw_len - len(self._raw), len(view))
        self._raw += view[:take]
        if len(self._raw) == self._raw_len:
            self._events.append(SptpsPacketReceived(bytes(self._raw)))
            self._raw.clear()
            self._raw_len = 0
        return take

    # --- timers ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When handle_deadline must run next; None once closed."""
        if self.state is State.CLOSED:
            return None
        if self.state is not State.ACTIVE:
            return self._created_at + self.ping_timeout_s
        if self._pinged:
            return self._last_ping_at + self.ping_timeout_s
        return self._last_ping_at + max(self.ping_interval_s, self.ping_timeout_s)

    def handle_deadline(self, now: float) -> None:
        """Called when next_deadline() has passed: time out, or send a PING. Early calls do
        nothing."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return
        if self.state is State.AWAIT_CONNECT:
            self._fail("timeout while connecting", tarpit=False)
        elif self.state is not State.ACTIVE:
            # COMPAT: tinc tarpits connections that time out during authentication.
            self._fail("timeout during authentication", tarpit=True)
        elif self._pinged:
            self._fail(f"no PONG within {self.ping_timeout_s:g} s", tarpit=False)
        else:
            self._send_message(Ping())                            # emits PING
            self._last_ping_at = now
            self._pinged = True
