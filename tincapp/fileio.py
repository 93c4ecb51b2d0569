"""Atomic file writes, the one way tincapp replaces a file: configuration (hosts/, tinc.conf,
invitations), key files, address caches, encrypted conversions, firmware state and images.

Readers see the old file or the new one, never a mix; a failure leaves the old file and no
temporary file behind; once a write returns, the rename itself is on disk.
"""
import contextlib
import os


@contextlib.contextmanager
def atomic_output(path, mode=None, default_mode=0o644, exclusive=False):
    """A binary file for path's new content. When the with block ends cleanly it is fsynced,
    renamed over path, and the directory is fsynced. exclusive: never replace an existing
    path (FileExistsError then; the file appears by a hard link, complete or not at all).

    mode: the final mode, exactly (a private key's 0600 whatever the umask); None keeps the
    old file's mode, else default_mode minus the umask. The temporary file is created 0600 in
    the same directory with O_EXCL, so nobody else can read it before its mode is set.
    OSError on failure, and then path is untouched and no temporary file is left."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = default_mode & ~_umask()
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            yield out
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        fsync_dir(directory)
    except OSError as e:
        raise OSError(e.errno, f"written, but syncing its directory failed: {e.strerror}",
                      directory) from e


def atomic_write(path, data, mode=None, default_mode=0o644, exclusive=False):
    """Replace path by data atomically (atomic_output says how)."""
    with atomic_output(path, mode, default_mode, exclusive) as out:
        out.write(data)


def fsync_dir(directory):
    """Make a rename or a new entry in directory survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(directory, name):
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name next to {os.path.join(directory, name)}")


def _umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask
