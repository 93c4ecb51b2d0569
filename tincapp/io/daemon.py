"""The daemon's asyncio shell (tinc's net.c, net_setup.c, net_socket.c, control.c main loop).

Owns: the listening TCP sockets (with the tarpit), one MetaConnection per meta socket, the TCP
connects in progress, the address cache files, the control socket (with its LOG subscribers,
via ControlLogHandler) and PID file, signals, the script runner and the single timer re-armed
at the earliest deadline of the cores. The outgoing entries (ConnectTo and AutoConnect) and
their back-off live in mesh.outgoing, AutoConnect decisions in mesh.autoconnect, address order
in mesh.address_cache. Protocol decisions are made by MetaConnection (one connection) and
mesh.node.Node (the mesh); this module moves bytes, events and actions between them and the
operating system. The data plane (UDP sockets on the same ports as the TCP listeners, the
device, the tunnels) is io.dataplane's; the daemon hands it packets, requests and timer calls.
"""
import asyncio
import dataclasses
import errno
import logging
import os
import signal
import socket
import stat
import time
from collections import deque

from tincapp import control
from tincapp.config import netconf, secrets
from tincapp.errors import ConfigError
from tincapp.fileio import atomic_write
from tincapp.io.controllog import ControlLogHandler
from tincapp.io.dataplane import DataPlaneShell, DeviceError
from tincapp.io.scripts import ScriptRunner
from tincapp.keys import hosts_line
from tincapp.mesh import autoconnect, graph_dot
from tincapp.mesh.address_cache import CACHE_SUFFIX, AddressCache, known_addresses
from tincapp.mesh.graph import STATUS_HAS_ADDRESS
from tincapp.mesh.subnets import DEFAULT_BROADCAST_SUBNETS, Subnet
from tincapp.mesh.node import Close, Node, RunScript, SendTo, Sleep, TunnelReset, numeric_ip
from tincapp.tools.tincd import reopen_log_files
from tincapp.mesh.outgoing import Abandon, Connect, Outgoings
from tincapp.meta.connection import MetaConnection, PeerSettings
from tincapp.meta.events import (Activated, ConnectionFailed, PacketReceived, PongReceived,
                                 RequestReceived, SptpsPacketReceived)
from tincapp.meta.messages import (OPTION_CLAMP_MSS, OPTION_INDIRECT, OPTION_PMTU_DISCOVERY,
                                   OPTION_TCPONLY, PROT_MINOR)

log = logging.getLogger("tincd")

# tinc's debug levels (logger.h).
DEBUG_NOTHING = 0
DEBUG_CONNECTIONS = 1
DEBUG_STATUS = 2
DEBUG_PROTOCOL = 3
DEBUG_META = 4

LISTEN_BACKLOG = 3        # COMPAT: tinc's listen(fd, 3)
TARPIT_PITS = 10          # COMPAT: tinc's tarpit() holds the last 10 tarpitted sockets

# DUMP_CONNECTIONS status bits (control-and-cli.md 3.4).
CONN_PINGED = 1 << 0
CONN_CONNECTING = 1 << 2
CONN_MST = 1 << 8
CONN_CONTROL = 1 << 9


# What tinc reads only at start (setup_myself, setup_network, setup_device): a reload keeps
# the values the daemon started with. Everything else is taken from the new configuration.
_NOT_RELOADED = ("name", "private_key", "private_key_file", "port", "port_specified",
                 "bind_to_addresses", "listen_addresses", "bind_to_interface",
                 "strict_subnets", "tunnel_server", "ping_interval_s",
                 "ping_timeout_s", "device", "device_type", "interface", "udp_rcvbuf",
                 "udp_sndbuf", "fwmark", "replay_window", "max_output_buffer_size")


def _keep_unreloadable(old, new):
    """`new` with the settings tinc does not re-read on reload taken from `old`."""
    return dataclasses.replace(new, **{f: getattr(old, f) for f in _NOT_RELOADED})


class DaemonError(Exception):
    """Setup failed (listening sockets, control socket); the message is for the user."""


class MetaPeer(asyncio.Protocol):
    """One meta TCP socket: feeds bytes to its MetaConnection and reports to the daemon."""

    _serials = iter(range(1, 1 << 62))

    def __init__(self, daemon, dialed: str | None = None, attempt: int = 0):
        self.daemon = daemon
        # Creation order: tinc's connection_list order, which AutoConnect's choices follow.
        self.serial = next(MetaPeer._serials)
        self.dialed = dialed          # the node we connected to (None: an incoming one)
        self.attempt = attempt        # the Outgoings connect attempt that made us
        self.meta = None
        self.transport = None
        self.closed = False
        self.hostname = "unknown port unknown"

    def connection_made(self, transport):
        self.transport = transport
        d = self.daemon
        now = d.now()
        peer = transport.get_extra_info("peername")
        if peer:
            self.hostname = f"{peer[0]} port {peer[1]}"
        if self.dialed is None and peer and d.tarpit.check(peer[0], now):
            self.closed = True
            d.tarpit.hold(transport)
            d.log(DEBUG_CONNECTIONS, f"Tarpitting connection from {self.hostname}")
            return
        name = self.dialed
        self.meta = MetaConnection(
            my_name=d.config.name, my_key=d.config.private_key,
            outgoing=self.dialed is not None, peer_name=name,
            lookup_peer=d.peer_settings, udp_port=str(d.port), rng=os.urandom, now=now,
            ping_interval_s=d.config.ping_interval_s, ping_timeout_s=d.config.ping_timeout_s)
        d.peers.add(self)
        d.node.connection_opened(self, outgoing=self.dialed is not None, name=name)
        if self.dialed is not None:
            d.outgoing.connected(name, self.attempt, self)
            d.log(DEBUG_CONNECTIONS, f"Connected to {name} ({self.hostname})")
            self.meta.start(now)
        else:
            d.log(DEBUG_CONNECTIONS, f"Connection from {self.hostname}")
        d.process()

    def data_received(self, data):
        if self.closed:
            return
        self.meta.receive(data, self.daemon.now())
        self.daemon.process()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.closed:
            reason = f"error: {exc}" if exc else "closed by peer"
            self.daemon.log(DEBUG_CONNECTIONS, f"Connection closed by {self.label()} "
                            f"({self.hostname}): {reason}")
            self.daemon.peer_ended(self, report=True)
            self.daemon.process()

    def label(self):
        return (self.meta.peer_name if self.meta and self.meta.peer_name else "<unknown>")

    def flush(self):
        if self.meta is not None and self.transport is not None:
            data = self.meta.data_to_send()
            if data and not self.transport.is_closing():
                self.transport.write(data)

    def close(self, tarpit=False):
        """Close the socket after flushing what is queued; report nothing more. With
        `tarpit`, hand the socket unread and unflushed to the daemon's tarpit instead."""
        if self.closed:
            return
        self.closed = True
        if self.meta is not None:
            if not tarpit:
                self.flush()
            self.meta.close()
        if self.transport is not None:
            if tarpit:
                self.daemon.tarpit.hold(self.transport)
            else:
                self.transport.close()


def is_local_address(host) -> bool:
    """tinc's is_local_connection: loopback addresses (IPv4-mapped ones too)."""
    ip = numeric_ip(host)
    return ip is not None and ip.is_loopback


class Tarpit:
    """tinc's check_tarpit() and tarpit(): bursts of incoming connections, and connections
    that broke the protocol, get their socket held open and unread instead of served or
    closed, so a scanner or a flood gets silence rather than work or a quick reset.

    Counters run on whole seconds like tinc's: each burst counter drops by one per second.
    """

    def __init__(self, max_burst):
        self.max_burst = max_burst
        self._prev_host = None
        self._same = self._same_at = 0
        self._all = self._all_at = 0
        self._pits = deque()

    @staticmethod
    def _decay(count, at, sec):
        return 0 if sec - at > count else count - (sec - at)

    def check(self, host, now) -> bool:
        """Called for each accepted connection: True if it is to be tarpitted."""
        if is_local_address(host):
            return False                    # COMPAT: local connections are never tarpitted
        sec = int(now)
        if host == self._prev_host:
            # COMPAT: more than MaxConnectionBurst from the same address in a row.
            # DEVIATION: tinc's check_tarpit copies a pointer into prev_sa instead of the
            # address, so its same-address check hardly ever matches; this one does.
            self._same = self._decay(self._same, self._same_at, sec) + 1
            self._same_at = sec
            if self._same > self.max_burst:
                return True
        self._prev_host = host
        # COMPAT: MaxConnectionBurst connections from anyone within the burst window.
        self._all = self._decay(self._all, self._all_at, sec) + 1
        self._all_at = sec
        if self._all >= self.max_burst:
            self._all = self.max_burst
            return True
        return False

    def hold(self, transport):
        """Keep `transport` open without reading it; the oldest held one is closed when
        more than TARPIT_PITS are held (COMPAT: tinc's tarpit() ring of 10 fds)."""
        transport.pause_reading()
        if len(self._pits) >= TARPIT_PITS:
            self._pits.popleft().close()
        self._pits.append(transport)

    def close(self):
        while self._pits:
            self._pits.popleft().close()


class Daemon:
    """The running node. Create, `await run()`; `stop()` ends it."""

    def __init__(self, config: netconf.DaemonConfig, *, debug_level=0, options=()):
        self.config = config
        self.options = options
        self.debug_level = debug_level
        self.loop = None
        self.peers = set()
        self.outgoing: Outgoings | None = None
        self._connects: dict[int, asyncio.Task] = {}   # connect attempt -> its task
        self.tarpit = Tarpit(config.max_connection_burst)
        self._host_check_at = None          # tinc's last_config_check (wall clock, mtimes)
        self.servers = []
        self.control_server = None
        self.control_clients = set()
        self.port = config.port
        self.node = None
        self.scripts = None
        self.cookie = None
        self._timer = None
        self._stopped = None
        self._stopping = False
        self.log_handler = ControlLogHandler(lambda: self.debug_level)
        self.autoconnect = None
        self.dataplane = None
        self._has_address = set()
        self._caches: dict[str, AddressCache] = {}

    # --- helpers ---------------------------------------------------------------------------

    def now(self) -> float:
        return self.loop.time()

    def log(self, level, text):
        """Log `text` at tinc debug level `level`: to the daemon's log if within its debug
        level, and to LOG subscribers that asked for that level (tinc's logcontrol)."""
        extra = {"tinc_level": level}
        if level <= self.debug_level:
            log.info(text, extra=extra)
            if log.isEnabledFor(logging.INFO):
                return                      # the root logger's handlers include ours
        if self.log_handler.wants(level):
            self.log_handler.handle(log.makeRecord(log.name, logging.INFO, "(daemon)", 0, text,
                                                   (), None, extra=extra))

    def peer_settings(self, name):
        """lookup_peer for MetaConnection: what hosts/NAME and our config say about `name`."""
        cfg = self.config
        try:
            h = cfg.load_host(name)
        except ConfigError as e:
            log.error("Peer %s had unknown identity: %s", name, e)
            return None
        opts = 0
        if cfg.indirect_data or h.indirect_data:
            opts |= OPTION_INDIRECT
        if cfg.tcp_only or h.tcp_only:
            opts |= OPTION_TCPONLY | OPTION_INDIRECT
        if (h.pmtu_discovery if h.pmtu_discovery is not None else cfg.pmtu_discovery):
            opts |= OPTION_PMTU_DISCOVERY
        if (h.clamp_mss if h.clamp_mss is not None else cfg.clamp_mss):
            opts |= OPTION_CLAMP_MSS
        weight = h.weight if h.weight is not None else cfg.weight
        return PeerSettings(h.ed25519_public_key, opts, weight, h.clamp_mss)

    def peer_public_key(self, name):
        """The Ed25519 public key of `name` from hosts/NAME, or None (the data plane asks)."""
        return self.config.load_host(name, missing_ok=True).ed25519_public_key

    def save_public_key(self, name, public):
        """ANS_PUBKEY: append the key we learnt to hosts/NAME (trust on first use), atomically."""
        path = self.config.paths.host_file(name)
        try:
            # an encrypted host file stays encrypted (the key the daemon started with)
            secrets.append_file(path, hosts_line(public).encode(), self.config.paths.config_key)
        except (OSError, secrets.SecretsError) as e:
            log.error("Could not write public key of %s to %s: %s", name, path, e)

    def _my_options(self):
        cfg = self.config
        opts = 0
        if cfg.indirect_data:
            opts |= OPTION_INDIRECT
        if cfg.tcp_only:
            opts |= OPTION_TCPONLY | OPTION_INDIRECT
        if cfg.pmtu_discovery and not cfg.tcp_only:
            opts |= OPTION_PMTU_DISCOVERY
        if cfg.clamp_mss:
            opts |= OPTION_CLAMP_MSS
        return opts | PROT_MINOR << 24

    # --- setup -----------------------------------------------------------------------------

    async def setup(self):
        """Listen, write the PID file, open the control socket, run tinc-up and connect.
        DaemonError if the node cannot start."""
        self.loop = asyncio.get_running_loop()
        logging.getLogger().addHandler(self.log_handler)
        cfg = self.config
        await self._listen()
        now = self.now()
        self.node = Node(cfg.name, rng=os.urandom, now=now, options=self._my_options(),
                         tcp_port=str(self.port), own_subnets=cfg.subnets,
                         tunnel_server=cfg.tunnel_server, strict_subnets=cfg.strict_subnets,
                         seen_lifetime_s=cfg.ping_interval_s,
                         known_nodes=netconf.host_names(cfg.paths),
                         broadcast_subnets=[Subnet.parse(t) for t in DEFAULT_BROADCAST_SUBNETS]
                         + list(cfg.broadcast_subnets),
                         log=self.log)
        try:
            self.dataplane = DataPlaneShell.create(self, self._my_options())
            self.dataplane.open_udp([(s.family, s.getsockname()) for server in self.servers
                                     for s in server.sockets])
        except DeviceError as e:
            if self.dataplane is not None:
                self.dataplane.close()
            raise DaemonError(str(e)) from e
        base_env = {"NAME": cfg.name, "DEBUG": str(self.debug_level)}
        if cfg.paths.netname:
            base_env["NETNAME"] = cfg.paths.netname
        interface = self.dataplane.device.ifname if self.dataplane.device.fd is not None \
            else cfg.interface or cfg.paths.netname
        if interface:
            base_env["INTERFACE"] = interface
        self.scripts = ScriptRunner(cfg.paths.confbase, base_env,
                                    interpreter=cfg.scripts_interpreter,
                                    extension=cfg.scripts_extension)
        self.autoconnect = autoconnect.AutoConnect(rng=os.urandom, now=now,
                                                   enabled=cfg.auto_connect)
        self.outgoing = Outgoings(candidates=self._candidates,
                                  connection_for=self.node.connection_for, log=self.log,
                                  max_timeout_s=cfg.max_timeout_s,
                                  connect_timeout_s=cfg.ping_timeout_s)
        self._load_all_nodes()
        await self._open_control()
        self._stopped = asyncio.Event()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                             (signal.SIGQUIT, self.stop), (signal.SIGHUP, self.reload),
                             (signal.SIGALRM, self.retry)):
            self.loop.add_signal_handler(sig, handler)
        log.info("Ready")
        self.dataplane.start_device()
        self.node.start()
        self._host_check_at = time.time()
        for name in cfg.connect_to:
            self.outgoing.add(name, self.now())
        self.process()

    def _load_all_nodes(self):
        """tinc's load_all_nodes, at start and on reload: which nodes have an Address line in
        their host file (AutoConnect only dials those or reachable ones), and with
        StrictSubnets the Subnets each host file authorizes."""
        found = set()
        authorized = {}
        for name in netconf.host_names(self.config.paths):
            if name != self.config.name:
                self.node.graph.ensure_node(name)      # even with an unreadable host file
            try:
                host = self.config.load_host(name, missing_ok=True)
            except ConfigError as e:
                self.log(DEBUG_CONNECTIONS, f"Could not read host file of {name}: {e}")
                continue
            if host.addresses:
                found.add(name)
            authorized[name] = host.subnets
        self._has_address = found
        self.node.set_authorized_subnets(authorized)

    def _family(self):
        """AddressFamily as a socket family."""
        return {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(
            self.config.address_family, socket.AF_UNSPEC)

    async def _listen(self):
        cfg = self.config
        family = self._family()
        binds = cfg.bind_to_addresses + cfg.listen_addresses
        targets = [(a.host, a.port) for a in binds] or [(None, None)]
        port = cfg.port
        for host, bport in targets:
            infos = await self.loop.getaddrinfo(host, int(bport or port), family=family,
                                                type=socket.SOCK_STREAM,
                                                flags=socket.AI_PASSIVE)
            for fam, type_, proto, _, addr in infos:
                if len(self.servers) >= 8:
                    break
                if port == 0 and self.servers:
                    addr = (addr[0], self.port) + tuple(addr[2:])
                sock = socket.socket(fam, type_, proto)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if fam == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(addr)
                except OSError as e:
                    sock.close()
                    log.error("Can't bind to %s port %s/tcp: %s", addr[0], addr[1],
                              e.strerror or e)
                    continue
                sock.listen(LISTEN_BACKLOG)
                server = await self.loop.create_server(lambda: MetaPeer(self, None), sock=sock)
                self.servers.append(server)
                if port == 0 and len(self.servers) == 1:
                    self.port = sock.getsockname()[1]
                self.log(DEBUG_CONNECTIONS, f"Listening on {addr[0]} port {self.port}")
        if not self.servers:
            raise DaemonError("Unable to create any listening socket!")

    def _pid_address(self):
        sockname = self.servers[0].sockets[0].getsockname()
        host = sockname[0]
        if host == "0.0.0.0":
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return host

    async def _open_control(self):
        paths = self.config.paths
        path = paths.control_socket
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)          # stale
            else:
                raise DaemonError(f"Control socket {path} already in use")
            finally:
                probe.close()
        old = os.umask(0o077)
        try:
            self.control_server = await asyncio.start_unix_server(self._control_client,
                                                                  path=path)
        except OSError as e:
            raise DaemonError(f"Could not bind control socket {path}: {e.strerror or e}")
        finally:
            os.umask(old)
        self.cookie = control.make_cookie(os.urandom)
        line = control.PidFile(os.getpid(), self.cookie, self._pid_address(),
                               str(self.port)).format()
        fd = os.open(paths.pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), stat.S_IRUSR | stat.S_IWUSR)
            f.write(line)

    # --- the main loop ---------------------------------------------------------------------

    async def run(self):
        await self.setup()
        try:
            await self.wait_stopped()
        finally:
            await self.shutdown()

    async def wait_stopped(self):
        """Return once STOP or a terminating signal arrived."""
        await self._stopped.wait()

    def stop(self):
        self.log(DEBUG_NOTHING, "Got signal or STOP request, terminating")
        if self._stopped is not None:
            self._stopped.set()

    async def shutdown(self):
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        self.outgoing.stop()
        self._apply_outgoing()
        self.tarpit.close()
        for p in list(self.peers):
            p.close()
            self.node.connection_closed(p, self.now(), report=False)
            self.peers.discard(p)
        self.node.pop_actions()
        self.node.stop()
        self._apply_actions()
        for s in self.servers:
            s.close()
        await self.scripts.drain()
        self.dataplane.close()        # after tinc-down, as tinc closes the device last
        if self.control_server is not None:
            self.control_server.close()
        for w in list(self.control_clients):
            w.close()
        for path in (self.config.paths.pidfile, self.config.paths.control_socket):
            try:
                os.unlink(path)
            except OSError:
                pass
        log.info("Terminating")
        logging.getLogger().removeHandler(self.log_handler)

    def process(self):
        """Called after any input: move events to the node, actions to the connections, flush,
        re-arm the timer."""
        if self.node is None:
            return
        now = self.now()
        for p in list(self.peers):
            if p.meta is None:
                continue
            while (ev := p.meta.next_event()) is not None:
                try:
                    self._handle_event(p, ev, now)
                except Exception:
                    # A bug on some input must cost that connection, not the daemon's loop.
                    log.exception("Error handling %s from %s (%s); closing the connection",
                                  type(ev).__name__, p.label(), p.hostname)
                    self.peer_ended(p, report=True)
                    break
            self._apply_actions()
        self._apply_actions()
        self._apply_outgoing()
        for p in list(self.peers):
            p.flush()
        self._rearm()

    def _handle_event(self, p, ev, now):
        if isinstance(ev, Activated):
            peername = p.transport.get_extra_info("peername")
            sockname = p.transport.get_extra_info("sockname")
            self.log(DEBUG_CONNECTIONS, f"Connection with {ev.name} ({p.hostname}) activated")
            old = self.node.connection_for(ev.name)
            carried = self.outgoing.carried_by(old) if old is not None else None
            if old is not p and carried is not None:
                # COMPAT: ack_h: a new incoming connection takes over the old one's outgoing
                # entry (the node closes the old one).
                if p.dialed is None:
                    self.outgoing.adopt(carried, p)
                else:
                    log.warning("Two outgoing connections to the same node!")
            self.node.connection_activated(
                p, ev, remote_host=peername[0] if peername else None,
                local_host=sockname[0] if sockname else None, my_udp_port=str(self.port),
                now=now)
        elif isinstance(ev, RequestReceived):
            self.log(DEBUG_META, f"Got {ev.msg.request.name} from {p.label()} ({p.hostname}): "
                     f"{ev.line.decode('latin-1')}")
            self.node.request_received(p, ev.msg, ev.line, now)
        elif isinstance(ev, PongReceived):
            if self.outgoing.pong(p):
                # COMPAT: pong_h: after a retry the address works: remember it first.
                self._remember_address(p)
        elif isinstance(ev, ConnectionFailed):
            level = DEBUG_CONNECTIONS
            self.log(level, f"Closing connection with {p.label()} ({p.hostname}): {ev.reason}")
            # COMPAT: tinc parks the socket of a peer that broke the protocol unread.
            self.peer_ended(p, report=True, tarpit=ev.tarpit)
        elif isinstance(ev, (PacketReceived, SptpsPacketReceived)):
            name = self.node.connection_name(p)
            if name is not None and self.node.connection_for(name) is p:
                self.dataplane.meta_event(name, ev, now)

    def _apply_actions(self):
        # The data plane may queue more node actions while it handles one (requests it sends
        # toward other nodes): drain until none are left.
        while actions := self.node.pop_actions():
            self._apply_node_actions(actions)

    def _apply_node_actions(self, actions):
        now = self.now()
        for act in actions:
            if isinstance(act, SendTo):
                p = act.conn
                if p.closed:
                    continue
                if act.msg is not None:
                    self.log(DEBUG_PROTOCOL, f"Sending {act.msg.request.name} to {p.label()} "
                             f"({p.hostname})")
                    p.meta.send_request(act.msg)
                else:
                    self.log(DEBUG_PROTOCOL, f"Forwarding request to {p.label()} "
                             f"({p.hostname})")
                    p.meta.forward_request(act.line)
            elif isinstance(act, Close):
                self.log(DEBUG_CONNECTIONS, f"Closing connection with {act.conn.label()}: "
                         f"{act.reason}")
                self._close_peer(act.conn)
            elif isinstance(act, RunScript):
                self.scripts.base_env["DEBUG"] = str(self.debug_level)
                self.scripts.run(act.name, **act.env)
            elif isinstance(act, Sleep):
                self._sleep(act.seconds)
            elif isinstance(act, TunnelReset):
                # COMPAT: graph.c caches the address of our outgoing connection to a node
                # that just became reachable.
                conn = self.node.connection_for(act.name)
                if (conn is not None and self.outgoing.carried_by(conn) is not None
                        and self.node.graph.is_reachable(act.name)):
                    self._remember_address(conn)
                self.dataplane.node_action(act, now)
            else:
                self.dataplane.node_action(act, now)

    def _sleep(self, seconds):
        """tinc blocks the whole daemon; we stop reading every meta socket for that long."""
        for p in self.peers:
            if p.transport is not None and not p.closed:
                p.transport.pause_reading()

        def resume():
            for p in self.peers:
                if p.transport is not None and not p.closed:
                    p.transport.resume_reading()
        self.loop.call_later(seconds, resume)

    def _close_peer(self, p):
        """Close a connection the node already forgot; outgoing entries retry."""
        p.close()
        self.peers.discard(p)
        self._outgoing_ended(p)

    def peer_ended(self, p, report, tarpit=False):
        """Called when a connection ended on its own or by us."""
        if p not in self.peers:
            return
        p.close(tarpit=tarpit)
        self.peers.discard(p)
        self.node.connection_closed(p, self.now(), report=report)
        self._apply_actions()
        self._outgoing_ended(p)

    # --- outgoing connections --------------------------------------------------------------

    def _outgoing_ended(self, p):
        if not self._stopping:
            self.outgoing.connection_ended(p, self.now())

    def _apply_outgoing(self):
        """Turn mesh.outgoing's actions into TCP connects (and cancel abandoned ones)."""
        for act in self.outgoing.pop_actions():
            if isinstance(act, Connect):
                if not self._stopping:
                    self._connects[act.attempt] = self.loop.create_task(self._connect(act))
            elif isinstance(act, Abandon):
                task = self._connects.pop(act.attempt, None)
                if task is not None:
                    task.cancel()

    async def _connect(self, act: Connect):
        """One TCP connect; success reaches mesh.outgoing through MetaPeer.connection_made,
        failure through connect_failed. Timeouts are mesh.outgoing's (an Abandon)."""
        try:
            await self.loop.create_connection(
                lambda: MetaPeer(self, act.name, act.attempt), act.host, int(act.port),
                family=self._family())
        except asyncio.CancelledError:
            return                          # abandoned, or the daemon is shutting down
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            self.outgoing.connect_failed(act.name, act.attempt, self.now(), reason)
            self.process()
        except Exception:
            log.exception("Error setting up an outgoing connection to %s", act.name)
            self.outgoing.connect_failed(act.name, act.attempt, self.now(), "internal error")
            self.process()
        finally:
            if self._connects.get(act.attempt) is asyncio.current_task():
                del self._connects[act.attempt]

    # --- address cache -------------------------------------------------------------------

    def _cache_path(self, name):
        return os.path.join(self.config.paths.confbase, "cache", name + CACHE_SUFFIX)

    def _address_cache(self, name) -> AddressCache:
        """The node's cache, read from its file on first use (tinc's open_address_cache)."""
        cache = self._caches.get(name)
        if cache is None:
            try:
                with open(self._cache_path(name), "rb") as f:
                    data = f.read()
            except OSError:
                data = None
            cache = self._caches[name] = AddressCache.decode(data)
        return cache

    def _remember_address(self, p):
        """Put the address `p` is connected to first in its node's cache and rewrite the
        file atomically (a crash leaves the old or the new list, never half of one)."""
        name = (self.node.connection_name(p) or self.outgoing.carried_by(p) or p.dialed)
        peer = p.transport.get_extra_info("peername") if p.transport else None
        if name is None or not peer:
            return
        cache = self._address_cache(name)
        if not cache.add_recent((str(peer[0]), str(peer[1]))):
            return
        self.log(DEBUG_CONNECTIONS, f"Caching recent address for {name}")
        path = self._cache_path(name)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, cache.encode())
        except OSError as e:
            # COMPAT: tinc ignores a cache it cannot write; the in-memory list still counts.
            self.log(DEBUG_CONNECTIONS, f"Could not write address cache {path}: {e}")

    def _candidates(self, name):
        """Addresses to try, in tinc's order: cached ones, then where other nodes see the
        node (paired edges), then its Address lines."""
        # DEVIATION: an Address line stays one candidate (host, port); create_connection
        # resolves it and tries its results in getaddrinfo order, where tinc tries them in
        # reverse order.
        try:
            configured = list(self.config.load_host(name).connect_addresses())
        except ConfigError as e:
            log.error("Could not read host file of %s: %s", name, e)
            configured = []
        return self._address_cache(name).candidates(
            known_addresses(self.node.graph, name), configured)

    def retry(self):
        """SIGALRM / RETRY: reset the back-offs and connect now."""
        self.log(DEBUG_NOTHING, "Got ALRM signal or RETRY request")
        self.outgoing.retry(self.now())
        self.process()

    def reload(self):
        """SIGHUP / RELOAD: tinc's reload_configuration. Re-read the configuration and
        re-apply what tinc re-applies: the reloadable settings, our Subnets, the known nodes
        and which have an address, ConnectTo; then close connections to nodes whose host
        file changed or went away."""
        self.log(DEBUG_NOTHING, "Got HUP signal or RELOAD request")
        reopen_log_files()
        try:
            new = netconf.load_network(self.config.paths, self.options, unknown="warn")
        except ConfigError as e:
            log.error("Unable to reread configuration file: %s", e)
            return errno.EINVAL
        now = self.now()
        # COMPAT: setup_myself_reloadable. PingInterval/PingTimeout are not among them.
        new = _keep_unreloadable(self.config, new)
        self.config = new
        # COMPAT: setup_myself_reloadable re-reads IndirectData, TCPOnly, PMTUDiscovery and
        # ClampMSS into myself->options (new connections take them from peer_settings).
        self.node.graph.myself.options = self._my_options()
        self.dataplane.reload(new, self.node.graph.myself.options)
        self.autoconnect.enabled = new.auto_connect
        self.outgoing.max_timeout_s = new.max_timeout_s
        self.tarpit.max_burst = new.max_connection_burst
        self.scripts.interpreter = new.scripts_interpreter
        self.scripts.extension = new.scripts_extension
        self._load_all_nodes()
        self.node.set_own_subnets(new.subnets)
        for conn in self.outgoing.reload(new.connect_to, now):
            self.log(DEBUG_CONNECTIONS, f"No more outgoing connection to "
                     f"{self.node.connection_name(conn) or conn.label()}")
            self.peer_ended(conn, report=True)
        self._close_changed_hosts()
        self.process()
        return 0

    def _close_changed_hosts(self):
        """COMPAT: reload_configuration closes connections to nodes whose host file was
        removed or modified since the last check (a changed key or address among them)."""
        checked_at, self._host_check_at = self._host_check_at, time.time()
        for p in list(self.peers):
            name = p.meta.peer_name if p.meta is not None else None
            # DEVIATION: tinc also closes connections still in the ID exchange (it looks
            # up hosts/<unknown>, which does not exist); those are left alone here.
            if name is None:
                continue
            try:
                changed = os.stat(self.config.paths.host_file(name)).st_mtime > checked_at
            except OSError:
                changed = True
            if changed:
                self.log(DEBUG_CONNECTIONS, f"Host config file of {name} has been changed")
                self.peer_ended(p, report=True)

    # --- timers ----------------------------------------------------------------------------

    def _rearm(self):
        if self._stopping:
            return
        deadlines = [p.meta.next_deadline() for p in self.peers if p.meta is not None]
        deadlines.append(self.node.next_deadline())
        deadlines.append(self.autoconnect.next_deadline())
        deadlines.append(self.outgoing.next_deadline())
        deadlines.append(self.dataplane.next_deadline())
        deadlines = [d for d in deadlines if d is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            # Whole-second granularity like tinc's timers is not needed; a small floor avoids
            # a busy loop on deadlines in the past.
            at = max(min(deadlines), self.now() + 0.001)
            self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self):
        self._timer = None
        now = self.now()
        try:
            for p in list(self.peers):
                if p.meta is not None:
                    p.meta.handle_deadline(now)
            self.node.handle_deadline(now)
            deadline = self.outgoing.next_deadline()
            if deadline is not None and now >= deadline:
                self.outgoing.handle_deadline(now)
            if self.autoconnect.due(now):
                for act in self.autoconnect.handle_deadline(now, self._mesh_view()):
                    self._apply_autoconnect(act)
            deadline = self.dataplane.next_deadline()
            if deadline is not None and now >= deadline:
                self.dataplane.handle_deadline(now)
        except Exception:
            log.exception("Error in a timer")
        finally:
            self.process()          # always re-arms: a dead timer would stop pings and retries

    # --- AutoConnect -----------------------------------------------------------------------

    def _mesh_view(self) -> autoconnect.MeshView:
        """The snapshot AutoConnect decides on."""
        g = self.node.graph
        active = set(self.node.active_connections())
        nodes = [autoconnect.NodeInfo(n.name, reachable=n.reachable,
                                      has_address=n.name in self._has_address,
                                      connected=self.node.connection_for(n.name) is not None)
                 for n in g.nodes()]
        conns = []
        for p in sorted(self.peers, key=lambda p: p.serial):
            name = self.node.connection_name(p)
            gn = g.node(name) if name is not None else None
            conns.append(autoconnect.ConnInfo(name, active=p in active,
                                              outgoing=self.outgoing.carried_by(p) is not None,
                                              peer_edges=len(gn.edges) if gn else 0))
        outgoing = [autoconnect.OutgoingInfo(name, in_progress=self.outgoing.in_progress(name))
                    for name in self.outgoing.names()]
        return autoconnect.MeshView(self.config.name, nodes, conns, outgoing)

    def _apply_autoconnect(self, act):
        if isinstance(act, autoconnect.ConnectTo):
            self.log(DEBUG_CONNECTIONS, f"Autoconnecting to {act.name}")
            self.outgoing.add(act.name, self.now())
        elif isinstance(act, autoconnect.DropConnection):
            p = self.node.connection_for(act.name)
            if p is None:
                return
            self.log(DEBUG_CONNECTIONS, f"Autodisconnecting from {act.name}")
            carried = self.outgoing.carried_by(p)
            if carried is not None:
                self.outgoing.remove(carried)     # no reconnect once it is closed
            self.peer_ended(p, report=True)
        elif isinstance(act, autoconnect.CancelOutgoing):
            if act.name in self.outgoing:
                self.outgoing.remove(act.name)
                self.log(DEBUG_CONNECTIONS, f"Cancelled outgoing connection to {act.name}")

    # --- control socket --------------------------------------------------------------------

    async def _control_client(self, reader, writer):
        self.control_clients.add(writer)
        conn = control.ControlServerConnection(self.cookie, self.config.name, os.getpid())
        try:
            while not conn.closed:
                line = await reader.readline()
                if not line:
                    break
                for req in conn.receive_line(line.decode("latin-1").rstrip("\r\n")):
                    self._control_request(conn, req, writer)
                for out in conn.lines_to_send():
                    writer.write(out.encode("latin-1"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except ValueError:
            log.warning("Control request line too long; closing the control connection")
        except Exception:
            log.exception("Error on a control connection; closing it")
        finally:
            self.log_handler.unsubscribe(writer)
            self.control_clients.discard(writer)
            writer.close()

    def _control_request(self, conn, req, writer):
        C = control.Ctl
        t = req.type
        if t == C.STOP:
            conn.reply(t, 0)
            self.stop()
        elif t == C.RELOAD:
            conn.reply(t, self.reload())
        elif t == C.DUMP_NODES:
            offset = time.time() - self.now()
            # Graph status bits, the data plane's fields, and has_address, which this shell
            # owns.
            runtime = self.dataplane.node_runtime(self.now())
            for name in self._has_address:
                r = runtime.get(name, graph_dot.NodeRuntime())
                runtime[name] = dataclasses.replace(r, status=r.status | STATUS_HAS_ADDRESS)
            for line in graph_dot.dump_nodes_lines(self.node.graph, runtime,
                                                   wall_offset_s=offset):
                conn.reply_line(line)
        elif t == C.DUMP_EDGES:
            for line in graph_dot.dump_edges_lines(self.node.graph):
                conn.reply_line(line)
        elif t == C.DUMP_SUBNETS:
            for line in graph_dot.dump_subnets_lines(self.node.subnets):
                conn.reply_line(line)
        elif t == C.DUMP_TUNNELS:
            for fields in self.dataplane.tunnel_lines(self.now()):
                conn.reply(t, *fields)
            conn.end_dump(t)
        elif t == C.DUMP_CONNECTIONS:
            for p in sorted(self.peers, key=lambda p: p.label()):
                status = CONN_PINGED if p.meta is not None and p.meta.pinged else 0
                if p in self.node.graph.mst_connections:
                    status |= CONN_MST
                opts = (p.meta.options or 0) if p.meta is not None else 0
                fd = p.transport.get_extra_info("socket").fileno() if p.transport else -1
                conn.reply(t, p.label(), p.hostname, f"{opts:x}", fd, f"{status:x}")
            conn.reply(t, "<control>", "localhost port unix", "0",
                       writer.get_extra_info("socket").fileno(), f"{CONN_CONTROL:x}")
            conn.end_dump(t)
        elif t == C.PURGE:
            self.node.purge()
            self.process()
            conn.reply(t, 0)
        elif t == C.SET_DEBUG:
            previous = self.debug_level
            try:
                level = int(req.args[0]) if req.args else -1
            except ValueError:
                level = -1
            if level >= 0:
                self.debug_level = level
                log.info("Changed debug level from %d to %d", previous, level)
            conn.reply(t, previous)
        elif t == C.RETRY:
            self.retry()
            conn.reply(t, 0)
        elif t == C.LOG:
            # COMPAT: no reply; records follow as "18 15 <len>" frames (control.c REQ_LOG).
            level, color = control.parse_log_request(req.args)
            self.log_handler.subscribe(writer, level, color)
        elif t == C.DISCONNECT:
            if not req.args:
                conn.reply(t, -1)
                return
            found = False
            for p in list(self.peers):
                if p.meta is not None and p.meta.peer_name == req.args[0]:
                    self.log(DEBUG_CONNECTIONS, f"Disconnecting {req.args[0]}")
                    self.peer_ended(p, report=True)
                    found = True
            self.process()
            conn.reply(t, 0 if found else -2)
        else:
            # RESTART, DUMP_GRAPH, CONNECT, DUMP_TRAFFIC, PCAP and unknown types.
            conn.reply(control.INVALID)
