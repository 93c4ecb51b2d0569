"""`tincapp image ...` and `tincapp upgrade ...`: the command lines of the firmware package.

    tincapp image build   --binary FILE --key PRIV [--config FILE] [--init FILE] [-o OUT]
    tincapp image verify  [--keys DIR | --key PUB] [--arch ARCH] FILE
    tincapp image show    FILE
    tincapp image keygen  --out-dir DIR [--name NAME]
    tincapp upgrade       [options] IMAGE
    tincapp upgrade       --recover | --status   [options]

Exit status: 0 done, 1 refused or failed (the message says why), 2 usage error.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

from tincapp import keys
from tincapp.errors import KeyFileError
from tincapp.firmware import image as img
from tincapp.firmware import slots as slotmod
from tincapp.firmware import upgrade as upg


class Progress:
    """Progress on stderr: a redrawn bar on a TTY (or when forced), else one line per stage."""

    def __init__(self, total, label, bar=None, stream=None):
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self._drawn = -1

    def stage(self, text):
        if not self.bar:
            print(f"{self.label}: {text}", file=self.stream, flush=True)

    def __call__(self, n):
        self.done += n
        if not self.bar:
            return
        percent = min(100, self.done * 100 // self.total)
        if percent == self._drawn:
            return
        self._drawn = percent
        width = 30
        filled = width * percent // 100
        self.stream.write(f"\r{self.label} [{'#' * filled}{' ' * (width - filled)}] "
                          f"{percent:3d}% {self.done / 1048576:.1f}/{self.total / 1048576:.1f} MiB")
        self.stream.flush()

    def finish(self):
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()


def _err(message):
    print(f"tincapp: {message}", file=sys.stderr, flush=True)


def _binary_version(path):
    """The version a tincapp binary reports (`BINARY --version` prints "tincapp X")."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise img.ImageError(f"cannot run {path} --version: {e}") from e
    m = re.match(r"^tincapp (\S+)", out)
    if not m:
        raise img.ImageError(f"{path} --version printed {out.strip()!r}, not 'tincapp VERSION'")
    return m.group(1)


def _trusted(args):
    if getattr(args, "key", None):
        return {img.read_trusted_key(path): os.path.basename(path) for path in args.key}
    return img.load_trusted_keys(img.trusted_keys_dir(args.keys))


# --- image --------------------------------------------------------------------------------------

def cmd_build(args):
    if not args.unsigned and not args.sign_key:
        raise img.ImageError("--sign-key PRIV is required (or --unsigned, for tests only)")
    key = None if args.unsigned else keys.read_private_key(args.sign_key)
    sources = [img.Source(img.BINARY_MEMBER, args.binary, "binary", 0o755)]
    if args.config:
        sources.append(img.Source("etc/config/tincapp", args.config, "config", 0o644))
    if args.init:
        sources.append(img.Source("etc/init.d/tincapp", args.init, "init", 0o755))
    for spec, mode in [(s, 0o644) for s in args.add] + [(s, 0o755) for s in args.add_exec]:
        name, sep, path = spec.partition("=")
        if not sep:
            raise img.ImageError(f"--add {spec!r}: expected NAME=PATH")
        sources.append(img.Source(name, path, "data", mode))
    version = args.image_version or _binary_version(args.binary)
    arch = args.arch or img.host_arch()
    out = args.output or os.path.join(args.out_dir, f"tincapp-{version}-{arch}.img")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    build_time = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    total = sum(os.path.getsize(s.path) for s in sources)
    progress = Progress(total, "image build", True if args.progress else None)
    for s in sources:
        progress.stage(f"adding {s.name} ({os.path.getsize(s.path)} bytes) from {s.path}")
    manifest = img.build(out, sources, version=version, arch=arch, key=key,
                         build_time=build_time, progress=progress)
    progress.finish()
    print(f"{out}: tincapp {manifest.version} for {manifest.arch}, "
          f"{len(manifest.members)} members, {os.path.getsize(out)} bytes, "
          f"{'unsigned' if key is None else 'signed by ' + img.key_id(key.public)}")
    return 0


def cmd_verify(args):
    trusted = _trusted(args)
    head = img.verify_file(args.image, trusted, arch=args.arch,
                           installed_version=args.installed_version)
    m = head.manifest
    print(f"{args.image}: OK: tincapp {m.version} for {m.arch}, signed by "
          f"{trusted[head.signer]} ({img.key_id(head.signer)})")
    for member in m.members:
        print(f"  {member.mode:04o} {member.size:>10} {member.sha256[:16]}  {member.name}")
    return 0


def cmd_show(args):
    with open(args.image, "rb") as f:
        head = img.read_head(f, args.image)
    shown = dict(head.manifest.as_json(), signer=img.key_id(head.signer)
                 if any(head.signer) else None, image_len=head.image_len)
    print(json.dumps(shown, indent=1, sort_keys=True))
    return 0


def cmd_keygen(args):
    os.makedirs(args.out_dir, exist_ok=True)
    priv = os.path.join(args.out_dir, f"{args.name}.priv")
    pub = os.path.join(args.out_dir, f"{args.name}.pub")
    if os.path.exists(priv) and not args.force:
        raise img.ImageError(f"{priv} exists (use --force to replace it)")
    key = keys.generate_private_key(os.urandom)
    keys.write_private_key(priv, key)
    keys.write_public_key(pub, key.public)
    print(f"{priv}\n{pub}  ({img.key_id(key.public)})")
    return 0


def image_parser():
    p = argparse.ArgumentParser(prog="tincapp image",
                                description="Build and check signed tincapp firmware images.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="make a signed image")
    b.add_argument("--binary", required=True, help="the tincapp binary")
    b.add_argument("--sign-key", help="Ed25519 private key (tinc's PEM format)")
    b.add_argument("--unsigned", action="store_true", help="no signature (tests only)")
    b.add_argument("--config", help="default UCI config, installed as etc/config/tincapp")
    b.add_argument("--init", help="init script, installed as etc/init.d/tincapp")
    b.add_argument("--add", action="append", default=[], metavar="NAME=PATH",
                   help="extra file (mode 0644)")
    b.add_argument("--add-exec", action="append", default=[], metavar="NAME=PATH",
                   help="extra executable file (mode 0755)")
    b.add_argument("--image-version", help="version (default: what BINARY --version says)")
    b.add_argument("--arch", help=f"OpenWrt architecture (default: this machine's, "
                                  f"{img.host_arch()})")
    b.add_argument("-o", "--output", help="image file (default OUT_DIR/tincapp-VERSION-ARCH.img)")
    b.add_argument("--out-dir", default="dist")
    b.add_argument("--progress", action="store_true", help="draw a progress bar even without a TTY")
    b.set_defaults(func=cmd_build)
    v = sub.add_parser("verify", help="check signature, hashes and structure")
    v.add_argument("image")
    v.add_argument("--keys", help=f"trusted keys directory (default ${img.TRUSTED_KEYS_ENV} or "
                                  f"{img.DEFAULT_TRUSTED_KEYS_DIR})")
    v.add_argument("--key", action="append", help="trust this public key file instead")
    v.add_argument("--arch", help="also require an image for this architecture")
    v.add_argument("--installed-version", help="also refuse versions older than this")
    v.set_defaults(func=cmd_verify)
    s = sub.add_parser("show", help="print the manifest (no checks beyond its structure)")
    s.add_argument("image")
    s.set_defaults(func=cmd_show)
    k = sub.add_parser("keygen", help="make a signing key pair")
    k.add_argument("--out-dir", required=True)
    k.add_argument("--name", default="image-signing")
    k.add_argument("--force", action="store_true")
    k.set_defaults(func=cmd_keygen)
    return p


# --- upgrade ------------------------------------------------------------------------------------

def upgrade_parser():
    p = argparse.ArgumentParser(
        prog="tincapp upgrade",
        description="Install a signed image into the inactive slot, switch to it, restart, "
                    "health-check and roll back on failure.")
    p.add_argument("image", nargs="?")
    p.add_argument("--recover", action="store_true",
                   help="finish or undo an interrupted upgrade (run at service start)")
    p.add_argument("--status", action="store_true", help="print slots and state as JSON")
    p.add_argument("--root", help=f"installation root (default ${slotmod.ROOT_ENV} or "
                                  f"{slotmod.DEFAULT_ROOT})")
    p.add_argument("--keys", help=f"trusted keys directory (default ${img.TRUSTED_KEYS_ENV} or "
                                  f"{img.DEFAULT_TRUSTED_KEYS_DIR})")
    p.add_argument("--arch", help=f"this machine's architecture (default ${img.ARCH_ENV} or "
                                  f"{img.host_arch()})")
    p.add_argument("--allow-downgrade", action="store_true")
    p.add_argument("--service", help=f"restart hook, run as 'SERVICE restart' (default "
                                     f"${upg.SERVICE_ENV} or {upg.DEFAULT_SERVICE})")
    p.add_argument("--no-restart", action="store_true",
                   help="switch only: no restart, no health check")
    p.add_argument("-c", "--config", help="network directory of the daemon to health-check")
    p.add_argument("-n", "--net", help="network name (for -c and the PID file)")
    p.add_argument("--pidfile", help="the daemon's PID file")
    p.add_argument("--timeout", type=float, default=60.0, help="health check timeout (s)")
    p.add_argument("--settle", type=float, default=10.0,
                   help="how long the daemon must stay up and connected (s)")
    p.add_argument("--min-peers", type=int,
                   help="reachable peers required (default 1 if tinc.conf has ConnectTo)")
    p.add_argument("--crash-limit", type=int, default=3,
                   help="daemon restarts seen before it counts as a crash loop")
    p.add_argument("--progress", action="store_true")
    return p


def _service(args):
    if args.no_restart:
        return None
    command = args.service or os.environ.get(upg.SERVICE_ENV)
    if command is None:
        if not os.path.exists(upg.DEFAULT_SERVICE):
            raise img.ImageError(f"no service command: {upg.DEFAULT_SERVICE} does not exist; "
                                 f"pass --service CMD or --no-restart")
        command = upg.DEFAULT_SERVICE
    return upg.Service(command)


def upgrade_main(argv):
    args = upgrade_parser().parse_args(argv)
    if sum(bool(x) for x in (args.image, args.recover, args.status)) != 1:
        _err("upgrade: give exactly one of IMAGE, --recover, --status")
        return 2
    root = args.root or os.environ.get(slotmod.ROOT_ENV) or slotmod.DEFAULT_ROOT
    slots = slotmod.Slots(root)
    if args.status:
        state = slots.read_state()
        state["current"] = slots.current()
        state["slots"] = {s: {"version": slots.version(s), "problem": slots.check_slot(s)}
                          for s in slotmod.SLOTS}
        print(json.dumps(state, indent=1, sort_keys=True))
        return 0
    confbase = args.config
    if confbase is None and args.net:
        from tincapp.config import netconf
        confbase = netconf.resolve_paths(None, args.net).confbase
    if args.image:
        service = _service(args)
    else:
        # --recover restarts the daemon only through a hook that exists.
        try:
            service = _service(args)
        except img.ImageError:
            service = None
    opts = upg.Options(
        arch=args.arch or img.host_arch(), allow_downgrade=args.allow_downgrade,
        service=service,
        pidfile=args.pidfile, confbase=confbase, timeout_s=args.timeout,
        settle_s=args.settle, min_peers=args.min_peers, crash_limit=args.crash_limit)
    # --recover checks slots against the trusted keys when there are any.
    try:
        trusted = img.load_trusted_keys(img.trusted_keys_dir(args.keys))
    except img.ImageError:
        if args.image:
            raise
        trusted = None
    progress = None
    if args.image:
        progress = Progress(os.path.getsize(args.image), "upgrade",
                            True if args.progress else None)
    upgrader = upg.Upgrader(slots, trusted, opts, progress=progress)
    with slots:
        if args.recover:
            actions = upgrader.recover(restart=opts.service is not None)
            if not actions:
                print(f"{slots.root}: consistent, current -> slot {slots.current()}")
            return 0
        try:
            upgrader.install(args.image)
        finally:
            if progress._drawn >= 0:
                progress.finish()
    return 0


def main(argv):
    """Entry point for both programs; argv[0] names which (tincapp's PROGRAMS table)."""
    name = os.path.basename(argv[0]) if argv else "image"
    try:
        if name == "upgrade":
            return upgrade_main(argv[1:])
        args = image_parser().parse_args(argv[1:])
        return args.func(args)
    except upg.UpgradeFailed as e:
        _err(f"upgrade failed: {e}")
        return 1
    except (img.ImageError, KeyFileError) as e:
        _err(f"{'upgrade' if name == 'upgrade' else 'image'} refused: {e}")
        return 1
    except OSError as e:
        _err(f"{e.filename or ''}: {e.strerror or e}")
        return 1
