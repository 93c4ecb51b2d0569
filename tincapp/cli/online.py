"""CLI commands that talk to a running daemon over the control socket: start, stop, restart,
reload, pid, dump, info, purge, debug, retry, connect, disconnect, log, pcap.

Output and messages copy tincctl.c and info.c; dump lines are formatted by
tincapp.mesh.graph_dot (format_dump / format_graph), so `dump` prints what real tinc prints
for the same daemon.
"""
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

from tincapp import control
from tincapp.__main__ import program_argv
from tincapp.cli.common import CliError, err, out_bytes
from tincapp.control import Ctl
from tincapp.config.variables import check_id
from tincapp.errors import WireError
from tincapp.mesh import graph as g
from tincapp.mesh.graph_dot import DumpParseError, format_dump, format_graph
from tincapp.mesh.subnets import SubnetType, parse_subnet

# Program run by `tinc start` instead of our own tincd (e.g. a real tincd for comparisons).
TINCD_ENV = "TINCAPP_TINCD"
START_TIMEOUT_S = 30.0
DEBUG_UNSET = -1


def _too_many(args, limit):
    if len(args) > limit:
        raise CliError("Too many arguments!")


def _connected(client):
    if not client.connect(True):
        raise CliError()
    return client


def _simple(client, req, failure, *extra):
    _connected(client)
    client.request(int(req), *extra)
    if client.result(req) != 0:
        raise CliError(failure)
    return 0


# --- stop / start / restart / reload / pid ----------------------------------------------------

def stop_tincd(client):
    if not client.connect(True):
        return False
    client.request(int(Ctl.STOP))
    while client.recvline() is not None:
        pass        # wait for the daemon to close the connection
    client.close()
    client.pid = 0
    return True


def cmd_stop(ctx, args, client):
    _too_many(args, 0)
    if stop_tincd(client):
        return 0
    if client.pid:
        try:
            os.kill(client.pid, signal.SIGTERM)
        except OSError as e:
            raise CliError(f"Could not send TERM signal to process with PID {client.pid}: "
                           f"{e.strerror}") from e
        err(f"Sent TERM signal to process with PID {client.pid}.")
        try:
            os.waitpid(client.pid, 0)
        except ChildProcessError:
            pass
        return 0
    return 1


def tincd_command(ctx):
    """How to run tincd: $TINCAPP_TINCD, else this same program as `tincapp tincd`."""
    override = os.environ.get(TINCD_ENV)
    if override:
        return [override], override
    return program_argv("tincd"), sys.executable if getattr(sys, "frozen", False) else "tincd"


def _pidfile_stamp(path):
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return None


def cmd_start(ctx, args, client, timeout_s=START_TIMEOUT_S):
    if client.connect(False):
        if ctx.netname:
            err(f"A tincd is already running for net `{ctx.netname}' with pid {client.pid}.")
        else:
            err(f"A tincd is already running with pid {client.pid}.")
        client.close()
        return 0
    command, shown = tincd_command(ctx)
    argv = command + list(ctx.option_args) + list(args)
    before = _pidfile_stamp(ctx.pidfile)
    parent_end, child_end = socket.socketpair()
    env = dict(os.environ)
    # COMPAT: tincd reports its start-up through the inherited umbilical socket: log text,
    # then a NUL byte right before closing it when the start succeeded.
    env["TINC_UMBILICAL"] = f"{child_end.fileno()} 0"
    try:
        proc = subprocess.Popen(argv, env=env, pass_fds=(child_end.fileno(),))
    except OSError as e:
        parent_end.close()
        child_end.close()
        raise CliError(f"Error starting {shown}: {e.strerror}") from e
    child_end.close()
    ok = _wait_started(ctx, proc, parent_end, before, timeout_s)
    parent_end.close()
    if not ok:
        raise CliError(f"Error starting {shown}")
    return 0


def _wait_started(ctx, proc, umbilical, before, timeout_s):
    """True once tincd says it started (NUL on the umbilical), or its PID file is new and its
    control socket answers; False when it exits with an error or the time is up."""
    deadline = time.monotonic() + timeout_s
    last = b"\1"
    open_ = True
    while time.monotonic() < deadline:
        if open_:
            ready, _, _ = select.select([umbilical], [], [], 0.1)
            if ready:
                data = umbilical.recv(4096)
                if not data:
                    open_ = False
                    if last == b"\0":
                        return _child_ok(proc)
                else:
                    last = data[-1:]
                    text = data[:-1] if last == b"\0" else data
                    os.write(2, text)
                continue
        else:
            time.sleep(0.1)
        code = proc.poll()
        if code is not None and code != 0:
            return False
        stamp = _pidfile_stamp(ctx.pidfile)
        if stamp is not None and stamp != before:
            from tincapp.cli.ctlclient import Client
            probe = Client(ctx)
            if probe.connect(False):
                probe.close()
                return True
    return False


def _child_ok(proc):
    # A forking tincd exits 0 after the NUL; with -D it keeps running (we do not wait: tinc
    # would block in waitpid() until the daemon stops).
    code = proc.poll()
    return code is None or code == 0


def cmd_restart(ctx, args, client):
    try:
        cmd_stop(ctx, [], client)
    except CliError as e:
        if e.message:
            err(e.message)
    client.close()
    return cmd_start(ctx, args, client)


def cmd_reload(ctx, args, client):
    _too_many(args, 0)
    return _simple(client, Ctl.RELOAD, "Could not reload configuration.")


def cmd_pid(ctx, args, client):
    _too_many(args, 0)
    if not client.connect(True) or not client.pid:
        return 1
    print(client.pid)
    return 0


# --- dump ------------------------------------------------------------------------------------

def dump_invitations(ctx):
    from tincapp import b64
    dname = f"{ctx.confbase}/invitations"
    try:
        listing = os.listdir(dname)
    except FileNotFoundError:
        err("No outstanding invitations.")
        return 0
    except OSError as e:
        raise CliError(f"Cannot not read directory {dname}: {e.strerror}") from e
    found = False
    for entry in sorted(listing):
        try:
            if len(b64.decode(entry[:24])) != 18:
                continue
        except Exception:
            continue
        fname = f"{dname}/{entry}"
        try:
            with open(fname, "rb") as f:
                first = f.readline(2048).decode("latin-1")
        except OSError as e:
            err(f"Cannot open {fname}: {e.strerror}")
            continue
        first = first.rstrip("\t \r\n")
        if not first.startswith("Name = ") or not check_id(first[7:]):
            err(f"Invalid invitation file {fname}")
            continue
        found = True
        print(f"{entry} {first[7:]}")
    if not found:
        err("No outstanding invitations.")
    return 0


def _usage_error(message):
    err(message)
    return CliError("Try `tinc --help' for more information.")


def cmd_dump(ctx, args, client):
    only_reachable = False
    if len(args) > 1 and args[0].lower() == "reachable":
        if args[1].lower() != "nodes":
            raise _usage_error("`reachable' only supported for nodes.")
        only_reachable = True
        args = args[1:]
    if len(args) != 1:
        raise _usage_error("Invalid number of arguments.")
    what = args[0].lower()
    if what == "invitations":
        return dump_invitations(ctx)
    if what == "tunnels":
        _connected(client)
        client.request(int(Ctl.DUMP_TUNNELS))
        for text in format_tunnels(tunnel_records(client)):
            print(text)
        return 0
    requests = {"nodes": [Ctl.DUMP_NODES], "edges": [Ctl.DUMP_EDGES],
                "subnets": [Ctl.DUMP_SUBNETS], "connections": [Ctl.DUMP_CONNECTIONS],
                "graph": [Ctl.DUMP_NODES, Ctl.DUMP_EDGES],
                "digraph": [Ctl.DUMP_NODES, Ctl.DUMP_EDGES]}
    if what not in requests:
        _connected(client)
        raise _usage_error(f"Unknown dump type '{args[0]}'.")
    _connected(client)
    for req in requests[what]:
        client.request(int(req))
    try:
        if what in ("graph", "digraph"):
            sys.stdout.write(format_graph(client.lines(), directed=what == "digraph"))
        elif what == "connections":
            for text in format_connections(client.lines()):
                print(text)
        else:
            for text in format_dump(client.lines(), only_reachable=only_reachable):
                print(text)
    except DumpParseError as e:
        if what in ("graph", "digraph"):
            sys.stdout.write("".join(s + "\n" for s in e.printed))
        else:
            for text in e.printed:
                print(text)
        raise CliError(str(e)) from None
    return 0


@dataclass(frozen=True)
class TunnelRecord:
    """One DUMP_TUNNELS line (tincapp's own request; see io/dataplane.tunnel_lines)."""
    name: str
    key: str
    restarts: int
    last_age_s: Optional[float]
    errors: int
    replayed: int
    late: int
    suppressed: int
    grace: int
    udp: bool
    pmtu: int
    kinds: str
    reason: Optional[str]


def tunnel_records(client):
    """The DUMP_TUNNELS reply as TunnelRecords; CliError if the daemon does not know it (real
    tincd answers "18 -1")."""
    out = []
    for line in client.lines():
        t = line.split(" ", 14)
        if t[:2] == [str(control.CONTROL), str(control.INVALID)]:
            raise CliError("The daemon does not know `dump tunnels' (it is tincapp's own).")
        if len(t) == 2:
            return out
        try:
            out.append(TunnelRecord(
                t[2], t[3], int(t[4]), None if t[5] == "-" else float(t[5]), int(t[6]),
                int(t[7]), int(t[8]), int(t[9]), int(t[10]), t[11] == "1", int(t[12]), t[13],
                None if t[14] == "-" else t[14]))
        except (IndexError, ValueError):
            raise CliError("Unable to parse tunnel dump from tincd.") from None
    raise CliError("Error receiving tunnel dump.")


def format_tunnels(records):
    """`tinc dump tunnels`: one line per peer with its SPTPS tunnel's key state and restarts."""
    for r in records:
        last = (f" last restart {r.last_age_s:.0f} s ago: {r.reason}"
                if r.last_age_s is not None else "")
        yield (f"{r.name} key {r.key} {'udp' if r.udp else 'tcp'} pmtu {r.pmtu} "
               f"restarts {r.restarts} errors {r.errors} ({r.kinds.replace(',', ' ')}) "
               f"replayed {r.replayed} late {r.late} suppressed {r.suppressed}"
               f" grace {r.grace}{last}")


def format_connections(lines):
    """`tinc dump connections` output from DUMP_CONNECTIONS reply lines (tincctl.c)."""
    out = []
    for line in lines:
        t = line.split()
        try:
            int(t[0])
            req = int(t[1])
        except (IndexError, ValueError):
            break
        if len(t) == 2:
            return out
        if req != Ctl.DUMP_CONNECTIONS:
            raise DumpParseError("Unable to parse dump from tincd.", out)
        try:
            if len(t) < 9 or t[4] != "port":
                raise ValueError
            name, host, port = t[2], t[3], t[5]
            options, fd, status = int(t[6], 16), int(t[7]), int(t[8], 16)
        except ValueError:
            raise DumpParseError("Unable to parse connection dump from tincd.", out) from None
        out.append(f"{name} at {host} port {port} options {options & 0xFFFFFFFF:x} "
                   f"socket {fd} status {status & 0xFFFFFFFF:x}")
    raise DumpParseError("Error receiving dump.", out)


# --- info ------------------------------------------------------------------------------------

def _strip_weight(netstr):
    return netstr[:-3] if netstr.endswith("#10") else netstr


def _localtime(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _cdiv(a, b):
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def info_node(client, item):
    from tincapp.mesh.graph_dot import _parse_node
    client.request(int(Ctl.DUMP_NODES), item)
    found = None
    for line in client.lines():
        t = line.split()
        if len(t) == 2:
            break
        try:
            n = _parse_node(line)
        except DumpParseError:
            raise CliError("Unable to parse node dump from tincd.") from None
        if n.name == item:
            found = n
            break
    if found is None:
        raise CliError(f"Unknown node {item}.")
    n = found
    for line in client.lines():
        if len(line.split()) == 2:
            break
    o = [f"Node:         {item}", f"Node ID:      {n.id}", f"Address:      {n.host} port {n.port}"]
    when = _localtime(n.last_state_change) if n.last_state_change else "never"
    reachable = n.status & g.STATUS_REACHABLE
    o.append(f"Online since: {when}" if reachable else f"Last seen:    {when}")
    bits = [(g.STATUS_VALIDKEY, "validkey"), (g.STATUS_VISITED, "visited"),
            (g.STATUS_REACHABLE, "reachable"), (g.STATUS_INDIRECT, "indirect"),
            (g.STATUS_SPTPS, "sptps"), (g.STATUS_UDP_CONFIRMED, "udp_confirmed")]
    o.append("Status:      " + "".join(f" {w}" for b, w in bits if n.status & b))
    opts = [(g.OPTION_INDIRECT, "indirect"), (g.OPTION_TCPONLY, "tcponly"),
            (g.OPTION_PMTU_DISCOVERY, "pmtu_discovery"), (g.OPTION_CLAMP_MSS, "clamp_mss")]
    o.append("Options:     " + "".join(f" {w}" for b, w in opts if n.options & b))
    o.append(f"Protocol:     {control.PROT_MAJOR}.{n.options >> 24}")
    if n.host == "MYSELF":
        o.append("Reachability: can reach itself")
    elif not reachable:
        o.append("Reachability: unreachable")
    elif n.via != item:
        o.append(f"Reachability: indirectly via {n.via}")
    elif not n.status & g.STATUS_VALIDKEY:
        o.append("Reachability: unknown")
    elif n.minmtu > 0:
        o.append("Reachability: directly with UDP")
        o.append(f"PMTU:         {n.pmtu}")
        if n.udp_ping_rtt != -1:
            r = n.udp_ping_rtt
            o.append(f"RTT:          {_cdiv(r, 1000)}.{r - 1000 * _cdiv(r, 1000):03d}")
    elif n.nexthop == item:
        o.append("Reachability: directly with TCP")
    else:
        o.append(f"Reachability: none, forwarded via {n.nexthop}")
    o.append(f"RX:           {n.in_packets} packets  {n.in_bytes} bytes")
    o.append(f"TX:           {n.out_packets} packets  {n.out_bytes} bytes")
    sys.stdout.write("\n".join(o) + "\n")
    sys.stdout.write("Edges:       ")
    client.request(int(Ctl.DUMP_EDGES), item)
    for line in client.lines():
        t = line.split()
        if len(t) == 2:
            break
        if len(t) < 4:
            sys.stdout.flush()
            raise CliError(f"Unable to parse edge dump from tincd.\n{line}")
        if t[2] == item:
            sys.stdout.write(f" {t[3]}")
    sys.stdout.write("\n")
    sys.stdout.write("Subnets:     ")
    client.request(int(Ctl.DUMP_SUBNETS), item)
    for line in client.lines():
        t = line.split()
        if len(t) == 2:
            break
        if len(t) < 4:
            sys.stdout.flush()
            raise CliError("Unable to parse subnet dump from tincd.")
        if t[3] == item:
            sys.stdout.write(f" {_strip_weight(t[2])}")
    sys.stdout.write("\n")
    if n.host != "MYSELF":
        _info_tunnel(client, item)
    return 0


def _info_tunnel(client, item):
    """tincapp's addition to `info NODE`, after tinc's lines: the SPTPS tunnel's key state and
    restart record (DUMP_TUNNELS). Nothing when the daemon is real tincd."""
    client.request(int(Ctl.DUMP_TUNNELS))
    try:
        records = tunnel_records(client)
    except CliError:
        return
    r = next((r for r in records if r.name == item), None)
    if r is None:
        return
    last = (f", last {r.last_age_s:.0f} s ago: {r.reason}" if r.last_age_s is not None
            else "")
    print(f"Tunnel:       key {r.key}, {'UDP' if r.udp else 'TCP'}, {r.restarts} restarts{last}")
    print(f"Decode errors: {r.errors} ({r.kinds.replace(',', ' ')}), replayed {r.replayed}, "
          f"late {r.late}, suppressed {r.suppressed}, during grace {r.grace}")


def info_subnet(client, item):
    try:
        find = parse_subnet(item)
    except WireError:
        raise CliError(f"Could not parse subnet or address '{item}'.") from None
    address = "/" not in item
    weight = "#" in item
    found = False
    client.request(int(Ctl.DUMP_SUBNETS), item)
    for line in client.lines():
        t = line.split()
        if len(t) == 2:
            break
        try:
            if len(t) < 4:
                raise WireError("short")
            subnet = parse_subnet(t[2])
        except WireError:
            raise CliError("Unable to parse subnet dump from tincd.") from None
        if find.type != subnet.type:
            continue
        if weight and find.weight != subnet.weight:
            continue
        if find.type in (SubnetType.IPV4, SubnetType.IPV6):
            if address:
                if not subnet.matches(find.address):
                    continue
            elif (find.prefixlength != subnet.prefixlength
                  or find.address != subnet.address):
                continue
        elif find.address != subnet.address:
            continue
        found = True
        print(f"Subnet: {_strip_weight(t[2])}")
        print(f"Owner:  {t[3]}")
    if not found:
        raise CliError(f"Unknown address {item}." if address else f"Unknown subnet {item}.")
    return 0


def cmd_info(ctx, args, client):
    if len(args) != 1:
        raise CliError("Invalid number of arguments.")
    _connected(client)
    item = args[0]
    if check_id(item):
        return info_node(client, item)
    if "." in item or ":" in item:
        return info_subnet(client, item)
    raise CliError("Argument is not a node name, subnet or address.")


# --- purge / debug / retry / connect / disconnect ----------------------------------------------

def cmd_purge(ctx, args, client):
    _too_many(args, 0)
    return _simple(client, Ctl.PURGE, "Could not purge old information.")


def cmd_retry(ctx, args, client):
    _too_many(args, 0)
    return _simple(client, Ctl.RETRY, "Could not retry outgoing connections.")


def _c_atoi(text):
    text = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = ""
    for ch in text:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def cmd_debug(ctx, args, client):
    if len(args) != 1:
        raise CliError("Invalid number of arguments.")
    _connected(client)
    level = _c_atoi(args[0])
    client.request(int(Ctl.SET_DEBUG), level)
    orig = client.result(Ctl.SET_DEBUG)
    if orig is None:
        raise CliError("Could not set debug level.")
    err(f"Old level {orig}, new level {level}.")
    return 0


def _node_request(client, args, req, failure):
    if len(args) != 1:
        raise CliError("Invalid number of arguments.")
    if not check_id(args[0]):
        raise CliError("Invalid name for node.")
    return _simple(client, req, failure.format(args[0]), args[0])


def cmd_connect(ctx, args, client):
    return _node_request(client, args, Ctl.CONNECT, "Could not connect to {}.")


def cmd_disconnect(ctx, args, client):
    return _node_request(client, args, Ctl.DISCONNECT, "Could not disconnect {}.")


# --- log / pcap ------------------------------------------------------------------------------

def _use_color(stream):
    try:
        return stream.isatty() and os.environ.get("TERM", "") not in ("", "dumb")
    except (AttributeError, ValueError):
        return False


def cmd_log(ctx, args, client):
    _too_many(args, 1)
    _connected(client)
    level = _c_atoi(args[0]) if args else DEBUG_UNSET
    client.request(int(Ctl.LOG), level, int(_use_color(sys.stdout)))
    client.sock.settimeout(None)
    try:
        while True:
            data = client.recv_framed(Ctl.LOG, 1024)
            if data is None:
                break
            out_bytes(data + b"\n")
    except KeyboardInterrupt:
        err("")
    client.close()
    return 0


def cmd_pcap(ctx, args, client):
    _too_many(args, 1)
    _connected(client)
    snaplen = _c_atoi(args[0]) if args else 0
    client.request(int(Ctl.PCAP), snaplen)
    client.sock.settimeout(None)
    # COMPAT: pcap global header: magic, version 2.4, zone 0, sigfigs 0, snaplen, Ethernet.
    out_bytes(struct.pack("=IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, snaplen or 9018, 1))
    try:
        while True:
            data = client.recv_framed(Ctl.PCAP, 9018)
            if data is None:
                break
            now = time.time()
            sec = int(now)
            out_bytes(struct.pack("=IIII", sec, int((now - sec) * 1e6), len(data), len(data)) + data)
    except KeyboardInterrupt:
        pass
    client.close()
    return 0
