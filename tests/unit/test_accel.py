"""The compiled modules: found through PyNaCl's libsodium, status codes shared with Python, and
a clear error when libsodium or one of its symbols is missing."""
import subprocess
import sys

import pytest

from tincapp import accel
from tincapp.datapath import batch
from tincapp.errors import SodiumLoadError


def test_slot_status_codes_agree_with_compiled_code():
    # pyx/slotstatus.pxd is compiled into the modules; the only way to see its numbers is
    # through what they write. BAD_TAG from open_batch, REPLAYED/FUTURE from the window.
    k = accel.record.RecordKey(bytes(64))
    src = batch.PacketBatch(3, 128)
    src.append(accel.record.seal_datagram(k, 1, 0, b"ok"))
    src.append(b"\x00\x00\x00\x02" + bytes(30))               # authentic? no
    src.append(b"short")
    dst = batch.PacketBatch(3, 128)
    accel.record.open_batch(k, src, dst)
    assert list(dst.status[:3]) == [batch.SLOT_OK, batch.SLOT_BAD_TAG, batch.SLOT_SHORT]
    w = accel.replay.ReplayWindow(16)       # far-future drops need size // 4 > 0
    assert w.check(0) == batch.SLOT_OK
    assert w.check(0) == batch.SLOT_REPLAYED
    assert w.check(1000) == batch.SLOT_FUTURE


def run_with_libsodium_path(path):
    code = ("import tincapp.sodium as s; s.libsodium_path = lambda: %r\n"
            "from tincapp.errors import SodiumLoadError\n"
            "try:\n    import tincapp._record\nexcept SodiumLoadError as e:\n"
            "    print('SodiumLoadError:', e)\n" % path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_missing_library_is_named():
    r = run_with_libsodium_path("/nonexistent/libsodium.so")
    assert "SodiumLoadError: cannot dlopen libsodium from /nonexistent/libsodium.so" in r.stdout


def test_missing_symbol_is_named():
    import ctypes.util
    libc = ctypes.util.find_library("c") or "libc.so.6"
    r = run_with_libsodium_path(libc)
    assert "SodiumLoadError: libsodium symbol sodium_init not found in" in r.stdout


def test_libsodium_is_pynacls_copy():
    import nacl._sodium
    from tincapp.sodium import libsodium_path
    assert libsodium_path() == nacl._sodium.__file__


def test_missing_pynacl_is_a_clear_error(monkeypatch):
    import tincapp.sodium
    monkeypatch.setitem(sys.modules, "nacl._sodium", None)     # import fails
    with pytest.raises(SodiumLoadError, match="nacl._sodium"):
        tincapp.sodium.libsodium_path()
