"""The data plane's I/O shell: UDP sockets, the TUN/TAP device and the bursts between them.

Owns: the UDP sockets (one per TCP listening address, same port, as tinc has), the device fd
and the packet batches they are read into and written from. Decisions are made by the cores:
datapath.tunnels.DataPlane (sessions, transport) and datapath.route.Router (where a frame
goes); the node core (mesh.node.Node) carries requests toward other nodes. This module reads
bursts, hands them over, and carries out the actions that come back. It never blocks the loop:
sockets and the device are non-blocking, a full socket buffer drops (as tinc does).
"""
import errno
import logging
import os
import socket

from array import array

from tincapp.accel import batchio, fastpath
from tincapp.datapath.batch import SLOT_EMPTY, SLOT_OK, SLOT_TOO_BIG, PacketBatch
from tincapp.datapath.pmtu import PmtuConfig, estimate_initial_maxmtu
from tincapp.datapath.restart import kind_of_slot
from tincapp.datapath.route import (AnnounceSubnet, DeliverToDevice, Dropped, Router,
                                    SendToNode, WithdrawSubnet)
from tincapp.datapath.tunnels import (DATAGRAM_OVERHEAD, ETH_HLEN, ID_PREFIX_LEN,
                                      DataPlane, DeliverFrame, SavePublicKey, SendPacket,
                                      SendSptpsPacket, SendToward, SendUdp, node_id)
from tincapp.errors import ConfigError
from tincapp.mesh.graph import (STATUS_UDP_CONFIRMED, STATUS_VALIDKEY, STATUS_WAITINGFORKEY,
                                SockAddr)
from tincapp.mesh.graph_dot import NodeRuntime
from tincapp.mesh.node import ToDataPlane, TunnelReset, UdpAddressReset
from tincapp.meta.events import PacketReceived, SptpsPacketReceived
from tincapp.sptps.session import DEFAULT_REPLAY_WINDOW

log = logging.getLogger("tincd")

BURST = 64                 # packets per read burst (device and UDP)
TICK_S = 1.0               # tinc's timeout_handler: tunnels to neighbours are kept up
BUG_LOG_INTERVAL_S = 10.0
# Linux's numbers; Python's socket module does not export them.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_PMTUDISC_DO = getattr(socket, "IPV6_PMTUDISC_DO", 2)
SLOT_SIZE = 2048           # a frame (1518) plus node IDs and SPTPS overhead, rounded up
ETHERTYPE = {4: b"\x08\x00", 6: b"\x86\xdd"}
# A frame sealed for UDP: prefix + seqno/type/tag around the packet, minus its Ethernet header.
FRAME_TO_DATAGRAM = ID_PREFIX_LEN + DATAGRAM_OVERHEAD - ETH_HLEN


class DeviceError(Exception):
    """The device could not be set up; the message is for the user."""


class Device:
    """The local network interface: a TUN/TAP fd, or none (DeviceType = dummy).

    Frames are Ethernet frames everywhere in the data plane; a TUN device carries bare IP
    packets, so a fake header is added on reading and removed on writing."""

    def __init__(self, fd, ifname, *, tun: bool, mymac=None):
        self.fd = fd
        self.ifname = ifname
        self.tun = tun
        # Router mode on a TAP device: the interface's MAC, for frames we write to it.
        self.mymac = mymac

    @classmethod
    def open(cls, config):
        kind = config.device_type
        if kind == "dummy":
            return cls(None, config.interface or "dummy", tun=True)
        if kind not in ("tun", "tap"):
            raise DeviceError(f"DeviceType = {kind} is not supported here (tun, tap, dummy)")
        if config.device not in (None, "/dev/net/tun"):
            raise DeviceError(f"Device = {config.device}: only /dev/net/tun is supported")
        from tincapp.io.tun import hardware_address, open_tun
        try:
            fd, ifname = open_tun(config.interface, tap=kind == "tap")
        except OSError as e:
            raise DeviceError(f"Could not open {kind} device: {e.strerror or e}") from e
        mymac = None
        if kind == "tap" and config.mode == "router":
            try:
                mymac = hardware_address(ifname)
            except OSError:
                mymac = b"\xfe\xfd\0\0\0\0"          # tinc's default until it learns one
        return cls(fd, ifname, tun=kind == "tun", mymac=mymac)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class DataPlaneShell:
    """Runs the data plane of `daemon` (io.daemon.Daemon) on its event loop."""

    def __init__(self, daemon, core, router, device: Device):
        self.daemon = daemon
        self.core = core
        self.router = router
        self.device = device
        self.udp_sockets: list[socket.socket] = []
        self._dev_in = PacketBatch(BURST, SLOT_SIZE)
        self._udp_in = PacketBatch(BURST, SLOT_SIZE)
        self._udp_in_addrs = batchio.UdpAddresses(BURST)
        self._dev_out = PacketBatch(BURST, SLOT_SIZE)
        self.dropped_device_writes = 0
        # Fast path state (router mode on a TUN device). Caches of routing decisions, keyed by
        # destination address bytes; flushed when the graph or the subnets change.
        self.fast = core is not None and router.mode == "router" and device.tun
        self._cache_epoch = None
        self._tx_cache: dict[bytes, int] = {}       # destination -> index into _tx_names
        self._tx_names: list[str] = []
        self._tx_hits: list[int] = []               # _tx_names indices a device burst has
        self._rx_local: dict[bytes, bool] = {}      # destinations that are ours
        self._rx_peers: dict[bytes, object] = {}    # UDP address key -> Tunnel
        self._targets = array("i", bytes(4 * BURST))
        self._saved = bytearray(BURST)
        self._sealed = PacketBatch(BURST, SLOT_SIZE)
        self._opened = PacketBatch(BURST, SLOT_SIZE)
        self._my_id = node_id(core.myself) if core is not None else b""
        self.stats = {"fast_tx": 0, "slow_tx": 0, "fast_rx": 0, "slow_rx": 0, "relayed": 0,
                      "errors": 0}
        self._bug_logged_at = float("-inf")
        self._dirty = False       # the cores queued something beyond packets since flush()
        self.device_in = [0, 0]   # packets, bytes (frames) read from the device
        self.device_out = [0, 0]  # and written to it
        self._tick_at = None
        self._rekey_at = None

    @staticmethod
    def _pmtu_config(cfg):
        return PmtuConfig(
            udp_discovery=cfg.udp_discovery,
            udp_discovery_keepalive_interval_s=cfg.udp_discovery_keepalive_interval_s,
            udp_discovery_interval_s=cfg.udp_discovery_interval_s,
            udp_discovery_timeout_s=cfg.udp_discovery_timeout_s,
            ping_interval_s=cfg.ping_interval_s, local_discovery=cfg.local_discovery)

    def reload(self, cfg, my_options):
        """Called on RELOAD with the new configuration: re-apply what tinc's
        setup_myself_reloadable re-reads (routing, forwarding, discovery, intervals,
        compression, MACExpire, KeyExpire from the next rekey on). The device and the
        sockets stay as they are, as in tinc."""
        self.core.reconfigure(
            my_options=my_options, compression=cfg.compression, mode=cfg.mode,
            forwarding=cfg.forwarding, pmtu_config=self._pmtu_config(cfg),
            udp_info_interval_s=cfg.udp_info_interval_s,
            mtu_info_interval_s=cfg.mtu_info_interval_s)
        r = self.router
        r.mode, r.forwarding, r.direct_only = cfg.mode, cfg.forwarding, cfg.direct_only
        r.decrement_ttl, r.broadcast = cfg.decrement_ttl, cfg.broadcast
        r.mac_expire_s, r.priority_inheritance = cfg.mac_expire_s, cfg.priority_inheritance
        self.fast = r.mode == "router" and self.device.tun
        self._cache_epoch = None          # routing decisions may differ now

    @classmethod
    def create(cls, daemon, my_options):
        """The device, the tunnel core and the router for `daemon`'s configuration (the node
        core must exist). DeviceError if the device cannot be opened."""
        cfg = daemon.config
        node = daemon.node
        device = Device.open(cfg)
        pmtu_config = cls._pmtu_config(cfg)
        core = DataPlane(
            cfg.name, graph=node.graph,
            has_connection=lambda name: node.connection_for(name) is not None,
            my_key=cfg.private_key, peer_key=daemon.peer_public_key, rng=os.urandom,
            my_options=my_options, compression=cfg.compression, mode=cfg.mode,
            forwarding=cfg.forwarding,
            replay_window=(cfg.replay_window if cfg.replay_window is not None
                           else DEFAULT_REPLAY_WINDOW),
            pmtu_config=pmtu_config, udp_info_interval_s=cfg.udp_info_interval_s,
            mtu_info_interval_s=cfg.mtu_info_interval_s, log=daemon.log)
        router = Router(
            cfg.name, node.graph, node.subnets, mode=cfg.mode, forwarding=cfg.forwarding,
            direct_only=cfg.direct_only, decrement_ttl=cfg.decrement_ttl,
            broadcast=cfg.broadcast, tunnel_server=cfg.tunnel_server,
            mac_expire_s=cfg.mac_expire_s, priority_inheritance=cfg.priority_inheritance,
            mtu_of=lambda name: core.tunnel(name).pmtu.mtu,
            mst_peers=lambda: [node.connection_name(c) for c in node.active_connections()
                               if c in node.graph.mst_connections],
            log=daemon.log)
        node.subnet_added_hook = router.subnet_added
        shell = cls(daemon, core, router, device)
        core.path_mtu_of = shell._os_path_mtu
        core.configured_pmtu = shell._configured_pmtu
        return shell

    def _configured_pmtu(self, name):
        cfg = self.daemon.config
        limits = [cfg.pmtu]
        try:
            limits.append(cfg.load_host(name, missing_ok=True).pmtu)
        except ConfigError:
            pass
        limits = [v for v in limits if v is not None]
        return min(limits) if limits else None

    # --- setup -------------------------------------------------------------------------------

    def open_udp(self, socknames):
        """One UDP socket per TCP listening address (tinc's listen_socket_t pairs)."""
        cfg = self.daemon.config
        for family, address in socknames:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                for opt, value in ((socket.SO_RCVBUF, cfg.udp_rcvbuf),
                                   (socket.SO_SNDBUF, cfg.udp_sndbuf)):
                    if value:
                        try:
                            sock.setsockopt(socket.SOL_SOCKET, opt, value)
                        except OSError as e:
                            log.warning("Can't set UDP buffer size to %d: %s", value, e)
                sock.bind(address)
                if cfg.pmtu_discovery:
                    # COMPAT: tinc sets DF so that oversized datagrams fail (EMSGSIZE) instead
                    # of being fragmented: PMTU probes must not pass by fragmentation.
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
                    else:
                        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            except OSError as e:
                sock.close()
                log.error("Can't bind to %s port %s/udp: %s", address[0], address[1],
                          e.strerror or e)
                continue
            sock.setblocking(False)
            self.udp_sockets.append(sock)
            self.daemon.loop.add_reader(sock.fileno(), self._on_udp, sock)
        if not self.udp_sockets:
            raise DeviceError("Unable to create any UDP socket")
        now = self.daemon.now()
        self._tick_at = now + cfg.ping_timeout_s
        self._rekey_at = now + cfg.key_expire_s

    def start_device(self):
        if self.device.fd is not None:
            self.daemon.loop.add_reader(self.device.fd, self._on_device)

    def close(self):
        self.daemon.log(2, "Data plane: " + ", ".join(f"{k} {v}" for k, v in self.stats.items()))
        loop = self.daemon.loop
        for sock in self.udp_sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self.udp_sockets = []
        if self.device.fd is not None:
            loop.remove_reader(self.device.fd)
        self.device.close()

    def _os_path_mtu(self, address: SockAddr, peer_minor: int):
        """The kernel's path MTU towards `address` (IP_MTU on a connected UDP socket), as the
        first upper bound of PMTU discovery; None if unknown."""
        ipv6 = ":" in address.host
        try:
            with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET,
                               socket.SOCK_DGRAM) as s:
                s.connect((address.host, int(address.port)))
                mtu = s.getsockopt(socket.IPPROTO_IPV6 if ipv6 else socket.IPPROTO_IP,
                                   getattr(socket, "IPV6_MTU", 24) if ipv6
                                   else getattr(socket, "IP_MTU", 14))
        except (OSError, ValueError, OverflowError):
            return None
        return estimate_initial_maxmtu(mtu, ipv6, peer_minor)

    # --- the daemon's hooks --------------------------------------------------------------------

    def meta_event(self, peer_name, ev, now) -> bool:
        """Called for each event of an active meta connection; True if it was ours."""
        if not isinstance(ev, (PacketReceived, SptpsPacketReceived)):
            return False
        try:
            if isinstance(ev, PacketReceived):
                self.core.receive_packet(peer_name, ev.frame, now)
            else:
                self.core.receive_tcp_sptps_packet(ev.data, now)
            self.run_core(now)
        except Exception:
            self._failed(f"a packet from {peer_name} over TCP")
        return True

    def node_action(self, act, now) -> bool:
        """Called for each action of the node core; True if it was ours."""
        if isinstance(act, TunnelReset):
            self.core.reachability_changed(act.name, now)
        elif isinstance(act, UdpAddressReset):
            self.core.udp_address_changed(act.name, now)
        elif isinstance(act, ToDataPlane):
            self.core.receive_request(act.msg, act.line, act.for_us, now)
            self.run_core(now)
        else:
            return False
        return True

    def next_deadline(self):
        deadlines = [self._tick_at, self._rekey_at, self.core.next_deadline(),
                     self.router.next_deadline()]
        deadlines = [d for d in deadlines if d is not None]
        return min(deadlines) if deadlines else None

    def handle_deadline(self, now):
        """Called by the daemon's timer: UDP confirmation timeouts, MAC expiry, the once a
        second tunnel upkeep for neighbours and KeyExpire rekeys."""
        cfg = self.daemon.config
        if self._tick_at is None:
            self._tick_at = now + cfg.ping_timeout_s
            self._rekey_at = now + cfg.key_expire_s
        deadline = self.core.next_deadline()
        if deadline is not None and now >= deadline:
            self.core.handle_deadline(now)
        deadline = self.router.next_deadline()
        if deadline is not None and now >= deadline:
            for act in self.router.handle_deadline(now):
                self._router_action(act, now)
        if now >= self._tick_at:
            self._tick_at = now + TICK_S
            node = self.daemon.node
            for conn in node.active_connections():
                name = node.connection_name(conn)
                if name is not None:
                    self.core.try_tx(name, False, now)
        if now >= self._rekey_at:
            self._rekey_at = now + cfg.key_expire_s
            self.core.rekey_all(now)
        self.run_core(now)

    def tunnel_lines(self, now):
        """DUMP_TUNNELS (tincapp's): per peer, the fields after "18 100", the restart reason
        last because it has spaces:
        NAME KEY RESTARTS LAST_AGE_S ERRORS REPLAYED LATE SUPPRESSED GRACE UDP PMTU KINDS REASON
        KEY is valid, waiting or none; LAST_AGE_S and REASON are "-" before a first restart;
        KINDS is kind=count,... (spaces in kinds as '_') or "-"."""
        for name in sorted(self.core.tunnels):
            t = self.core.tunnels[name]
            s = t.policy.snapshot()
            key = "valid" if t.validkey else "waiting" if t.waitingforkey else "none"
            age = f"{now - s.last_restart_at:.1f}" if s.last_restart_at is not None else "-"
            kinds = ",".join(f"{k.replace(' ', '_')}={v}" for k, v in s.errors_by_kind) or "-"
            yield (name, key, s.restarts, age, s.decode_errors, s.replayed, s.late, s.suppressed,
                   s.grace_errors, int(t.pmtu.udp_confirmed), t.pmtu.mtu, kinds,
                   s.last_restart_reason or "-")

    def node_runtime(self, now):
        """Per-node dump fields (DUMP_NODES) the data plane owns."""
        out = {}
        for name, t in self.core.tunnels.items():
            p = t.pmtu
            status = ((STATUS_VALIDKEY if t.validkey else 0)
                      | (STATUS_WAITINGFORKEY if t.waitingforkey else 0)
                      | (STATUS_UDP_CONFIRMED if p.udp_confirmed else 0))
            c = t.counters
            out[name] = NodeRuntime(
                compression=t.outcompression, status=status, mtu=p.mtu, minmtu=p.minmtu,
                maxmtu=p.maxmtu,
                udp_ping_rtt=int(p.rtt_s * 1e6) if p.rtt_s is not None else -1,
                in_packets=c.in_packets, in_bytes=c.in_bytes, out_packets=c.out_packets,
                out_bytes=c.out_bytes)
        out[self.core.myself] = NodeRuntime(
            in_packets=self.device_in[0], in_bytes=self.device_in[1],
            out_packets=self.device_out[0], out_bytes=self.device_out[1])
        return out

    # --- input ---------------------------------------------------------------------------------

    def _check_epoch(self):
        node = self.daemon.node
        epoch = (node.graph.generation, node.subnets.version)
        if epoch != self._cache_epoch:
            self._cache_epoch = epoch
            self._tx_cache.clear()
            self._tx_names.clear()
            self._rx_local.clear()
            self._rx_peers.clear()

    def _on_device(self):
        batch = self._dev_in
        batch.clear()
        try:
            n = batchio.read_burst(self.device.fd, batch, ETH_HLEN if self.device.tun else 0)
        except OSError as e:
            log.error("Error while reading from %s: %s", self.device.ifname, e.strerror or e)
            return
        if not n:
            return
        # COMPAT: tinc counts device reads as myself's incoming traffic (frame lengths).
        self.device_in[0] += n
        self.device_in[1] += sum(batch.lengths[:n])
        now = self.daemon.now()
        targets = self._targets
        if self.fast:
            self._check_epoch()
            hits = self._tx_hits
            fastpath.classify_tx(batch, ETH_HLEN, self._tx_cache, targets, hits)
            for index in hits:              # only the destinations this burst has
                name = self._tx_names[index]
                try:
                    self._send_fast(index, name, now)
                except Exception:
                    self._failed(f"a burst to {name}")
        if self.fast and targets[:n].count(-2) == n:
            self.flush()                    # the fast path sent the whole burst
            return
        me = self.core.myself
        for i in range(n):
            if self.fast and targets[i] == -2:
                continue                    # sent by the fast path
            frame = batch.view(i)
            if self.device.mymac is not None and len(frame) >= ETH_HLEN:
                self.device.mymac = bytes(frame[6:12])    # tinc snatches it from ARP/NS
            if self.device.tun:
                etype = ETHERTYPE.get(frame[ETH_HLEN] >> 4) if len(frame) > ETH_HLEN else None
                if etype is None:
                    continue
                frame[:ETH_HLEN] = bytes(12) + etype
            self.stats["slow_tx"] += 1
            try:
                self._route(me, frame, now)
                if self.fast:
                    self._learn_tx(frame)
            except Exception:
                self._failed("a packet from the device")
        self.flush()

    def _learn_tx(self, frame):
        """After the slow path routed a frame from our device: cache the decision if it was a
        plain unicast that the fast path may repeat (Router.fast_route says which)."""
        key = bytes(frame[30:34]) if frame[12] == 8 else bytes(frame[38:54])
        if key in self._tx_cache:
            return          # cached, but this frame needed the router (a SYN, too long...)
        decision = self.router.fast_route(self.core.myself, frame)
        if decision is None:
            return
        try:
            index = self._tx_names.index(decision.name)
        except ValueError:
            index = len(self._tx_names)
            self._tx_names.append(decision.name)
        self._tx_cache[key] = index

    def _send_fast(self, index, name, now):
        """Seal and send the burst's frames for `name` in one go, if its tunnel allows."""
        plan = self.core.fast_tx_plan(name)
        if plan is None:
            return
        t, address = plan.tunnel, plan.address
        batch, sealed = self._dev_in, self._sealed
        selected = fastpath.select_slots(batch, self._targets, index, self._saved, plan.max_len)
        if not selected:
            fastpath.restore_status(batch, self._saved)
            return
        sock = self._socket_for(address.host)
        try:
            t.session.seal_batch(batch, sealed, ID_PREFIX_LEN, ETH_HLEN, sealable=selected)
        finally:
            fastpath.restore_status(batch, self._saved)
        total = fastpath.set_prefix(sealed, plan.prefix)
        if sock is not None:
            # UDP GSO pays off for runs; for a lone datagram it costs ~100 us on a veth.
            sent, err = batchio.send_to_one(sock.fileno(), sealed, address.host,
                                            int(address.port), gso=selected > 1)
            if err == errno.EMSGSIZE:
                relay = self.daemon.node.graph.node_by_udp_address(address)
                for i in range(sealed.count):
                    if sealed.status[i] == SLOT_TOO_BIG and relay is not None:
                        self.core.udp_send_too_big(relay.name, sealed.lengths[i]
                                                   - ID_PREFIX_LEN - DATAGRAM_OVERHEAD, now)
        fastpath.mark_done(batch, self._targets, index, sealed.status)
        self.stats["fast_tx"] += selected
        self.core.sent_burst(t, selected, total - FRAME_TO_DATAGRAM * selected, now)
        self._run_core(now)

    def _socket_for(self, host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return next((s for s in self.udp_sockets if s.family == family), None)

    def _on_udp(self, sock):
        batch, addrs = self._udp_in, self._udp_in_addrs
        batch.clear()
        try:
            n = batchio.recv_burst(sock.fileno(), batch, addrs)
        except OSError as e:
            log.debug("Receiving UDP packet failed: %s", e.strerror or e)
            return
        now = self.daemon.now()
        if self.fast:
            self._check_epoch()
        i = 0
        while i < n:
            j = addrs.run_end(i, n)
            t = self._rx_peer(addrs, i) if self.fast else None
            if t is not None and not fastpath.check_prefix(batch, i, j, t.rx_prefix):
                try:
                    if self._relay_fast(t, i, j, now):
                        i = j
                        continue
                except Exception:
                    self._failed(f"a burst relayed from {t.name}")
                    i = j
                    continue
                t = None
            if t is None:
                for k in range(i, j):
                    if batch.status[k] == SLOT_OK:
                        host, port = addrs.get(k)
                        self.stats["slow_rx"] += 1
                        try:
                            self.core.receive_udp(batch.get(k), SockAddr(host, str(port)), now)
                            self._run_core(now)
                        except Exception:
                            self._failed(f"a UDP datagram from {host} port {port}")
            else:
                try:
                    self._receive_fast(t, i, j, now)
                except Exception:
                    self._failed(f"a burst from {t.name}")
            i = j
        self.flush()

    def _relay_fast(self, t, i, j, now):
        """A run of datagrams from `t`'s confirmed address that all carry one originator's
        traffic to one node: for us, open them with the originator's session; for another
        node, send the slots on unchanged (tinc keeps the IDs when relaying). False: not
        such a run, or not one the fast path may handle."""
        prefix, longest = fastpath.common_prefix(self._udp_in, i, j)
        if prefix is None:
            return False
        if prefix[:ID_PREFIX_LEN // 2] == self._my_id:
            src = self.core.tunnels.get(self.core.name_for_id(prefix[ID_PREFIX_LEN // 2:]) or "")
            if (src is None or src.session is None or not src.session.in_encrypted
                    or src.session.replay is None):
                return False
            self._receive_fast(src, i, j, now)
            self.core.relayed_burst(t.name, prefix, now)
            self._run_core(now)
            return True
        address = self.core.fast_relay_target(t.name, prefix, longest)
        if address is None:
            return False
        sock = self._socket_for(address.host)
        if sock is None:
            return False
        batchio.send_to_one(sock.fileno(), self._udp_in, address.host, int(address.port),
                            i, j, gso=j - i > 1)
        self.stats["relayed"] += j - i
        self.core.relayed_burst(t.name, prefix, now)
        self._run_core(now)
        return True

    def _failed(self, what):
        """A bug met on some input: drop that input, keep the daemon going, log the traceback
        at most once per BUG_LOG_INTERVAL_S (a flood must not flood the log)."""
        self.stats["errors"] += 1
        now = self.daemon.now()
        if now >= self._bug_logged_at + BUG_LOG_INTERVAL_S:
            self._bug_logged_at = now
            log.exception("Error while handling %s (dropped; %d so far)", what,
                          self.stats["errors"])

    def _rx_peer(self, addrs, i):
        """The tunnel whose confirmed UDP address sent slot i, if its session can open a burst."""
        key = addrs.key(i)
        t = self._rx_peers.get(key)
        if t is None:
            host, port = addrs.get(i)
            n = self.daemon.node.graph.node_by_udp_address(SockAddr(host, str(port)))
            if n is None or n.name == self.core.myself:
                return None
            t = self.core.tunnels.get(n.name)
            if t is None:
                return None
            self._rx_peers[key] = t
        if (not t.pmtu.udp_confirmed or t.session is None or not t.session.in_encrypted
                or t.session.replay is None):
            return None
        return t

    def _receive_fast(self, t, i, j, now):
        batch, opened = self._udp_in, self._opened
        events = t.session.open_batch(batch, opened, ID_PREFIX_LEN, i, j)
        # Counted in C; the steady state (every record good and ours) loops over no slot.
        statuses = opened.status[i:j]
        opened_ok = statuses.count(SLOT_OK)
        failures = {}
        if opened_ok + statuses.count(SLOT_EMPTY) < j - i:
            for k in range(i, j):
                kind = kind_of_slot(opened.status[k])   # EMPTY: not OK in src, or handshake
                if kind is not None:
                    failures[kind] = failures.get(kind, 0) + 1
        targets = self._targets
        fast, total, longest = fastpath.classify_rx(opened, i, j, self._rx_local, targets)
        self.stats["fast_rx"] += fast
        if fast < opened_ok:
            for k in range(i, j):
                if opened.status[k] == SLOT_OK and not targets[k]:
                    self.stats["slow_rx"] += 1
                    data = opened.get(k)
                    self.core.receive_opened_record(t, opened.types[k], data, now)
                    self._run_core(now)
                    if opened.types[k] == 0:
                        self._learn_rx(data)
        fastpath.keep_flagged(opened, i, j, targets)
        if fast and self.device.fd is not None:
            written = batchio.write_burst(self.device.fd, opened, i, j)
            self.dropped_device_writes += fast - written
            self.device_out[0] += fast
            self.device_out[1] += total + ETH_HLEN * fast
        self.core.received_burst(t, events, failures, fast, total + ETH_HLEN * fast,
                                 longest + ETH_HLEN, now)
        self._run_core(now)

    def _learn_rx(self, packet):
        """Cache that the destination of a packet from a tunnel is one of our subnets."""
        if not packet:
            return
        subnets = self.daemon.node.subnets
        if packet[0] >> 4 == 4 and len(packet) >= 20:
            key = bytes(packet[16:20])
            s = subnets.lookup_ipv4(key)
        elif packet[0] >> 4 == 6 and len(packet) >= 40:
            key = bytes(packet[24:40])
            s = subnets.lookup_ipv6(key)
        else:
            return
        if s is not None and s.owner == self.core.myself:
            self._rx_local[key] = True

    # --- actions -------------------------------------------------------------------------------

    def _route(self, source, frame, now):
        for act in self.router.route(source, frame, now):
            self._router_action(act, now)

    def _router_action(self, act, now):
        if isinstance(act, SendToNode):
            self.core.send_frame(act.name, act.frame, now)
            self._run_core(now)
        elif isinstance(act, DeliverToDevice):
            self._to_device(act.frame)
        elif isinstance(act, AnnounceSubnet):
            self.daemon.node.add_learnt_subnet(act.subnet)
            self._dirty = True
        elif isinstance(act, WithdrawSubnet):
            self.daemon.node.remove_learnt_subnet(act.subnet)
            self._dirty = True
        elif isinstance(act, Dropped):
            pass

    def _run_core(self, now):
        """Carry out what the tunnel core asked for (it may ask more while we do)."""
        while True:
            actions = self.core.pop_actions()
            if not actions:
                return
            self._dirty = True
            for act in actions:
                self._core_action(act, now)

    def _core_action(self, act, now):
        d = self.daemon
        if isinstance(act, SendUdp):
            self._send_udp(act, now)
        elif isinstance(act, DeliverFrame):
            self._route(act.source, act.frame, now)
        elif isinstance(act, SendToward):
            if isinstance(act.msg, bytes):
                d.node.send_toward(act.to, line=act.msg)
            else:
                d.node.send_toward(act.to, msg=act.msg)
        elif isinstance(act, SendPacket):
            conn = d.node.connection_for(act.to)
            if conn is not None and not conn.closed:
                conn.meta.send_packet(act.frame)
        elif isinstance(act, SendSptpsPacket):
            conn = d.node.connection_for(act.via)
            if conn is not None and not conn.closed:
                conn.meta.send_sptps_packet(act.data)
        elif isinstance(act, SavePublicKey):
            d.save_public_key(act.name, act.public)

    def _send_udp(self, act: SendUdp, now):
        sock = self._socket_for(act.address.host)
        if sock is None:
            return
        try:
            sock.sendto(act.data, (act.address.host, int(act.address.port)))
        except BlockingIOError:
            pass
        except (ValueError, OverflowError) as e:
            log.debug("Cannot send UDP packet to %s: %s", act.address.hostname(), e)
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                self.core.udp_send_too_big(act.relay, act.payload_len, now)
            else:
                log.debug("Error sending UDP packet to %s: %s", act.relay, e.strerror or e)

    def _to_device(self, frame):
        if self.device.fd is None:
            return
        if self.device.tun:
            data = frame[ETH_HLEN:]
        elif self.device.mymac is not None:
            # COMPAT: a TAP device in router mode gets frames addressed to its own MAC from a
            # made-up neighbour (send_packet's overwrite_mac).
            mac = self.device.mymac
            data = mac + mac[:5] + bytes((mac[5] ^ 0xFF,)) + bytes(frame[12:])
        else:
            data = frame
        out = self._dev_out
        if out.count == out.capacity:
            self.flush_device()
        out.append(data)

    def flush_device(self):
        out = self._dev_out
        if out.count and self.device.fd is not None:
            self.device_out[0] += out.count
            self.device_out[1] += sum(out.lengths[:out.count]) + (
                ETH_HLEN * out.count if self.device.tun else 0)
            written = batchio.write_burst(self.device.fd, out)
            self.dropped_device_writes += out.count - written
        out.clear()

    def flush(self):
        """After a burst: write what is queued for the device and, if the cores did more than
        move packets, let the daemon send what they queued and re-arm its timer."""
        self.flush_device()
        if not self._dirty:
            return                # the steady state: a burst in, a burst out, nothing else
        self._dirty = False
        self.daemon.process()

    def run_core(self, now):
        """For the daemon: after it fed the tunnel core (requests, packets, timers)."""
        self._run_core(now)
        self.flush_device()
