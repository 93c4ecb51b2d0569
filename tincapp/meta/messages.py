"""Meta-protocol requests (protocol 17.7): one frozen dataclass per request, `parse` and `format`.

Owns the request numbers, the text layout of every request tinc 1.1 handles on a meta
connection, and tinc's syntax checks (field counts, name rule, numeric ranges). It does not
decide what a request means (flooding, routing, graph: the daemon), does not frame requests
into SPTPS records (connection.py) and does no I/O. Spec: meta-protocol.md 2 and 4; the
tinc sources are src/protocol_*.c.

Conventions:
* `format(msg)` returns the request text WITHOUT the trailing newline: that is the form tinc
  logs, de-duplicates (seen_request) and forwards. The connection appends the "\\n" when it
  puts a request into an SPTPS record.
* `parse(line)` takes that text; like tinc it strips one trailing "\\n" if present and stops
  at a NUL byte (tinc handles the record as a C string).
* Fields are separated by ASCII whitespace; extra trailing fields are ignored (tinc parses with
  sscanf). Text is decoded as Latin-1 so that every byte string survives the round trip.
* Constructing a message runs the same checks as parsing one and raises the same WireError:
  a message that exists is one tinc would accept.
* Numbers: the flooding nonce and option words are lowercase hex (%x), everything else
  decimal (%d). Ports and addresses are kept as text: tinc echoes non-numeric ones verbatim.

DEVIATION (stricter than sscanf, never matters for text tinc generates): a numeric field must be
the whole whitespace-separated token ("12abc" is refused, where sscanf would take 12 and read
"abc" as the next field); %x fields take no sign and no "0x"; values outside the C type are
refused; a field longer than tinc's 2048-character limit is refused rather than split in two,
except the final REQ_KEY argument, which tinc truncates (COMPAT, kept).
"""
import enum
import re
from dataclasses import dataclass
from typing import ClassVar

from tincapp.errors import WireError
from tincapp.mesh.subnets import Subnet, parse_subnet

PROT_MAJOR = 17
PROT_MINOR = 7

MAX_STRING_LEN = 2048       # tinc's MAX_STRING "%2048s"
MAX_REQUEST_LEN = 2176      # tinc's MAXBUFSIZE: longest request tinc sends; its line buffer

# Connection and edge option bits (the ACK's options word). The top 8 bits carry the sender's
# protocol minor; the low 24 bits are these flags.
OPTION_INDIRECT = 0x0001
OPTION_TCPONLY = 0x0002
OPTION_PMTU_DISCOVERY = 0x0004
OPTION_CLAMP_MSS = 0x0008
OPTION_FLAGS_MASK = 0x00FFFFFF

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
UINT32_MAX = (1 << 32) - 1
INT16_MAX = (1 << 15) - 1
MIN_MTU_INFO = 512          # MTU_INFO below this closes the connection (tinc's MINMTU)


def options_minor(options: int) -> int:
    """The protocol minor a node announced in the top byte of its options."""
    return (options >> 24) & 0xFF


def new_nonce(rng) -> int:
    """A nonce for a flooded request we originate: a random 32-bit number (tinc:
    prng(UINT32_MAX)). Only its uniqueness matters; `rng(n)` returns n random bytes."""
    return int.from_bytes(rng(4), "big")


class Request(enum.IntEnum):
    """Request numbers, named as in tinc's request_t."""
    ID = 0
    METAKEY = 1
    CHALLENGE = 2
    CHAL_REPLY = 3
    ACK = 4
    STATUS = 5
    ERROR = 6
    TERMREQ = 7
    PING = 8
    PONG = 9
    ADD_SUBNET = 10
    DEL_SUBNET = 11
    ADD_EDGE = 12
    DEL_EDGE = 13
    KEY_CHANGED = 14
    REQ_KEY = 15
    ANS_KEY = 16
    PACKET = 17
    CONTROL = 18
    REQ_PUBKEY = 19
    ANS_PUBKEY = 20
    SPTPS_PACKET = 21
    UDP_INFO = 22
    MTU_INFO = 23


# Requests that are flooded to every active connection and de-duplicated by their text.
FLOODED = frozenset({Request.ADD_SUBNET, Request.DEL_SUBNET, Request.ADD_EDGE,
                     Request.DEL_EDGE, Request.KEY_CHANGED})

# Numbers tinc knows but refuses on a meta connection of an SPTPS peer, and why.
_REFUSED = {
    Request.METAKEY: "legacy (RSA) authentication request, not supported",
    Request.CHALLENGE: "legacy (RSA) authentication request, not supported",
    Request.CHAL_REPLY: "legacy (RSA) authentication request, not supported",
    # COMPAT: tinc's request table has no handler for these; receiving one closes the link.
    Request.STATUS: "tinc has no handler for it",
    Request.ERROR: "tinc has no handler for it",
    Request.CONTROL: "only valid on a control connection",
    Request.REQ_PUBKEY: "only valid as a REQ_KEY subtype",
    Request.ANS_PUBKEY: "only valid as a REQ_KEY subtype",
}

_NAME_RE = re.compile(r"[A-Za-z0-9_]+\Z")
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+\Z")
_VERSION_RE = re.compile(r"([0-9]{1,2})(?:\.([0-9]{1,3}))?")
_WHITESPACE = frozenset(" \t\n\r\x0b\x0c\0")


def check_id(name) -> bool:
    """tinc's check_id: a non-empty string of ASCII letters, digits and underscores."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


def request_text(record: bytes) -> bytes:
    """The request text tinc sees in one received record or line: one trailing newline
    removed, cut at the first NUL (tinc parses a C string)."""
    record = bytes(record)
    if record.endswith(b"\n"):
        record = record[:-1]
    nul = record.find(b"\0")
    return record if nul < 0 else record[:nul]


# --- field checks shared by construction and parsing -----------------------------------------

class Message:
    """Base class of all requests. `request` is the request number."""
    request: ClassVar[Request]

    def _fail(self, problem):
        raise WireError(f"{self.request.name}: {problem}")

    def _check_name(self, field):
        value = getattr(self, field)
        if not check_id(value):
            self._fail(f"invalid name {value!r} in {field}")

    def _check_token(self, field, optional=False):
        """A text field: 1-2048 characters, no whitespace or NUL, each a byte (Latin-1)."""
        value = getattr(self, field)
        if optional and value is None:
            return
        if (not isinstance(value, str) or not value or len(value) > MAX_STRING_LEN
                or not _WHITESPACE.isdisjoint(value) or max(map(ord, value)) > 0xFF):
            self._fail(f"invalid {field} {value!r}")

    def _check_int(self, field, lo=INT32_MIN, hi=INT32_MAX):
        value = getattr(self, field)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            self._fail(f"{field} {value!r} outside {lo}..{hi}")

    def _check_nonce(self):
        # Any non-negative number: receivers skip it with %x, tinc sends a random uint32.
        if not isinstance(self.nonce, int) or isinstance(self.nonce, bool) or self.nonce < 0:
            self._fail(f"invalid nonce {self.nonce!r}")

    def _fields(self) -> list:
        """The fields after the request number, as text."""
        return []


class _Fields:
    """The whitespace-separated fields after the request number, with sscanf-like
    conversions that raise WireError naming the request."""

    def __init__(self, request: Request, tokens: list):
        self.request = request
        self._tokens = tokens

    def __len__(self):
        return len(self._tokens)

    def fail(self, problem):
        raise WireError(f"{self.request.name}: {problem}")

    def need(self, n, layout):
        if len(self._tokens) < n:
            self.fail(f"{len(self._tokens)} fields, need {n} ({layout})")

    def text(self, i, what, truncate=False) -> str:
        token = self._tokens[i]
        if len(token) > MAX_STRING_LEN:
            if not truncate:
                self.fail(f"{what} longer than {MAX_STRING_LEN} characters")
            # COMPAT: %2048s stops after 2048 characters; as the last field the rest is ignored.
            token = token[:MAX_STRING_LEN]
        return token.decode("latin-1")

    def int(self, i, what, lo=INT32_MIN, hi=INT32_MAX) -> int:
        token = self._tokens[i].decode("latin-1")
        if not _INT_RE.match(token):
            self.fail(f"{what} {token[:40]!r} is not a decimal number")
        value = int(token)
        if not lo <= value <= hi:
            self.fail(f"{what} {value} outside {lo}..{hi}")
        return value

    def hex(self, i, what, hi=UINT32_MAX) -> int:
        token = self._tokens[i].decode("latin-1")
        if not _HEX_RE.match(token):
            self.fail(f"{what} {token[:40]!r} is not hexadecimal")
        value = int(token, 16)
        if hi is not None and value > hi:
            self.fail(f"{what} {token} does not fit 32 bits")
        return value

    def nonce(self) -> int:
        # COMPAT: the nonce is skipped with %*x, so any length of hex digits is accepted.
        self.need(1, "nonce")
        return self.hex(0, "nonce", hi=None)


# --- authentication --------------------------------------------------------------------------

#  ID:   0 <name> <major>.<minor>          e.g.  0 alice 17.7
#  Parsed as "%*d %2048s %2d.%3d"; name and major are required, a missing minor reads as None
#  (tinc then keeps minor 0). Control clients send "0 ^<cookie> 0", invitees "0 ?<key> 17.7".
@dataclass(frozen=True)
class Id(Message):
    request: ClassVar[Request] = Request.ID
    name: str
    major: int = PROT_MAJOR
    minor: int | None = PROT_MINOR

    def __post_init__(self):
        if self.is_control or self.is_invitation:
            self._check_token("name")
        else:
            self._check_name("name")
        self._check_int("major", 0, 99)
        if self.minor is not None:
            self._check_int("minor", 0, 999)

    @property
    def is_control(self):
        return isinstance(self.name, str) and self.name.startswith("^")

    @property
    def is_invitation(self):
        return isinstance(self.name, str) and self.name.startswith("?")

    def _fields(self):
        version = f"{self.major}" if self.minor is None else f"{self.major}.{self.minor}"
        return [self.name, version]

    @classmethod
    def _parse(cls, f):
        f.need(2, "name major.minor")
        # COMPAT: %2d.%3d reads at most 2 and 3 digits and ignores what follows; a version
        # without ".minor" leaves the minor unset.
        version = _VERSION_RE.match(f.text(1, "version"))
        if not version:
            f.fail(f"version {f.text(1, 'version')[:40]!r} does not start with a number")
        minor = None if version.group(2) is None else int(version.group(2))
        return cls(f.text(0, "name"), int(version.group(1)), minor)


#  ACK:  4 <udp port> <weight> <options:hex>        e.g.  4 655 23 700000c
#  Parsed as "%*d %2048s %d %x"; all three required. The port is text (tinc: a string).
@dataclass(frozen=True)
class Ack(Message):
    request: ClassVar[Request] = Request.ACK
    port: str
    weight: int
    options: int

    def __post_init__(self):
        self._check_token("port")
        self._check_int("weight")
        self._check_int("options", 0, UINT32_MAX)

    @property
    def minor(self):
        return options_minor(self.options)

    def _fields(self):
        return [self.port, str(self.weight), f"{self.options:x}"]

    @classmethod
    def _parse(cls, f):
        f.need(3, "port weight options")
        return cls(f.text(0, "port"), f.int(1, "weight"), f.hex(2, "options"))


# --- keepalive and teardown: the number alone; anything after it is ignored --------------------

#  TERMREQ:  7
@dataclass(frozen=True)
class Termreq(Message):
    request: ClassVar[Request] = Request.TERMREQ

    @classmethod
    def _parse(cls, f):
        return cls()


#  PING:  8
@dataclass(frozen=True)
class Ping(Message):
    request: ClassVar[Request] = Request.PING

    @classmethod
    def _parse(cls, f):
        return cls()


#  PONG:  9
@dataclass(frozen=True)
class Pong(Message):
    request: ClassVar[Request] = Request.PONG

    @classmethod
    def _parse(cls, f):
        return cls()


# --- flooded requests (second field: the random nonce, %x) -----------------------------------

#  ADD_SUBNET:  10 <nonce:hex> <owner> <subnet>      e.g.  10 3fa1c2d9 bob 10.2.0.0/16
#  DEL_SUBNET:  11 <nonce:hex> <owner> <subnet>      e.g.  11 82c4 bob 10.2.0.0/16#5
#  Parsed as "%*d %*x %2048s %2048s"; owner must pass check_id, subnet tinc's str2net
#  (mesh/subnets.py, which also writes the canonical text: #weight only when not 10).
@dataclass(frozen=True)
class _SubnetRequest(Message):
    nonce: int
    owner: str
    subnet: Subnet

    def __post_init__(self):
        self._check_nonce()
        self._check_name("owner")
        if not isinstance(self.subnet, Subnet) or self.subnet.owner not in (None, self.owner):
            self._fail(f"subnet {self.subnet!r} is not a Subnet of {self.owner}")
        # The text names the owner once; the Subnet we hand out carries it, ready for the
        # subnet table.
        object.__setattr__(self, "subnet", self.subnet.with_owner(self.owner))

    def _fields(self):
        return [f"{self.nonce:x}", self.owner, str(self.subnet)]

    @classmethod
    def _parse(cls, f):
        nonce = f.nonce()
        f.need(3, "nonce owner subnet")
        try:
            subnet = parse_subnet(f.text(2, "subnet"))
        except WireError as e:
            f.fail(f"invalid subnet string: {e}")
        return cls(nonce, f.text(1, "owner"), subnet)


@dataclass(frozen=True)
class AddSubnet(_SubnetRequest):
    request: ClassVar[Request] = Request.ADD_SUBNET


@dataclass(frozen=True)
class DelSubnet(_SubnetRequest):
    request: ClassVar[Request] = Request.DEL_SUBNET


#  ADD_EDGE:  12 <nonce:hex> <from> <to> <addr> <port> <options:hex> <weight>
#                [<local addr> <local port>]
#  e.g.  12 6b8b4567 alice bob 198.51.100.7 655 700000c 41 192.168.1.10 655
#  Parsed as "%*d %*x %s %s %s %s %x %d %s %s": exactly 6 or 8 fields must convert (7 is an
#  error). Names must be valid and differ. Addresses/ports are text: numeric, "unspec", or
#  anything a node echoes back verbatim.
@dataclass(frozen=True)
class AddEdge(Message):
    request: ClassVar[Request] = Request.ADD_EDGE
    nonce: int
    from_name: str
    to_name: str
    address: str
    port: str
    options: int
    weight: int
    local_address: str | None = None
    local_port: str | None = None

    def __post_init__(self):
        self._check_nonce()
        self._check_name("from_name")
        self._check_name("to_name")
        if self.from_name == self.to_name:
            self._fail(f"edge from {self.from_name} to itself")
        self._check_token("address")
        self._check_token("port")
        self._check_int("options", 0, UINT32_MAX)
        self._check_int("weight")
        if (self.local_address is None) != (self.local_port is None):
            self._fail("local address and local port go together")
        self._check_token("local_address", optional=True)
        self._check_token("local_port", optional=True)

    def _fields(self):
        fields = [f"{self.nonce:x}", self.from_name, self.to_name, self.address, self.port,
                  f"{self.options:x}", str(self.weight)]
        if self.local_address is not None:
            fields += [self.local_address, self.local_port]
        return fields

    @classmethod
    def _parse(cls, f):
        nonce = f.nonce()
        layout = "nonce from to address port options weight [local_address local_port]"
        f.need(7, layout)
        args = [f.text(1, "from"), f.text(2, "to"), f.text(3, "address"), f.text(4, "port"),
                f.hex(5, "options"), f.int(6, "weight")]
        if len(f) == 8:
            f.fail(f"7 fields after the nonce, need 6 or 8 ({layout})")
        if len(f) >= 9:
            args += [f.text(7, "local address"), f.text(8, "local port")]
        return cls(nonce, *args)


#  DEL_EDGE:  13 <nonce:hex> <from> <to>               e.g.  13 327b23c6 alice bob
@dataclass(frozen=True)
class DelEdge(Message):
    request: ClassVar[Request] = Request.DEL_EDGE
    nonce: int
    from_name: str
    to_name: str

    def __post_init__(self):
        self._check_nonce()
        self._check_name("from_name")
        self._check_name("to_name")
        if self.from_name == self.to_name:
            self._fail(f"edge from {self.from_name} to itself")

    def _fields(self):
        return [f"{self.nonce:x}", self.from_name, self.to_name]

    @classmethod
    def _parse(cls, f):
        nonce = f.nonce()
        f.need(3, "nonce from to")
        return cls(nonce, f.text(1, "from"), f.text(2, "to"))


#  KEY_CHANGED:  14 <nonce:hex> <name>                 e.g.  14 1b2c3d4e carol
@dataclass(frozen=True)
class KeyChanged(Message):
    request: ClassVar[Request] = Request.KEY_CHANGED
    nonce: int
    name: str

    def __post_init__(self):
        self._check_nonce()
        # COMPAT: key_changed_h does not run check_id; an unknown name is ignored later.
        self._check_token("name")

    def _fields(self):
        return [f"{self.nonce:x}", self.name]

    @classmethod
    def _parse(cls, f):
        nonce = f.nonce()
        f.need(2, "nonce name")
        return cls(nonce, f.text(1, "name"))


# --- routed requests -------------------------------------------------------------------------

#  REQ_KEY:  15 <from> <to> [<subtype> [<argument>]]
#  Parsed as "%*d %s %s %d" (at least the names), then per subtype "%*d %*s %*s %*d %2048s".
#  The subtype picks the class:
#     absent or 0  ReqKeyLegacy        15 alice bob            (never send: tinc aborts on it)
#     15           ReqSptpsStart       15 alice bob 15 <b64 KEX datagram>
#     19           ReqPubkey           15 alice bob 19
#     20           AnsPubkey           15 alice bob 20 <43-char public key>
#     21           ReqKeySptpsPacket   15 alice bob 21 <b64 SPTPS datagram>
#     other        ReqKeyOther         forwarded as is, ignored at the destination
#  UDP_INFO and MTU_INFO are requests of their own (22, 23), not REQ_KEY subtypes.
#  COMPAT: a missing or undecodable argument does not close the connection in tinc (the request
#  is logged and ignored at the destination), so it parses here: an empty argument is "absent".
@dataclass(frozen=True)
class ReqKeyBase(Message):
    request: ClassVar[Request] = Request.REQ_KEY
    subtype: ClassVar[int | None] = None
    from_name: str
    to_name: str

    def __post_init__(self):
        self._check_name("from_name")
        self._check_name("to_name")

    def _fields(self):
        return [self.from_name, self.to_name]


@dataclass(frozen=True)
class ReqKeyLegacy(ReqKeyBase):
    """The legacy key request. Parse and forward it; never originate it."""


@dataclass(frozen=True)
class ReqPubkey(ReqKeyBase):
    subtype: ClassVar[int] = Request.REQ_PUBKEY

    def _fields(self):
        return [self.from_name, self.to_name, str(int(self.subtype))]


@dataclass(frozen=True)
class _ReqKeyWithArgument(ReqKeyBase):
    argument: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.argument != "":
            self._check_token("argument")

    def _fields(self):
        fields = [self.from_name, self.to_name, str(int(self.subtype))]
        return fields + [self.argument] if self.argument else fields


@dataclass(frozen=True)
class ReqSptpsStart(_ReqKeyWithArgument):
    """argument: tinc base64 of the initiator's first (KEX) datagram."""
    subtype: ClassVar[int] = Request.REQ_KEY


@dataclass(frozen=True)
class AnsPubkey(_ReqKeyWithArgument):
    """argument: the sender's Ed25519 public key, 43 characters of tinc base64."""
    subtype: ClassVar[int] = Request.ANS_PUBKEY


@dataclass(frozen=True)
class ReqKeySptpsPacket(_ReqKeyWithArgument):
    """argument: tinc base64 of one SPTPS datagram (for next hops older than minor 7)."""
    subtype: ClassVar[int] = Request.SPTPS_PACKET


@dataclass(frozen=True)
class ReqKeyOther(ReqKeyBase):
    """A subtype this protocol version does not define. Kept so it can be forwarded."""
    reqno: int = 0
    argument: str = ""

    def __post_init__(self):
        super().__post_init__()
        self._check_int("reqno")
        if self.reqno in _REQ_KEY_SUBTYPES:
            self._fail(f"subtype {self.reqno} has its own class")
        if self.argument != "":
            self._check_token("argument")

    def _fields(self):
        fields = [self.from_name, self.to_name, str(self.reqno)]
        return fields + [self.argument] if self.argument else fields


_REQ_KEY_SUBTYPES = {0: ReqKeyLegacy, int(Request.REQ_KEY): ReqSptpsStart,
                     int(Request.REQ_PUBKEY): ReqPubkey, int(Request.ANS_PUBKEY): AnsPubkey,
                     int(Request.SPTPS_PACKET): ReqKeySptpsPacket}


def _parse_req_key(f):
    f.need(2, "from to [subtype [argument]]")
    names = (f.text(0, "from"), f.text(1, "to"))
    # DEVIATION: tinc reads a non-numeric subtype as "absent", i.e. a legacy REQ_KEY, which
    # makes the destination abort; we refuse it.
    reqno = f.int(2, "subtype") if len(f) >= 3 else 0
    argument = f.text(3, "argument", truncate=True) if len(f) >= 4 else ""
    cls = _REQ_KEY_SUBTYPES.get(reqno)
    if cls is None:
        return ReqKeyOther(*names, reqno, argument)
    if cls in (ReqKeyLegacy, ReqPubkey):
        return cls(*names)
    return cls(*names, argument)


#  ANS_KEY:  16 <from> <to> <key> <cipher> <digest> <maclength> <compression> [<addr> <port>]
#  SPTPS form: 16 bob alice <b64 handshake datagram> -1 -1 -1 <compression> [<addr> <port>]
#  Parsed as "%*d %s %s %s %d %d %lu %d %s %s": the first 7 required. A relay may append the
#  reflexive UDP address of <from>.
#  COMPAT: maclength is %lu, which takes "-1" (as ULONG_MAX); kept as the signed number written.
@dataclass(frozen=True)
class AnsKey(Message):
    request: ClassVar[Request] = Request.ANS_KEY
    from_name: str
    to_name: str
    key: str
    cipher: int
    digest: int
    maclength: int
    compression: int
    address: str | None = None
    port: str | None = None

    def __post_init__(self):
        self._check_name("from_name")
        self._check_name("to_name")
        self._check_token("key")
        self._check_int("cipher")
        self._check_int("digest")
        self._check_int("maclength", -(1 << 63), (1 << 64) - 1)
        self._check_int("compression")
        self._check_token("address", optional=True)
        self._check_token("port", optional=True)
        if self.port is not None and self.address is None:
            self._fail("port without address")

    @classmethod
    def sptps(cls, from_name, to_name, key, compression, address=None, port=None):
        """The SPTPS form: cipher, digest and maclength are -1."""
        return cls(from_name, to_name, key, -1, -1, -1, compression, address, port)

    def _fields(self):
        fields = [self.from_name, self.to_name, self.key, str(self.cipher), str(self.digest),
                  str(self.maclength), str(self.compression)]
        return fields + [v for v in (self.address, self.port) if v is not None]

    @classmethod
    def _parse(cls, f):
        f.need(7, "from to key cipher digest maclength compression [address port]")
        extra = [f.text(i, what) for i, what in ((7, "address"), (8, "port")) if len(f) > i]
        return cls(f.text(0, "from"), f.text(1, "to"), f.text(2, "key"), f.int(3, "cipher"),
                   f.int(4, "digest"), f.int(5, "maclength", -(1 << 63), (1 << 64) - 1),
                   f.int(6, "compression"), *extra)


# --- data over TCP: the request announces what follows ----------------------------------------

#  PACKET:  17 <length>          then ONE more SPTPS record holding exactly <length> bytes:
#                                a full Ethernet frame (14-byte header even in router mode)
#  Parsed as "%*d %hd": negative closes the connection. COMPAT: 0 means no record follows.
@dataclass(frozen=True)
class _LengthRequest(Message):
    length: int

    def __post_init__(self):
        self._check_int("length", 0, INT16_MAX)

    def _fields(self):
        return [str(self.length)]

    @classmethod
    def _parse(cls, f):
        f.need(1, "length")
        # DEVIATION: %hd wraps values above 32767 to 16 bits; we refuse them.
        return cls(f.int(0, "length", 0, INT16_MAX))


@dataclass(frozen=True)
class Packet(_LengthRequest):
    request: ClassVar[Request] = Request.PACKET


#  SPTPS_PACKET:  21 <length>    then <length> RAW bytes on the TCP stream, outside SPTPS:
#     +-----------+-----------+------------------------------------------+
#     | dst id:6  | src id:6  | SPTPS datagram of the src-dst tunnel     |
#     +-----------+-----------+------------------------------------------+
#  Parsed as "%*d %hd". The connection checks the length against what tinc can buffer.
@dataclass(frozen=True)
class SptpsPacket(_LengthRequest):
    request: ClassVar[Request] = Request.SPTPS_PACKET


#  UDP_INFO:  22 <from> <to> <addr> <port>        e.g.  22 carol alice 203.0.113.9 655
@dataclass(frozen=True)
class UdpInfo(Message):
    request: ClassVar[Request] = Request.UDP_INFO
    from_name: str
    to_name: str
    address: str
    port: str

    def __post_init__(self):
        self._check_name("from_name")
        self._check_name("to_name")
        self._check_token("address")
        self._check_token("port")

    def _fields(self):
        return [self.from_name, self.to_name, self.address, self.port]

    @classmethod
    def _parse(cls, f):
        f.need(4, "from to address port")
        return cls(f.text(0, "from"), f.text(1, "to"), f.text(2, "address"), f.text(3, "port"))


#  MTU_INFO:  23 <from> <to> <mtu>                  e.g.  23 carol alice 1451
#  mtu < 512 closes the connection; larger values are clamped to 1518 by the receiver (the
#  daemon's business: the message keeps the number as sent).
@dataclass(frozen=True)
class MtuInfo(Message):
    request: ClassVar[Request] = Request.MTU_INFO
    from_name: str
    to_name: str
    mtu: int

    def __post_init__(self):
        self._check_name("from_name")
        self._check_name("to_name")
        self._check_int("mtu", MIN_MTU_INFO, INT32_MAX)

    def _fields(self):
        return [self.from_name, self.to_name, str(self.mtu)]

    @classmethod
    def _parse(cls, f):
        f.need(3, "from to mtu")
        return cls(f.text(0, "from"), f.text(1, "to"), f.int(2, "mtu"))


_PARSERS = {
    Request.ID: Id._parse,
    Request.ACK: Ack._parse,
    Request.TERMREQ: Termreq._parse,
    Request.PING: Ping._parse,
    Request.PONG: Pong._parse,
    Request.ADD_SUBNET: AddSubnet._parse,
    Request.DEL_SUBNET: DelSubnet._parse,
    Request.ADD_EDGE: AddEdge._parse,
    Request.DEL_EDGE: DelEdge._parse,
    Request.KEY_CHANGED: KeyChanged._parse,
    Request.REQ_KEY: _parse_req_key,
    Request.ANS_KEY: AnsKey._parse,
    Request.PACKET: Packet._parse,
    Request.SPTPS_PACKET: SptpsPacket._parse,
    Request.UDP_INFO: UdpInfo._parse,
    Request.MTU_INFO: MtuInfo._parse,
}


def request_number(line: bytes) -> Request:
    """The request number of a request text. Raises WireError for "bogus data" (no leading
    number) and for numbers tinc does not know."""
    tokens = request_text(line).split()
    # DEVIATION: tinc takes atoi() of the text, so "8junk" is a PING there; we want digits.
    if not tokens or not tokens[0].isdigit():
        raise WireError(f"bogus data: {bytes(line)[:40]!r} does not start with a request number")
    try:
        return Request(int(tokens[0]))
    except ValueError:
        raise WireError(f"unknown request {int(tokens[0])}") from None


def parse(line: bytes) -> Message:
    """Parse one request text (see the module docstring). Raises WireError."""
    request = request_number(line)
    if request in _REFUSED:
        raise WireError(f"{request.name}: {_REFUSED[request]}")
    tokens = request_text(line).split()     # bytes.split(): ASCII whitespace, like isspace()
    return _PARSERS[request](_Fields(request, tokens[1:]))


def format(msg: Message) -> bytes:
    """The request text of `msg`, without the trailing newline."""
    return " ".join([str(int(msg.request))] + msg._fields()).encode("latin-1")
