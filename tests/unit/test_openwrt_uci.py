"""tincapp.openwrt: the UCI parser and the translation into network directories.

The expected directories are what OpenWrt's tinc.init (net/tinc/files/tinc.init in
openwrt/packages) writes for the same /etc/config and /etc/tinc: booleans first as yes/no,
then value options, each group in the script's fixed order; host files copied from
/etc/tinc/NET/hosts or created when UCI carries the public key.
"""
import os

import pytest

from tincapp import keys
from tincapp.openwrt import UciError, build_networks, main, parse_uci, read_ifnames


def read(path):
    with open(path) as f:
        return f.read()


def tree(root):
    """{relative path: text} of every file below root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = read(path)
    return out


def fixed_rng(n):
    return bytes(range(n))


# --- parser ------------------------------------------------------------------------------

def test_parse_quoting_lists_comments_and_anonymous_sections():
    text = """\
package tincapp
# a comment
config tinc-net 'vpn'
	option enabled '1'
	option Name "node\\"one"   # trailing comment
	list ConnectTo peer1
	list ConnectTo 'peer two'
	option Mode router
	option Mode switch

config tincapp
	option tmpdir /tmp
"""
    vpn, anon = parse_uci(text)
    assert (vpn.type, vpn.name) == ("tinc-net", "vpn")
    assert vpn.options == {"enabled": "1", "Name": 'node"one',
                           "ConnectTo": ["peer1", "peer two"], "Mode": "switch"}
    assert vpn.get("ConnectTo") == "peer1\npeer two"
    assert vpn.values("ConnectTo") == ["peer1", "peer two"]
    assert anon.type == "tincapp" and anon.name.startswith("cfg01")
    assert anon.get("missing", "dflt") == "dflt"


@pytest.mark.parametrize("value,expected", [
    ("1", True), ("on", True), ("true", True), ("yes", True), ("enabled", True),
    ("0", False), ("off", False), ("false", False), ("no", False), ("disabled", False),
    ("Yes", None), ("2", None), ("", None)])
def test_bool_values_follow_openwrt_get_bool(value, expected):
    (s,) = parse_uci(f"config x y\n\toption b '{value}'\n")
    assert s.get_bool("b") is expected


@pytest.mark.parametrize("text,message", [
    ("option a b\n", "outside a `config` section"),
    ("config x 'bad-name'\n", "invalid section name"),
    ("config x y\n\toption a\n", "expected `option NAME VALUE`"),
    ("config x y\n\tfrobnicate a b\n", "unknown keyword"),
    ("config x y\n\toption a 'unterminated\n", "No closing quotation"),
])
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(UciError) as e:
        parse_uci(text, "/etc/config/tincapp")
    assert message in str(e.value) and "/etc/config/tincapp:" in str(e.value)


def test_repeated_named_section_is_merged():
    (s,) = parse_uci("config t a\n\toption x 1\nconfig t a\n\toption y 2\n")
    assert s.options == {"x": "1", "y": "2"}


# --- translation -------------------------------------------------------------------------

CONFIG = """\
config tinc-net vpn
	option enabled 1
	option logfile /tmp/log/tinc.vpn.log
	option debug 3
	list ConnectTo beta
	list ConnectTo gamma
	option Name alpha
	option Mode switch
	option AutoConnect 0
	option DirectOnly yes
	option Interface tap_vpn
	option Port 6655
	option BindToInterface lan
	option Hostnames bogus

config tinc-net off
	option enabled 0
	option Name alpha

config tinc-host alpha
	option enabled 1
	option net vpn
	option Subnet 10.1.0.1/32

config tinc-host beta
	option enabled 1
	option net vpn
	option Ed25519PublicKey '{beta_key}'
	list Address beta.example
	list Address 192.0.2.2
	option Port 655
	option TCPOnly on
	option IndirectData no

config tinc-host gamma
	option enabled 1
	option net vpn
	option Name gamma_alias
	option Ed25519PublicKeyFile /etc/tinc/vpn/gamma.pub

config tinc-host delta
	option enabled 1
	option net vpn
	option Address 192.0.2.4

config tinc-host epsilon
	option enabled 0
	option net vpn

config tinc-host zeta
	option enabled 1
	option net off
	option Ed25519PublicKey ignored
"""
BETA_KEY = "A" * 43


@pytest.fixture
def dirs(tmp_path):
    etc, run = tmp_path / "etc", tmp_path / "run"
    (etc / "vpn" / "hosts").mkdir(parents=True)
    (etc / "vpn" / "tinc.conf").write_text("# kept from /etc/tinc\nAddressFamily = ipv4\n")
    (etc / "vpn" / "ed25519_key.priv").write_text("KEY\n")
    (etc / "vpn" / "hosts" / "alpha").write_text("Ed25519PublicKey = ALPHA\n")
    (etc / "vpn" / "hosts" / "epsilon").write_text("Ed25519PublicKey = EPS\n")
    (etc / "vpn" / "tinc-up").write_text("#!/bin/sh\n")
    # a stale file from the previous start must go
    (run / "vpn").mkdir(parents=True)
    (run / "vpn" / "stale").write_text("old")
    return str(etc), str(run)


def test_translation_matches_tinc_init(dirs):
    etc, run = dirs
    warnings = []
    nets = build_networks(CONFIG.format(beta_key=BETA_KEY), etc, run,
                          ifnames={"lan": "br-lan"}, warn=warnings.append)
    assert [(n.name, n.directory, n.args) for n in nets] == [
        ("vpn", os.path.join(run, "vpn"),
         ["--logfile=/tmp/log/tinc.vpn.log", "--debug=3"])]
    assert tree(os.path.join(run, "vpn")) == {
        # /etc/tinc/vpn's tinc.conf, then the booleans (tinc.init's order, a value that is
        # not a boolean is skipped), then the value options in tinc.init's order.
        "tinc.conf": "# kept from /etc/tinc\nAddressFamily = ipv4\n"
                     "AutoConnect = no\nDirectOnly = yes\n"
                     "BindToInterface = br-lan\nConnectTo = beta\nConnectTo = gamma\n"
                     "Interface = tap_vpn\nMode = switch\nName = alpha\nPort = 6655\n",
        "ed25519_key.priv": "KEY\n",
        "tinc-up": "#!/bin/sh\n",
        "hosts/alpha": "Ed25519PublicKey = ALPHA\nSubnet = 10.1.0.1/32\n",
        "hosts/beta": "IndirectData = no\nTCPOnly = yes\n"
                      "Address = beta.example\nAddress = 192.0.2.2\n"
                      f"Ed25519PublicKey = {BETA_KEY}\nPort = 655\n",
        # Name renames the file when there is no /etc/tinc host file.
        "hosts/gamma_alias": "Ed25519PublicKeyFile = /etc/tinc/vpn/gamma.pub\n",
        # epsilon is disabled: its copied file is removed. delta has no key: skipped.
    }
    assert warnings == [f"tincapp: Warning, public key for delta for network vpn missing "
                        f"in {etc}/vpn/hosts/delta, skipping configuration of delta"]
    assert not os.path.exists(os.path.join(run, "off"))
    assert os.access(os.path.join(run, "vpn", "tinc-up"), os.R_OK)


def test_only_the_named_nets_are_prepared(dirs):
    etc, run = dirs
    assert build_networks(CONFIG.format(beta_key=BETA_KEY), etc, run, only={"other"},
                          warn=lambda m: None) == []
    assert os.listdir(run) == ["vpn"] and os.listdir(os.path.join(run, "vpn")) == ["stale"]


def test_net_without_etc_dir_and_generate_keys(tmp_path):
    etc, run = str(tmp_path / "etc"), str(tmp_path / "run")
    text = ("config tinc-net home\n\toption enabled yes\n\toption Name me\n"
            "\toption generate_keys 1\n\toption key_size 4096\n")
    (net,) = build_networks(text, etc, run, rng=fixed_rng)
    key = keys.generate_private_key(fixed_rng)
    hosts_line = keys.hosts_line(key.public)
    assert tree(net.directory) == {
        "tinc.conf": "Name = me\n",
        "ed25519_key.priv": read(os.path.join(etc, "home", "ed25519_key.priv")),
        "hosts/me": hosts_line}
    # The pair is kept in /etc/tinc/NET (what sysupgrade keeps), and used again next time.
    assert keys.read_private_key(os.path.join(etc, "home", "ed25519_key.priv")).public \
        == key.public
    assert read(os.path.join(etc, "home", "hosts", "me")) == hosts_line
    assert oct(os.stat(os.path.join(net.directory, "ed25519_key.priv")).st_mode & 0o777) \
        == "0o600"
    (again,) = build_networks(text, etc, run, rng=lambda n: b"\xff" * n)
    assert tree(again.directory)["hosts/me"] == hosts_line


def test_generate_keys_needs_a_name_and_respects_existing_keys(tmp_path):
    etc, run = tmp_path / "etc", str(tmp_path / "run")
    (etc / "n" / "hosts").mkdir(parents=True)
    (etc / "n" / "rsa_key.priv").write_text("RSA\n")
    build_networks("config tinc-net n\n\toption enabled 1\n\toption generate_keys 1\n"
                   "\toption Name x\n", str(etc), run, rng=fixed_rng)
    assert sorted(os.listdir(os.path.join(run, "n"))) == ["hosts", "rsa_key.priv",
                                                          "tinc.conf"]
    build_networks("config tinc-net m\n\toption enabled 1\n\toption generate_keys 1\n",
                   str(etc), run, rng=fixed_rng)
    assert sorted(os.listdir(os.path.join(run, "m"))) == ["hosts"]


def test_read_ifnames(tmp_path):
    state = tmp_path / "network"
    state.write_text("network.lan.ifname='br-lan'\nnetwork.wan.up=1\nnetwork.wan.ifname=eth1\n"
                     "other.x.ifname=nope\n")
    assert read_ifnames(str(state)) == {"lan": "br-lan", "wan": "eth1"}
    assert read_ifnames(str(tmp_path / "missing")) == {}


def test_cli(tmp_path, capsys):
    conf = tmp_path / "tincapp"
    conf.write_text("config tinc-net vpn\n\toption enabled 1\n\toption Name n1\n"
                    "\toption debug 5\n")
    run = tmp_path / "run"
    rc = main(["tincapp openwrt", "--config", str(conf), "--etc", str(tmp_path / "etc"),
               "--run", str(run), "--state", str(tmp_path / "nostate")])
    assert rc == 0
    assert capsys.readouterr().out == f"vpn {run}/vpn --debug=5\n"
    assert read(run / "vpn" / "tinc.conf") == "Name = n1\n"
    conf.write_text("config tinc-net vpn\n\toption\n")
    assert main(["openwrt", "--config", str(conf), "--run", str(run)]) == 1
    assert "expected `option NAME VALUE`" in capsys.readouterr().err
