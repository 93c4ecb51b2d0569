"""fileio: the one atomic file writer (config, keys, caches, firmware state, images)."""
import os
import stat

import pytest

from tincapp import fileio


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_default_mode_minus_umask_existing_keeps_its_mode(tmp_path):
    path = tmp_path / "tinc.conf"
    old = os.umask(0o027)
    try:
        fileio.atomic_write(path, b"Name = a\n")
        assert mode_of(path) == 0o640
        os.chmod(path, 0o600)
        fileio.atomic_write(path, b"Name = b\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"Name = b\n" and mode_of(path) == 0o600


def test_exact_mode_ignores_umask_and_old_mode(tmp_path):
    path = tmp_path / "ed25519_key.priv"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    old = os.umask(0)
    try:
        fileio.atomic_write(path, b"secret", mode=0o600)
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600 and path.read_bytes() == b"secret"


def test_readers_see_the_old_file_until_the_block_ends(tmp_path):
    path = tmp_path / "image.img"
    path.write_bytes(b"old image")
    with fileio.atomic_output(path) as out:
        out.write(b"new ")
        assert path.read_bytes() == b"old image"
        temps = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
        assert len(temps) == 1 and temps[0].startswith(".image.img.")
        out.write(b"image")
    assert path.read_bytes() == b"new image"
    assert os.listdir(tmp_path) == ["image.img"]


def test_a_failure_in_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "hosts_a"
    path.write_bytes(b"Subnet = 10.0.0.1\n")
    with pytest.raises(RuntimeError):
        with fileio.atomic_output(path) as out:
            out.write(b"half")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"Subnet = 10.0.0.1\n"
    assert os.listdir(tmp_path) == ["hosts_a"]


def test_missing_directory_is_an_oserror_and_writes_nothing(tmp_path):
    with pytest.raises(OSError):
        fileio.atomic_write(tmp_path / "no" / "such" / "file", b"x")
    assert os.listdir(tmp_path) == []


def test_exclusive_never_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "net.key"
    fileio.atomic_write(path, b"first", mode=0o600, exclusive=True)
    assert path.read_bytes() == b"first" and mode_of(path) == 0o600
    with pytest.raises(FileExistsError):
        fileio.atomic_write(path, b"second", mode=0o600, exclusive=True)
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["net.key"]
