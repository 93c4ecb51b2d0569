"""CLI commands that only read and write files: init, get/set/add/del, export, export-all,
import, exchange(-all), generate-(ed25519-)keys, sign, verify, network, fsck, and tincapp's
generate-config-key, encrypt-config, decrypt-config.

Each copies tincctl.c's behaviour and messages (spec control-and-cli.md 4). Every file is
replaced atomically (fileio.atomic_write): an error leaves the old file as it was.
Files encrypted at rest (config/secrets.py) are read with the configuration key (`key`, a
secrets.KeySource, loaded only when an encrypted file is met) and written back encrypted.
"""
import os
import re
import socket
import stat
import sys
import time

from tincapp import b64, keys
from tincapp.cli.common import (CliError, err, fgets_lines, get_my_name, need_name, out_bytes,
                                read_stdin_bytes, split_config_line, strerror)
from tincapp.fileio import atomic_write
from tincapp.config import parse, secrets
from tincapp.config.variables import TABLE, check_id
from tincapp.errors import Base64Error, ConfigError, KeyFileError, WireError
from tincapp.mesh.subnets import parse_subnet
from tincapp.sptps import crypto

MAX_STRING_SIZE = 2049
SEPARATOR = b"#---------------------------------------------------------------#\n"
TINC_UP = (b"#!/bin/sh\n\necho 'Unconfigured tinc-up script, please edit '$0'!'\n\n"
           b"#ifconfig $INTERFACE <your vpn IP address> netmask <netmask of whole VPN>\n")

# tincctl.c variables[] (tincd-only variables are not in it).
CTL_VARIABLES = [v for v in TABLE if v.in_tincctl]


def _too_many(args, limit):
    if len(args) > limit:
        raise CliError("Too many arguments!")


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _read_conf(path, key):
    """(plaintext, encrypted) of a configuration or key file; OSError as open() raises it,
    CliError for an encrypted file that does not open (no key, wrong key, damaged)."""
    try:
        return secrets.read_file(path, key)
    except secrets.SecretsError as e:
        raise CliError(str(e)) from None


def _write_conf(path, data, encrypted, key, default_mode=0o644):
    """Replace path atomically, encrypted again if it was; OSError, CliError."""
    try:
        secrets.write_file(path, data, encrypted, key, default_mode=default_mode)
    except secrets.SecretsError as e:
        raise CliError(str(e)) from None


def _append_conf(path, data, key, default_mode):
    """fileio's atomic append for a file that may be encrypted (it stays encrypted)."""
    try:
        secrets.append_file(path, data, key, default_mode)
    except secrets.SecretsError as e:
        raise CliError(str(e)) from None


# --- keys ------------------------------------------------------------------------------------

def _disable_old_keys_file(path, key=None):
    """tinc's disable_old_keys(filename): comment out old Ed25519 keys in place."""
    try:
        old, encrypted = _read_conf(path, key)
    except OSError:
        return True
    text = old.decode("latin-1")
    new = keys.disable_old_keys(text)
    if new == text:
        return True
    try:
        _write_conf(path, new.encode("latin-1"), encrypted, key)
    except OSError:
        err("Warning: old key(s) found, remove them by hand!")
        return False
    err("Warning: old key(s) found and disabled.")
    return True


def _ask_filename(ctx, filename, what, ask):
    if ask and ctx.tty:
        sys.stderr.write(f"Please enter a file to save {what} to [{filename}]: ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            raise CliError("Error while reading stdin: end of file")
        line = line.rstrip("\n")
        if line:
            filename = line
    if not os.path.isabs(filename):
        filename = os.path.join(os.getcwd(), filename)
    return filename


def ed25519_keygen(ctx, ask, key=None):
    """tincctl's ed25519_keygen(): new key appended to ed25519_key.priv, old ones disabled;
    `Ed25519PublicKey = ...` appended to hosts/NAME (or ed25519_key.pub without a name)."""
    config_key = key
    err("Generating Ed25519 key pair:")
    new = keys.generate_private_key(os.urandom)
    err("Done.")
    fname = _ask_filename(ctx, f"{ctx.confbase}/ed25519_key.priv", "private Ed25519 key", ask)
    _disable_old_keys_file(fname, config_key)
    try:
        _append_conf(fname, keys.format_private_pem(new).encode("ascii"), config_key, 0o600)
    except OSError as e:
        raise CliError(f"Error opening file `{fname}': {strerror(e)}") from e
    if ctx.name:
        pub = f"{ctx.confbase}/hosts/{ctx.name}"
    else:
        pub = f"{ctx.confbase}/ed25519_key.pub"
    pub = _ask_filename(ctx, pub, "public Ed25519 key", ask)
    _disable_old_keys_file(pub, config_key)
    try:
        _append_conf(pub, keys.hosts_line(new.public).encode("ascii"), config_key, 0o666)
    except OSError as e:
        raise CliError(f"Error opening file `{pub}': {strerror(e)}") from e
    return new


def cmd_generate_ed25519_keys(ctx, args, key=None):
    _too_many(args, 0)
    if ctx.name is None:
        ctx.name = get_my_name(ctx, False, key)
    ed25519_keygen(ctx, True, key)
    return 0


# --- init ------------------------------------------------------------------------------------

def _makedir(path, mode):
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        try:
            os.chmod(path, mode)
        except OSError:
            pass
    except OSError as e:
        raise CliError(f"Could not create directory {path}: {strerror(e)}") from e


def _try_bind(port):
    try:
        infos = socket.getaddrinfo(None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   socket.IPPROTO_TCP, socket.AI_PASSIVE)
    except OSError:
        return False
    for family, type_, proto, _, addr in infos:
        try:
            with socket.socket(family, type_, proto) as s:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr)
        except OSError:
            return False
    return True


def check_port(ctx, name):
    """tincctl's check_port(): 655 if free, else a random free port written to hosts/NAME."""
    if _try_bind(655):
        return 655
    sys.stderr.write("Warning: could not bind to port 655. ")
    for _ in range(100):
        port = 0x1000 + int.from_bytes(os.urandom(2), "big") % 0x8000
        if _try_bind(port):
            path = ctx.host_file(name)
            try:
                secrets.append_file(path, f"Port = {port}\n".encode())
            except (OSError, secrets.SecretsError) as e:
                err(f"Could not open {path}: {strerror(e)}")
                err("Please change tinc's Port manually.")
                return 0
            err(f"Tinc will instead listen on port {port}.")
            return port
    err("Please change tinc's Port manually.")
    return 0


def cmd_init(ctx, args):
    if os.path.lexists(ctx.tinc_conf):
        raise CliError(f"Configuration file {ctx.tinc_conf} already exists!")
    _too_many(args, 1)
    if not args:
        if not ctx.tty:
            raise CliError("No Name given!")
        sys.stderr.write("Enter the Name you want your tinc node to have: ")
        sys.stderr.flush()
        name = sys.stdin.readline().rstrip("\t\r\n ")
        if not name:
            raise CliError("No name given!")
    else:
        name = args[0]
        if not name:
            raise CliError("No Name given!")
    if not check_id(name):
        raise CliError("Invalid Name! Only a-z, A-Z, 0-9 and _ are allowed characters.")
    ctx.name = name
    # DEVIATION: tinc creates confbase before CONFDIR (so -n NET fails on a fresh system).
    if not ctx.confbase_given:
        _makedir(ctx.confdir, 0o755)
    _makedir(ctx.confbase, 0o755)
    _makedir(f"{ctx.confbase}/cache", 0o755)
    _makedir(ctx.hosts_dir, 0o755)
    try:
        atomic_write(ctx.tinc_conf, f"Name = {name}\n".encode())
    except OSError as e:
        raise CliError(f"Could not create file {ctx.tinc_conf}: {strerror(e)}") from e
    ed25519_keygen(ctx, False)
    check_port(ctx, name)
    up = f"{ctx.confbase}/tinc-up"
    if not os.path.lexists(up):
        try:
            atomic_write(up, TINC_UP, default_mode=0o777)
        except OSError as e:
            raise CliError(f"Could not create file {up}: {strerror(e)}") from e
    return 0


# --- get / set / add / del -------------------------------------------------------------------

GET, DEL, SET, ADD = "get", "del", "set", "add"


def edit_config(data, action, variable, value, warnonremove):
    """tincctl's copy-and-modify loop over one file's bytes.

    Returns (new bytes or None for GET, values printed by GET, found, removed, warnings).
    """
    out = []
    got = []
    warnings = []
    found = removed = done = False
    low = variable.lower()
    newline = f"{variable} = {value}\n".encode("latin-1")
    for raw in fgets_lines(data):
        bvar, bvalue = split_config_line(raw)
        if bvar.lower() == low:
            if action == GET:
                found = True
                got.append(bvalue)
            elif action == DEL:
                if not value or bvalue.lower() == value.lower():
                    removed = True
                    continue
            elif action == SET:
                if warnonremove and bvalue.lower() != value.lower():
                    warnings.append(f"Warning: removing {variable} = {bvalue}")
                if done:
                    continue
                out.append(newline)
                done = True
                continue
            elif action == ADD:
                if bvalue.lower() == value.lower():
                    found = True
        if action != GET:
            out.append(raw if raw.endswith(b"\n") else raw + b"\n")
    if (action == ADD and not found) or (action == SET and not done):
        out.append(newline)
    return (None if action == GET else b"".join(out)), got, found, removed, warnings


def cmd_config(ctx, argv, client_factory, key=None):
    """`config [get|set|add|del|replace|change] ...` and its aliases get/set/add/del;
    argv starts with the command word."""
    if len(argv) < 2:
        raise CliError("Invalid number of arguments.")
    if argv[0].lower() != "config":
        argv = ["config"] + argv
    action = GET
    word = argv[1].lower() if len(argv) > 1 else ""
    if word == "get":
        argv = argv[1:]
    elif word == "add":
        argv, action = argv[1:], ADD
    elif word == "del":
        argv, action = argv[1:], DEL
    elif word in ("replace", "set", "change"):
        argv, action = argv[1:], SET
    if len(argv) < 2:
        raise CliError("Invalid number of arguments.")
    line = " ".join(argv[1:])
    n = len(line)
    for i, ch in enumerate(line):
        if ch in "\t =":
            n = i
            break
    value = line[n:].lstrip("\t ")
    if value.startswith("="):
        value = value[1:].lstrip("\t ")
    head = line[:n]
    node = None
    if "." in head:
        node, variable = head.split(".", 1)
    else:
        variable = head
    if not variable:
        raise CliError("No variable given.")
    if action in (SET, ADD) and not value:
        raise CliError("No value for variable given.")
    if action == GET and value:
        action = SET
    if action == GET and variable.lower() == "port":
        # COMPAT: the running daemon's port, from the PID file.
        client = client_factory(ctx)
        try:
            print(client.read_pidfile().port)
            return 0
        except (OSError, WireError):
            err("Could not get port from the pidfile.")

    found = False
    warnonremove = False
    for var in CTL_VARIABLES:
        if var.name.lower() != variable.lower():
            continue
        found = True
        variable = var.name
        if var.name == "Subnet" and value:
            try:
                subnet = parse_subnet(value)
            except WireError:
                raise CliError(f"Malformed subnet definition {value}") from None
            if not subnet.is_canonical():
                raise CliError(f"Network address and prefix length do not match: {value}")
        if var.obsolete and action in (SET, ADD):
            if ctx.force:
                err(f"Warning: {variable} is an obsolete variable!")
            else:
                raise CliError(f"{variable} is an obsolete variable! "
                               f"Use --force to use it anyway.")
        if node is not None and not var.host and action in (SET, ADD):
            if ctx.force:
                err(f"Warning: {variable} is not a host configuration variable!")
            else:
                raise CliError(f"{variable} is not a host configuration variable! "
                               f"Use --force to use it anyway.")
        if node is None and not var.server:
            node = get_my_name(ctx, True, key)
            if node is None:
                raise CliError()
        if action == ADD and not var.multiple:
            warnonremove = True
            action = SET
        elif action == SET and var.multiple:
            warnonremove = True
        break
    if node is not None and not check_id(node):
        raise CliError("Invalid name for node.")
    if not found:
        if ctx.force or action in (GET, DEL):
            err(f"Warning: {variable} is not a known configuration variable!")
        else:
            raise CliError(f"{variable}: is not a known configuration variable! "
                           f"Use --force to use it anyway.")
    filename = ctx.host_file(node) if node is not None else ctx.tinc_conf
    try:
        data, encrypted = _read_conf(filename, key)
    except OSError as e:
        raise CliError(f"Could not open configuration file {filename}: {strerror(e)}") from e
    try:
        new, got, hit, removed, warnings = edit_config(data, action, variable, value,
                                                       warnonremove)
    except UnicodeEncodeError:
        raise CliError(f"Cannot write {value!r} into {filename}") from None
    for w in warnings:
        err(w)
    if action == GET:
        for v in got:
            print(v)
        if not hit:
            raise CliError("No matching configuration variables found.")
        return 0
    if action == DEL and not removed:
        raise CliError("No configuration variables deleted.")
    try:
        _write_conf(filename, new, encrypted, key)
    except OSError as e:
        raise CliError(f"Error writing configuration file {filename}: {strerror(e)}") from e
    # COMPAT: silently ask a running daemon to reload.
    client = client_factory(ctx)
    if client.connect(False):
        client.request(1)
        client.close()
    return 0


# --- export / import -------------------------------------------------------------------------

def _export(ctx, name, key=None):
    filename = ctx.host_file(name)
    try:
        data, _ = _read_conf(filename, key)
    except OSError as e:
        err(f"Could not open configuration file {filename}: {strerror(e)}")
        return None
    out = [f"Name = {name}\n".encode()]
    for line in fgets_lines(data):
        n = len(line)
        for i, ch in enumerate(line):
            if ch in b"\t =":
                n = i
                break
        if n != 4 or line[:4].lower() != b"name":
            out.append(line)
    return b"".join(out)


def cmd_export(ctx, args, key=None):
    _too_many(args, 0)
    name = get_my_name(ctx, True, key)
    if name is None:
        return 1
    data = _export(ctx, name, key)
    if data is None:
        return 1
    out_bytes(data)
    return 0


def cmd_export_all(ctx, args, key=None):
    _too_many(args, 0)
    try:
        listing = os.listdir(ctx.hosts_dir)
    except OSError as e:
        raise CliError(f"Could not open host configuration directory {ctx.hosts_dir}: "
                       f"{strerror(e)}") from e
    result = 0
    chunks = []
    # DEVIATION: tinc lists hosts/ in readdir() order; sorted here, so output is stable.
    for name in sorted(n for n in listing if check_id(n)):
        if chunks:
            chunks.append(b"\n" + SEPARATOR)
        data = _export(ctx, name, key)
        if data is None:
            result = 1
        else:
            chunks.append(data)
    out_bytes(b"".join(chunks))
    return result


_IMPORT_NAME = re.compile(rb"Name\s*=\s*(\S+)")


def import_hosts(ctx, data):
    """tincctl's cmd_import on data; returns the number of files written.

    DEVIATION: the whole input is checked before anything is written, so an invalid Name
    further down leaves every host file untouched (tinc has written the earlier ones).
    """
    files = []          # [name, path, [lines] or None when skipped]
    current = None
    firstline = True
    for line in fgets_lines(data):
        m = _IMPORT_NAME.match(line)
        if m:
            firstline = False
            name = m.group(1).decode("latin-1")
            if not check_id(name):
                raise CliError("Invalid Name in input!")
            path = ctx.host_file(name)
            taken = any(f[0] == name for f in files)
            if not ctx.force and (os.path.lexists(path) or taken):
                err(f"Host configuration file {path} already exists, skipping.")
                current = None
                continue
            current = [name, path, []]
            files.append(current)
            continue
        if firstline:
            err("Junk at the beginning of the input, ignoring.")
            firstline = False
        if line == SEPARATOR:
            continue
        if current is not None:
            current[2].append(line)
    written = {}
    for name, path, lines in files:
        written[path] = b"".join(lines)     # a later block for the same name wins (--force)
    for path, content in written.items():
        try:
            atomic_write(path, content, default_mode=0o666)
        except OSError as e:
            raise CliError(f"Error creating configuration file {path}: {strerror(e)}") from e
    return len(files)


def cmd_import(ctx, args):
    _too_many(args, 0)
    count = import_hosts(ctx, read_stdin_bytes())
    if count:
        err(f"Imported {count} host configuration files.")
        return 0
    err("No host configuration files imported.")
    return 1


def cmd_exchange(ctx, args, key=None):
    return 1 if cmd_export(ctx, args, key) else cmd_import(ctx, args)


def cmd_exchange_all(ctx, args, key=None):
    return 1 if cmd_export_all(ctx, args, key) else cmd_import(ctx, args)


# --- sign / verify ---------------------------------------------------------------------------

def signature_trailer(name, t):
    return f" {name} {t}".encode("latin-1")


def cmd_sign(ctx, args, now=None, key=None):
    _too_many(args, 1)
    name = need_name(ctx, key)
    fname = f"{ctx.confbase}/ed25519_key.priv"
    try:
        text = _read_conf(fname, key)[0].decode("latin-1")
    except OSError as e:
        raise CliError(f"Could not open {fname}: {strerror(e)}") from e
    try:
        private = keys.parse_private_pem(text, fname)
    except KeyFileError:
        raise CliError(f"Could not read private key from {fname}") from None
    if args:
        try:
            data = _read(args[0])
        except OSError as e:
            raise CliError(f"Could not open {args[0]}: {strerror(e)}") from e
    else:
        data = read_stdin_bytes()
    t = int(time.time() if now is None else now)
    sig = private.sign(data + signature_trailer(name, t))
    out_bytes(f"Signature = {name} {t} {b64.encode(sig)}\n".encode("latin-1") + data)
    return 0


_SIGNATURE = re.compile(rb"Signature\s*=\s*(\S+)\s*([+-]?[0-9]+)\s*(\S+)")


def host_public_key(path, key=None):
    """tincctl's get_pubkey() then ecdsa_read_pem_public_key(): bytes or None."""
    data, _ = _read_conf(path, key)
    for line in fgets_lines(data):
        var, value = split_config_line(line)
        if value and var.lower() == "ed25519publickey":
            try:
                return keys.public_key_from_b64(value)
            except KeyFileError:
                break
    try:
        return keys.parse_public_pem(data.decode("latin-1"), path)
    except KeyFileError:
        return None


def cmd_verify(ctx, args, key=None):
    if len(args) < 1:
        raise CliError("Not enough arguments!")
    _too_many(args, 2)
    node = args[0]
    if node == ".":
        node = need_name(ctx, key)
    elif node == "*":
        node = None
    elif not check_id(node):
        raise CliError("Invalid node name")
    if len(args) == 2:
        try:
            data = _read(args[1])
        except OSError as e:
            raise CliError(f"Could not open {args[1]}: {strerror(e)}") from e
    else:
        data = read_stdin_bytes()
    nl = data.find(b"\n")
    if nl < 0 or nl > MAX_STRING_SIZE - 1:
        raise CliError("Invalid input")
    first, body = data[:nl], data[nl + 1:]
    first = first.split(b"\0", 1)[0]
    m = _SIGNATURE.match(first)
    if not m:
        raise CliError("Invalid input")
    signer = m.group(1).decode("latin-1")
    t = int(m.group(2))
    sig = m.group(3).decode("latin-1")
    if len(sig) != 86 or t == 0 or not check_id(signer):
        raise CliError("Invalid input")
    if node is not None and node != signer:
        raise CliError(f"Signature is not made by {node}")
    node = signer if node is None else node
    fname = f"{ctx.confbase}/hosts/{node}"
    try:
        public = host_public_key(fname, key)
    except OSError as e:
        raise CliError(f"Could not open {fname}: {strerror(e)}") from e
    if public is None:
        raise CliError(f"Could not read public key from {fname}")
    try:
        raw = b64.decode(sig)
    except Base64Error:
        raw = b""
    if len(raw) != 64 or not crypto.verify(public, body + signature_trailer(signer, t), raw):
        raise CliError("Invalid signature")
    out_bytes(body)
    return 0


# --- network ---------------------------------------------------------------------------------

def cmd_network(ctx, args, switch=None):
    _too_many(args, 1)
    if args:
        if switch is None:
            return 0
        return switch(args[0])
    try:
        listing = os.listdir(ctx.confdir)
    except OSError as e:
        raise CliError(f"Could not read directory {ctx.confdir}: {strerror(e)}") from e
    # DEVIATION: sorted, tinc prints in readdir() order.
    for entry in sorted(listing):
        if entry.startswith("."):
            continue
        if entry == "tinc.conf":
            print(".")
            continue
        if os.access(f"{ctx.confdir}/{entry}/tinc.conf", os.R_OK):
            print(entry)
    return 0


# --- fsck ------------------------------------------------------------------------------------

class _Fsck:
    """tinc's fsck.c, Ed25519 only (like a tinc built with DISABLE_LEGACY)."""

    def __init__(self, ctx, key=None):
        self.ctx = ctx
        self.key = key

    def tinc_cmd(self, command):
        ctx = self.ctx
        if ctx.confbase_given:
            err(f"{ctx.program} -c {ctx.confbase} {command}")
        elif ctx.netname:
            err(f"{ctx.program} -n {ctx.netname} {command}")
        else:
            err(f"{ctx.program} {command}")

    def new_keys_hint(self, message):
        err(f"{message}\n")
        err("You can generate a new Ed25519 keypair with:\n")
        self.tinc_cmd("generate-ed25519-keys")

    def ask_fix(self):
        if self.ctx.force:
            return True
        if not self.ctx.tty:
            return False
        while True:
            sys.stderr.write("Fix y/n? ")
            sys.stderr.flush()
            answer = sys.stdin.readline()
            if not answer:
                self.ctx.tty = False
                return False
            if answer[0] in "yY":
                return True
            if answer[0] in "nN":
                return False

    def read_node_name(self):
        ctx = self.ctx
        try:
            with open(ctx.tinc_conf, "rb"):
                pass
        except OSError as e:
            err(f"ERROR: cannot read {ctx.tinc_conf}: {strerror(e)}")
            if isinstance(e, FileNotFoundError):
                err("No tinc configuration found. Create a new one with:\n")
                self.tinc_cmd("init")
            elif isinstance(e, PermissionError):
                if os.getuid() != 0:
                    err("You are currently not running tinc as root. Use sudo?")
                else:
                    err(f"Check the permissions of each component of the path "
                        f"{ctx.tinc_conf}.")
            return None
        try:
            return get_my_name(ctx, True, self.key)
        except CliError as e:
            err(f"ERROR: {e.message}")
            return None

    def read_config(self, name):
        """Server config + own host file entries; None (message printed) on error."""
        ctx = self.ctx
        try:
            entries = list(parse.read_server_files(ctx.confbase, self.key))
        except ConfigError as e:
            err(str(e))
            return None
        try:
            entries += parse.read_file(ctx.host_file(name), self.key)
        except ConfigError as e:
            if not isinstance(e.__cause__, FileNotFoundError):
                err(str(e))
                return None
        return parse.ConfigTree(entries)

    def check_key_file_mode(self, fname):
        try:
            st = os.stat(fname)
        except OSError:
            err(f"ERROR: could not stat private key file {fname}")
            return
        if st.st_mode & 0o077:
            err(f"WARNING: unsafe file permissions on {fname}.")
            if st.st_uid != os.getuid():
                err(f"You are not running {self.ctx.program} as the same uid as {fname}.")
            elif self.ask_fix():
                try:
                    os.chmod(fname, stat.S_IMODE(st.st_mode) & ~0o077)
                except OSError as e:
                    err(f"ERROR: could not change permissions of {fname}: {strerror(e)}")
                else:
                    err(f"Fixed permissions of {fname}.")

    def read_private_key(self, tree):
        ctx = self.ctx
        entry = tree.lookup("Ed25519PrivateKeyFile")
        fname = entry.value if entry else f"{ctx.confbase}/ed25519_key.priv"
        if not os.path.isabs(fname):
            fname = os.path.join(ctx.confbase, fname)
        try:
            with open(fname, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
            text = secrets.plaintext(data, fname, self.key).decode("latin-1")
        except secrets.SecretsError as e:
            err(f"ERROR: {e}")
            return None, None
        except OSError as e:
            err(f"Error reading Ed25519 private key file `{fname}': {strerror(e)}")
            if isinstance(e, FileNotFoundError):
                err(f"Create an Ed25519 key pair with `tinc -n {ctx.netname or '.'} "
                    f"generate-ed25519-keys'.")
            return None, None
        if st.st_mode & ~0o100700:
            err(f"Warning: insecure file permissions for Ed25519 private key file `{fname}'!")
        try:
            return keys.parse_private_pem(text, fname), fname
        except KeyFileError:
            err(f"Reading Ed25519 private key file `{fname}' failed")
            return None, fname

    def read_public_key(self, tree, name):
        """keys.c read_ecdsa_public_key on the merged tree: bytes or None."""
        ctx = self.ctx
        entry = tree.lookup("Ed25519PublicKey")
        if entry is not None:
            try:
                return keys.public_key_from_b64(entry.value)
            except KeyFileError:
                return None
        entry = tree.lookup("Ed25519PublicKeyFile")
        fname = entry.value if entry else ctx.host_file(name)
        if not os.path.isabs(fname):
            fname = os.path.join(ctx.confbase, fname)
        try:
            text = _read_conf(fname, self.key)[0].decode("latin-1")
        except OSError as e:
            err(f"Error reading Ed25519 public key file `{fname}': {strerror(e)}")
            return None
        except CliError as e:
            err(f"ERROR: {e.message}")
            return None
        try:
            return keys.parse_public_pem(text, fname)
        except KeyFileError:
            err(f"Parsing Ed25519 public key file `{fname}' failed.")
            return None

    def fix_public_key(self, host_file, private):
        if not self.ask_fix():
            return True
        if not _disable_old_keys_file(host_file, self.key):
            return False
        try:
            _append_conf(host_file, keys.format_public_pem(private.public).encode("ascii"),
                         self.key, 0o644)
        except OSError as e:
            err(f"ERROR: could not append to {host_file}: {strerror(e)}")
            return False
        except CliError as e:
            err(f"ERROR: could not append to {host_file}: {e.message}")
            return False
        err(f"Wrote Ed25519 public key to {host_file}.")
        return True

    def check_keypairs(self, tree, name):
        private, fname = self.read_private_key(tree)
        if fname is not None:
            self.check_key_file_mode(fname)
        if private is None:
            self.new_keys_hint("ERROR: No Ed25519 private key found.")
            return False
        host_file = self.ctx.host_file(name)
        if not os.access(host_file, os.R_OK):
            err(f"WARNING: cannot read {host_file}")
        public = self.read_public_key(tree, name)
        if public is None:
            err("WARNING: No (usable) public Ed25519 key found.")
            return self.fix_public_key(host_file, private)
        if public != private.public:
            err("ERROR: public and private Ed25519 keys do not match.")
            return self.fix_public_key(host_file, private)
        return True

    def check_script(self, fname):
        if os.access(fname, os.R_OK | os.X_OK):
            return
        if not os.path.exists(fname):
            err(f"ERROR: cannot access {fname}: No such file or directory")
            return
        err(f"WARNING: cannot read and execute {fname}: Permission denied")
        if self.ask_fix():
            try:
                os.chmod(fname, 0o755)
            except OSError as e:
                err(f"ERROR: cannot change permissions on {fname}: {strerror(e)}")

    def check_scripts_and_configs(self):
        ctx = self.ctx
        try:
            listing = sorted(os.listdir(ctx.confbase))
        except OSError as e:
            err(f"ERROR: cannot read directory {ctx.confbase}: {strerror(e)}")
            return False
        explained = False
        for entry in listing:
            if not (entry.endswith("-up") or entry.endswith("-down")):
                continue
            prefix = entry.rsplit("-", 1)[0]
            if prefix not in ("tinc", "host", "subnet"):
                err(f"WARNING: Unknown script {ctx.confbase}/{entry} found.")
                if not explained:
                    err(f"The only scripts in {ctx.confbase} executed by tinc are:")
                    err("tinc-up, tinc-down, host-up, host-down, subnet-up and subnet-down.")
                    explained = True
                continue
            self.check_script(f"{ctx.confbase}/{entry}")
        try:
            hosts = sorted(os.listdir(ctx.hosts_dir))
        except OSError as e:
            err(f"ERROR: cannot read directory {ctx.hosts_dir}: {strerror(e)}")
            return False
        for entry in hosts:
            if entry.endswith("-up") or entry.endswith("-down"):
                self.check_script(f"{ctx.hosts_dir}/{entry}")
        self.check_conffile(None)
        for entry in hosts:
            if check_id(entry):
                self.check_conffile(entry)
        return True

    def check_conffile(self, nodename):
        ctx = self.ctx
        try:
            if nodename is None:
                entries = parse.read_server_files(ctx.confbase, self.key)
            else:
                entries = parse.read_file(ctx.host_file(nodename), self.key)
        except ConfigError:
            return
        counts = {}
        byname = {v.name.lower(): v for v in CTL_VARIABLES}
        for e in parse.ConfigTree(entries):
            var = byname.get(e.key)
            if var is None:
                continue
            counts[var.name] = counts.get(var.name, 0) + 1
            if var.obsolete:
                err(f"WARNING: obsolete variable {e.name} in {e.file} line {e.line}")
            if nodename is None and not var.server:
                err(f"WARNING: host variable {e.name} found in server config {e.file} "
                    f"line {e.line} ")
            if nodename is not None and not var.host:
                err(f"WARNING: server variable {e.name} found in host config {e.file} "
                    f"line {e.line} ")
        for var in CTL_VARIABLES:
            if counts.get(var.name, 0) > 1 and not var.multiple:
                err(f"WARNING: multiple instances of variable {var.name} in "
                    f"{nodename or 'tinc.conf'}")

    def run(self):
        name = self.read_node_name()
        if name is None:
            err("ERROR: tinc cannot run without a valid Name.")
            return 1
        tree = self.read_config(name)
        success = tree is not None and self.check_keypairs(tree, name)
        success = self.check_scripts_and_configs() and success
        return 0 if success else 1


def cmd_fsck(ctx, args, key=None):
    _too_many(args, 0)
    return _Fsck(ctx, key).run()


# --- configuration encrypted at rest (tincapp's own commands) ---------------------------------

def cmd_generate_config_key(ctx, args):
    """generate-config-key [FILE]: a new configuration key, to FILE (created 0600, never
    overwritten) or to stdout."""
    _too_many(args, 1)
    text = secrets.format_key(secrets.generate_key(os.urandom)).encode("ascii")
    if not args:
        out_bytes(text)
        return 0
    path = args[0]
    try:
        atomic_write(path, text, mode=0o600, exclusive=True)     # 0600 whatever the umask
    except FileExistsError:
        raise CliError(f"{path} already exists; not overwriting a configuration key") from None
    except OSError as e:
        raise CliError(f"Could not create {path}: {strerror(e)}") from e
    err(f"Wrote a new configuration key to {path}. Keep a copy outside {ctx.confbase}: "
        f"without it, encrypted files cannot be read.")
    return 0


def _convert(ctx, key, client_factory, encrypting, everything):
    verb = "encrypt" if encrypting else "decrypt"
    if key is None or not key.configured:
        raise CliError(f"{verb}-config needs the configuration key: {secrets.HOW_TO_GIVE_A_KEY} "
                       f"(create one with `tinc generate-config-key FILE`)")
    # DEVIATION (tincapp): like `tinc init` refusing an existing tinc.conf, refuse to rewrite
    # files under a running daemon: it rereads them on reload and for new peers, and may
    # have been started without the key (or with another one).
    client = client_factory(ctx)
    if client.connect(False):
        client.close()
        if not ctx.force:
            raise CliError(f"A tincd is running for this network (pid {client.pid}); stop it "
                           f"first, or use --force if it has the same configuration key.")
        err("Warning: tincd is running; it needs the same configuration key to reload.")

    if key.file and encrypting:
        inside = os.path.relpath(os.path.realpath(key.file), os.path.realpath(ctx.confbase))
        if not inside.startswith(".."):
            err(f"Warning: the key file {key.file} is inside {ctx.confbase}: whoever can read "
                f"the directory can read the encrypted files too.")

    def report(change):
        if change.action == "skip":
            err(f"Skipped {change.path} ({change.reason}).")
        else:
            err(f"{change.action.capitalize()}ed {change.path}.")

    try:
        key.load()
        changes = secrets.convert_network(ctx.confbase, key, encrypting, everything, report)
    except secrets.SecretsError as e:
        raise CliError(f"{e}\nNothing more was changed; files already converted stay so "
                       f"(the command can be run again).") from None
    if not changes:
        raise CliError(f"No files to {verb} in {ctx.confbase}.")
    count = sum(c.action != "skip" for c in changes)
    err(f"{count} file{'s' if count != 1 else ''} {verb}ed, "
        f"{len(changes) - count} skipped.")
    return 0


def cmd_encrypt_config(ctx, args, client_factory, key=None):
    """encrypt-config [--all]: encrypt the private keys (with --all also tinc.conf, conf.d,
    hosts/ and invitations) in place; already encrypted files are checked and skipped."""
    everything = False
    for arg in args:
        if arg in ("--all", "all"):
            everything = True
        else:
            raise CliError(f"Unknown argument {arg!r} (encrypt-config [--all]).")
    return _convert(ctx, key, client_factory, True, everything)


def cmd_decrypt_config(ctx, args, client_factory, key=None):
    """decrypt-config: decrypt every encrypted file encrypt-config --all would touch."""
    _too_many(args, 0)
    return _convert(ctx, key, client_factory, False, True)
