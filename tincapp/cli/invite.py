"""`tinc invite NODE` and `tinc edit FILE` (tincctl.c cmd_edit, invitation.c cmd_invite).

invite writes the invitation file (spec control-and-cli.md 6.1) and prints the URL; the
invitation key is created on first use and a running daemon is told to reload. `join` is not
implemented.
"""
import os
import subprocess
import time

from tincapp import b64, keys
from tincapp.cli.common import CliError, err, fgets_lines, get_my_name, strerror
from tincapp.config import secrets
from tincapp.config.netconf import check_netname
from tincapp.config.variables import check_id
from tincapp.fileio import atomic_write
from tincapp.errors import KeyFileError, WireError
from tincapp.io.scripts import script_argv, script_path
from tincapp.sptps.crypto import sha512

INVITATION_MAX_AGE_S = 604800        # tinc deletes invitation files older than a week
CONFFILES = ("tinc.conf", "tinc-up", "tinc-down", "subnet-up", "subnet-down", "host-up",
             "host-down")


# --- edit ------------------------------------------------------------------------------------

def cmd_edit(ctx, args, client):
    if len(args) != 1:
        raise CliError("Invalid number of arguments.")
    arg = args[0]
    filename = None
    if not arg.startswith("hosts/"):
        if arg in CONFFILES:
            filename = f"{ctx.confbase}/{arg}"
    else:
        arg = arg[6:]
    if filename is None:
        filename = f"{ctx.hosts_dir}/{arg}"
        if "-" in arg:
            node, dash = arg.split("-", 1)
            if dash not in ("up", "down") or not check_id(node):
                raise CliError("Invalid configuration filename.")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    result = subprocess.call(f'"{editor}" "{filename}"', shell=True)
    if result:
        # DEVIATION: tinc returns system()'s raw status (256 for exit 1, which the shell then
        # sees as 0); any failure is exit code 1 here.
        return 1
    if client.connect(False):
        client.request(1)
        client.close()
    return 0


# --- invite ----------------------------------------------------------------------------------

def _scan_for_hostname(filename, hostname, port, key=None):
    """invitation.c scan_for_hostname(): the first Address (and its port) and Port."""
    if hostname and port:
        return hostname, port
    try:
        data = secrets.read_bytes(filename, key).decode("latin-1")
    except (OSError, secrets.SecretsError):
        return hostname, port
    for line in fgets_lines(data.encode("latin-1")):
        line = line.decode("latin-1").rstrip("\t\r\n ")
        if not line:
            continue
        n = len(line)
        for i, ch in enumerate(line):
            if ch in "\t =":
                n = i
                break
        if n == len(line):
            continue
        var, rest = line[:n], line[n:].lstrip("\t ")
        if rest.startswith("="):
            rest = rest[1:].lstrip("\t ")
        words = rest.split(None, 2) if rest else []
        value = words[0] if words else ""
        extra = words[1] if len(words) > 1 else ""
        if not port and var.lower() == "port":
            port = value
        elif not hostname and var.lower() == "address":
            hostname = value
            if extra:
                port = extra
        if hostname and port:
            break
    return hostname, port


def _is_decimal(text):
    t = text.strip(" \t\n\v\f\r")
    t = t[1:] if t[:1] in "+-" else t
    return bool(t) and t.isdigit()


def _valid_hostname(text, allow_colon):
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
    if allow_colon:
        ok.add(":")
    return bool(text) and all(ch in ok for ch in text)


def get_my_hostname(ctx, client, key=None):
    """(host[:port] for the URL, port) as invitation.c get_my_hostname(), or CliError.

    DEVIATION: tinc asks tinc-vpn.org for the external address when none is configured;
    tincapp never contacts third parties: it asks (interactive) or fails."""
    name = get_my_name(ctx, False, key)
    hostname = port = None
    host_file = None
    if name is not None and check_id(name):
        host_file = ctx.host_file(name)
        hostname, port = _scan_for_hostname(host_file, hostname, port, key)
        hostname, port = _scan_for_hostname(ctx.tinc_conf, hostname, port, key)
    if not port or (_is_decimal(port) and int(port) == 0):
        try:
            port = client.read_pidfile().port
        except (OSError, WireError):
            raise CliError("tincd is using a dynamic port and is not running. Please start "
                           "tincd or set the Port option to a non-zero value.") from None
    if not hostname:
        if not ctx.tty:
            raise CliError("Could not determine the external address or hostname. Please set "
                           "Address manually.")
        import sys
        while True:
            sys.stderr.write("Please enter your host's external address or hostname: ")
            sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                raise CliError("Error while reading stdin: end of file")
            line = line.rstrip("\t\r\n ")
            if not line:
                continue
            if not _valid_hostname(line, False):
                err("Invalid address or hostname.")
                continue
            hostname = line
            break
        if host_file is not None:
            try:
                secrets.append_file(host_file, f"Address = {hostname}\n".encode(), key)
            except (OSError, secrets.SecretsError) as e:
                err(f"Could not append Address to {host_file}: {strerror(e)}")
    if ":" in hostname:
        return f"[{hostname}]:{port}", port
    return f"{hostname}:{port}", port


def _host_config_replacing_port(path, port, key=None):
    try:
        data = secrets.read_bytes(path, key)
    except secrets.SecretsError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"Could not open {path}: {strerror(e)}") from e
    out = []
    for line in fgets_lines(data):
        stripped = line.lstrip(b"\t ")
        n = len(stripped)
        for i, ch in enumerate(stripped):
            if ch in b"\t ":
                n = i
                break
        word = stripped[:n]
        # COMPAT: strncasecmp(word, "Port", len(word)) with the word ending at a space or
        # tab only: "Port = 1" and even "P = 1" are replaced, "Port=1" is copied.
        if word and b"port".startswith(word.lower()):
            out.append(f"Port = {port}\n".encode())
        else:
            out.append(line)
    return b"".join(out)


def cmd_invite(ctx, args, client, now=None, rng=os.urandom, config_key=None):
    if len(args) < 1:
        raise CliError("Not enough arguments!")
    if len(args) > 1:
        raise CliError("Too many arguments!")
    node = args[0]
    if not check_id(node):
        raise CliError("Invalid name for node.")
    myname = get_my_name(ctx, True, config_key)
    if myname is None:
        raise CliError()
    if os.path.lexists(ctx.host_file(node)):
        raise CliError(f"A host config file for {node} already exists!")
    if client.connect(False):
        client.request(3)
        known = False
        for line in client.lines():
            t = line.split()
            if len(t) < 3:
                break
            if t[2] == node:
                known = True
        client.close()
        if known:
            raise CliError(f"A node with name {node} is already known!")
    invdir = f"{ctx.confbase}/invitations"
    try:
        os.mkdir(invdir, 0o700)
    except FileExistsError:
        os.chmod(invdir, 0o700)
    except OSError as e:
        raise CliError(f"Could not create directory {invdir}: {strerror(e)}") from e
    now = time.time() if now is None else now
    count = 0
    try:
        listing = os.listdir(invdir)
    except OSError as e:
        raise CliError(f"Could not read directory {invdir}: {strerror(e)}") from e
    for entry in listing:
        if len(entry) != 24:
            continue
        path = f"{invdir}/{entry}"
        try:
            if now - INVITATION_MAX_AGE_S < os.stat(path).st_mtime:
                count += 1
            else:
                os.unlink(path)
        except OSError as e:
            err(f"Could not stat {path}: {strerror(e)}")
    keyfile = f"{invdir}/ed25519_key.priv"
    if not count:
        try:
            os.unlink(keyfile)
        except FileNotFoundError:
            pass
    try:
        text = secrets.read_bytes(keyfile, config_key).decode("latin-1")
    except secrets.SecretsError as e:
        raise CliError(str(e)) from e
    except FileNotFoundError:
        key = keys.generate_private_key(rng)
        try:
            keys.write_private_key(keyfile, key)
        except KeyFileError as e:
            raise CliError(f"Could not write {keyfile}: {e}") from e
        if client.connect(True):
            client.request(1)
            client.close()
        else:
            err("Could not signal the tinc daemon. Please restart or reload it manually.")
    except OSError as e:
        raise CliError(f"Could not read {keyfile}: {strerror(e)}") from e
    else:
        try:
            key = keys.parse_private_pem(text, keyfile)
        except KeyFileError:
            raise CliError(f"Could not read private key from {keyfile}") from None
    fingerprint = b64.encode(key.public).encode()
    key_hash = b64.encode(sha512(fingerprint)[:18], urlsafe=True)
    cookie = rng(18)
    cookie_hash = b64.encode(sha512(cookie + fingerprint)[:18], urlsafe=True)
    address, port = get_my_hostname(ctx, client, config_key)
    url = f"{address}/{key_hash}{b64.encode(cookie, urlsafe=True)}"
    body = [f"Name = {node}\n".encode()]
    if ctx.netname and check_netname(ctx.netname, strict=True):
        body.append(f"NetName = {ctx.netname}\n".encode())
    body.append(f"ConnectTo = {myname}\n".encode())
    try:
        conf = secrets.read_bytes(ctx.tinc_conf, config_key)
    except secrets.SecretsError as e:
        raise CliError(str(e)) from e
    except OSError:
        conf = b""
    for line in fgets_lines(conf):
        low = line.lower()
        if (low.startswith(b"mode") and line[4:5] in (b" ", b"\t", b"=")) or \
                (low.startswith(b"broadcast") and line[9:10] in (b" ", b"\t", b"=")):
            body.append(line if line.endswith(b"\n") else line + b"\n")
    body.append(b"#---------------------------------------------------------------#\n")
    body.append(f"Name = {myname}\n".encode())
    body.append(_host_config_replacing_port(ctx.host_file(myname), port, config_key))
    filename = f"{invdir}/{cookie_hash}"
    try:
        atomic_write(filename, b"".join(body), mode=0o600, exclusive=True)
    except OSError as e:
        raise CliError(f"Could not create invitation file {filename}: {strerror(e)}") from e
    script = script_path(ctx.confbase, "invitation-created")
    if script is not None:
        env = dict(os.environ, NODE=node, INVITATION_FILE=filename, INVITATION_URL=url,
                   NAME=myname)
        if ctx.netname:
            env["NETNAME"] = ctx.netname
        subprocess.call(script_argv(script), env=env)
    print(url)
    return 0
