"""Atomic file writes for configuration files (hosts/, tinc.conf, invitations, caches).

Readers see the old file or the new one, never a mix; a failure leaves the old file and no
temporary file behind. Key files have their own writer in keys.py (it must never widen modes).
"""
import os


def atomic_write(path, data, mode=None, default_mode=0o644):
    """Replace path with data atomically: O_EXCL temp file in the same directory (keeping the
    old file's mode, else default_mode minus the umask), fsync, rename. OSError on failure,
    and then path is untouched and no temporary file is left."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = default_mode & ~_umask()
    tmp = None
    for _ in range(100):
        candidate = os.path.join(directory,
                                 f".{os.path.basename(path)}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        tmp = candidate
        break
    if tmp is None:
        raise FileExistsError(f"no free temporary file name next to {path}")
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append_atomic(path, data, default_mode=0o644):
    """Append data to path (creating it) by rewriting it atomically."""
    try:
        with open(path, "rb") as f:
            old = f.read()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write(path, old + data, default_mode=default_mode)


def _umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask
