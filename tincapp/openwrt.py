"""OpenWrt: read the UCI file /etc/config/tincapp and write the network directories tincd runs.

The UCI schema is the one of OpenWrt's own tinc package (net/tinc in openwrt/packages):
`config tinc-net NET` sections hold tinc.conf options (plus enabled, generate_keys, key_size,
logfile, debug), `config tinc-host NODE` sections hold hosts-file options (plus enabled,
net). `build_networks()` does what that package's init script (tinc.init) does at start:

  1. for every enabled tinc-net NET, in file order: empty RUN/NET, copy /etc/tinc/NET into it,
     append to RUN/NET/tinc.conf first the boolean options (as `yes`/`no`) then the value
     options, each in tinc.init's fixed order (not the file's), then create the node's keys
     if generate_keys is set and it has none;
  2. for every tinc-host, in file order, whose net is enabled: append its options to
     RUN/NET/hosts/NODE (a copy of /etc/tinc/NET/hosts/NODE, or a new file when the UCI
     section carries a public key); a disabled host's file is removed.

`uci` itself is not needed: `parse_uci()` reads the /etc/config format. The procd init script
(packaging/openwrt/tincapp.init) runs `tincapp openwrt` and then starts one tincd per net.

No network I/O; writes only below the output directory and, for generate_keys, /etc/tinc/NET.
"""
import argparse
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field

from tincapp import keys
from tincapp.errors import KeyFileError

DEFAULT_CONFIG = "/etc/config/tincapp"
DEFAULT_ETC = "/etc/tinc"
DEFAULT_RUN = "/tmp/tincapp"
DEFAULT_STATE = "/var/state/network"

# COMPAT: the option lists and their order are tinc.init's (prepare_net, prepare_host).
NET_BOOLS = ("AutoConnect", "DecrementTTL", "DeviceStandby", "DirectOnly",
             "ExperimentalProtocol", "Hostnames", "LocalDiscovery", "PriorityInheritance",
             "StrictSubnets", "TunnelServer", "ClampMSS", "IndirectData", "PMTUDiscovery",
             "TCPOnly")
NET_PARAMS = ("AddressFamily", "BindToAddress", "BindToInterface", "Broadcast",
              "BroadcastSubnet", "ConnectTo", "Device", "DeviceType", "Ed25519PrivateKeyFile",
              "Forwarding", "Interface", "ListenAddress", "LocalDiscoveryAddress", "Mode",
              "KeyExpire", "MACExpire", "MaxConnectionBurst", "Name", "PingInterval",
              "PingTimeout", "PrivateKey", "PrivateKeyFile", "ProcessPriority", "Proxy",
              "ReplayWindow", "UDPRcvBuf", "UDPSndBuf", "Address", "Cipher", "Compression",
              "Digest", "MACLength", "PMTU", "Port", "PublicKey", "PublicKeyFile", "Subnet",
              "Weight")
HOST_BOOLS = ("ClampMSS", "IndirectData", "PMTUDiscovery", "TCPOnly")
HOST_PARAMS = ("Address", "Cipher", "Compression", "Digest", "Ed25519PublicKey",
               "Ed25519PublicKeyFile", "MACLength", "PMTU", "Port", "PublicKey",
               "PublicKeyFile", "Subnet")
HOST_KEY_OPTIONS = ("PublicKey", "PublicKeyFile", "Ed25519PublicKey", "Ed25519PublicKeyFile")
DAEMON_OPTIONS = ("logfile", "debug")          # tinc-net options that become tincd arguments

# COMPAT: OpenWrt's get_bool() (lib/functions.sh); anything else counts as unset.
_TRUE = ("1", "on", "true", "yes", "enabled")
_FALSE = ("0", "off", "false", "no", "disabled")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class UciError(ValueError):
    """A line of a UCI file that cannot be parsed; the message names file and line."""


@dataclass
class Section:
    """One `config TYPE [NAME]` block. `options` maps a name to a str (option) or a list of
    str (list); a later `option` replaces an earlier value, `list` appends."""
    type: str
    name: str
    options: dict = field(default_factory=dict)

    def get(self, option, default=""):
        """config_get: the value, a list's items joined by newlines (the init script's
        LIST_SEP), or default when unset or empty."""
        value = self.options.get(option)
        if isinstance(value, list):
            value = "\n".join(value)
        return value if value else default

    def values(self, option):
        """The non-empty lines of the value: what tinc.init's `for v in $v` (IFS=newline)
        iterates over."""
        return [v for v in self.get(option).split("\n") if v]

    def get_bool(self, option, default=None):
        """config_get_bool: True, False, or default for unset/unrecognised values."""
        value = self.get(option)
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        return default


def parse_uci(text, source="<uci>"):
    """The sections of a UCI config file (uci's file syntax: `package`, `config`, `option`,
    `list`; '...' and "..." quoting, backslash escapes, # comments). Anonymous sections get
    uci's shell names cfgNNxxxx (NN the section's index, in hex)."""
    sections = []
    current = None
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{lineno}"
        try:
            words = shlex.split(line, comments=True, posix=True)
        except ValueError as e:
            raise UciError(f"{where}: {e}") from None
        if not words:
            continue
        keyword, args = words[0], words[1:]
        if keyword == "package":
            continue
        if keyword == "config":
            if not 1 <= len(args) <= 2:
                raise UciError(f"{where}: expected `config TYPE [NAME]`")
            name = args[1] if len(args) == 2 else f"cfg{len(sections):02x}{_anon_hash(args[0])}"
            if not name or not set(name) <= _NAME_CHARS:
                raise UciError(f"{where}: invalid section name {name!r} "
                               "(letters, digits and _ only)")
            existing = next((s for s in sections if s.name == name), None)
            if existing is not None and existing.type == args[0]:
                current = existing               # uci merges a repeated named section
            else:
                current = Section(args[0], name)
                sections.append(current)
            continue
        if keyword in ("option", "list"):
            if current is None:
                raise UciError(f"{where}: `{keyword}` outside a `config` section")
            if len(args) != 2:
                raise UciError(f"{where}: expected `{keyword} NAME VALUE`")
            opt, value = args
            if not set(opt) <= _NAME_CHARS:
                raise UciError(f"{where}: invalid option name {opt!r}")
            if keyword == "option":
                current.options[opt] = value
            else:
                previous = current.options.get(opt)
                if not isinstance(previous, list):
                    previous = [] if previous is None else [previous]
                current.options[opt] = previous + [value]
            continue
        raise UciError(f"{where}: unknown keyword {keyword!r}")
    return sections


def _anon_hash(section_type):
    # uci names anonymous sections cfg + index + a hash of the type; only uniqueness matters.
    h = 0
    for ch in section_type.encode():
        h = (h * 31 + ch) & 0xFFFF
    return f"{h:04x}"


def read_ifnames(path=DEFAULT_STATE):
    """OpenWrt interface name -> device name from uci state (`network.lan.ifname=br-lan`
    lines of /var/state/network); empty when the file is absent."""
    names = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return names
    for line in lines:
        key, sep, value = line.partition("=")
        parts = key.split(".")
        if sep and len(parts) == 3 and parts[0] == "network" and parts[2] == "ifname":
            words = shlex.split(value) if value else []
            if words:
                names[parts[1]] = words[0]
    return names


@dataclass
class Network:
    """A prepared network: where tincd is pointed (-c DIR -n NAME) and its extra arguments."""
    name: str
    directory: str
    args: list


class Translator:
    """Carries out tinc.init's start() against plain directories.

    etc: the persistent configuration (/etc/tinc); run: where the network directories are
    written (/tmp/tincapp); ifnames: OpenWrt interface -> device for BindToInterface;
    warn(msg): where warnings go; rng: randomness for generate_keys.
    """

    def __init__(self, sections, etc=DEFAULT_ETC, run=DEFAULT_RUN, ifnames=None,
                 warn=None, rng=os.urandom):
        self.sections = sections
        self.etc = etc
        self.run = run
        self.ifnames = ifnames or {}
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr))
        self.rng = rng
        self.by_name = {s.name: s for s in sections}

    def _enabled(self, name):
        section = self.by_name.get(name)
        return section is not None and bool(section.get_bool("enabled", False))

    @staticmethod
    def _append(path, lines):
        # Like the script's `echo ... >> FILE`: no line, no file.
        if lines:
            with open(path, "a") as f:
                f.writelines(lines)

    def _append_bools(self, section, path, names):
        values = ((name, section.get_bool(name)) for name in names)
        self._append(path, [f"{name} = {'yes' if value else 'no'}\n"
                            for name, value in values if value is not None])

    def _append_params(self, section, path, names):
        lines = []
        for name in names:
            for value in section.values(name):
                if name == "BindToInterface":
                    # COMPAT: an OpenWrt interface name (lan) becomes its device (br-lan).
                    value = self.ifnames.get(value) or value
                lines.append(f"{name} = {value}\n")
        self._append(path, lines)

    def prepare_net(self, section):
        """Called for each tinc-net: returns its Network, or None when it is disabled."""
        if not section.get_bool("enabled", False):
            return None
        net = section.name
        out = os.path.join(self.run, net)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(os.path.join(out, "hosts"))
        persistent = os.path.join(self.etc, net)
        if os.path.isdir(persistent):
            shutil.copytree(persistent, out, symlinks=True, dirs_exist_ok=True)
        conf = os.path.join(out, "tinc.conf")
        self._append_bools(section, conf, NET_BOOLS)
        self._append_params(section, conf, NET_PARAMS)
        self._generate_keys(section, out, persistent)
        args = [f"--{opt.replace('_', '-')}={v}" for opt in DAEMON_OPTIONS
                for v in section.values(opt)]
        return Network(net, out, args)

    def _generate_keys(self, section, out, persistent):
        """generate_keys: a node without keys gets an Ed25519 pair, kept in /etc/tinc/NET.

        DEVIATION: tinc.init runs `tincd generate-keys [key_size]` (an RSA pair, and a command
        only the tinc CLI has). tincapp speaks only the SPTPS protocol, so it writes
        ed25519_key.priv and the Ed25519PublicKey line instead; key_size is ignored."""
        if not section.get_bool("generate_keys", False):
            return
        name = section.get("Name")
        if (not name or os.path.exists(os.path.join(out, "hosts", name))
                or os.path.exists(os.path.join(out, "ed25519_key.priv"))
                or os.path.exists(os.path.join(out, "rsa_key.priv"))):
            return
        key = keys.generate_private_key(self.rng)
        os.makedirs(os.path.join(persistent, "hosts"), exist_ok=True)
        for base in (persistent, out):
            keys.write_private_key(os.path.join(base, "ed25519_key.priv"), key)
            with open(os.path.join(base, "hosts", name), "a") as f:
                f.write(keys.hosts_line(key.public))

    def prepare_host(self, section):
        """Called for each tinc-host: True when its hosts file was written."""
        net = section.get("net")
        if not self._enabled(net):
            return False
        node = section.name
        host_file = os.path.join(self.run, net, "hosts", node)
        persistent = os.path.join(self.etc, net, "hosts", node)
        key_in_uci = False
        if not os.path.isfile(persistent):
            alias = section.get("Name")
            if alias:
                host_file = os.path.join(self.run, net, "hosts", alias)
            key_in_uci = any(section.get(k) for k in HOST_KEY_OPTIONS)
        if not section.get_bool("enabled", False):
            if os.path.isfile(host_file):
                os.remove(host_file)
            return False
        if not os.path.isfile(persistent):
            if not key_in_uci:
                self.warn(f"tincapp: Warning, public key for {node} for network {net} "
                          f"missing in {persistent}, skipping configuration of {node}")
                return False
            open(host_file, "a").close()
        self._append_bools(section, host_file, HOST_BOOLS)
        self._append_params(section, host_file, HOST_PARAMS)
        return True

    def build(self, only=None):
        """tinc.init's start(): every net, then every host. `only`: net names to prepare
        (the others are left alone). Returns the prepared Networks in file order."""
        networks = []
        for s in self.sections:
            if s.type == "tinc-net" and (only is None or s.name in only):
                network = self.prepare_net(s)
                if network:
                    networks.append(network)
        prepared = {n.name for n in networks}
        for s in self.sections:
            if s.type == "tinc-host" and s.get("net") in prepared:
                self.prepare_host(s)
        return networks


def build_networks(config_text, etc=DEFAULT_ETC, run=DEFAULT_RUN, ifnames=None, warn=None,
                   only=None, rng=os.urandom, source="<uci>"):
    """Parse a UCI file's text and write its enabled networks below `run`."""
    sections = parse_uci(config_text, source)
    return Translator(sections, etc, run, ifnames, warn, rng).build(only)


USAGE = "tincapp openwrt [--config FILE] [--etc DIR] [--run DIR] [--state FILE] [NET...]"


def main(argv):
    """`tincapp openwrt`: write the network directories of the enabled nets of a UCI file
    (or of the named ones); prints `NET DIR [TINCD-ARGS...]` per net. Exit 1 on errors."""
    parser = argparse.ArgumentParser(
        prog="tincapp openwrt", usage=USAGE,
        description="Turn /etc/config/tincapp (OpenWrt's tinc schema) into network "
                    "directories, as OpenWrt's tinc init script does.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the UCI file")
    parser.add_argument("--etc", default=DEFAULT_ETC,
                        help="persistent network directories, copied first")
    parser.add_argument("--run", default=DEFAULT_RUN, help="where the networks are written")
    parser.add_argument("--state", default=DEFAULT_STATE,
                        help="uci state naming interface devices (for BindToInterface)")
    parser.add_argument("nets", nargs="*", metavar="NET")
    opts = parser.parse_args(argv[1:])
    try:
        with open(opts.config) as f:
            text = f.read()
        networks = build_networks(text, opts.etc, opts.run, read_ifnames(opts.state),
                                  only=set(opts.nets) or None, source=opts.config)
    except (OSError, UciError, KeyFileError) as e:
        print(f"tincapp openwrt: {e}", file=sys.stderr)
        return 1
    for n in networks:
        print(" ".join([n.name, n.directory, *map(shlex.quote, n.args)]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
