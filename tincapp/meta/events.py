"""What a meta connection reports to the daemon (connection.py emits these, in order).

Plain frozen dataclasses, no behaviour beyond small accessors. No I/O.
"""
from dataclasses import dataclass

from tincapp.errors import RemoteProtocolError
from tincapp.meta.messages import Message, options_minor

NODE_ID_LEN = 6     # first 6 bytes of SHA-512(name), data-path.md 3


@dataclass(frozen=True)
class Activated:
    """The peer's ACK was accepted: every request is allowed now (tinc: allow_request = ALL).

    The daemon now sends everything it knows and creates the edge myself -> name with the
    address of this TCP connection, the port replaced by `port`.
    """
    name: str
    port: str               # the peer's UDP port, as text (tinc keeps it a string)
    peer_weight: int        # weight from the peer's ACK
    my_weight: int          # weight we sent in our ACK
    weight: int             # edge weight: (peer_weight + my_weight) / 2, C integer division
    options: int            # edge options: combined flags, the peer's minor in the top byte

    @property
    def peer_minor(self) -> int:
        return options_minor(self.options)


@dataclass(frozen=True)
class RequestReceived:
    """A request for the daemon. `line` is the text as received (no newline): forward and
    de-duplicate that, never format(msg), which may differ (nonce digits, extra fields)."""
    msg: Message
    line: bytes


@dataclass(frozen=True)
class PongReceived:
    """A PONG arrived. On an outgoing connection tinc then resets the reconnect back-off and
    remembers the peer's address as working."""


@dataclass(frozen=True)
class PacketReceived:
    """A PACKET (17): a complete Ethernet frame (14-byte header even in router mode) to route
    as if it came from the peer. tinc drops frames longer than 1661 bytes; so should the
    daemon (the connection stays up)."""
    frame: bytes


@dataclass(frozen=True)
class SptpsPacketReceived:
    """The raw bytes that followed an SPTPS_PACKET (21): dst id, src id, SPTPS datagram."""
    data: bytes

    @property
    def dst_id(self) -> bytes:
        return self.data[:NODE_ID_LEN]

    @property
    def src_id(self) -> bytes:
        return self.data[NODE_ID_LEN:2 * NODE_ID_LEN]

    @property
    def datagram(self) -> bytes:
        return self.data[2 * NODE_ID_LEN:]


@dataclass(frozen=True)
class ConnectionFailed:
    """The connection is over; nothing more will be sent or reported.

    tarpit: tinc would park the socket unread instead of closing it (a peer that broke the
    protocol or timed out during authentication sees silence, not a reset). `activated` tells
    whether the connection had reached ACTIVE (tinc then announces DEL_EDGE for its edge).
    """
    peer: str | None
    reason: str
    tarpit: bool
    activated: bool

    def error(self) -> RemoteProtocolError:
        return RemoteProtocolError(self.peer or "<unidentified peer>", self.reason)
