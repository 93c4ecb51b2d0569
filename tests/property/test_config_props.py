"""Properties of the configuration reader: round trips, lookup order, only typed errors."""
import ctypes
import os
import tempfile

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tincapp import keys
from tincapp.config import parse, variables
from tincapp.config.netconf import load_network, resolve_paths
from tincapp.config.parse import ConfigTree, Entry
from tincapp.errors import ConfigError
from tincapp.mesh.subnets import Subnet, SubnetType
from tincapp.sptps.crypto import PrivateKey

KEY = PrivateKey.from_seed(bytes(range(32)))

# Characters are bytes (latin-1); anything a config file could hold.
BYTE_CHARS = st.characters(min_codepoint=0, max_codepoint=0xFF)
NAME_CHARS = st.characters(min_codepoint=1, max_codepoint=0xFF,
                           blacklist_characters="\t =\n\r\0")
VALUE_CHARS = st.characters(min_codepoint=1, max_codepoint=0xFF, blacklist_characters="\n")

names = st.text(NAME_CHARS, min_size=1, max_size=30).filter(
    lambda n: not n.startswith("#") and not n.startswith("-----BEGIN"))
values = st.text(VALUE_CHARS, min_size=1, max_size=60).filter(
    lambda v: v[0] not in "\t " and v[-1] not in "\t \r")
fillers = st.sampled_from(["", "# comment", "#", "#Port = 1", "\r"])


@given(st.lists(st.tuples(names, values, st.lists(fillers, max_size=3)), max_size=20))
def test_format_then_parse_round_trips(items):
    text = ""
    expected = []
    line = 0
    for name, value, filler in items:
        for f in filler:
            text += f + "\n"
            line += 1
        text += parse.format_line(name, value)
        line += 1
        expected.append((name, value, line))
    got = [(e.name, e.value, e.line) for e in parse.parse_text(text, "f")]
    assert got == expected
    # The same through bytes, as a file would be read.
    raw = text.encode("latin-1")
    assert [(e.name, e.value, e.line) for e in parse.parse_bytes(raw, "f")] == expected


@given(st.text(BYTE_CHARS, max_size=40), st.text(BYTE_CHARS, max_size=40))
def test_format_line_refuses_what_would_not_round_trip(name, value):
    try:
        line = parse.format_line(name, value)
    except ValueError:
        return
    assert [(e.name, e.value) for e in parse.parse_text(line, "f")] == [(name, value)]


junk_lines = st.one_of(
    st.text(BYTE_CHARS, max_size=80),
    st.builds(lambda n, sep, v: n + sep + v,
              st.sampled_from([v.name for v in variables.TABLE] + ["", "Bogus", " Port"]),
              st.sampled_from([" = ", "=", " ", "\t", " == ", ""]),
              st.text(st.sampled_from("0123456789abcdefx:./#*- \tyesnoYESNO$\r\0"),
                      max_size=30)),
)


@given(st.lists(junk_lines, max_size=15), st.sampled_from(["error", "warn"]))
def test_junk_lines_raise_only_config_errors(lines, unknown):
    text = "\n".join(lines)
    try:
        found = parse.parse_text(text, "/x/tinc.conf")
    except ConfigError as e:
        assert e.file == "/x/tinc.conf" and e.line >= 1
        return
    for entry in found:
        try:
            var = variables.check_variable(entry, False, unknown)
            if var is not None:
                variables.parse_value(var, entry)
        except ConfigError as e:
            assert (e.file, e.line) == (entry.file, entry.line)


@given(st.binary(max_size=3000))
def test_random_bytes_raise_only_config_errors(data):
    try:
        parse.parse_bytes(data, "f")
    except ConfigError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.lists(junk_lines, max_size=8), st.lists(junk_lines, max_size=8),
       st.lists(junk_lines, max_size=3))
def test_junk_network_raises_only_config_errors(conf_lines, host_lines, options):
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(f"{d}/hosts")
        keys.write_private_key(f"{d}/ed25519_key.priv", KEY)
        with open(f"{d}/tinc.conf", "wb") as f:
            f.write(("Name = alice\n" + "\n".join(conf_lines)).encode("latin-1"))
        with open(f"{d}/hosts/alice", "wb") as f:
            f.write("\n".join(host_lines).encode("latin-1"))
        try:
            cfg = load_network(resolve_paths(d, env={}, localstatedir=d), options,
                               resolve_service=lambda s: 1)
        except ConfigError:
            return
        assert cfg.name


# --- lookup order ---------------------------------------------------------------------------

FILES = ["/c/tinc.conf", "/c/conf.d/a.conf", "/c/conf.d/b.conf", "/c/hosts/alice"]
entries_strategy = st.lists(
    st.builds(Entry, st.sampled_from(["Port", "port", "PORT", "Mode"]), st.text(max_size=3),
              st.sampled_from(FILES + [None]), st.integers(1, 20)),
    max_size=25)


@given(entries_strategy)
def test_lookup_model(entries):
    # Unique (file, line) per entry, as in real files and -o numbering.
    seen = set()
    entries = [e for e in entries if (e.file, e.line) not in seen and not seen.add((e.file,
                                                                                      e.line))]
    tree = ConfigTree(entries)
    ports = [e for e in entries if e.name.lower() == "port"]
    if not ports:
        assert tree.lookup("Port") is None
        return
    cmdline = [e for e in ports if e.file is None]
    if cmdline:
        want = min(cmdline, key=lambda e: e.line)
    else:
        want = min(ports, key=lambda e: (e.line, e.file))
    assert tree.lookup("pOrt") == want
    got = tree.lookup_all("PORT")
    assert sorted(got, key=id) == sorted(ports, key=id) and got[0] == want
    for a, b in zip(got, got[1:]):
        # Command line before files; within each, by line, then by file name.
        assert (a.file is not None, a.line, a.file or "") <= (b.file is not None, b.line,
                                                               b.file or "")


@given(st.lists(st.tuples(st.sampled_from(["alice", "bob", ""]),
                          st.sampled_from(["Port", "Subnet"]), st.integers(0, 9)),
                max_size=10))
def test_options_for_partitions_by_host(specs):
    args = [f"{h}.{v}={n}" if h else f"{v}={n}" for h, v, n in specs]
    opts = parse.parse_options(args)
    own = parse.options_for(opts)
    bob = parse.options_for(opts, "bob")
    alice = parse.options_for(opts, "alice")
    assert len(own) + len(bob) + len(alice) == len(args)
    assert all("." not in e.name for e in own + bob + alice)
    assert [e.line for e in bob] == [i for i, (h, _, _) in enumerate(specs, 1) if h == "bob"]


# --- values ---------------------------------------------------------------------------------

def _libc_sscanf():
    try:
        libc = ctypes.CDLL(None)
        return libc.sscanf
    except (OSError, AttributeError):
        return None


SSCANF = _libc_sscanf()


@pytest.mark.skipif(SSCANF is None, reason="no C library sscanf")
@given(st.text(st.sampled_from(" \t+-0123456789x\v"), max_size=14))
def test_integers_parse_like_c_percent_d(text):
    out = ctypes.c_long(0)
    # %ld so that the C side does not overflow; tinc's %d agrees wherever the value fits.
    n = SSCANF(text.encode(), b"%ld", ctypes.byref(out))
    try:
        got = variables.parse_int(text)
    except ValueError:
        assert n != 1 or not variables.INT_MIN <= out.value <= variables.INT_MAX
        return
    assert n == 1 and out.value == got


@st.composite
def subnets(draw):
    stype = draw(st.sampled_from(list(SubnetType)))
    size, bits = {SubnetType.MAC: (6, 48), SubnetType.IPV4: (4, 32),
                  SubnetType.IPV6: (16, 128)}[stype]
    prefix = bits if stype is SubnetType.MAC else draw(st.integers(0, bits))
    value = int.from_bytes(draw(st.binary(min_size=size, max_size=size)), "big")
    value &= ~((1 << (bits - prefix)) - 1)
    weight = draw(st.one_of(st.just(10), st.integers(-1000, 1000)))
    return Subnet(stype, value.to_bytes(size, "big"), prefix, weight)


@given(subnets())
def test_subnet_canonical_text_round_trips(subnet):
    assert variables.parse_subnet(str(subnet)) == subnet


@given(subnets(), st.integers(0, 127))
def test_subnet_with_host_bits_is_refused(subnet, bit):
    assume(subnet.type is not SubnetType.MAC)
    bits = 8 * len(subnet.address)
    assume(bit < bits - subnet.prefixlength)
    address = (int.from_bytes(subnet.address, "big") | (1 << bit)).to_bytes(
        len(subnet.address), "big")
    with pytest.raises(ValueError, match="do not match"):
        variables.parse_subnet(str(Subnet(subnet.type, address, subnet.prefixlength,
                                          subnet.weight)))


@given(st.text(st.sampled_from("0123456789abcdefABCDEF:./#-+ x"), max_size=45))
def test_subnet_parser_raises_only_value_error(text):
    try:
        s = variables.parse_subnet(text)
    except ValueError:
        return
    assert variables.parse_subnet(str(s)) == s
