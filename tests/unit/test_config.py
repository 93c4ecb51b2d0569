"""Configuration: tinc's file syntax, lookup order, variables, paths and the loaded config."""
import logging
import os
import shutil
import subprocess

import pytest

from tincapp import keys
from tincapp.config import parse, variables
from tincapp.config.netconf import (DaemonConfig, NetworkPaths, check_netname,
                                    control_socket_for, expand_name, host_names,
                                    load_host_config, load_network, resolve_netname,
                                    resolve_paths)
from tincapp.config.parse import ConfigTree, Entry
from tincapp.config.variables import (Address, Kind, Proxy, check_variable, lookup_variable,
                                      parse_subnet, parse_value)
from tincapp.errors import ConfigError
from tincapp.mesh.subnets import SubnetType
from tincapp.sptps.crypto import PrivateKey

KEY = PrivateKey.from_seed(bytes(range(32)))
BOB_KEY = PrivateKey.from_seed(bytes(range(1, 33)))


def entries(text, file="f"):
    return [(e.name, e.value, e.line) for e in parse.parse_text(text, file)]


def make_network(root, name="alice", tinc_conf=None, host=None, key=KEY):
    """A network directory as `tinc init NAME` leaves it (without the RSA key)."""
    root.mkdir(exist_ok=True)
    (root / "hosts").mkdir()
    (root / "cache").mkdir()
    (root / "tinc.conf").write_text(f"Name = {name}\n" if tinc_conf is None else tinc_conf)
    keys.write_private_key(root / "ed25519_key.priv", key)
    if host is not False:
        (root / "hosts" / name).write_text(keys.hosts_line(key.public) if host is None else host)
    up = root / "tinc-up"
    up.write_text("#!/bin/sh\n\necho 'Unconfigured tinc-up script, please edit '$0'!'\n")
    up.chmod(0o755)
    return resolve_paths(str(root), localstatedir=str(root))


def add_host(paths, name, text):
    with open(paths.host_file(name), "w") as f:
        f.write(text)


# --- syntax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("line, name, value", [
    ("Port = 655", "Port", "655"),
    ("Port=655", "Port", "655"),
    ("Port 655", "Port", "655"),
    ("Port\t=\t655", "Port", "655"),
    ("Port\t655", "Port", "655"),
    ("Port   =   655   \t ", "Port", "655"),
    ("Port ==655", "Port", "=655"),           # only one '=' is a separator
    ("Port = = 655", "Port", "= 655"),
    ("Proxy = exec a = b  c", "Proxy", "exec a = b  c"),
    ("Name = a#b", "Name", "a#b"),            # no inline comments
    ("port = 655", "port", "655"),
    ("Port = 655\v", "Port", "655\v"),        # only spaces and tabs are stripped
])
def test_line_forms(line, name, value):
    assert entries(line + "\n") == [(name, value, 1)]


def test_names_are_case_insensitive_in_lookups():
    tree = ConfigTree(parse.parse_text("pOrT = 1\nSUBNET = 10.0.0.0/8\n", "f"))
    assert tree.lookup("Port").value == "1"
    assert [e.value for e in tree.lookup_all("subnet")] == ["10.0.0.0/8"]
    assert tree.lookup("Address") is None and tree.lookup_all("Address") == ()


def test_comments_blank_lines_and_line_numbers():
    text = "# comment\n\nName = a\n#Port = 1\n\n\nPort = 2\n"
    assert entries(text) == [("Name", "a", 3), ("Port", "2", 7)]


def test_indented_hash_is_not_a_comment():
    # COMPAT: the name is empty and the value is the rest of the line.
    assert entries("  # not a comment\n") == [("", "# not a comment", 1)]
    with pytest.raises(ConfigError, match="column 0"):
        check_variable(Entry("", "# x", "f", 1), False)


def test_crlf_and_trailing_cr():
    assert entries("Name = a\r\nPort = 1\r\n") == [("Name", "a", 1), ("Port", "1", 2)]
    # DEVIATION: a last line without newline loses its '\r' too.
    assert entries("Name = a\r") == [("Name", "a", 1)]
    # An empty CRLF line is an empty line.
    assert entries("\r\nName = a\n") == [("Name", "a", 2)]


def test_nul_ends_the_line():
    assert entries("Name = ab\0cd\nPort = 1\n") == [("Name", "ab", 1), ("Port", "1", 2)]
    assert entries("\0Name = x\n") == []


def test_pem_blocks_are_skipped():
    text = ("Name = a\n-----BEGIN ED25519 PUBLIC KEY-----\nPort = 1\n# x\n"
            "-----END ED25519 PUBLIC KEY-----\nPort = 2\n")
    assert entries(text) == [("Name", "a", 1), ("Port", "2", 6)]


def test_pem_block_left_open_skips_to_the_end():
    assert entries("-----BEGIN RSA PUBLIC KEY-----\nPort = 1\n") == []


def test_end_line_outside_a_block_is_a_variable():
    assert entries("-----END x\n") == [("-----END", "x", 1)]


@pytest.mark.parametrize("text, line, match", [
    ("Name = a\nPort\n", 2, "no value for variable 'Port'"),
    ("Port =\n", 1, "no value"),
    ("Port = \t \n", 1, "no value"),
    ("Name = a\n   \n", 2, "only spaces or tabs"),
    ("\t\n", 1, "only spaces or tabs"),
])
def test_variable_without_value_is_an_error(text, line, match):
    with pytest.raises(ConfigError, match=match) as exc:
        parse.parse_text(text, "/etc/tinc/tinc.conf")
    assert exc.value.file == "/etc/tinc/tinc.conf" and exc.value.line == line
    assert str(exc.value).startswith(f"/etc/tinc/tinc.conf:{line}: ")


def test_line_length_limit():
    ok = "Name = " + "a" * (parse.MAX_LINE_LEN - 8)       # 2047 characters + newline
    assert entries(ok + "\n")[0][1] == "a" * (parse.MAX_LINE_LEN - 8)
    assert entries(ok + "a")                               # 2048 without newline
    with pytest.raises(ConfigError, match="2048") as exc:
        parse.parse_text("Port = 1\n" + ok + "a\n", "f")
    assert exc.value.line == 2


def test_non_utf8_bytes_are_kept_as_latin1():
    assert parse.parse_bytes(b"Name = \xff\xfe\n", "f")[0].value == "\xff\xfe"


def test_read_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file") as exc:
        parse.read_file(tmp_path / "missing")
    assert exc.value.file == str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="directory"):
        parse.read_file(tmp_path)


def test_format_line():
    assert parse.format_line("Port", "655") == "Port = 655\n"
    assert parse.format_line("Proxy", "=x y") == "Proxy = =x y\n"
    for name, value in [("", "x"), ("a b", "x"), ("a=b", "x"), ("#a", "x"),
                        ("-----BEGIN", "x"), ("a", ""), ("a", " x"), ("a", "x "),
                        ("a", "x\r"), ("a", "x\ny"), ("a", "x\0"), ("a", "\u20ac"),
                        ("a", "x" * 3000)]:
        with pytest.raises(ValueError):
            parse.format_line(name, value)


# --- -o options and lookup order -------------------------------------------------------------

def test_parse_options():
    opts = parse.parse_options(["Port=1", "bob.Address 10.0.0.1 655", "Mode = switch"])
    assert [(e.name, e.value, e.file, e.line) for e in opts] == [
        ("Port", "1", None, 1), ("bob.Address", "10.0.0.1 655", None, 2),
        ("Mode", "switch", None, 3)]
    with pytest.raises(ConfigError, match="option -o #2: no value"):
        parse.parse_options(["Port=1", "Mode"])


def test_options_for_server_and_hosts():
    opts = parse.parse_options(["Port=1", "bob.Port=2", "Bob.Port=3", "bobby.Port=4",
                                "bob.x.Port=5"])
    assert [(e.name, e.value) for e in parse.options_for(opts)] == [("Port", "1")]
    # Node names are case-sensitive; the rest after "NAME." is the variable.
    assert [(e.name, e.value, e.line) for e in parse.options_for(opts, "bob")] == [
        ("Port", "2", 2), ("x.Port", "5", 5)]


def test_command_line_wins_then_lower_line_then_file_name():
    confbase = "/etc/tinc/net"
    tree = ConfigTree([
        Entry("Port", "tinc.conf:2", f"{confbase}/tinc.conf", 2),
        Entry("Port", "hosts:2", f"{confbase}/hosts/alice", 2),
        Entry("Port", "conf.d:2", f"{confbase}/conf.d/a.conf", 2),
        Entry("Port", "hosts:1", f"{confbase}/hosts/alice", 1),
        Entry("Port", "-o #2", None, 2),
        Entry("Port", "-o #1", None, 1),
    ])
    # COMPAT: config_compare(): command line, line number, then strcmp of the file names.
    assert [e.value for e in tree.lookup_all("port")] == [
        "-o #1", "-o #2", "hosts:1", "conf.d:2", "hosts:2", "tinc.conf:2"]
    assert tree.lookup("PORT").value == "-o #1"


def test_conf_d_files(tmp_path):
    (tmp_path / "tinc.conf").write_text("Name = a\n")
    d = tmp_path / "conf.d"
    d.mkdir()
    for n in ["b.conf", "a.conf", ".hidden.conf", ".conf", "x.conf.bak", "noext", "B.conf"]:
        (d / n).write_text("Port = 1\n")
    names = parse.server_file_names(str(tmp_path))
    base = f"{tmp_path}/conf.d/"
    assert names == [f"{tmp_path}/tinc.conf", base + ".hidden.conf", base + "B.conf",
                     base + "a.conf", base + "b.conf"]
    assert len(parse.read_server_files(str(tmp_path))) == 5


def test_conf_d_problems(tmp_path):
    (tmp_path / "tinc.conf").write_text("Name = a\n")
    assert parse.server_file_names(str(tmp_path)) == [f"{tmp_path}/tinc.conf"]
    (tmp_path / "conf.d").write_text("")            # not a directory
    with pytest.raises(ConfigError, match="cannot list"):
        parse.server_file_names(str(tmp_path))
    (tmp_path / "conf.d").unlink()
    (tmp_path / "conf.d" / "dir.conf").mkdir(parents=True)
    with pytest.raises(ConfigError, match="directory") as exc:
        parse.read_server_files(str(tmp_path))
    assert exc.value.file.endswith("conf.d/dir.conf")


def test_missing_tinc_conf(tmp_path):
    with pytest.raises(ConfigError, match="cannot open") as exc:
        parse.read_server_files(str(tmp_path))
    assert exc.value.file == f"{tmp_path}/tinc.conf"


# --- variables --------------------------------------------------------------------------------

# src/tincctl.c variables[] as of tinc 1.1 head, with its flags.
TINCCTL = {
    "AddressFamily": "SX", "AutoConnect": "SX", "BindToAddress": "SM", "BindToInterface": "S",
    "Broadcast": "SX", "BroadcastSubnet": "SMX", "ConnectTo": "SMX", "DecrementTTL": "SX",
    "Device": "S", "DeviceStandby": "S", "DeviceType": "S", "DirectOnly": "SX",
    "Ed25519PrivateKeyFile": "S", "ExperimentalProtocol": "S", "Forwarding": "S",
    "FWMark": "S", "GraphDumpFile": "SO", "Hostnames": "S", "IffOneQueue": "S",
    "Interface": "S", "InvitationExpire": "S", "KeyExpire": "SX", "ListenAddress": "SM",
    "LocalDiscovery": "SX", "LogLevel": "S", "MACExpire": "SX", "MaxConnectionBurst": "SX",
    "MaxOutputBufferSize": "SX", "MaxTimeout": "SX", "Mode": "SX", "Name": "S",
    "PingInterval": "SX", "PingTimeout": "SX", "PriorityInheritance": "S", "PrivateKey": "SO",
    "PrivateKeyFile": "S", "ProcessPriority": "S", "Proxy": "S", "ReplayWindow": "SX",
    "Sandbox": "S", "ScriptsExtension": "S", "ScriptsInterpreter": "S", "StrictSubnets": "SX",
    "TunnelServer": "SX", "UDPDiscovery": "SX", "UDPDiscoveryKeepaliveInterval": "SX",
    "UDPDiscoveryInterval": "SX", "UDPDiscoveryTimeout": "SX", "MTUInfoInterval": "SX",
    "UDPInfoInterval": "SX", "UDPRcvBuf": "S", "UDPSndBuf": "S", "UPnP": "S",
    "UPnPDiscoverWait": "S", "UPnPRefreshPeriod": "S", "VDEGroup": "S", "VDEPort": "S",
    "Address": "HM", "Cipher": "SH", "ClampMSS": "SHX", "Compression": "SHX", "Digest": "SH",
    "Ed25519PublicKey": "H", "Ed25519PublicKeyFile": "SH", "IndirectData": "SHX",
    "MACLength": "SH", "PMTU": "SH", "PMTUDiscovery": "SH", "Port": "H", "PublicKey": "HO",
    "PublicKeyFile": "SHO", "Subnet": "HMX", "TCPOnly": "SHX", "Weight": "HX",
}


def test_table_matches_tincctl():
    for name, flags in TINCCTL.items():
        var = lookup_variable(name)
        assert var is not None and var.name == name and var.in_tincctl
        assert (var.server, var.host, var.multiple, var.safe, var.obsolete) == (
            "S" in flags, "H" in flags, "M" in flags, "X" in flags, "O" in flags), name
    extra = {v.name for v in variables.TABLE} - set(TINCCTL)
    assert extra == {"DisableBuggyPeers"}
    assert not lookup_variable("DisableBuggyPeers").in_tincctl
    assert lookup_variable("dEVICEtYPE").name == "DeviceType"


def test_legacy_variables_are_marked():
    legacy = {v.name for v in variables.TABLE if v.legacy}
    assert legacy == {"Cipher", "Digest", "MACLength", "PrivateKey", "PrivateKeyFile",
                      "PublicKey", "PublicKeyFile"}


def test_unknown_variable_error_and_warn(caplog):
    entry = Entry("Prot", "1", "/x/tinc.conf", 4)
    with pytest.raises(ConfigError, match="unknown variable 'Prot'.*Port") as exc:
        check_variable(entry, False)
    assert (exc.value.file, exc.value.line) == ("/x/tinc.conf", 4)
    with caplog.at_level(logging.WARNING):
        assert check_variable(entry, False, unknown="warn") is None
    assert "/x/tinc.conf:4" in caplog.text
    with pytest.raises(ValueError):
        check_variable(entry, False, unknown="ignore")


def test_scope_warnings_like_fsck(caplog):
    with caplog.at_level(logging.WARNING):
        check_variable(Entry("Port", "1", "/x/tinc.conf", 1), in_host_file=False)
        check_variable(Entry("Mode", "hub", "/x/hosts/a", 1), in_host_file=True)
        check_variable(Entry("IndirectData", "yes", "/x/hosts/a", 1), in_host_file=True)
        check_variable(Entry("GraphDumpFile", "x", "/x/tinc.conf", 3), in_host_file=False)
    assert "host variable Port" in caplog.text
    assert "server variable Mode" in caplog.text
    assert "IndirectData" not in caplog.text
    assert "obsolete variable GraphDumpFile" in caplog.text


def value(name, text):
    return parse_value(lookup_variable(name), Entry(name, text, "/x/tinc.conf", 7))


@pytest.mark.parametrize("text, expected", [("yes", True), ("YES", True), ("No", False),
                                            ("nO", False)])
def test_bool_values(text, expected):
    assert value("TunnelServer", text) is expected


@pytest.mark.parametrize("text", ["true", "1", "y", "yes please", "ja"])
def test_bad_bool_values(text):
    with pytest.raises(ConfigError, match='"yes" or "no"') as exc:
        value("TunnelServer", text)
    assert (exc.value.file, exc.value.line) == ("/x/tinc.conf", 7)


@pytest.mark.parametrize("text, expected", [("60", 60), ("+5", 5), ("-3", -3),
                                            ("007", 7), ("2147483647", 2147483647),
                                            ("-2147483648", -2147483648)])
def test_int_values(text, expected):
    assert value("PingInterval", text) == expected


def test_int_trailing_junk_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert value("PingInterval", "10s") == 10
    assert "/x/tinc.conf:7" in caplog.text and "'s'" in caplog.text


@pytest.mark.parametrize("name, text, match", [
    ("PingInterval", "ten", "integer expected"),
    ("PingInterval", "", "integer expected"),
    ("PingInterval", "2147483648", "out of range"),
    ("MaxTimeout", "0", "at least 1"),
    ("MaxConnectionBurst", "-1", "at least 1"),
    ("UDPRcvBuf", "-1", "at least 0"),
    ("ReplayWindow", "-16", "at least 0"),
    ("Compression", "13", "compression level"),
    ("Compression", "-1", "at least 0"),
    ("PMTU", "0", "at least 1"),
])
def test_bad_int_values(name, text, match):
    with pytest.raises(ConfigError, match=match):
        value(name, text)


def test_choices():
    assert value("Mode", "SWITCH") == "switch"
    assert value("Broadcast", "yes") == "mst"
    assert value("AddressFamily", "IPv6") == "ipv6"
    assert value("DeviceType", "Dummy") == "dummy"
    with pytest.raises(ConfigError, match="invalid Mode 'bridge'.*router, switch, hub"):
        value("Mode", "bridge")


def test_ports():
    assert value("Port", "655") == 655
    assert value("Port", "0") == 0
    assert value("Port", "+655") == 655
    assert value("Port", "https") == "https"
    for bad in ["65536", "-1", "a b"]:
        with pytest.raises(ConfigError):
            value("Port", bad)


def test_addresses():
    assert value("Address", "vpn.example.net") == Address("vpn.example.net", None)
    assert value("Address", "10.0.0.1 656") == Address("10.0.0.1", "656")
    assert value("Address", "fe80::1 ssh") == Address("fe80::1", "ssh")
    assert value("BindToAddress", "*") == Address(None, None)
    assert value("ListenAddress", "* 700") == Address(None, "700")
    assert value("Address", "*") == Address("*", None)      # only listen addresses have '*'
    assert str(Address(None, "700")) == "* 700"
    assert value("Address", "a  +655") == Address("a", "655")
    for bad in ["a 655 x", "a 70000", "a\t655", "a b c"]:
        with pytest.raises(ConfigError):
            value("Address", bad)


def test_proxy():
    assert value("Proxy", "none") == Proxy("none")
    assert value("Proxy", "SOCKS5 proxy.lan 1080 me secret word") == Proxy(
        "socks5", host="proxy.lan", port="1080", user="me", password="secret word")
    assert value("Proxy", "http 10.0.0.1 3128") == Proxy("http", host="10.0.0.1",
                                                          port="3128")
    assert value("Proxy", "exec nc %h %p") == Proxy("exec", command="nc %h %p")
    for bad in ["socks5", "socks5 host", "exec", "ftp a b", "http h  p"]:
        with pytest.raises(ConfigError):
            value("Proxy", bad)


def test_names_and_public_keys():
    assert value("ConnectTo", "bob_2") == "bob_2"
    for bad in ["bob-2", "b\u00f6b", "a.b"]:
        with pytest.raises(ConfigError, match="invalid node name"):
            value("ConnectTo", bad)
    assert value("Ed25519PublicKey", keys.hosts_line(KEY.public).split(" = ")[1].strip()) \
        == KEY.public
    with pytest.raises(ConfigError, match="Ed25519PublicKey"):
        value("Ed25519PublicKey", "tooshort")


# --- subnets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical, stype, prefix, weight", [
    ("10.1.0.0/16", "10.1.0.0/16", SubnetType.IPV4, 16, 10),
    ("10.1.2.3", "10.1.2.3", SubnetType.IPV4, 32, 10),
    ("10.1.2.3/32#10", "10.1.2.3", SubnetType.IPV4, 32, 10),
    ("0.0.0.0/0", "0.0.0.0/0", SubnetType.IPV4, 0, 10),
    ("10.0.0.0/8#5", "10.0.0.0/8#5", SubnetType.IPV4, 8, 5),
    ("10.0.0.0/8#-5", "10.0.0.0/8#-5", SubnetType.IPV4, 8, -5),
    ("10.0.0.0/ 8# 5", "10.0.0.0/8#5", SubnetType.IPV4, 8, 5),   # %d skips whitespace
    ("fd00:0:0::/64", "fd00::/64", SubnetType.IPV6, 64, 10),
    ("FD00::1", "fd00::1", SubnetType.IPV6, 128, 10),
    ("::ffff:10.0.0.1", "::ffff:10.0.0.1", SubnetType.IPV6, 128, 10),
    ("00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e", SubnetType.MAC, 48, 10),
    ("0:1A:2b:3c:4d:5e#3", "00:1a:2b:3c:4d:5e#3", SubnetType.MAC, 48, 3),
])
def test_subnets(text, canonical, stype, prefix, weight):
    s = parse_subnet(text)
    assert (str(s), s.type, s.prefixlength, s.weight) == (canonical, stype, prefix, weight)
    assert value("Subnet", text) == s


@pytest.mark.parametrize("text, match", [
    ("10.0.0.1/8", "do not match"),                 # host bits set: tinc refuses it here
    ("fd00::1/64", "do not match"),
    ("10.0.0.0/33", ""),
    ("::/129", ""),
    ("10.0.0.0/-1", ""),
    ("10.0.0.0/8x", ""),
    ("10.0.0.0#x", ""),
    ("10.0.0.0#5 ", ""),
    ("010.0.0.0", ""),                              # inet_pton: no leading zeros
    ("10.0.0", ""),
    ("10.0.0.0.0", ""),
    ("256.0.0.0", ""),
    ("fe80::1%eth0", ""),
    ("[::1]", ""),
    ("00:1a:2b:3c:4d:5e/48", "MAC"),
    ("00:1a:2b:3c:4d", ""),
    ("00:1a:2b:3c:4d:5e:6f", ""),
    ("example.net", ""),
    ("", ""),
])
def test_bad_subnets(text, match):
    with pytest.raises(ValueError, match=match or None):
        parse_subnet(text)


def test_bad_subnet_in_file_names_file_and_line(tmp_path):
    paths = make_network(tmp_path / "net", host=keys.hosts_line(KEY.public) +
                         "Subnet = 10.0.0.0/8\nSubnet = 10.1.0.1/16\n")
    with pytest.raises(ConfigError, match="Subnet: .*do not match") as exc:
        load_network(paths)
    assert (exc.value.file, exc.value.line) == (paths.host_file("alice"), 3)


# --- netname and paths ------------------------------------------------------------------------

@pytest.mark.parametrize("netname, ok, strict_ok", [
    ("vpn", True, True), ("my-vpn.2", True, True), ("a b", True, False),
    ("a$b", True, False), ("a:b", True, False), ("caf\u00e9", True, True),
    ("", False, False), (".hidden", False, False), ("a/b", False, False),
    ("a\\b", False, False), ("a\tb", False, False), ("a\x7fb", False, False),
    (None, False, False),
])
def test_check_netname(netname, ok, strict_ok):
    assert check_netname(netname) is ok
    assert check_netname(netname, strict=True) is strict_ok


def test_resolve_netname(caplog):
    assert resolve_netname("vpn", env={"NETNAME": "other"}) == "vpn"
    assert resolve_netname(None, env={"NETNAME": "other"}) == "other"
    assert resolve_netname(None, env={}) is None
    assert resolve_netname(".", env={"NETNAME": "x"}) is None
    assert resolve_netname("", env={"NETNAME": "x"}) is None
    assert resolve_netname(None, env={"NETNAME": "."}) is None
    with pytest.raises(ConfigError, match="invalid character in netname"):
        resolve_netname("../etc", env={})
    with pytest.raises(ConfigError):
        resolve_netname(None, env={"NETNAME": "a/b"})
    with caplog.at_level(logging.WARNING):
        assert resolve_netname("a b", env={}) == "a b"
    assert "unsafe character" in caplog.text


def test_paths_from_netname(tmp_path):
    p = resolve_paths(netname="vpn", env={}, confdir="/etc/tinc", localstatedir=str(tmp_path))
    assert p.netname == "vpn" and p.confbase == "/etc/tinc/vpn"
    assert p.tinc_conf == "/etc/tinc/vpn/tinc.conf"
    assert p.conf_d == "/etc/tinc/vpn/conf.d"
    assert p.host_file("bob") == "/etc/tinc/vpn/hosts/bob"
    assert p.default_private_key_file == "/etc/tinc/vpn/ed25519_key.priv"
    assert p.pidfile == f"{tmp_path}/run/tinc.vpn.pid"
    assert p.control_socket == f"{tmp_path}/run/tinc.vpn.socket"
    assert p.logfile == f"{tmp_path}/log/tinc.vpn.log"
    with pytest.raises(ValueError):
        p.host_file("../tinc.conf")


def test_paths_without_netname(tmp_path):
    p = resolve_paths(env={}, localstatedir=str(tmp_path))
    assert p.netname is None and p.confbase == "/etc/tinc" and p.identname == "tinc"
    assert p.pidfile == f"{tmp_path}/run/tinc.pid"
    assert p.control_socket == f"{tmp_path}/run/tinc.socket"
    p = resolve_paths(env={"NETNAME": "net1"}, localstatedir=str(tmp_path))
    assert p.confbase == "/etc/tinc/net1"


def test_config_dir_overrides_netname_but_not_the_pid_file_name(tmp_path):
    p = resolve_paths(str(tmp_path), "vpn", env={}, localstatedir=str(tmp_path))
    assert p.confbase == str(tmp_path) and p.netname == "vpn"
    assert p.pidfile == f"{tmp_path}/run/tinc.vpn.pid"


def test_relative_config_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists").mkdir()
    assert resolve_paths("exists", env={}).confbase == str(tmp_path / "exists")
    assert resolve_paths("missing", env={}).confbase == str(tmp_path / "missing")


def test_pid_file_fallback(tmp_path):
    missing = str(tmp_path / "no-var")
    p = resolve_paths(str(tmp_path), env={}, localstatedir=missing)
    assert p.pidfile == f"{tmp_path}/pid" and p.control_socket == f"{tmp_path}/pid.socket"
    assert p.logfile == f"{tmp_path}/log"
    # The CLI's rule: fall back only if CONFBASE/pid exists and the LOCALSTATEDIR one does not.
    p = resolve_paths(str(tmp_path), env={}, localstatedir=missing, daemon=False)
    assert p.pidfile == f"{missing}/run/tinc.pid"
    (tmp_path / "pid").write_text("1 x 127.0.0.1 port 655\n")
    p = resolve_paths(str(tmp_path), env={}, localstatedir=missing, daemon=False)
    assert p.pidfile == f"{tmp_path}/pid"


def test_pidfile_override_and_socket_name(tmp_path):
    p = resolve_paths(str(tmp_path), env={}, pidfile="/run/x.pid", logfile="/l/x")
    assert (p.pidfile, p.control_socket, p.logfile) == ("/run/x.pid", "/run/x.socket", "/l/x")
    assert control_socket_for("/run/tinc") == "/run/tinc.socket"
    assert control_socket_for(".pid") == ".pid.socket"
    assert control_socket_for("/a/b.pid") == "/a/b.socket"


# --- Name -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, env, hostname, expected", [
    ("alice", {}, None, "alice"),
    ("$HOST", {"HOST": "web-01.example"}, "ignored", "web_01_example"),
    ("$HOST", {}, "gw.lan", "gw_lan"),
    ("$NODE", {"NODE": "n1"}, None, "n1"),
    ("$NODE", {"NODE": "caf\u00e9"}, None, "caf__"),      # per byte of UTF-8
])
def test_expand_name(value, env, hostname, expected):
    assert expand_name(value, env, hostname) == expected


@pytest.mark.parametrize("value, env, match", [
    ("$NODE", {}, "NODE does not exist"),
    ("$", {}, "does not exist"),
    ("$NODE", {"NODE": ""}, "invalid Name"),
    ("al-ice", {}, "invalid Name"),
    ("$HOST", {}, "host name"),
])
def test_bad_names(value, env, match):
    with pytest.raises(ValueError, match=match):
        expand_name(value, env, "")


def test_name_from_environment_in_tinc_conf(tmp_path):
    paths = make_network(tmp_path / "n", name="node_7", tinc_conf="Name = $NODE\n")
    assert load_network(paths, env={"NODE": "node.7"}).name == "node_7"
    with pytest.raises(ConfigError, match="Name: environment variable NODE") as exc:
        load_network(paths, env={})
    assert (exc.value.file, exc.value.line) == (paths.tinc_conf, 1)


# --- the whole network ------------------------------------------------------------------------

def test_network_as_tinc_init_leaves_it(tmp_path):
    paths = make_network(tmp_path / "vpn")
    cfg = load_network(paths)
    assert isinstance(cfg, DaemonConfig)
    assert cfg.name == "alice" and cfg.private_key.public == KEY.public
    assert cfg.private_key_file == f"{tmp_path}/vpn/ed25519_key.priv"
    assert (cfg.port, cfg.port_specified) == (655, False)
    assert cfg.subnets == () and cfg.connect_to == () and cfg.addresses == ()
    assert (cfg.mode, cfg.forwarding, cfg.broadcast, cfg.address_family) == (
        "router", "internal", "mst", "any")
    assert (cfg.device_type, cfg.device, cfg.interface) == ("tun", None, None)
    assert (cfg.ping_interval_s, cfg.ping_timeout_s, cfg.max_timeout_s) == (60, 5, 900)
    assert cfg.pmtu_discovery and cfg.clamp_mss and cfg.auto_connect and cfg.local_discovery
    assert not (cfg.indirect_data or cfg.tcp_only or cfg.strict_subnets or cfg.tunnel_server)
    assert cfg.replay_window is None and cfg.compression == 0
    assert cfg.udp_discovery_keepalive_interval_s == 10 and cfg.max_output_buffer_size == 15180
    with pytest.raises(Exception):
        cfg.name = "bob"                            # frozen


def test_full_configuration(tmp_path):
    tinc_conf = """Name = alice
# a comment
Mode = Switch
ConnectTo = bob
ConnectTo = carol
ConnectTo = alice
ConnectTo = bob
TCPOnly = yes
TunnelServer = yes
PingInterval = 0
PingTimeout = 100000
BindToAddress = * 700
ListenAddress = 10.0.0.1
BroadcastSubnet = 10.255.255.255
Proxy = socks5 p 1080
Compression = 9
ReplayWindow = 32
DeviceType = tap
Interface = vpn0
"""
    host = keys.hosts_line(KEY.public) + """Port = 700
Address = alice.example.net
Subnet = 10.1.0.0/16
Subnet = 10.1.0.0/16
Subnet = 00:1a:2b:3c:4d:5e
Weight = 3
PMTU = 1400
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEA
-----END RSA PUBLIC KEY-----
"""
    paths = make_network(tmp_path / "n", tinc_conf=tinc_conf, host=host)
    cfg = load_network(paths)
    assert cfg.mode == "switch" and cfg.device_type == "tap" and cfg.interface == "vpn0"
    assert cfg.connect_to == ("bob", "carol")           # self and repeats dropped
    assert cfg.tcp_only and cfg.indirect_data and not cfg.pmtu_discovery
    assert cfg.tunnel_server and cfg.strict_subnets
    assert (cfg.ping_interval_s, cfg.ping_timeout_s) == (86400, 86400)
    assert cfg.bind_to_addresses == (Address(None, "700"),)
    assert cfg.listen_addresses == (Address("10.0.0.1", None),)
    assert [str(s) for s in cfg.broadcast_subnets] == ["10.255.255.255"]
    assert cfg.proxy == Proxy("socks5", host="p", port="1080")
    assert cfg.compression == 9 and cfg.replay_window == 32
    assert (cfg.port, cfg.port_specified) == (700, True)
    assert cfg.addresses == (Address("alice.example.net", None),)
    assert [str(s) for s in cfg.subnets] == ["10.1.0.0/16", "00:1a:2b:3c:4d:5e"]
    assert {s.owner for s in cfg.subnets} == {"alice"}
    assert cfg.weight == 3 and cfg.pmtu == 1400
    assert [e.value for e in cfg.tree.lookup_all("ConnectTo")] == ["bob", "carol", "alice",
                                                                   "bob"]


def test_own_host_file_and_tinc_conf_merge_by_line_number(tmp_path):
    paths = make_network(tmp_path / "n", tinc_conf="Name = alice\n\n\nPort = 1000\n",
                         host="Port = 2000\n" + keys.hosts_line(KEY.public))
    assert load_network(paths).port == 2000            # line 1 of hosts/alice beats line 4
    paths = make_network(tmp_path / "m", tinc_conf="Name = alice\nPort = 1000\n",
                         host="\n\nPort = 2000\n" + keys.hosts_line(KEY.public))
    assert load_network(paths).port == 1000


def test_same_line_conf_d_beats_hosts_beats_tinc_conf(tmp_path):
    paths = make_network(tmp_path / "n", tinc_conf="Name = alice\nPort = 1000\n",
                         host=keys.hosts_line(KEY.public) + "Port = 2000\n")
    assert load_network(paths).port == 2000
    os.mkdir(paths.conf_d)
    with open(f"{paths.conf_d}/x.conf", "w") as f:
        f.write("\nPort = 3000\n")
    assert load_network(paths).port == 3000


def test_command_line_options_win(tmp_path):
    paths = make_network(tmp_path / "n", tinc_conf="Name = alice\nMode = hub\n",
                         host=keys.hosts_line(KEY.public) + "Port = 2000\n")
    cfg = load_network(paths, ["Mode=switch", "Port 3000", "alice.Port=4000", "Mode=router"])
    assert cfg.mode == "switch" and cfg.port == 3000
    cfg = load_network(paths, ["alice.Port=4000", "Port=3000", "bob.Port=5000"])
    assert cfg.port == 4000                             # -o NAME.VAR also applies to us
    assert load_network(paths, ["Name=bob_is_not_here"], unknown="warn").name == \
        "bob_is_not_here"


@pytest.mark.parametrize("option, match", [
    ("bob.Prot=1", "unknown variable 'Prot'"),
    ("bob.Port=x y", "invalid port"),
    ("b-b.Port=1", "invalid node name 'b-b'"),
    ("bob.Subnet=10.0.0.1/8", "do not match"),
])
def test_options_for_other_nodes_are_checked_at_start(tmp_path, option, match):
    paths = make_network(tmp_path / "n")
    with pytest.raises(ConfigError, match=match) as exc:
        load_network(paths, ["Mode=hub", option])
    assert (exc.value.file, exc.value.line) == (None, 2)
    assert str(exc.value).startswith("command line option -o #2: ")


def test_multi_valued_order_across_files(tmp_path):
    paths = make_network(tmp_path / "n",
                         tinc_conf="Name = alice\nSubnet = 10.2.0.0/16\n\nSubnet = 10.4.0.0/16\n",
                         host="Subnet = 10.1.0.0/16\n\nSubnet = 10.3.0.0/16\n" +
                         keys.hosts_line(KEY.public))
    cfg = load_network(paths, ["Subnet=10.0.0.0/16"])
    assert [str(s) for s in cfg.subnets] == ["10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16",
                                             "10.3.0.0/16", "10.4.0.0/16"]


@pytest.mark.parametrize("tinc_conf, host, match, where", [
    ("Port = 1\n", None, "Name for tinc daemon required", ("tinc.conf", None)),
    ("Name = alice\nMode = bridge\n", None, "invalid Mode", ("tinc.conf", 2)),
    ("Name = alice\nModus = hub\n", None, "unknown variable 'Modus'.*Mode", ("tinc.conf", 2)),
    ("Name = alice\nConnectTo = bob-1\n", None, "invalid node name", ("tinc.conf", 2)),
    ("Name = alice\nTunnelServer = on\n", None, '"yes" or "no"', ("tinc.conf", 2)),
    ("Name = alice\nMaxTimeout = 0\n", None, "at least 1", ("tinc.conf", 2)),
    ("Name = alice\nExperimentalProtocol = no\n", None, "legacy", ("tinc.conf", 2)),
    ("Name = alice\n", "Port = 70000\n", "out of range", ("hosts/alice", 1)),
    ("Name = alice\n", "Port =\n", "no value", ("hosts/alice", 1)),
    ("Name = alice\n", "Ed25519PublicKey = abc\n", "Ed25519PublicKey", ("hosts/alice", 1)),
    ("Name = alice\n", "  Port = 1\n", "column 0", ("hosts/alice", 1)),
    ("Name = alice\nEd25519PrivateKeyFile = nokey\n", None, "Ed25519PrivateKeyFile.*"
     "does not exist.*generate-ed25519-keys", ("tinc.conf", 2)),
    ("Name = al/ice\n", None, "invalid Name", ("tinc.conf", 1)),
])
def test_configuration_errors(tmp_path, tinc_conf, host, match, where):
    paths = make_network(tmp_path / "n", tinc_conf=tinc_conf, host=host)
    with pytest.raises(ConfigError, match=match) as exc:
        load_network(paths)
    assert exc.value.file == f"{paths.confbase}/{where[0]}"
    assert exc.value.line == where[1]


def test_unknown_variables_can_be_only_warned_about(tmp_path, caplog):
    paths = make_network(tmp_path / "n", tinc_conf="Name = alice\nFutureThing = 1\n")
    with pytest.raises(ConfigError, match="FutureThing"):
        load_network(paths)
    with caplog.at_level(logging.WARNING):
        cfg = load_network(paths, unknown="warn")
    assert cfg.name == "alice" and "FutureThing" in caplog.text
    assert cfg.tree.lookup("FutureThing").value == "1"


def test_duplicate_single_valued_variable_warns_first_wins(tmp_path, caplog):
    paths = make_network(tmp_path / "n", tinc_conf="Name = alice\nMode = hub\nMode = switch\n")
    with caplog.at_level(logging.WARNING):
        assert load_network(paths).mode == "hub"
    assert "Mode given 2 times" in caplog.text


def test_legacy_variables_are_ignored(tmp_path):
    paths = make_network(tmp_path / "n", tinc_conf="Name = alice\nCipher = blowfish\n"
                         "Digest = whatever\nMACLength = x\nPrivateKeyFile = rsa_key.priv\n")
    assert load_network(paths).name == "alice"


def test_missing_tinc_conf_and_confbase(tmp_path):
    with pytest.raises(ConfigError, match="cannot open config file") as exc:
        load_network(resolve_paths(str(tmp_path / "nothing"), env={}))
    assert exc.value.file == f"{tmp_path}/nothing/tinc.conf"


def test_private_key_problems(tmp_path):
    paths = make_network(tmp_path / "n")
    os.unlink(paths.default_private_key_file)
    with pytest.raises(ConfigError, match="does not exist.*generate-ed25519-keys"):
        load_network(paths)
    with open(paths.default_private_key_file, "w") as f:
        f.write("-----BEGIN ED25519 PRIVATE KEY-----\nAAAA\n-----END ED25519 PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="too little base64"):
        load_network(paths)


def test_private_key_file_relative_to_confbase(tmp_path, monkeypatch):
    paths = make_network(tmp_path / "n",
                         tinc_conf="Name = alice\nEd25519PrivateKeyFile = keys/my.priv\n")
    os.mkdir(f"{paths.confbase}/keys")
    os.rename(paths.default_private_key_file, f"{paths.confbase}/keys/my.priv")
    monkeypatch.chdir("/")
    cfg = load_network(paths)
    assert cfg.private_key_file == f"{paths.confbase}/keys/my.priv"
    assert cfg.private_key.public == KEY.public


def test_mismatched_own_public_key_warns(tmp_path, caplog):
    paths = make_network(tmp_path / "n", host=keys.hosts_line(BOB_KEY.public))
    with caplog.at_level(logging.WARNING):
        load_network(paths)
    assert "does not match the private key" in caplog.text


def test_missing_own_host_file_is_tolerated(tmp_path, caplog):
    paths = make_network(tmp_path / "n", host=False)
    with caplog.at_level(logging.WARNING):
        cfg = load_network(paths)
    assert cfg.port == 655 and "own host file does not exist" in caplog.text


def test_own_host_file_unreadable(tmp_path):
    paths = make_network(tmp_path / "n", host=False)
    os.mkdir(paths.host_file("alice"))
    with pytest.raises(ConfigError, match="directory"):
        load_network(paths)


def test_port_service_names(tmp_path):
    paths = make_network(tmp_path / "n", host="Port = tinc\n")
    assert load_network(paths, resolve_service={"tinc": 655}.__getitem__).port == 655

    def unknown(name):
        raise ValueError(f"unknown service {name!r}")
    with pytest.raises(ConfigError, match="Port: unknown service 'tinc'") as exc:
        load_network(paths, resolve_service=unknown)
    assert exc.value.line == 1


def test_conf_d_values_are_used(tmp_path):
    paths = make_network(tmp_path / "n")
    os.mkdir(paths.conf_d)
    with open(f"{paths.conf_d}/10-mode.conf", "w") as f:
        f.write("Mode = hub\n")
    with open(f"{paths.conf_d}/ignored.txt", "w") as f:
        f.write("Mode = switch\n")
    assert load_network(paths).mode == "hub"


# --- other nodes ------------------------------------------------------------------------------

def test_other_host_config(tmp_path):
    paths = make_network(tmp_path / "n")
    add_host(paths, "bob", "Address = 198.51.100.7\nAddress = bob.example 700\nPort = 656\n"
             "Subnet = 10.2.0.0/16#5\nIndirectData = yes\nTCPOnly = no\nPMTU = 1300\n"
             "ClampMSS = no\nWeight = 7\nCompression = 12\nPMTUDiscovery = no\n"
             "Mode = nonsense\n" + keys.hosts_line(BOB_KEY.public))
    h = load_host_config(paths, "bob", ["bob.Address=192.0.2.1", "Port=1"])
    assert h.exists and h.file == paths.host_file("bob")
    assert h.addresses[0] == Address("192.0.2.1", None)       # -o first
    assert h.connect_addresses() == (("192.0.2.1", "656"), ("198.51.100.7", "656"),
                                     ("bob.example", "700"))
    assert h.port == 656 and [str(s) for s in h.subnets] == ["10.2.0.0/16#5"]
    assert h.subnets[0].owner == "bob"
    assert h.ed25519_public_key == BOB_KEY.public
    assert (h.indirect_data, h.tcp_only, h.pmtu, h.clamp_mss, h.weight, h.compression,
            h.pmtu_discovery) == (True, False, 1300, False, 7, 12, False)


def test_other_host_defaults_and_missing(tmp_path):
    paths = make_network(tmp_path / "n")
    add_host(paths, "carol", "\n")
    h = load_host_config(paths, "carol")
    assert h.port == 655 and h.addresses == () and h.ed25519_public_key is None
    assert (h.indirect_data, h.tcp_only, h.pmtu, h.weight, h.compression) == (None,) * 5
    with pytest.raises(ConfigError, match="no host file for node dave") as exc:
        load_host_config(paths, "dave")
    assert exc.value.file == paths.host_file("dave")
    h = load_host_config(paths, "dave", ["dave.Address=10.0.0.4 1"], missing_ok=True)
    assert not h.exists and h.connect_addresses() == (("10.0.0.4", "1"),)
    with pytest.raises(ConfigError, match="invalid node name"):
        load_host_config(paths, "../tinc.conf")


def test_other_host_errors(tmp_path):
    paths = make_network(tmp_path / "n")
    add_host(paths, "bob", "Address = 1.2.3.4\nSubnet = 10.0.0.1/8\n")
    with pytest.raises(ConfigError, match="do not match") as exc:
        load_host_config(paths, "bob")
    assert (exc.value.file, exc.value.line) == (paths.host_file("bob"), 2)
    add_host(paths, "bob", "Adress = 1.2.3.4\n")
    with pytest.raises(ConfigError, match="did you mean Address"):
        load_host_config(paths, "bob")
    assert load_host_config(paths, "bob", unknown="warn").addresses == ()


def test_other_host_pem_public_key(tmp_path):
    paths = make_network(tmp_path / "n")
    add_host(paths, "bob", "Address = 1.2.3.4\n" + keys.format_public_pem(BOB_KEY.public))
    assert load_host_config(paths, "bob").ed25519_public_key == BOB_KEY.public
    keys.write_public_key(f"{paths.confbase}/bob.pub", BOB_KEY.public)
    add_host(paths, "bob", "Ed25519PublicKeyFile = bob.pub\n")
    assert load_host_config(paths, "bob").ed25519_public_key == BOB_KEY.public
    add_host(paths, "bob", "Ed25519PublicKeyFile = missing.pub\n")
    with pytest.raises(ConfigError, match="Ed25519PublicKeyFile: cannot read") as exc:
        load_host_config(paths, "bob")
    assert exc.value.line == 1
    add_host(paths, "bob", "-----BEGIN ED25519 PUBLIC KEY-----\n!!!\n"
             "-----END ED25519 PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="base64"):
        load_host_config(paths, "bob")


def test_daemon_config_loads_hosts_with_its_options(tmp_path):
    paths = make_network(tmp_path / "n")
    add_host(paths, "bob", "Port = 1\n")
    cfg = load_network(paths, ["bob.Port=2"])
    assert cfg.load_host("bob").port == 2
    assert not cfg.load_host("zed", missing_ok=True).exists


def test_host_names(tmp_path):
    paths = make_network(tmp_path / "n")
    for n in ["bob", "bob-up", "carol", ".swp", "x.bak"]:
        (tmp_path / "n" / "hosts" / n).write_text("")
    assert host_names(paths) == ("alice", "bob", "carol")
    shutil.rmtree(paths.hosts_dir)
    with pytest.raises(ConfigError, match="cannot list host files"):
        host_names(paths)


def test_network_paths_is_frozen():
    p = NetworkPaths(None, "/c", "/etc/tinc", "tinc", "/p.pid", "/p.socket", "/l")
    with pytest.raises(Exception):
        p.confbase = "/x"
    assert p.resolve("k") == "/c/k" and p.resolve("/abs") == "/abs"


# --- against real tinc ------------------------------------------------------------------------

@pytest.mark.tinc
def test_directory_made_by_real_tinc_init(tmp_path):
    bin_dir = os.environ.get("TINC_BIN_DIR")
    if not bin_dir or not os.path.exists(os.path.join(bin_dir, "tinc")):
        pytest.skip("TINC_BIN_DIR with a tinc 1.1 build not set")
    confbase = tmp_path / "vpn"
    subprocess.run([os.path.join(bin_dir, "tinc"), "-c", str(confbase), "init", "alice"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    cfg = load_network(resolve_paths(str(confbase), localstatedir=str(tmp_path)))
    assert cfg.name == "alice"
    host_text = (confbase / "hosts" / "alice").read_text()
    assert keys.public_key_from_host_text(host_text) == cfg.private_key.public


def test_kind_of_every_variable_parses_its_default():
    for var in variables.TABLE:
        if var.default is None or var.kind in (Kind.STRING, Kind.PATH):
            continue
        if isinstance(var.default, bool):
            text = "yes" if var.default else "no"
        else:
            text = str(var.default)
        assert parse_value(var, Entry(var.name, text, "f", 1)) == var.default, var.name
