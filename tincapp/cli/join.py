"""`tinc join URL` (invitation.c cmd_join and finalize_join; spec control-and-cli.md 6.2-6.3).

Connects to the inviter, runs the stream SPTPS session labelled "tinc invitation" with a
throw-away key, sends the cookie, receives the invitation file, writes the new network's
files (atomically, each one) and sends our new public key. tinc-up is generated from
Ifconfig/Route lines with Linux commands (ifconfig.c's HAVE_LINUX branch).
"""
import os
import socket
import sys

from tincapp import b64, keys
from tincapp.cli.common import CliError, err, make_ctx, strerror
from tincapp.fileio import atomic_write
from tincapp.cli.offline import CTL_VARIABLES, check_port
from tincapp.config.netconf import check_netname
from tincapp.config.variables import check_id
from tincapp.errors import Base64Error, SptpsError, WireError
from tincapp.mesh.subnets import SubnetType, parse_subnet
from tincapp.sptps.crypto import sha512
from tincapp.sptps.session import HandshakeCompleted, RecordReceived, SptpsSession

LABEL = b"tinc invitation"
WAIT_S = 5.0
SEPARATOR_LINE = "#---------------------------------------------------------------#"


class _Invalid(Exception):
    pass


def parse_url(url):
    """(address, port, key hash, cookie) of an invitation URL; _Invalid if malformed."""
    url = url.rstrip("\t\r\n ")
    if "/" not in url:
        raise _Invalid()
    hostport, rest = url.split("/", 1)
    if len(rest) != 48:
        raise _Invalid()
    port = None
    if hostport.startswith("["):
        if "]" not in hostport:
            raise _Invalid()
        address, after = hostport[1:].split("]", 1)
        if after.startswith(":"):
            port = after[1:]
    else:
        address, _, port = hostport.partition(":")
    try:
        key_hash, cookie = b64.decode(rest[:24]), b64.decode(rest[24:])
    except Base64Error:
        raise _Invalid() from None
    if len(key_hash) != 18 or len(cookie) != 18:
        raise _Invalid()
    return address, port or "655", key_hash, cookie


class _TincUp:
    """ifconfig.c for Linux: a tinc-up script from Ifconfig and Route lines."""

    def __init__(self):
        self.lines = ["#!/bin/sh\n", 'ip link set "$INTERFACE" up\n']
        self.header_len = len(self.lines)

    def ifconfig(self, value):
        v = value.lower()
        if v == "dhcp":
            self.lines.append('dhclient -nw "$INTERFACE"\n')
        elif v == "dhcp6":
            self.lines.append('dhclient -6 -nw "$INTERFACE"\n')
        elif v == "slaac":
            self.lines.append('echo 1 >"/proc/sys/net/ipv6/conf/$INTERFACE/accept_ra"\n')
            self.lines.append('echo 1 >"/proc/sys/net/ipv6/conf/$INTERFACE/autoconf"\n')
        else:
            try:
                address = parse_subnet(value)
            except WireError:
                err("Could not parse address in Ifconfig statement")
                return
            if address.type != SubnetType.MAC:
                self.lines.append(f'ip addr replace {address} dev "$INTERFACE"\n')

    def route(self, value):
        net, _, gateway = value.partition(" ")
        try:
            subnet = parse_subnet(net)
            if subnet.type == SubnetType.MAC:
                raise WireError("mac")
        except WireError:
            err("Could not parse subnet in Route statement")
            return
        if gateway:
            try:
                gw = parse_subnet(gateway)
                if gw.type != subnet.type:
                    raise WireError("type")
            except WireError:
                err("Could not parse gateway in Route statement")
                return
            gw_text = str(gw).split("/")[0]
            self.lines.append(f'ip route add {subnet} via {gw_text} dev "$INTERFACE" onlink\n')
        else:
            self.lines.append(f'ip route add {subnet} dev "$INTERFACE"\n')

    def finish(self):
        """(script text, whether it does something)."""
        if len(self.lines) == self.header_len:
            self.lines.append("#ip addr add <your vpn IP address>/<prefix of whole VPN> dev "
                              "$INTERFACE\n\necho \"Unconfigured tinc-up script, please edit "
                              "'$0'!\" >&2\n")
            return "".join(self.lines), False
        return "".join(self.lines), True


def _split(line):
    n = len(line)
    for i, ch in enumerate(line):
        if ch in "\t =":
            n = i
            break
    value = line[n:].lstrip("\t ")
    if value.startswith("="):
        value = value[1:].lstrip("\t ")
    return line[:n], value


def _grep(data, var):
    for line in data.split("\n"):
        if line[:len(var)].lower() == var.lower() and line[len(var):len(var) + 1] in \
                (" ", "\t", "="):
            return _split(line)[1]
    return None


def finalize_join(ctx, data, rng=os.urandom):
    """Write the network described by invitation data; returns (new ctx, key)."""
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    var, name = _split(lines[0]) if lines else ("", "")
    if var.lower() != "name":
        raise CliError("No Name found in invitation!")
    if not check_id(name):
        raise CliError("Invalid Name found in invitation!")
    netname = ctx.netname
    if netname is None and not ctx.confbase_given:
        net = _grep(data, "NetName")
        if net is not None:
            if not check_netname(net, strict=True):
                raise CliError("Unsafe NetName found in invitation!")
            netname = net
    if netname != ctx.netname:
        ctx = make_ctx(ctx.program, None, netname, None, ctx.force, ctx.tty, ctx.option_args)
    if os.path.lexists(ctx.tinc_conf):
        # DEVIATION: tinc then joins under a random netname "join_XXXX" and asks for a
        # better one; here the user picks a free netname or directory and retries.
        raise CliError(f"Configuration file {ctx.tinc_conf} already exists!")
    for path in (ctx.confbase, ctx.hosts_dir, f"{ctx.confbase}/cache"):
        try:
            os.makedirs(path, 0o755, exist_ok=True)
        except OSError as e:
            raise CliError(f"Could not create directory {path}: {strerror(e)}") from e
    server, host = [f"Name = {name}\n"], []
    up = _TincUp()
    by_name = {v.name.lower(): v for v in CTL_VARIABLES}
    i = 0
    next_name = None
    while i < len(lines):
        line = lines[i]
        i += 1
        if len(line) >= 1024:
            raise CliError("Maximum line length exceeded!")
        if line.startswith("#"):
            continue
        var, value = _split(line)
        if not var:
            continue
        low = var.lower()
        if low == "name":
            if value != name:
                next_name = value
                break
            continue
        if low == "netname":
            continue
        known = by_name.get(low)
        if known is None:
            if low == "ifconfig":
                up.ifconfig(value)
                continue
            if low == "route":
                up.route(value)
                continue
            err(f"Ignoring unknown variable '{var}' in invitation.")
            continue
        if not known.safe:
            if ctx.force:
                err(f"Warning: unsafe variable '{var}' in invitation.")
            else:
                err(f"Ignoring unsafe variable '{var}' in invitation.")
                continue
        (host if known.host else server).append(f"{var} = {value}\n")
    others = {}
    while next_name is not None:
        if not check_id(next_name):
            raise CliError("Invalid Name found in invitation.")
        if next_name == name:
            raise CliError("Secondary chunk would overwrite our own host config file.")
        body, current, next_name = [], next_name, None
        while i < len(lines):
            line = lines[i]
            i += 1
            if line == SEPARATOR_LINE:
                continue
            var, value = _split(line)
            if len(var) == 4 and var.lower() == "name":
                next_name = value
                break
            body.append(line + "\n")
        others[current] = "".join(body)
    key = keys.generate_private_key(rng)
    host.append(keys.hosts_line(key.public))
    script, useful = up.finish()
    files = [(ctx.tinc_conf, "".join(server), 0o644),
             (f"{ctx.confbase}/invitation-data", data, 0o644)]
    files += [(ctx.host_file(n), body, 0o644) for n, body in others.items()]
    files.append((ctx.host_file(name), "".join(host), 0o644))
    try:
        for path, text, mode in files:
            atomic_write(path, text.encode("latin-1"), default_mode=mode)
        keys.write_private_key(f"{ctx.confbase}/ed25519_key.priv", key)
    except OSError as e:
        raise CliError(f"Could not create file {path}: {strerror(e)}") from e
    check_port(ctx, name)
    target = f"{ctx.confbase}/tinc-up"
    if not useful:
        atomic_write(target, script.encode(), mode=0o755)
    elif ctx.force:
        atomic_write(target, script.encode(), mode=0o755)
        err("tinc-up enabled.")
    else:
        # DEVIATION: no interactive review; the script is kept as tinc-up.invitation.
        atomic_write(f"{ctx.confbase}/tinc-up.invitation", script.encode())
        err("A tinc-up script was generated, but has been left disabled.")
    err(f"Configuration stored in: {ctx.confbase}")
    return ctx, key


def _connect(address, port):
    try:
        infos = socket.getaddrinfo(address, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except OSError as e:
        raise CliError(f"Error looking up {address} port {port}: {strerror(e)}") from e
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        sock.settimeout(WAIT_S)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            err(f"Could not connect to {sockaddr[0]} port {sockaddr[1]}: {strerror(e)}")
            sock.close()
    raise CliError("Could not connect to inviter. Please make sure the URL you entered is "
                   "valid.")


def _recvline(sock, buf):
    while b"\n" not in buf:
        data = sock.recv(4096)
        if not data:
            return None, buf
        buf += data
    line, _, rest = buf.partition(b"\n")
    return line.decode("latin-1"), rest


def cmd_join(ctx, args):
    if len(args) > 1:
        raise CliError("Too many arguments!")
    if not ctx.confbase_given:
        os.makedirs(ctx.confdir, 0o755, exist_ok=True)
    try:
        os.makedirs(ctx.confbase, 0o755, exist_ok=True)
    except OSError as e:
        raise CliError(f"Could not create directory {ctx.confbase}: {strerror(e)}") from e
    if not os.access(ctx.confbase, os.R_OK | os.W_OK | os.X_OK):
        raise CliError(f"No permission to write in directory {ctx.confbase}: "
                       f"Permission denied")
    if (ctx.netname or ctx.confbase_given) and os.path.lexists(ctx.tinc_conf):
        raise CliError(f"Configuration file {ctx.tinc_conf} already exists!")
    if args:
        url = args[0]
    else:
        if ctx.tty:
            sys.stderr.write("Enter invitation URL: ")
            sys.stderr.flush()
        url = sys.stdin.readline()
        if not url:
            raise CliError("Error while reading stdin: Broken pipe")
    try:
        address, port, key_hash, cookie = parse_url(url)
    except _Invalid:
        raise CliError("Invalid invitation URL.") from None
    throwaway = keys.generate_private_key(os.urandom)
    sock = _connect(address, port)
    err(f"Connected to {address} port {port}...")
    try:
        return _run_join(ctx, sock, throwaway, key_hash, cookie)
    finally:
        sock.close()


def _run_join(ctx, sock, throwaway, key_hash, cookie):
    cancelled = ("Invitation cancelled. Please try again and contact the inviter for "
                 "assistance if this error persists.")
    buf = b""
    try:
        sock.sendall(f"0 ?{b64.encode(throwaway.public)} 17.1\n".encode())
        first, buf = _recvline(sock, buf)
        second, buf = _recvline(sock, buf) if first is not None else (None, buf)
    except OSError:
        first = second = None
    f = first.split() if first else []
    s = second.rstrip("\t\r\n ") if second else ""
    if (len(f) < 3 or f[0] != "0" or not f[2].startswith("17.") or not check_id(f[1])
            or not s.startswith("4 ") or len(s) < 3):
        raise CliError("Cannot read greeting from peer")
    fingerprint = s[2:]
    if sha512(fingerprint.encode("latin-1"))[:18] != key_hash:
        raise CliError("Peer has an invalid key. Please make sure you're using the correct "
                       f"URL.\n{fingerprint}")
    try:
        his_key = keys.public_key_from_b64(fingerprint)
    except Exception:
        raise CliError(cancelled) from None
    session = SptpsSession(initiator=True, datagram=False, label=LABEL, my_key=throwaway,
                           peer_public=his_key, rng=os.urandom)
    session.start()
    data = bytearray()
    success = False

    def flush():
        for _, chunk in session.pop_outgoing():
            sock.sendall(chunk)

    try:
        flush()
        pending = buf
        while not success:
            if not pending:
                pending = sock.recv(65536)
                if not pending:
                    break
            events = session.receive(pending)
            pending = b""
            for ev in events:
                if isinstance(ev, HandshakeCompleted):
                    session.send_record(0, cookie)
                elif isinstance(ev, RecordReceived):
                    if ev.type == 0:
                        data += ev.data
                    elif ev.type == 1:
                        ctx, key = finalize_join(ctx, bytes(data).decode("latin-1"))
                        session.send_record(1, b64.encode(key.public).encode())
                    elif ev.type == 2:
                        err("Invitation successfully accepted.")
                        success = True
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        break
                    else:
                        raise SptpsError(f"unexpected record type {ev.type}")
            if not success:
                flush()
    except (OSError, SptpsError) as e:
        err(f"Error reading data: {e}")
    if not success:
        raise CliError(cancelled)
    return 0
