"""The network directory and the frozen configuration the daemon runs with.

Owns: choosing the network (-c DIR, -n NETNAME, $NETNAME) and tinc's netname rules; tinc's
paths (confbase, hosts/, pid file, control socket, log file: src/names.c); Name expansion
($VAR, $HOST: src/utils.c replace_name); loading the own configuration (-o options, tinc.conf,
conf.d/*.conf and hosts/MYNAME merged in tinc's lookup order, src/conf.c) into a DaemonConfig,
with the own private key; loading any node's host file into a HostConfig. Files encrypted at
rest are read through config/secrets.py with the key source NetworkPaths carries, so a reload
or a later host file read uses the key the daemon started with.

Reads files, the environment and the host name (each injectable for tests); opens no
sockets and starts nothing. Results are frozen: a reload builds a new DaemonConfig. Every
error is a ConfigError naming the file and line where there is one.
"""
import logging
import os
from dataclasses import dataclass, field

from tincapp import keys
from tincapp.config import parse, secrets
from tincapp.config.parse import ConfigTree, Entry
from tincapp.config.variables import (DEFAULT_PORT, Address, Proxy, Subnet, check_id,
                                      check_variable, lookup_variable, parse_value)
from tincapp.errors import ConfigError, KeyFileError
from tincapp.sptps.crypto import PrivateKey

log = logging.getLogger(__name__)

# tinc's CONFDIR "/tinc" and LOCALSTATEDIR for a build with prefix /usr (distribution
# packages); a /usr/local build would use /usr/local/etc/tinc and /usr/local/var.
DEFAULT_CONFDIR = "/etc/tinc"
DEFAULT_LOCALSTATEDIR = "/var"
HOST_NAME_MAX = 255

_UNSAFE_NETNAME_CHARS = " $%<>:`\"|?*"


# ---------------------------------------------------------------------------------------------
# Netname and paths

def check_netname(netname: str | None, strict: bool = False) -> bool:
    """tinc's check_netname(): not empty, no leading '.', no '/', '\\' or control characters;
    strict also refuses the characters tinc only warns about (space $ % < > : ` " | ? *)."""
    if not netname or netname[0] == ".":
        return False
    for ch in netname:
        # iscntrl() in the C locale: 0x00-0x1f and 0x7f.
        if ord(ch) < 0x20 or ord(ch) == 0x7F or ch in "/\\":
            return False
        if strict and ch in _UNSAFE_NETNAME_CHARS:
            return False
    return True


def resolve_netname(netname: str | None = None, env=None) -> str | None:
    """The netname in effect: -n NETNAME, else $NETNAME; None for no netname.

    COMPAT: "" and "." mean no netname; characters tinc only warns about are allowed with a
    warning.
    """
    env = os.environ if env is None else env
    if netname is None:
        netname = env.get("NETNAME")
    if netname is None or netname in ("", "."):
        return None
    if not check_netname(netname):
        raise ConfigError(f"invalid character in netname {netname!r} (it must not be empty, "
                          f"start with '.', or contain '/', '\\' or control characters)")
    if not check_netname(netname, strict=True):
        log.warning("unsafe character in netname %r", netname)
    return netname


def _path_arg(path: str) -> str:
    """tincd's get_path_arg(): absolute paths as given; relative ones resolved against the
    working directory (through realpath() when the path exists)."""
    path = os.fspath(path)
    if not path or os.path.isabs(path):
        return path
    if os.path.exists(path):
        return os.path.realpath(path)
    return os.path.join(os.getcwd(), path)


@dataclass(frozen=True)
class NetworkPaths:
    """Where one network's files are, as tinc computes them (src/names.c).

    netname is None without a netname. identname is "tinc.NETNAME" or "tinc" (also with
    -c: tinc names the pid file after the netname, not the directory). config_key is the
    secrets.KeySource that opens files encrypted at rest (None: no key given).
    """
    netname: str | None
    confbase: str
    confdir: str
    identname: str
    pidfile: str
    control_socket: str
    logfile: str
    config_key: secrets.KeySource | None = field(default=None, repr=False, compare=False)

    @property
    def tinc_conf(self) -> str:
        return f"{self.confbase}/tinc.conf"

    @property
    def conf_d(self) -> str:
        return f"{self.confbase}/conf.d"

    @property
    def hosts_dir(self) -> str:
        return f"{self.confbase}/hosts"

    @property
    def default_private_key_file(self) -> str:
        return f"{self.confbase}/ed25519_key.priv"

    @property
    def invitations_dir(self) -> str:
        return f"{self.confbase}/invitations"

    def host_file(self, name: str) -> str:
        """hosts/NAME; ValueError for a name tinc would refuse (it could escape hosts/)."""
        if not check_id(name):
            raise ValueError(f"invalid node name {name!r}")
        return parse.host_file_name(self.confbase, name)

    def resolve(self, path: str) -> str:
        """A path from the configuration: relative ones are relative to confbase.

        COMPAT: tincd chdir()s to confbase before reading keys, so a relative
        Ed25519PrivateKeyFile or Ed25519PublicKeyFile is relative to it.
        """
        return path if os.path.isabs(path) else os.path.join(self.confbase, path)


def control_socket_for(pidfile: str) -> str:
    """COMPAT: the pid file name with ".pid" replaced by ".socket", or ".socket" appended."""
    if len(pidfile) > 4 and pidfile.endswith(".pid"):
        return pidfile[:-4] + ".socket"
    return pidfile + ".socket"


def resolve_paths(confbase: str | None = None, netname: str | None = None, *, env=None,
                  confdir: str = DEFAULT_CONFDIR,
                  localstatedir: str = DEFAULT_LOCALSTATEDIR,
                  pidfile: str | None = None, logfile: str | None = None,
                  daemon: bool = True,
                  config_key: secrets.KeySource | None = None) -> NetworkPaths:
    """tinc's make_names(): confbase from -c DIR (confbase) or -n NETNAME (netname, else
    $NETNAME), and the run-time paths.

    daemon=True is tincd's rule: pid file and log under LOCALSTATEDIR unless LOCALSTATEDIR is
    not readable+writable+searchable, then CONFBASE/pid and CONFBASE/log. daemon=False is the
    CLI's rule: CONFBASE/pid when LOCALSTATEDIR/run/IDENT.pid is unreadable and CONFBASE/pid
    is readable. pidfile/logfile are --pidfile/--logfile overrides. config_key is kept in
    the result for reading encrypted files.
    """
    netname = resolve_netname(netname, env)
    if confbase is not None:
        if netname is not None:
            log.info("both netname and configuration directory given, using the latter")
        confbase = _path_arg(confbase)
    elif netname is not None:
        confbase = f"{confdir}/{netname}"
    else:
        confbase = confdir
    identname = f"tinc.{netname}" if netname is not None else "tinc"
    if daemon:
        fallback = not os.access(localstatedir, os.R_OK | os.W_OK | os.X_OK)
    else:
        fallback = (not os.access(f"{localstatedir}/run/{identname}.pid", os.R_OK)
                    and os.access(f"{confbase}/pid", os.R_OK))
    if pidfile is not None:
        pidfile = _path_arg(pidfile)
    elif fallback:
        if daemon:
            log.warning("could not access %s/, storing pid and socket files in %s/",
                        localstatedir, confbase)
        pidfile = f"{confbase}/pid"
    else:
        pidfile = f"{localstatedir}/run/{identname}.pid"
    if logfile is not None:
        logfile = _path_arg(logfile)
    elif fallback:
        logfile = f"{confbase}/log"
    else:
        logfile = f"{localstatedir}/log/{identname}.log"
    return NetworkPaths(netname=netname, confbase=confbase, confdir=confdir,
                        identname=identname, pidfile=pidfile,
                        control_socket=control_socket_for(pidfile), logfile=logfile,
                        config_key=config_key)


# ---------------------------------------------------------------------------------------------
# Names

def expand_name(value: str, env=None, hostname: str | None = None) -> str:
    """tinc's replace_name(): Name as written to the node name; ValueError if invalid.

    "$VAR" takes environment variable VAR, "$HOST" falls back to the system host name;
    COMPAT: every byte of that value that is not an ASCII letter or digit becomes '_' (so a
    two-byte UTF-8 character becomes "__").
    """
    if value.startswith("$"):
        env = os.environ if env is None else env
        var = value[1:]
        got = env.get(var)
        if got is None:
            if var != "HOST":
                raise ValueError(f"environment variable {var} does not exist")
            got = os.uname().nodename if hostname is None else hostname
            if not got:
                raise ValueError("could not get the host name")
            got = got[:HOST_NAME_MAX]
        raw = os.fsencode(got)
        name = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else "_" for b in raw)
    else:
        name = value
    if not check_id(name):
        raise ValueError(f"invalid Name {name!r}: only a-z, A-Z, 0-9 and _ are allowed")
    return name


# ---------------------------------------------------------------------------------------------
# Typed views of a tree

class _Values:
    """The typed values of a ConfigTree's entries, validated once.

    in_host_file(entry) says which entries come from a hosts/ file. host_only: validate only
    variables that can be read from a host file (another node's file: tinc never reads
    server variables there).
    """

    def __init__(self, tree: ConfigTree, in_host_file, unknown: str, host_only: bool):
        self.tree = tree
        self._values: dict[str, list] = {}
        for entry in tree:
            var = check_variable(entry, in_host_file(entry), unknown)
            if var is None or var.legacy or (host_only and not var.host):
                continue
            self._values.setdefault(entry.key, []).append((entry, parse_value(var, entry)))
        for key, items in self._values.items():
            var = lookup_variable(key)
            if len(items) > 1 and not var.multiple:
                # COMPAT: the first in lookup order wins; `tinc fsck` warns.
                log.warning("%s: %s given %d times; using the one at %s", items[1][0].where,
                            var.name, len(items), items[0][0].where)

    def first(self, name: str, default=None):
        items = self._values.get(parse.ascii_lower(name))
        return items[0][1] if items else default

    def entry(self, name: str) -> Entry | None:
        items = self._values.get(parse.ascii_lower(name))
        return items[0][0] if items else None

    def all(self, name: str) -> list:
        return [v for _, v in self._values.get(parse.ascii_lower(name), ())]

    def items(self, name: str) -> list:
        return list(self._values.get(parse.ascii_lower(name), ()))


def _default(name: str):
    return lookup_variable(name).default


def _unique(values) -> tuple:
    # tinc keeps one subnet / outgoing connection per distinct value.
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return tuple(out)


def _option_entries(options) -> tuple[Entry, ...]:
    """-o options as given (strings) or already parsed (Entry)."""
    options = tuple(options)
    if all(isinstance(o, Entry) for o in options):
        return options
    if any(isinstance(o, Entry) for o in options):
        raise TypeError("options must be all strings or all Entry objects")
    return parse.parse_options(options)


# ---------------------------------------------------------------------------------------------
# Host configuration of any node

@dataclass(frozen=True)
class HostConfig:
    """What hosts/NAME (plus -o NAME.VAR=VALUE) says about node NAME.

    None means "not set" where the daemon combines the value with its own configuration
    (IndirectData, TCPOnly, PMTU, PMTUDiscovery, ClampMSS, Weight, Compression).
    port is a number or an unresolved service name; addresses keep their own port or None.
    subnets carry owner=name (tincapp.mesh.subnets.Subnet).
    exists is False when the file is missing and the caller allowed that.
    """
    name: str
    file: str
    exists: bool
    addresses: tuple[Address, ...] = ()
    port: int | str = DEFAULT_PORT
    subnets: tuple[Subnet, ...] = ()
    ed25519_public_key: bytes | None = None
    indirect_data: bool | None = None
    tcp_only: bool | None = None
    pmtu: int | None = None
    pmtu_discovery: bool | None = None
    clamp_mss: bool | None = None
    weight: int | None = None
    compression: int | None = None
    tree: ConfigTree = field(default_factory=ConfigTree, repr=False, compare=False)

    def connect_addresses(self) -> tuple[tuple[str, str], ...]:
        """(host, port) per Address in order, the port defaulting to this node's Port
        (src/address_cache.c); resolution is the caller's job."""
        return tuple((a.host, a.port if a.port is not None else str(self.port))
                     for a in self.addresses)


def _read_host_entries(paths: NetworkPaths, name: str, missing_ok: bool):
    """(entries, exists, text) of hosts/NAME."""
    path = paths.host_file(name)
    try:
        data = secrets.read_bytes(path, paths.config_key)
    except FileNotFoundError as e:
        if missing_ok:
            return (), False, ""
        raise ConfigError(f"no host file for node {name}", path) from e
    except IsADirectoryError as e:
        raise ConfigError("cannot read host file: it is a directory", path) from e
    except OSError as e:
        raise ConfigError(f"cannot read host file: {e.strerror or e}", path) from e
    text = data.decode("latin-1")
    return parse.parse_text(text, path), True, text


def _pem_public_key(paths: NetworkPaths, values: _Values, host_file: str, host_text: str,
                    exists: bool) -> bytes | None:
    """tinc's fallback when there is no Ed25519PublicKey: a PEM block in the file named by
    Ed25519PublicKeyFile, else in hosts/NAME. None if there is no such block."""
    entry = values.entry("Ed25519PublicKeyFile")
    if entry is not None:
        path = paths.resolve(values.first("Ed25519PublicKeyFile"))
        try:
            text = secrets.read_bytes(path, paths.config_key).decode("latin-1")
        except OSError as e:
            raise entry.error(f"Ed25519PublicKeyFile: cannot read {path}: "
                              f"{e.strerror or e}") from e
    elif exists:
        path, text = host_file, host_text
    else:
        return None
    if not any(line.startswith("-----BEGIN " + keys.PUBLIC_PEM_TYPE)
               for line in text.split("\n")):
        if entry is not None:
            raise entry.error(f"Ed25519PublicKeyFile: {path}: no -----BEGIN "
                              f"{keys.PUBLIC_PEM_TYPE}----- block")
        return None
    try:
        return keys.parse_public_pem(text, path)
    except KeyFileError as e:
        raise ConfigError(str(e), path) from e


def load_host_config(paths: NetworkPaths, name: str, options=(), *, unknown: str = "error",
                     missing_ok: bool = False) -> HostConfig:
    """Node NAME's host configuration: -o NAME.VAR=VALUE options, then hosts/NAME.

    A missing hosts/NAME is a ConfigError unless missing_ok (then only the options count,
    as tinc's address cache does). Only host variables are validated and used; server
    variables in another node's file are ignored, as tinc ignores them. ed25519_public_key is
    None when the files hold no key (tinc may learn it over the network).
    """
    if not check_id(name):
        raise ConfigError(f"invalid node name {name!r}: only a-z, A-Z, 0-9 and _ are allowed")
    opts = parse.options_for(_option_entries(options), name)
    file_entries, exists, text = _read_host_entries(paths, name, missing_ok)
    host_file = paths.host_file(name)
    tree = ConfigTree(opts + file_entries)
    values = _Values(tree, lambda e: e.file is not None, unknown, host_only=True)
    public = values.first("Ed25519PublicKey")
    if public is None:
        public = _pem_public_key(paths, values, host_file, text, exists)
    return HostConfig(
        name=name, file=host_file, exists=exists,
        addresses=tuple(values.all("Address")),
        port=values.first("Port", DEFAULT_PORT),
        subnets=_unique(s.with_owner(name) for s in values.all("Subnet")),
        ed25519_public_key=public,
        indirect_data=values.first("IndirectData"),
        tcp_only=values.first("TCPOnly"),
        pmtu=values.first("PMTU"),
        pmtu_discovery=values.first("PMTUDiscovery"),
        clamp_mss=values.first("ClampMSS"),
        weight=values.first("Weight"),
        compression=values.first("Compression"),
        tree=tree)


def host_names(paths: NetworkPaths) -> tuple[str, ...]:
    """Names of the files in hosts/ that are valid node names (tinc's load_all_nodes());
    scripts such as NAME-up are skipped by that rule. Sorted."""
    try:
        listing = os.listdir(paths.hosts_dir)
    except OSError as e:
        raise ConfigError(f"cannot list host files: {e.strerror or e}", paths.hosts_dir) from e
    return tuple(sorted(n for n in listing if check_id(n)))


# ---------------------------------------------------------------------------------------------
# The daemon's own configuration

@dataclass(frozen=True)
class DaemonConfig:
    """Everything the daemon reads from its configuration, typed and with tinc's defaults.

    Built by load_network(). Values come from the merged tree (-o, tinc.conf, conf.d,
    hosts/NAME) in tinc's lookup order; `tree` keeps the raw entries. Durations are whole
    seconds (`*_s`). None means unset where tinc's behaviour for "unset" is not a constant.
    """
    paths: NetworkPaths
    name: str
    private_key: PrivateKey = field(repr=False)
    private_key_file: str
    # own host variables (also read from tinc.conf: tinc merges the files)
    port: int                       # 0 = pick a free port
    port_specified: bool            # tinc uses the first listening socket's port if not
    addresses: tuple[Address, ...]
    subnets: tuple[Subnet, ...]
    indirect_data: bool             # TCPOnly implies it
    tcp_only: bool
    pmtu_discovery: bool
    clamp_mss: bool
    pmtu: int | None
    weight: int | None              # a peer's hosts file Weight takes precedence
    compression: int
    # topology and routing
    connect_to: tuple[str, ...]
    mode: str                       # router | switch | hub
    forwarding: str                 # off | internal | kernel
    broadcast: str                  # no | mst | direct
    broadcast_subnets: tuple[Subnet, ...]   # added to mesh.subnets.DEFAULT_BROADCAST_SUBNETS
    direct_only: bool
    strict_subnets: bool            # TunnelServer implies it
    tunnel_server: bool
    auto_connect: bool
    decrement_ttl: bool
    priority_inheritance: bool
    mac_expire_s: int
    # sockets
    address_family: str             # any | ipv4 | ipv6
    bind_to_addresses: tuple[Address, ...]
    listen_addresses: tuple[Address, ...]
    bind_to_interface: str | None
    udp_rcvbuf: int
    udp_sndbuf: int
    fwmark: int
    max_connection_burst: int
    proxy: Proxy | None
    upnp: str                       # no | yes | udponly
    upnp_discover_wait_s: int
    upnp_refresh_period_s: int
    # timers and probing
    ping_interval_s: int
    ping_timeout_s: int
    max_timeout_s: int
    key_expire_s: int
    replay_window: int | None       # bytes; None = the project's default (sptps.session)
    udp_discovery: bool
    udp_discovery_keepalive_interval_s: int
    udp_discovery_interval_s: int
    udp_discovery_timeout_s: int
    udp_info_interval_s: int
    mtu_info_interval_s: int
    local_discovery: bool
    max_output_buffer_size: int
    invitation_expire_s: int
    # device
    device: str | None              # None: /dev/net/tun for tun/tap
    device_type: str                # tun in router mode, tap otherwise, unless configured
    interface: str | None           # default: the netname
    device_standby: bool
    iff_one_queue: bool
    vde_port: int | None
    vde_group: str | None
    # process
    log_level: int | None           # used only without -d
    hostnames: bool
    scripts_interpreter: str | None
    scripts_extension: str
    process_priority: str | None
    sandbox: str | None
    disable_buggy_peers: bool
    # raw material
    tree: ConfigTree = field(repr=False, compare=False)
    options: tuple[Entry, ...] = field(default=(), repr=False)
    unknown: str = "error"

    def load_host(self, name: str, *, missing_ok: bool = False) -> HostConfig:
        """Another node's host configuration, with the same -o options and policy."""
        return load_host_config(self.paths, name, self.options, unknown=self.unknown,
                                missing_ok=missing_ok)


def _resolve_service(service: str) -> int:
    # A services-database lookup (/etc/services via NSS), not a socket; tinc uses
    # getaddrinfo("localhost", service) for the same answer.
    import socket
    try:
        return socket.getservbyname(service, "tcp")
    except OSError as e:
        raise ValueError(f"unknown service {service!r}") from e


def _load_private_key(paths: NetworkPaths, values: _Values) -> tuple[PrivateKey, str]:
    entry = values.entry("Ed25519PrivateKeyFile")
    path = (paths.resolve(values.first("Ed25519PrivateKeyFile")) if entry is not None
            else paths.default_private_key_file)
    try:
        return keys.read_private_key(path, paths.config_key), path
    except KeyFileError as e:
        hint = ""
        if not os.path.exists(path):
            hint = (f"; create a key pair with `tinc -n {paths.netname or '.'} "
                    f"generate-ed25519-keys`")
        if entry is not None:
            raise entry.error(f"Ed25519PrivateKeyFile: {e}{hint}") from e
        raise ConfigError(f"cannot use the Ed25519 private key: {e}{hint}") from e


def _check_host_options(opts, own_name: str, unknown: str) -> None:
    """Check -o NODE.VAR=VALUE options for other nodes now, not when NODE is first used.

    DEVIATION: tinc only looks at them when it reads NODE's host file, and ignores options
    for names that are not node names.
    """
    for entry in opts:
        host, dot, name = entry.name.partition(".")
        if not dot or host == own_name:
            continue
        if not check_id(host):
            raise entry.error(f"invalid node name {host!r} in option {entry.name}")
        renamed = Entry(name, entry.value, None, entry.line)
        var = check_variable(renamed, True, unknown)
        if var is not None and var.host and not var.legacy:
            parse_value(var, renamed)


def load_network(paths: NetworkPaths, options=(), *, unknown: str = "error", env=None,
                 hostname: str | None = None, resolve_service=None) -> DaemonConfig:
    """Read and check the whole own configuration; ConfigError on any problem.

    options are tincd's -o arguments ("VAR=VALUE" for us, "NODE.VAR=VALUE" for a node,
    including ourselves). unknown="warn" only warns about unknown variables (tinc ignores
    them silently). env and hostname serve Name = $VAR / $HOST; resolve_service turns a
    Port service name into a number.
    """
    opts = _option_entries(options)
    server_entries = (parse.options_for(opts)
                      + parse.read_server_files(paths.confbase, paths.config_key))
    # COMPAT: Name comes from -o, tinc.conf and conf.d only: hosts/NAME cannot be read
    # before the name is known.
    name_entry = ConfigTree(server_entries).lookup("Name")
    if name_entry is None:
        raise ConfigError("Name for tinc daemon required (set Name = ... in tinc.conf)",
                          paths.tinc_conf)
    try:
        name = expand_name(name_entry.value, env, hostname)
    except ValueError as e:
        raise name_entry.error(f"Name: {e}") from e

    _check_host_options(opts, name, unknown)
    host_file = paths.host_file(name)
    host_opts = parse.options_for(opts, name)
    try:
        host_entries = parse.read_file(host_file, paths.config_key)
    except ConfigError as e:
        # COMPAT: tincd ignores a missing own host file (Port, Subnets... then come from
        # tinc.conf or defaults). Any other problem with it is an error here.
        # DEVIATION: tinc also carries on after a syntax error there, keeping the lines
        # before it; that would start the daemon half-configured.
        if not isinstance(e.__cause__, FileNotFoundError):
            raise
        log.warning("%s: own host file does not exist; peers cannot know our key from it",
                    host_file)
        host_entries = ()
    tree = ConfigTree(server_entries + host_opts + host_entries)
    values = _Values(tree, lambda e: e.file == host_file, unknown, host_only=False)

    experimental = values.first("ExperimentalProtocol")
    if experimental is False:
        # DEVIATION: tinc then runs the legacy RSA protocol only; tincapp speaks SPTPS only.
        raise values.entry("ExperimentalProtocol").error(
            "ExperimentalProtocol = no selects tinc's legacy protocol, which tincapp does not "
            "implement")
    private_key, private_key_file = _load_private_key(paths, values)
    configured_public = values.first("Ed25519PublicKey")
    if configured_public is not None and configured_public != private_key.public:
        log.warning("%s: Ed25519PublicKey does not match the private key in %s; peers using "
                    "this host file will reject us", values.entry("Ed25519PublicKey").where,
                    private_key_file)

    port = values.first("Port")
    port_specified = port is not None
    if port is None:
        port = DEFAULT_PORT
    elif isinstance(port, str):
        try:
            port = (resolve_service or _resolve_service)(port)
        except ValueError as e:
            raise values.entry("Port").error(f"Port: {e}") from e

    tcp_only = values.first("TCPOnly", False)
    mode = values.first("Mode", _default("Mode"))
    ping_interval = values.first("PingInterval", _default("PingInterval"))
    # COMPAT: PingInterval < 1 means a day; PingTimeout < 1 or > PingInterval means
    # PingInterval (src/net_setup.c setup_network).
    if ping_interval < 1:
        ping_interval = 86400
    ping_timeout = values.first("PingTimeout", _default("PingTimeout"))
    if ping_timeout < 1 or ping_timeout > ping_interval:
        ping_timeout = ping_interval
    tunnel_server = values.first("TunnelServer", False)

    return DaemonConfig(
        paths=paths,
        name=name,
        private_key=private_key,
        private_key_file=private_key_file,
        port=port,
        port_specified=port_specified,
        addresses=tuple(values.all("Address")),
        subnets=_unique(s.with_owner(name) for s in values.all("Subnet")),
        # COMPAT: TCPOnly implies IndirectData, and PMTUDiscovery defaults to off with it.
        indirect_data=values.first("IndirectData", False) or tcp_only,
        tcp_only=tcp_only,
        pmtu_discovery=values.first("PMTUDiscovery", not tcp_only),
        clamp_mss=values.first("ClampMSS", True),
        pmtu=values.first("PMTU"),
        weight=values.first("Weight"),
        compression=values.first("Compression", 0),
        # COMPAT: ConnectTo naming ourselves is skipped (src/net_socket.c).
        connect_to=_unique(n for n in values.all("ConnectTo") if n != name),
        mode=mode,
        forwarding=values.first("Forwarding", _default("Forwarding")),
        broadcast=values.first("Broadcast", _default("Broadcast")),
        broadcast_subnets=_unique(values.all("BroadcastSubnet")),
        direct_only=values.first("DirectOnly", False),
        strict_subnets=values.first("StrictSubnets", False) or tunnel_server,
        tunnel_server=tunnel_server,
        auto_connect=values.first("AutoConnect", True),
        decrement_ttl=values.first("DecrementTTL", False),
        priority_inheritance=values.first("PriorityInheritance", False),
        mac_expire_s=values.first("MACExpire", _default("MACExpire")),
        address_family=values.first("AddressFamily", _default("AddressFamily")),
        bind_to_addresses=tuple(values.all("BindToAddress")),
        listen_addresses=tuple(values.all("ListenAddress")),
        bind_to_interface=values.first("BindToInterface"),
        udp_rcvbuf=values.first("UDPRcvBuf", _default("UDPRcvBuf")),
        udp_sndbuf=values.first("UDPSndBuf", _default("UDPSndBuf")),
        fwmark=values.first("FWMark", 0),
        max_connection_burst=values.first("MaxConnectionBurst",
                                          _default("MaxConnectionBurst")),
        proxy=values.first("Proxy"),
        upnp=values.first("UPnP", "no"),
        upnp_discover_wait_s=values.first("UPnPDiscoverWait", _default("UPnPDiscoverWait")),
        upnp_refresh_period_s=values.first("UPnPRefreshPeriod", _default("UPnPRefreshPeriod")),
        ping_interval_s=ping_interval,
        ping_timeout_s=ping_timeout,
        max_timeout_s=values.first("MaxTimeout", _default("MaxTimeout")),
        key_expire_s=values.first("KeyExpire", _default("KeyExpire")),
        replay_window=values.first("ReplayWindow"),
        udp_discovery=values.first("UDPDiscovery", True),
        udp_discovery_keepalive_interval_s=values.first(
            "UDPDiscoveryKeepaliveInterval", _default("UDPDiscoveryKeepaliveInterval")),
        udp_discovery_interval_s=values.first("UDPDiscoveryInterval",
                                              _default("UDPDiscoveryInterval")),
        udp_discovery_timeout_s=values.first("UDPDiscoveryTimeout",
                                             _default("UDPDiscoveryTimeout")),
        udp_info_interval_s=values.first("UDPInfoInterval", _default("UDPInfoInterval")),
        mtu_info_interval_s=values.first("MTUInfoInterval", _default("MTUInfoInterval")),
        local_discovery=values.first("LocalDiscovery", True),
        max_output_buffer_size=values.first("MaxOutputBufferSize",
                                            _default("MaxOutputBufferSize")),
        invitation_expire_s=values.first("InvitationExpire", _default("InvitationExpire")),
        device=values.first("Device"),
        # COMPAT: without DeviceType, Linux tinc opens tun in router mode, tap otherwise.
        device_type=values.first("DeviceType", "tun" if mode == "router" else "tap"),
        # COMPAT: Linux tinc asks for an interface named after the netname by default.
        interface=values.first("Interface", paths.netname),
        device_standby=values.first("DeviceStandby", False),
        iff_one_queue=values.first("IffOneQueue", False),
        vde_port=values.first("VDEPort"),
        vde_group=values.first("VDEGroup"),
        log_level=values.first("LogLevel"),
        hostnames=values.first("Hostnames", False),
        scripts_interpreter=values.first("ScriptsInterpreter"),
        scripts_extension=values.first("ScriptsExtension", ""),
        process_priority=values.first("ProcessPriority"),
        sandbox=values.first("Sandbox"),
        disable_buggy_peers=values.first("DisableBuggyPeers", False),
        tree=tree,
        options=opts,
        unknown=unknown,
    )


__all__ = [
    "DEFAULT_CONFDIR", "DEFAULT_LOCALSTATEDIR", "DEFAULT_PORT",
    "DaemonConfig", "HostConfig", "NetworkPaths", "check_netname",
    "control_socket_for", "expand_name", "host_names", "load_host_config", "load_network",
    "resolve_netname", "resolve_paths",
]
