"""Every configuration variable tinc 1.1 knows, and how each value is parsed.

Owns: the variable table (tinc's src/tincctl.c variables[] plus what the daemon reads
elsewhere), the value syntaxes (yes/no, C %d integers, ports, `host [port]` addresses,
Proxy, node names, public keys) and the policy for unknown variables. Subnet text itself
(MAC/IPv4/IPv6, #weight, canonical form) is tincapp.mesh.subnets'; this module adds the check
configuration files get (no host bits). Pure functions, no I/O. Does not read files
(parse.py) and does not decide defaults that depend on other variables or on the host
(netconf.py).

Value parsers raise ValueError with a plain reason; parse_value() turns that into a
ConfigError naming the entry's file and line.
"""
import difflib
import enum
import logging
import re
from dataclasses import dataclass

from tincapp import keys
from tincapp.config.parse import Entry, ascii_lower
from tincapp.errors import KeyFileError, WireError
from tincapp.mesh.subnets import Subnet
from tincapp.mesh.subnets import parse_subnet as _mesh_parse_subnet

log = logging.getLogger(__name__)

INT_MIN = -(1 << 31)
INT_MAX = (1 << 31) - 1
DEFAULT_PORT = 655
# 1500 bytes payload + 14 Ethernet header + 4 VLAN tag (src/net.h, without jumbograms)
MTU = 1518


class Kind(enum.Enum):
    """What a value must look like."""
    BOOL = "yes/no"
    INT = "integer"
    DURATION = "integer seconds"
    STRING = "string"
    PATH = "file name"
    NAME = "node name"
    PORT = "port"
    ADDRESS = "host [port]"
    LISTEN_ADDRESS = "address [port]"
    SUBNET = "subnet"
    CHOICE = "choice"
    PUBLIC_KEY = "Ed25519 public key"
    PROXY = "proxy"


@dataclass(frozen=True)
class Variable:
    """One variable of tinc's table.

    server: read from the own configuration (tinc.conf, conf.d, hosts/MYNAME).
    host: read from the host file of the node it concerns (tincctl's VAR_HOST).
    default: the value tinc uses when the variable is absent, if it is a constant; None when
    there is none or it is computed (see note).
    choices: (spelling, meaning) pairs, compared case-insensitively.
    minimum: smaller values are an error (tinc refuses to start too, unless noted).
    legacy: meaningful only to tinc's legacy (RSA) protocol: recognised, ignored.
    in_tincctl: False for variables the daemon reads that tincctl.c's table lacks.
    """
    name: str
    kind: Kind
    server: bool = False
    host: bool = False
    multiple: bool = False
    safe: bool = False
    obsolete: bool = False
    legacy: bool = False
    default: object = None
    choices: tuple = ()
    minimum: int | None = None
    in_tincctl: bool = True
    note: str = ""


def _v(name, kind, flags, **kw):
    """Shorthand: flags is a string of S (server), H (host), M (multiple), X (safe)."""
    return Variable(name, kind, server="S" in flags, host="H" in flags, multiple="M" in flags,
                    safe="X" in flags, **kw)


_YESNO = (("yes", "yes"), ("no", "no"))

# Scope and flags from src/tincctl.c variables[]; defaults and checks from where the daemon
# reads each one (src/net_setup.c unless noted).
TABLE = (
    # --- server configuration
    _v("AddressFamily", Kind.CHOICE, "SX", default="any",
       choices=(("ipv4", "ipv4"), ("ipv6", "ipv6"), ("any", "any"))),
    _v("AutoConnect", Kind.BOOL, "SX", default=True),
    _v("BindToAddress", Kind.LISTEN_ADDRESS, "SM", note="'*' = any address; also binds "
       "outgoing connections"),
    _v("BindToInterface", Kind.STRING, "S", note="src/net_socket.c"),
    _v("Broadcast", Kind.CHOICE, "SX", default="mst",
       choices=(("no", "no"), ("mst", "mst"), ("yes", "mst"), ("direct", "direct"))),
    _v("BroadcastSubnet", Kind.SUBNET, "SMX"),
    _v("ConnectTo", Kind.NAME, "SMX", note="src/net_socket.c; the own name is skipped"),
    _v("DecrementTTL", Kind.BOOL, "SX", default=False),
    _v("Device", Kind.STRING, "S", note="default /dev/net/tun on Linux for tun/tap"),
    _v("DeviceStandby", Kind.BOOL, "S", default=False),
    _v("DeviceType", Kind.CHOICE, "S",
       choices=tuple((t, t) for t in ("tun", "tap", "dummy", "raw_socket", "multicast",
                                      "fd", "uml", "vde")),
       note="default tun in router mode, tap otherwise (src/linux/device.c)"),
    _v("DirectOnly", Kind.BOOL, "SX", default=False),
    _v("Ed25519PrivateKeyFile", Kind.PATH, "S", note="default CONFBASE/ed25519_key.priv "
       "(src/keys.c); relative to CONFBASE, where tincd chdir()s"),
    _v("ExperimentalProtocol", Kind.BOOL, "S", note="default yes if the private key reads"),
    _v("Forwarding", Kind.CHOICE, "S", default="internal",
       choices=(("off", "off"), ("internal", "internal"), ("kernel", "kernel"))),
    _v("FWMark", Kind.INT, "S", default=0, note="src/net_socket.c"),
    _v("GraphDumpFile", Kind.PATH, "S", obsolete=True),
    _v("Hostnames", Kind.BOOL, "S", default=False),
    _v("IffOneQueue", Kind.BOOL, "S", default=False, note="src/linux/device.c"),
    _v("Interface", Kind.STRING, "S", note="default NETNAME on Linux"),
    _v("InvitationExpire", Kind.DURATION, "S", default=604800),
    _v("KeyExpire", Kind.DURATION, "SX", default=3600, note="legacy rekey timer only"),
    _v("ListenAddress", Kind.LISTEN_ADDRESS, "SM", note="'*' = any address"),
    _v("LocalDiscovery", Kind.BOOL, "SX", default=True, note="src/net_packet.c"),
    _v("LogLevel", Kind.INT, "S", note="src/tincd.c; only without -d"),
    _v("MACExpire", Kind.DURATION, "SX", default=600),
    _v("MaxConnectionBurst", Kind.INT, "SX", default=10, minimum=1),
    _v("MaxOutputBufferSize", Kind.INT, "SX", default=10 * MTU),
    _v("MaxTimeout", Kind.DURATION, "SX", default=900, minimum=1),
    _v("Mode", Kind.CHOICE, "SX", default="router",
       choices=(("router", "router"), ("switch", "switch"), ("hub", "hub"))),
    _v("Name", Kind.STRING, "S", note="required; $VAR / $HOST expansion (netconf)"),
    _v("PingInterval", Kind.DURATION, "SX", default=60, note="< 1 means 86400"),
    _v("PingTimeout", Kind.DURATION, "SX", default=5, note="< 1 or > PingInterval means "
       "PingInterval"),
    _v("PriorityInheritance", Kind.BOOL, "S", default=False),
    _v("PrivateKey", Kind.STRING, "S", obsolete=True, legacy=True),
    _v("PrivateKeyFile", Kind.PATH, "S", legacy=True),
    _v("ProcessPriority", Kind.CHOICE, "S",
       choices=(("low", "low"), ("normal", "normal"), ("high", "high")), note="src/tincd.c"),
    _v("Proxy", Kind.PROXY, "S"),
    _v("ReplayWindow", Kind.INT, "SX", minimum=0, note="tinc: 16 bytes for SPTPS; unset "
       "means the project's own default (tincapp/sptps/session.py)"),
    _v("Sandbox", Kind.CHOICE, "S",
       choices=(("off", "off"), ("normal", "normal"), ("high", "high")), note="src/tincd.c"),
    _v("ScriptsExtension", Kind.STRING, "S", default=""),
    _v("ScriptsInterpreter", Kind.STRING, "S"),
    _v("StrictSubnets", Kind.BOOL, "SX", default=False),
    _v("TunnelServer", Kind.BOOL, "SX", default=False, note="implies StrictSubnets"),
    _v("UDPDiscovery", Kind.BOOL, "SX", default=True),
    _v("UDPDiscoveryKeepaliveInterval", Kind.DURATION, "SX", default=10),
    _v("UDPDiscoveryInterval", Kind.DURATION, "SX", default=2),
    _v("UDPDiscoveryTimeout", Kind.DURATION, "SX", default=30),
    _v("MTUInfoInterval", Kind.DURATION, "SX", default=5),
    _v("UDPInfoInterval", Kind.DURATION, "SX", default=5),
    _v("UDPRcvBuf", Kind.INT, "S", default=1024 * 1024, minimum=0, note="0 = OS default"),
    _v("UDPSndBuf", Kind.INT, "S", default=1024 * 1024, minimum=0, note="0 = OS default"),
    # COMPAT: tinc treats any UPnP value other than yes/udponly as no.
    _v("UPnP", Kind.CHOICE, "S", default="no",
       choices=(("yes", "yes"), ("udponly", "udponly"), ("no", "no"))),
    _v("UPnPDiscoverWait", Kind.DURATION, "S", default=5, note="src/upnp.c"),
    _v("UPnPRefreshPeriod", Kind.DURATION, "S", default=60, note="src/upnp.c"),
    _v("VDEGroup", Kind.STRING, "S", note="src/vde_device.c"),
    _v("VDEPort", Kind.INT, "S", note="src/vde_device.c"),
    # --- host configuration
    _v("Address", Kind.ADDRESS, "HM", note="src/address_cache.c; port defaults to Port"),
    _v("Cipher", Kind.STRING, "SH", legacy=True),
    _v("ClampMSS", Kind.BOOL, "SHX", default=True, note="src/protocol_auth.c"),
    _v("Compression", Kind.INT, "SHX", default=0, minimum=0,
       note="level this node wants to receive: 0-9 zlib, 10-11 LZO, 12 LZ4"),
    _v("Digest", Kind.STRING, "SH", legacy=True),
    _v("Ed25519PublicKey", Kind.PUBLIC_KEY, "H", note="src/keys.c"),
    _v("Ed25519PublicKeyFile", Kind.PATH, "SH", note="default hosts/NAME (src/keys.c)"),
    _v("IndirectData", Kind.BOOL, "SHX", default=False),
    _v("MACLength", Kind.INT, "SH", legacy=True),
    _v("PMTU", Kind.INT, "SH", minimum=1, note="src/protocol_auth.c; caps the path MTU"),
    _v("PMTUDiscovery", Kind.BOOL, "SH", note="default yes unless TCPOnly"),
    _v("Port", Kind.PORT, "H", default=DEFAULT_PORT, note="0 = pick a free port"),
    _v("PublicKey", Kind.STRING, "H", obsolete=True, legacy=True),
    _v("PublicKeyFile", Kind.PATH, "SH", obsolete=True, legacy=True),
    _v("Subnet", Kind.SUBNET, "HMX"),
    _v("TCPOnly", Kind.BOOL, "SHX", default=False, note="implies IndirectData"),
    _v("Weight", Kind.INT, "HX", note="src/protocol_auth.c; peer's host file, then own"),
    # --- read by the daemon, missing from tincctl.c's table
    _v("DisableBuggyPeers", Kind.BOOL, "S", default=False, in_tincctl=False),
)

VARIABLES = {ascii_lower(v.name): v for v in TABLE}

# tinc's compression levels (src/compression.h): 0 none, 1-9 zlib, 10/11 LZO, 12 LZ4.
COMPRESSION_LEVELS = range(0, 13)


def lookup_variable(name: str) -> Variable | None:
    """The table entry for name (case-insensitive), None if tinc does not know it."""
    return VARIABLES.get(ascii_lower(name))


UNKNOWN_POLICIES = ("error", "warn")


def check_variable(entry: Entry, in_host_file: bool, unknown: str = "error") -> Variable | None:
    """The Variable entry names; None if it is unknown and unknown="warn".

    in_host_file says whether entry comes from a hosts/ file (else tinc.conf, conf.d or -o).
    A variable of the other kind only gets a warning, as `tinc fsck` gives: tinc merges
    tinc.conf with hosts/MYNAME and the daemon reads either kind from both.
    """
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
    var = lookup_variable(entry.name)
    if var is None:
        if not entry.name:
            reason = ("line starts with a space, tab or '=' (a variable name must start in "
                      "column 0, and only '#' in column 0 starts a comment)")
        else:
            reason = f"unknown variable '{entry.name}'"
            close = difflib.get_close_matches(ascii_lower(entry.name), VARIABLES, n=1)
            if close:
                reason += f" (did you mean {VARIABLES[close[0]].name}?)"
        # DEVIATION: tinc ignores unknown variables without a word (even `tinc fsck` skips
        # them), so a misspelt variable silently leaves its default in place. Here that is
        # an error unless the caller asked for warnings only (unknown="warn").
        if unknown == "error":
            raise entry.error(reason)
        log.warning("%s: %s; ignored", entry.where, reason)
        return None
    if var.obsolete:
        log.warning("%s: obsolete variable %s", entry.where, var.name)
    elif var.legacy:
        log.info("%s: %s only concerns tinc's legacy protocol; ignored", entry.where, var.name)
    if entry.file is not None:
        if in_host_file and not var.host:
            log.warning("%s: server variable %s found in a host file", entry.where, var.name)
        elif not in_host_file and not var.server:
            log.warning("%s: host variable %s found in the server configuration", entry.where,
                        var.name)
    return var


# ---------------------------------------------------------------------------------------------
# Scalar syntaxes

_C_SPACE = " \t\n\v\f\r"
_C_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def c_int_prefix(text: str) -> tuple[int, int]:
    """sscanf(text, "%d%n"): (value, characters consumed). ValueError if no integer.

    DEVIATION: C's behaviour outside the int range is undefined (glibc wraps); such values are
    an error here.
    """
    m = _C_INT.match(text)
    if not m:
        raise ValueError(f"integer expected, got {text!r}")
    value = int(m.group(1))
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"integer {m.group(1)} out of range")
    return value, m.end()


def parse_int(text: str) -> int:
    """tinc's get_config_int(): C %d, leading integer only.

    COMPAT: trailing characters are ignored ("10s" is 10); parse_value() warns about them.
    """
    return c_int_prefix(text)[0]


def parse_bool(text: str) -> bool:
    """tinc's get_config_bool(): "yes" or "no", any case."""
    low = ascii_lower(text)
    if low == "yes":
        return True
    if low == "no":
        return False
    raise ValueError(f'"yes" or "no" expected, got {text!r}')


def check_id(name: str) -> bool:
    """tinc's check_id(): a non-empty node name of ASCII letters, digits and '_'."""
    return bool(name) and all(ch == "_" or ("0" <= ch <= "9") or ("a" <= ch <= "z")
                              or ("A" <= ch <= "Z") for ch in name)


def parse_name(text: str) -> str:
    if not check_id(text):
        raise ValueError(f"invalid node name {text!r}: only a-z, A-Z, 0-9 and _ are allowed")
    return text


_STRTOL_DECIMAL = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+\Z")


def parse_port(text: str) -> int | str:
    """A Port value: a number 0-65535, or a service name (returned as str, unresolved).

    COMPAT: tinc's is_decimal() (strtol: leading whitespace and a sign allowed, nothing
    after) decides whether the value is a number; anything else is looked up as a service.
    """
    if _STRTOL_DECIMAL.match(text):
        port = int(text.strip(_C_SPACE))
        if not 0 <= port <= 65535:
            raise ValueError(f"port {text!r} out of range 0-65535")
        return port
    if not text or any(ch in _C_SPACE for ch in text):
        # DEVIATION: tinc would pass this to getaddrinfo() and fail only when connecting.
        raise ValueError(f"invalid port or service name {text!r}")
    return text


@dataclass(frozen=True)
class Address:
    """`host [port]` of Address, BindToAddress and ListenAddress.

    host None means any address (BindToAddress/ListenAddress "*"). port is as written (a
    number or a service name) or None for the default; resolution happens when used.
    """
    host: str | None
    port: str | None

    def __str__(self):
        host = "*" if self.host is None else self.host
        return host if self.port is None else f"{host} {self.port}"


def _split_address(text: str) -> tuple[str, str | None]:
    # COMPAT: tinc splits at the first space only: "host port".
    host, sep, port = text.partition(" ")
    if not sep:
        port = None
    if any(ch in _C_SPACE for ch in host) or (port is not None and not port):
        # DEVIATION: tinc passes such strings to getaddrinfo() and fails per connection.
        raise ValueError(f"expected 'host [port]', got {text!r}")
    if port is not None:
        # COMPAT: getaddrinfo() reads a numeric service with strtoul(), so "host  655" works;
        # numbers are kept in their plain form.
        number = parse_port(port)
        if isinstance(number, int):
            port = str(number)
    return host, port


def parse_address(text: str) -> Address:
    host, port = _split_address(text)
    return Address(host, port)


def parse_listen_address(text: str) -> Address:
    host, port = _split_address(text)
    # COMPAT: "*" means the wildcard address (src/net_setup.c add_listen_address).
    return Address(None if host == "*" else host, port)


def parse_choice(var: Variable, text: str) -> str:
    low = ascii_lower(text)
    for spelling, meaning in var.choices:
        if low == spelling:
            return meaning
    allowed = ", ".join(s for s, _ in var.choices)
    raise ValueError(f"invalid {var.name} {text!r}: expected one of {allowed}")


def parse_public_key(text: str) -> bytes:
    try:
        return keys.public_key_from_b64(text, "Ed25519PublicKey")
    except KeyFileError as e:
        raise ValueError(str(e)) from e


@dataclass(frozen=True)
class Proxy:
    """A Proxy value. type is none, socks4, socks4a, socks5, http or exec."""
    type: str
    host: str | None = None
    port: str | None = None
    user: str | None = None
    password: str | None = None
    command: str | None = None


_PROXY_TYPES = ("none", "socks4", "socks4a", "socks5", "http", "exec")


def parse_proxy(text: str) -> Proxy:
    """src/net_setup.c: `TYPE [host port [user [pass]]]` or `exec COMMAND`."""
    ptype, _, rest = text.partition(" ")
    ptype = ascii_lower(ptype)
    if ptype not in _PROXY_TYPES:
        raise ValueError(f"unknown proxy type {ptype!r}")
    if ptype == "none":
        return Proxy("none")
    if ptype == "exec":
        if not rest:
            raise ValueError("argument expected for proxy type exec")
        return Proxy("exec", command=rest)
    # COMPAT: fields are separated by single spaces; the password is the rest of the line.
    # DEVIATION: tinc checks host and port before splitting off the user, so "h  p" passes
    # with an empty port; here every field must be non-empty.
    parts = rest.split(" ", 3)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError("host and port argument expected for proxy")
    user = parts[2] if len(parts) > 2 and parts[2] else None
    password = parts[3] if len(parts) > 3 and parts[3] else None
    return Proxy(ptype, host=parts[0], port=parts[1], user=user, password=password)


# ---------------------------------------------------------------------------------------------
# Subnets: the syntax (str2net) belongs to tincapp.mesh.subnets; configuration adds tinc's
# subnetcheck().

def parse_subnet(text: str) -> Subnet:
    """A Subnet value in a configuration file: `ADDRESS[/PREFIX][#WEIGHT]` (src/conf_net.c).

    tinc's str2net() (MAC, IPv4, IPv6, #weight, prefix range) plus subnetcheck(): no address
    bits may be set beyond the prefix (10.0.0.1/8 is refused here, though ADD_SUBNET accepts
    it from peers).
    """
    try:
        subnet = _mesh_parse_subnet(text)
    except WireError as e:
        raise ValueError(str(e)) from e
    if not subnet.is_canonical():
        raise ValueError(f"network address and prefix length do not match: {text!r} "
                         f"(address bits set beyond /{subnet.prefixlength})")
    return subnet


# ---------------------------------------------------------------------------------------------
# Typed values of entries

def parse_value(var: Variable, entry: Entry):
    """The typed value of entry for var; ConfigError naming the entry's file and line.

    DEVIATION: tinc logs most bad values and carries on with the default (a bad yes/no, a
    non-number, a bad Subnet in a host file...); a bad value is always an error here, so the
    daemon never starts half-configured.
    """
    text = entry.value
    try:
        kind = var.kind
        if kind is Kind.BOOL:
            return parse_bool(text)
        if kind in (Kind.INT, Kind.DURATION):
            value, used = c_int_prefix(text)
            if used != len(text):
                log.warning("%s: %s: trailing characters %r ignored (tinc reads the leading "
                            "integer only)", entry.where, var.name, text[used:])
            if var.minimum is not None and value < var.minimum:
                raise ValueError(f"{var.name} must be at least {var.minimum}, got {value}")
            if var.name == "Compression" and value not in COMPRESSION_LEVELS:
                raise ValueError(f"compression level {value} is unknown to tinc (0-12)")
            return value
        if kind is Kind.NAME:
            return parse_name(text)
        if kind is Kind.PORT:
            return parse_port(text)
        if kind is Kind.ADDRESS:
            return parse_address(text)
        if kind is Kind.LISTEN_ADDRESS:
            return parse_listen_address(text)
        if kind is Kind.SUBNET:
            return parse_subnet(text)
        if kind is Kind.CHOICE:
            return parse_choice(var, text)
        if kind is Kind.PUBLIC_KEY:
            return parse_public_key(text)
        if kind is Kind.PROXY:
            return parse_proxy(text)
        return text
    except ValueError as e:
        raise entry.error(f"{var.name}: {e}") from e
