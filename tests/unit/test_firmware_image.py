"""The signed image format (tincapp.firmware.image) and the slot bookkeeping (slots.py):
round trip, every refusal, recovery from each interrupted state. Small files, no processes."""
import io
import json
import os
import re
import struct

import pytest

from tincapp import keys
from tincapp.firmware import cli
from tincapp.firmware import image as img
from tincapp.firmware.slots import IMAGE_HEAD, Slots

KEY = keys.generate_private_key(lambda n: bytes(range(1, n + 1)))
OTHER_KEY = keys.generate_private_key(lambda n: bytes(range(100, 100 + n)))
TRUSTED = {KEY.public: "release.pub"}
BINARY = b"\x7fELF" + bytes(range(60))
CONFIG = b"config tincapp 'main'\n\toption enabled '0'\n"
INIT = b"#!/bin/sh /etc/rc.common\nUSE_PROCD=1\n"


def sources(tmp_path, binary=BINARY):
    files = {"bin": binary, "cfg": CONFIG, "init": INIT}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [img.Source("tincapp", str(tmp_path / "bin"), "binary", 0o755),
            img.Source("etc/config/tincapp", str(tmp_path / "cfg"), "config", 0o644),
            img.Source("etc/init.d/tincapp", str(tmp_path / "init"), "init", 0o755)]


def build(tmp_path, name="t.img", key=KEY, version="1.2.0", arch="x86_64", binary=BINARY):
    out = tmp_path / name
    img.build(out, sources(tmp_path, binary), version=version, arch=arch, key=key,
              build_time=1700000000)
    return out


def refused(path, match, **kw):
    with pytest.raises(img.ImageError, match=match):
        img.verify_file(path, TRUSTED, **kw)


def test_round_trip_and_layout(tmp_path):
    path = build(tmp_path)
    data = path.read_bytes()
    magic, fmt, flags, mlen = struct.unpack(">8sHHI", data[:16])
    assert (magic, fmt, flags) == (b"TCAPPIMG", 1, 0)
    assert data[16 + mlen:16 + mlen + 32] == KEY.public
    assert data.endswith(BINARY + CONFIG + INIT)
    head = img.verify_file(path, TRUSTED, arch="x86_64")
    m = head.manifest
    assert (m.version, m.arch, m.build_time) == ("1.2.0", "x86_64", 1700000000)
    assert [(x.name, x.role, x.mode, x.size) for x in m.members] == [
        ("tincapp", "binary", 0o755, len(BINARY)),
        ("etc/config/tincapp", "config", 0o644, len(CONFIG)),
        ("etc/init.d/tincapp", "init", 0o755, len(INIT))]
    assert head.image_len == len(data)
    # The manifest is canonical JSON, and members stream out unchanged.
    assert json.loads(data[16:16 + mlen]) == m.as_json()
    outs = {}
    with open(path, "rb") as f:
        img.read_head(f)
        img.stream_members(f, head, lambda member: outs.setdefault(member.name, io.BytesIO()))
    assert {k: v.getvalue() for k, v in outs.items()} == {
        "tincapp": BINARY, "etc/config/tincapp": CONFIG, "etc/init.d/tincapp": INIT}


def test_every_flipped_byte_is_refused(tmp_path):
    data = build(tmp_path).read_bytes()
    for offset in range(len(data)):
        altered = bytearray(data)
        altered[offset] ^= 0x01
        with pytest.raises(img.ImageError):
            img.verify_stream(io.BytesIO(altered), TRUSTED)


def test_every_truncation_and_appended_data_is_refused(tmp_path):
    data = build(tmp_path).read_bytes()
    for length in range(len(data)):
        with pytest.raises(img.ImageError, match="truncated|bad magic"):
            img.verify_stream(io.BytesIO(data[:length]), TRUSTED)
    bad = tmp_path / "bad.img"
    bad.write_bytes(data + b"\0")
    refused(bad, "unexpected data after the last member")


def test_unsigned_and_foreign_signatures_are_refused(tmp_path):
    refused(build(tmp_path, "u.img", key=None), "image is not signed")
    refused(build(tmp_path, "o.img", key=OTHER_KEY), 
            "untrusted key " + re.escape(img.key_id(OTHER_KEY.public)))
    # A trusted key named as signer over another key's signature: bad signature.
    data = bytearray(build(tmp_path, "o.img", key=OTHER_KEY).read_bytes())
    mlen = struct.unpack(">I", data[12:16])[0]
    data[16 + mlen:16 + mlen + 32] = KEY.public
    (tmp_path / "swapped.img").write_bytes(data)
    refused(tmp_path / "swapped.img", "bad signature")


def test_a_validly_signed_but_malformed_manifest_is_refused(tmp_path):
    good = build(tmp_path)
    with open(good, "rb") as f:
        manifest = img.read_head(f).manifest.as_json()

    def signed(obj, raw=None):
        raw = raw if raw is not None else img.canonical_json(obj)
        part = struct.pack(">8sHHI", img.MAGIC, 1, 0, len(raw)) + raw
        path = tmp_path / "crafted.img"
        path.write_bytes(part + KEY.public + KEY.sign(img.SIGNED_DOMAIN + part)
                         + BINARY + CONFIG + INIT)
        return path

    assert img.verify_file(signed(manifest), TRUSTED).manifest.version == "1.2.0"
    refused(signed(manifest, json.dumps(manifest).encode()), "canonical")
    for name in ("../etc/passwd", "/etc/passwd", "a//b", "etc/./x", ""):
        obj = json.loads(json.dumps(manifest))
        obj["members"][1]["name"] = name
        refused(signed(obj), "unsafe name")
    obj = json.loads(json.dumps(manifest))
    obj["members"][1]["name"] = "tincapp"
    refused(signed(obj), "duplicate")
    obj = json.loads(json.dumps(manifest))
    obj["members"][0]["mode"] = 0o4755
    refused(signed(obj), "mode")
    obj = json.loads(json.dumps(manifest))
    obj["members"][0]["name"] = "other"
    refused(signed(obj), "no executable 'tincapp'")
    obj = dict(manifest, product="otherapp")
    refused(signed(obj), "not 'tincapp'")
    obj = dict(manifest, extra=1)
    refused(signed(obj), "exactly the fields")


def test_bad_magic_format_and_flags(tmp_path):
    data = build(tmp_path).read_bytes()
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"\x7fELF" + data[4:])
    refused(bad, "not a tincapp image")
    bad.write_bytes(data[:8] + b"\0\x02" + data[10:])
    refused(bad, "format version 2 is not supported")
    bad.write_bytes(data[:10] + b"\0\x01" + data[12:])
    refused(bad, "unknown header flags")


def test_architecture(tmp_path):
    path = build(tmp_path, arch="aarch64_generic")
    refused(path, "image is for architecture aarch64_generic, this machine is x86_64",
            arch="x86_64")
    assert img.verify_file(path, TRUSTED, arch="aarch64_cortex-a53")
    assert img.verify_file(path, TRUSTED)                  # no arch given: not checked
    assert img.host_arch({"TINCAPP_ARCH": "mipsel_24kc"}) == "mipsel_24kc"
    assert not img.arch_compatible("arm_cortex-a7", "aarch64_generic")
    assert img.arch_compatible("x86_64", "x86_64")


def test_versions_and_downgrade(tmp_path):
    order = ["0.9.9", "1.0.0-rc1", "1.0.0", "1.0", "1.0.1", "1.10.0"]
    keys_ = [img.version_key(v) for v in order]
    assert keys_ == sorted(keys_) and img.version_key("1.0") == img.version_key("1.0.0")
    path = build(tmp_path, version="1.2.0")
    refused(path, "older than the installed 1.3.0 .*--allow-downgrade", installed_version="1.3.0")
    assert img.verify_file(path, TRUSTED, installed_version="1.3.0", allow_downgrade=True)
    assert img.verify_file(path, TRUSTED, installed_version="1.2.0")   # reinstall is fine
    with pytest.raises(img.ImageError, match="invalid version"):
        build(tmp_path, version="1.2; rm -rf /")


def test_trusted_keys_directory(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    with pytest.raises(img.ImageError, match="no trusted keys"):
        img.load_trusted_keys(d)
    keys.write_public_key(d / "release.pub", KEY.public)
    (d / "other").write_text(keys.hosts_line(OTHER_KEY.public))
    (d / ".hidden").write_text("junk")
    assert img.load_trusted_keys(d) == {KEY.public: "release.pub", OTHER_KEY.public: "other"}
    (d / "typo.pub").write_text("not a key\n")
    with pytest.raises(img.ImageError, match="bad trusted key file"):
        img.load_trusted_keys(d)
    with pytest.raises(img.ImageError, match="cannot read trusted keys directory"):
        img.load_trusted_keys(tmp_path / "missing")


def test_cli_verify_exit_status_and_messages(tmp_path, capsys):
    path = build(tmp_path)
    keys.write_public_key(tmp_path / "release.pub", KEY.public)
    argv = ["image", "verify", "--key", str(tmp_path / "release.pub"), str(path)]
    assert cli.main(argv) == 0
    assert "OK: tincapp 1.2.0 for x86_64" in capsys.readouterr().out
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x80
    path.write_bytes(data)
    assert cli.main(argv) == 1
    assert "does not match its SHA-256" in capsys.readouterr().err


def test_progress_bar_and_plain_lines():
    out = io.StringIO()
    p = cli.Progress(200, "image build", bar=True, stream=out)
    p(100)
    p(100)
    p.finish()
    assert "[###############               ]  50%" in out.getvalue()
    assert out.getvalue().endswith(" 100% 0.0/0.0 MiB\n")
    out = io.StringIO()
    p = cli.Progress(200, "image build", stream=out)       # StringIO is not a TTY
    p.stage("adding tincapp")
    p(200)
    p.finish()
    assert out.getvalue() == "image build: adding tincapp\n"


# --- slots ------------------------------------------------------------------------------------

def install_slot(slots, slot, path):
    with open(path, "rb") as f:
        head = img.read_head(f)
    slots.write_slot(slot, str(path), head)
    return head


def test_write_slot_switch_and_check(tmp_path):
    slots = Slots(tmp_path / "root")
    with slots:
        install_slot(slots, "a", build(tmp_path))
        slots.switch("a")
    assert os.readlink(tmp_path / "root/current") == "slots/a"
    assert slots.current() == "a" and slots.version("a") == "1.2.0"
    assert (tmp_path / "root/current/tincapp").read_bytes() == BINARY
    assert os.stat(tmp_path / "root/slots/a/etc/init.d/tincapp").st_mode & 0o777 == 0o755
    assert slots.check_slot("a", TRUSTED) is None
    assert slots.check_slot("a", {OTHER_KEY.public: "x"}).startswith(
        f"{slots.slot_dir('a')}: signed by an untrusted key")
    assert slots.check_slot("b") == "empty"
    (tmp_path / "root/slots/a/etc/config/tincapp").write_bytes(b"changed")
    assert slots.check_slot("a") == "etc/config/tincapp: content does not match the manifest"


def test_write_slot_refuses_an_image_changed_after_verification(tmp_path):
    slots = Slots(tmp_path / "root")
    path = build(tmp_path)
    with open(path, "rb") as f:
        head = img.read_head(f)
    build(tmp_path, version="1.2.1")                        # same file, new contents
    with slots, pytest.raises(img.ImageError, match="changed after it was verified"):
        slots.write_slot("a", str(path), head)
    assert not os.path.exists(slots.slot_dir("a"))


def test_lock_keeps_a_second_upgrader_out(tmp_path):
    with Slots(tmp_path / "root"):
        with pytest.raises(img.ImageError, match="another upgrade is running"):
            Slots(tmp_path / "root").lock()


@pytest.mark.parametrize("step,slot_b_complete", [
    ("writing", False), ("written", True), ("trial", True)])
def test_recover_undoes_each_pending_step(tmp_path, step, slot_b_complete):
    slots = Slots(tmp_path / "root")
    with slots:
        install_slot(slots, "a", build(tmp_path, version="1.0.0"))
        slots.switch("a")
        slots.write_state({"last_good": "a", "pending": None, "last_result": None})
        if slot_b_complete:
            install_slot(slots, "b", build(tmp_path, version="2.0.0"))
        else:
            os.makedirs(slots.staging_dir("b"))
            (tmp_path / "root/slots/.b.new/tincapp").write_bytes(b"half")
        if step == "trial":
            slots.switch("b")
        slots.write_state({"last_good": "a", "last_result": None, "pending": {
            "slot": "b", "from": "a", "version": "2.0.0", "step": step}})
        actions, switched = slots.recover(TRUSTED)
    assert slots.current() == "a" and switched == (step == "trial")
    assert not os.path.exists(slots.staging_dir("b"))
    state = slots.read_state()
    assert state["pending"] is None and state["last_good"] == "a"
    assert state["last_result"]["result"] == f"interrupted at {step}, recovered to slot a"
    assert any("undid the upgrade to 2.0.0" in a for a in actions)
    # Recovery is idempotent.
    with slots:
        assert slots.recover(TRUSTED) == ([], False)


def test_recover_repoints_current_away_from_a_broken_slot(tmp_path):
    slots = Slots(tmp_path / "root")
    with slots:
        install_slot(slots, "a", build(tmp_path, version="1.0.0"))
        install_slot(slots, "b", build(tmp_path, version="2.0.0"))
        slots.switch("b")
        slots.write_state({"last_good": "b", "pending": None, "last_result": None})
        os.unlink(os.path.join(slots.slot_dir("b"), IMAGE_HEAD))
        actions, switched = slots.recover(TRUSTED)
    assert switched and slots.current() == "a" and slots.read_state()["last_good"] == "a"
    assert actions == ["current -> slot a (1.0.0)"]


def test_health_counts_connect_to_in_conf_d_and_encrypted_tinc_conf(tmp_path):
    from tincapp.config import secrets
    from tincapp.errors import ConfigError
    from tincapp.firmware import health
    key = secrets.generate_key(os.urandom)
    (tmp_path / "tinc.conf").write_bytes(
        secrets.encrypt(b"Name = a\nConnectTo = b\n", key, "tinc.conf"))
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "more.conf").write_text("connectto = c\n")
    assert health.configured_peers(str(tmp_path), secrets.KeySource.from_key(key)) == 2
    with pytest.raises(ConfigError):
        health.configured_peers(str(tmp_path), secrets.KeySource(env={}))   # no key
