"""Where libsodium lives: the shared object of PyNaCl's nacl._sodium extension.

PyNaCl's extension module exports most of libsodium's C API. Importing it first makes the
dynamic loader hold exactly one libsodium in the process; the compiled modules then dlopen the
same file (getting the same handle) and dlsym what they need. This works the same in a venv and
inside the PyInstaller binary, where nacl/_sodium*.so is unpacked next to the other modules.
"""
from tincapp.errors import SodiumLoadError


def libsodium_path():
    """Path of the shared object that carries libsodium (PyNaCl's extension module)."""
    try:
        import nacl._sodium as bundled
    except ImportError as e:
        raise SodiumLoadError(
            f"cannot import PyNaCl's libsodium binding nacl._sodium: {e}") from e
    path = getattr(bundled, "__file__", None)
    if not path:
        raise SodiumLoadError("nacl._sodium has no __file__: cannot locate libsodium")
    return path
