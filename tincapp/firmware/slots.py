"""The A/B installation under a root directory: slots, the `current` link and the state file.

    ROOT/slots/a/            one complete installation: its members + IMAGE_HEAD (written last)
    ROOT/slots/b/
    ROOT/slots/.b.new/       staging while an image is written (never used to run)
    ROOT/current -> slots/a  relative symlink, replaced atomically by rename()
    ROOT/state.json          {"last_good": slot, "pending": {...} or null, "last_result": ...}
    ROOT/lock                flock()ed by whoever changes any of the above

A slot is complete when IMAGE_HEAD (header + manifest + signature block of the image it came
from) exists and every member file has the size and SHA-256 the manifest names. Every change
writes the intent to state.json first, so recover() can always finish or undo it.
Not thread-safe; the lock keeps two processes apart.
"""
import errno
import fcntl
import json
import os
import shutil
import time

from tincapp import fileio
from tincapp.firmware import image as img

SLOTS = ("a", "b")
IMAGE_HEAD = "IMAGE_HEAD"
STATE_FORMAT = 1
DEFAULT_ROOT = "/opt/tincapp"
ROOT_ENV = "TINCAPP_ROOT"


class SlotError(img.ImageError):
    """The installation cannot be changed as asked (locked, no root, nothing to roll back)."""


def other(slot):
    return "b" if slot == "a" else "a"


class Slots:
    """One root directory's layout and state. Methods that change things expect lock()."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.slots_dir = os.path.join(self.root, "slots")
        self.current_link = os.path.join(self.root, "current")
        self.state_path = os.path.join(self.root, "state.json")
        self._lock_fd = None

    # --- paths -------------------------------------------------------------------------------

    def slot_dir(self, slot):
        return os.path.join(self.slots_dir, slot)

    def staging_dir(self, slot):
        return os.path.join(self.slots_dir, f".{slot}.new")

    # --- lock --------------------------------------------------------------------------------

    def lock(self):
        os.makedirs(self.slots_dir, exist_ok=True)
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SlotError(f"{self.root}: another upgrade is running") from None
            raise
        self._lock_fd = fd
        return self

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self.lock()

    def __exit__(self, *exc):
        self.unlock()

    # --- state -------------------------------------------------------------------------------

    def read_state(self):
        try:
            with open(self.state_path, "rb") as f:
                state = json.loads(f.read().decode())
        except FileNotFoundError:
            return {"format": STATE_FORMAT, "last_good": None, "pending": None,
                    "last_result": None}
        except (OSError, ValueError) as e:
            raise SlotError(f"{self.state_path}: unreadable state file: {e}") from e
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise SlotError(f"{self.state_path}: unknown state file format")
        return state

    def write_state(self, state):
        state = dict(state, format=STATE_FORMAT)
        fileio.atomic_write(self.state_path,
                            json.dumps(state, sort_keys=True, indent=1).encode() + b"\n",
                            default_mode=0o644)

    # --- current link --------------------------------------------------------------------------

    def current(self):
        """The slot `current` points at, or None (missing or not one of ours)."""
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        for slot in SLOTS:
            if os.path.normpath(target) in (f"slots/{slot}", self.slot_dir(slot)):
                return slot
        return None

    def switch(self, slot):
        """Point `current` at slot atomically: a new link renamed over the old one."""
        tmp = os.path.join(self.root, f".current.{os.getpid()}.tmp")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(f"slots/{slot}", tmp)
        os.replace(tmp, self.current_link)
        fileio.fsync_dir(self.root)

    # --- slot contents -------------------------------------------------------------------------

    def head(self, slot):
        """The ImageHead a slot was installed from, or None if it has none (incomplete)."""
        path = os.path.join(self.slot_dir(slot), IMAGE_HEAD)
        try:
            with open(path, "rb") as f:
                return img.read_head(f, path)
        except (OSError, img.ImageError):
            return None

    def check_slot(self, slot, trusted=None):
        """None if slot is complete (and, given trusted keys, signed by one), else the reason."""
        directory = self.slot_dir(slot)
        if not os.path.isdir(directory):
            return "empty"
        head = self.head(slot)
        if head is None:
            return f"no valid {IMAGE_HEAD} (incomplete)"
        if trusted is not None:
            try:
                img.check_signature(head, trusted, directory)
            except img.ImageError as e:
                return str(e)
        for member in head.manifest.members:
            try:
                size, digest = img.hash_file(os.path.join(directory, member.name))
            except OSError as e:
                return f"{member.name}: {e.strerror or e}"
            if (size, digest) != (member.size, member.sha256):
                return f"{member.name}: content does not match the manifest"
        return None

    def version(self, slot):
        head = self.head(slot) if slot else None
        return head.manifest.version if head else None

    # --- writing a slot ------------------------------------------------------------------------

    def discard_staging(self):
        for slot in SLOTS:
            shutil.rmtree(self.staging_dir(slot), ignore_errors=True)

    def write_slot(self, slot, image_path, expected_head, step=None, progress=None):
        """Extract image_path into slot through its staging directory.

        The image is read again and checked against expected_head (the verified one), so a
        file changed after verification is refused; members are fsynced, IMAGE_HEAD is
        written last, and the staging directory is renamed to the slot.
        step(name) is called at "writing" (half-way through the first member).
        """
        staging = self.staging_dir(slot)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        opened = []
        half = [expected_head.manifest.members[0].size // 2]

        def sink(member):
            path = os.path.join(staging, member.name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, member.mode)
            f = os.fdopen(fd, "wb")
            opened.append(f)
            return f

        def on_bytes(n):
            if progress:
                progress(n)
            if half[0] is not None:
                half[0] -= n
                if half[0] <= 0:
                    half[0] = None
                    for f in opened:
                        f.flush()
                    if step:
                        step("writing")

        try:
            with open(image_path, "rb") as f:
                head = img.read_head(f, image_path)
                if head.raw != expected_head.raw:
                    raise img.ImageError(f"{image_path}: changed after it was verified")
                img.stream_members(f, head, sink, on_bytes, image_path)
            for out in opened:
                out.flush()
                os.fsync(out.fileno())
        finally:
            for out in opened:
                out.close()
        fileio.atomic_write(os.path.join(staging, IMAGE_HEAD), expected_head.raw,
                            default_mode=0o644)
        for dirpath, _, _ in os.walk(staging):
            fileio.fsync_dir(dirpath)
        final = self.slot_dir(slot)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        fileio.fsync_dir(self.slots_dir)

    # --- recovery ------------------------------------------------------------------------------

    def recover(self, trusted=None):
        """Bring the installation to a consistent state after an interruption.

        Returns (actions, restart): what was done, in words, and whether the service must be
        restarted (`current` changed, or a trial was cut short: the daemon running may be the
        version that was being tried). Rules: staging directories are discarded; an
        unfinished upgrade (any pending step) is undone by pointing `current` back at the
        slot it came from; `current` always ends at a complete slot, preferring last_good.
        """
        actions = []
        state = self.read_state()
        before = self.current()
        problems = {}           # slot -> check_slot's answer: each slot is hashed once

        def complete(slot):
            if slot not in problems:
                problems[slot] = self.check_slot(slot, trusted)
            return problems[slot] is None

        for slot in SLOTS:
            if os.path.isdir(self.staging_dir(slot)):
                actions.append(f"discarded half-written slot {slot}")
        self.discard_staging()
        pending = state.get("pending")
        want = state.get("last_good")
        if pending:
            frm = pending.get("from")
            if frm and complete(frm):
                want = frm
            elif not frm and complete(pending["slot"]):
                # An interrupted first installation whose slot is complete: keep it.
                want = pending["slot"]
            actions.append(f"undid the upgrade to {pending.get('version')} interrupted at "
                           f"step {pending.get('step')!r}")
        candidates = [s for s in (want, before, *SLOTS) if s]
        target = None
        for slot in candidates:
            if complete(slot):
                target = slot
                break
        if target is None:
            if pending:
                state["pending"] = None
                self.write_state(state)
            if before is not None:
                actions.append("no complete slot to point current at")
            return actions, False
        switched = target != before
        restart = switched or bool(pending and pending.get("step") == "trial")
        if switched:
            self.switch(target)
            actions.append(f"current -> slot {target} ({self.version(target)})")
        if pending or state.get("last_good") != target:
            state["pending"] = None
            state["last_good"] = target
            if pending:
                state["last_result"] = {"version": pending.get("version"), "at": int(time.time()),
                                        "result": f"interrupted at {pending.get('step')}, "
                                                  f"recovered to slot {target}"}
            self.write_state(state)
        return actions, restart
