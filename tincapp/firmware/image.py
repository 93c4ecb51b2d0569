"""The signed firmware image: layout, building, streaming verification and extraction.

Owns the byte format described in firmware/FORMAT.md, the trusted-key directory, the mapping
of the host CPU to OpenWrt architecture names and version ordering. Does not own slots or the
upgrade procedure (slots.py, upgrade.py).

    offset  size  field
    0       8     magic            b"TCAPPIMG"
    8       2     format_version   big-endian, 1
    10      2     flags            big-endian, 0 (any other value is refused)
    12      4     manifest_len     big-endian, 1..MAX_MANIFEST_LEN
    16      M     manifest         canonical JSON (sorted keys, no spaces, ASCII)
    16+M    32    signer           Ed25519 public key of the signer (all zero: unsigned)
    48+M    64    signature        Ed25519 over SIGNED_DOMAIN || bytes[0:16+M]
    112+M   ...   members          each member's bytes, in manifest order, back to back;
                                   the file ends exactly after the last one

The signature covers the header and the manifest; the manifest carries every member's size
and SHA-256, so members are checked while streaming and the image is never held in memory
(routers have little RAM). Every refusal is an ImageError with a message for the operator.
"""
import hashlib
import json
import os
import platform
import re
import struct
from dataclasses import dataclass

from tincapp import b64, fileio, keys
from tincapp.errors import KeyFileError, TincappError
from tincapp.sptps import crypto

MAGIC = b"TCAPPIMG"
FORMAT_VERSION = 1
HEADER = struct.Struct(">8sHHI")            # magic, format_version, flags, manifest_len
HEADER_LEN = HEADER.size                     # 16
SIGNER_LEN = 32
SIGNATURE_LEN = 64
SIG_BLOCK_LEN = SIGNER_LEN + SIGNATURE_LEN   # 96
SIGNED_DOMAIN = b"tincapp firmware image v1\0"
MAX_MANIFEST_LEN = 64 * 1024
MAX_MEMBERS = 64
MAX_MEMBER_LEN = 512 * 1024 * 1024
CHUNK_LEN = 64 * 1024
PRODUCT = "tincapp"
BINARY_MEMBER = "tincapp"                    # the one member every image must carry
ALLOWED_MODES = (0o644, 0o755)

DEFAULT_TRUSTED_KEYS_DIR = "/etc/tincapp/trusted-keys"
TRUSTED_KEYS_ENV = "TINCAPP_TRUSTED_KEYS"
ARCH_ENV = "TINCAPP_ARCH"

_NAME = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")
_VERSION = re.compile(r"^(\d+)(\.\d+)*([-+~][A-Za-z0-9.+~-]*)?$")

# platform.machine() -> the OpenWrt package architecture of a generic build for that CPU.
_MACHINE_TO_OPENWRT = {
    "x86_64": "x86_64", "amd64": "x86_64",
    "aarch64": "aarch64_generic", "arm64": "aarch64_generic",
    "armv7l": "arm_cortex-a7", "armv7": "arm_cortex-a7", "armv6l": "arm_arm1176jzf-s_vfp",
    "i386": "i386_pentium4", "i486": "i386_pentium4", "i586": "i386_pentium4",
    "i686": "i386_pentium4",
    "mips": "mips_24kc", "mipsel": "mipsel_24kc", "mips64": "mips64_octeonplus",
    "riscv64": "riscv64_riscv64",
}


class ImageError(TincappError):
    """An image (or an installed slot) is refused; the message says why, for the operator."""


@dataclass(frozen=True)
class Member:
    name: str           # relative path inside a slot, e.g. "tincapp", "etc/init.d/tincapp"
    role: str           # "binary", "config", "init" or "data"
    mode: int           # 0o644 or 0o755
    size: int
    sha256: str         # lowercase hex

    def as_json(self):
        return {"name": self.name, "role": self.role, "mode": self.mode, "size": self.size,
                "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    product: str
    version: str
    arch: str
    build_time: int
    members: tuple

    def as_json(self):
        return {"format": FORMAT_VERSION, "product": self.product, "version": self.version,
                "arch": self.arch, "build_time": self.build_time,
                "members": [m.as_json() for m in self.members]}

    def encode(self) -> bytes:
        return canonical_json(self.as_json())

    @property
    def payload_len(self) -> int:
        return sum(m.size for m in self.members)


@dataclass(frozen=True)
class ImageHead:
    """Everything before the members: header, manifest and signature block, as read."""
    raw: bytes           # bytes[0 : 112 + M], kept so a slot can store and re-check it
    manifest: Manifest
    signer: bytes
    signature: bytes

    @property
    def signed_part(self) -> bytes:
        return self.raw[:len(self.raw) - SIG_BLOCK_LEN]

    @property
    def image_len(self) -> int:
        return len(self.raw) + self.manifest.payload_len


def canonical_json(obj) -> bytes:
    """The one encoding of a manifest that is signed: sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


# ---------------------------------------------------------------------------------------------
# Versions and architectures

def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version) or len(version) > 64:
        raise ImageError(f"invalid version {version!r} (expected e.g. 1.2.3 or 1.2.3-rc1)")
    return version


def version_key(version: str):
    """Ordering key: numeric dotted part first; a release sorts after its pre-releases
    (1.0.0-rc1 < 1.0.0)."""
    check_version(version)
    m = re.match(r"^([\d.]+)(.*)$", version)
    numbers = tuple(int(x) for x in m.group(1).split("."))
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers = numbers[:-1]
    suffix = m.group(2)
    # A "+build" suffix is build metadata (same release); "-rc1"/"~rc1" is a pre-release.
    pre = suffix[:1] in ("-", "~")
    return (numbers, 0 if pre else 1, suffix[1:] if pre else "")


def host_arch(env=None) -> str:
    """The OpenWrt architecture name of this machine ($TINCAPP_ARCH overrides, for tests)."""
    env = os.environ if env is None else env
    override = env.get(ARCH_ENV)
    if override:
        return override
    machine = platform.machine().lower()
    return _MACHINE_TO_OPENWRT.get(machine, machine)


def arch_family(arch: str) -> str:
    """The instruction-set family an OpenWrt arch belongs to: aarch64_cortex-a53 and
    aarch64_generic both run a generic aarch64 build."""
    if arch.startswith("x86_64"):
        return "x86_64"
    return arch.split("_", 1)[0]


def arch_compatible(image_arch: str, machine_arch: str) -> bool:
    return arch_family(image_arch) == arch_family(machine_arch)


# ---------------------------------------------------------------------------------------------
# Trusted keys

def trusted_keys_dir(explicit=None, env=None) -> str:
    env = os.environ if env is None else env
    return explicit or env.get(TRUSTED_KEYS_ENV) or DEFAULT_TRUSTED_KEYS_DIR


def read_trusted_key(path) -> bytes:
    """The public key in a trusted key file (tinc's formats), or ImageError."""
    try:
        return keys.read_public_key(path)
    except KeyFileError as e:
        raise ImageError(f"bad trusted key file: {e}") from e


def load_trusted_keys(directory) -> dict:
    """{public key bytes: file name} of every key file in directory (tinc's formats: a PEM
    ED25519 PUBLIC KEY block or an `Ed25519PublicKey = ...` line). Hidden files and editor
    backups are skipped; a file that is not a key is an error, so a typo cannot silently
    drop a key."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise ImageError(f"cannot read trusted keys directory {directory}: "
                         f"{e.strerror or e}") from e
    found = {}
    for name in names:
        if name.startswith(".") or name.endswith("~"):
            continue
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        found[read_trusted_key(path)] = name
    if not found:
        raise ImageError(f"no trusted keys in {directory}: cannot check any image")
    return found


def key_id(public: bytes) -> str:
    """How a key is named in messages: its tinc base64 form."""
    return b64.encode(public)


# ---------------------------------------------------------------------------------------------
# Reading

def _read_exact(f, n: int, what: str, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ImageError(f"image truncated: {what} at offset {offset} needs {n} bytes, "
                         f"only {len(data)} left")
    return data


def _parse_member(obj, index: int) -> Member:
    if not isinstance(obj, dict) or set(obj) != {"name", "role", "mode", "size", "sha256"}:
        raise ImageError(f"manifest: member {index} must have exactly name, role, mode, "
                         f"size and sha256")
    name, role, mode, size, digest = (obj["name"], obj["role"], obj["mode"], obj["size"],
                                      obj["sha256"])
    if not isinstance(name, str) or len(name) > 200 or not _NAME.match(name) \
            or any(part in (".", "..") for part in name.split("/")):
        raise ImageError(f"manifest: member {index} has an unsafe name {name!r}")
    if role not in ("binary", "config", "init", "data"):
        raise ImageError(f"manifest: member {name!r} has unknown role {role!r}")
    if type(mode) is not int or mode not in ALLOWED_MODES:
        raise ImageError(f"manifest: member {name!r} has mode {mode!r} (only 0644 or 0755)")
    if type(size) is not int or not 0 <= size <= MAX_MEMBER_LEN:
        raise ImageError(f"manifest: member {name!r} has invalid size {size!r}")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ImageError(f"manifest: member {name!r} has an invalid sha256")
    return Member(name, role, mode, size, digest)


def parse_manifest(raw: bytes) -> Manifest:
    try:
        obj = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ImageError(f"manifest is not valid JSON: {e}") from e
    if not isinstance(obj, dict) or canonical_json(obj) != raw:
        raise ImageError("manifest is not in canonical form")
    want = {"format", "product", "version", "arch", "build_time", "members"}
    if set(obj) != want:
        raise ImageError(f"manifest must have exactly the fields {', '.join(sorted(want))}")
    if obj["format"] != FORMAT_VERSION:
        raise ImageError(f"manifest format {obj['format']!r} is not supported")
    if obj["product"] != PRODUCT:
        raise ImageError(f"image is for {obj['product']!r}, not {PRODUCT!r}")
    version = check_version(obj["version"])
    arch = obj["arch"]
    if not isinstance(arch, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", arch):
        raise ImageError(f"manifest: invalid architecture {arch!r}")
    if type(obj["build_time"]) is not int or obj["build_time"] < 0:
        raise ImageError("manifest: invalid build_time")
    members = obj["members"]
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise ImageError(f"manifest: 1 to {MAX_MEMBERS} members required")
    parsed = tuple(_parse_member(m, i) for i, m in enumerate(members))
    names = [m.name for m in parsed]
    if len(set(names)) != len(names):
        raise ImageError("manifest: duplicate member names")
    # A member may not be both a file and a directory ("a" and "a/b").
    prefixes = {n + "/" for n in names}
    if any(n.startswith(p) for n in names for p in prefixes):
        raise ImageError("manifest: a member name is also used as a directory")
    binary = [m for m in parsed if m.name == BINARY_MEMBER]
    if not binary or binary[0].role != "binary" or binary[0].mode != 0o755:
        raise ImageError(f"manifest: no executable {BINARY_MEMBER!r} binary member")
    return Manifest(obj["product"], version, arch, obj["build_time"], parsed)


def read_head(f, source="image") -> ImageHead:
    """Header, manifest and signature block from the start of f (structure checks only)."""
    header = f.read(HEADER_LEN)
    if len(header) < len(MAGIC) or header[:len(MAGIC)] != MAGIC:
        raise ImageError(f"{source}: not a tincapp image (bad magic)")
    if len(header) != HEADER_LEN:
        raise ImageError(f"{source}: image truncated inside its header")
    _, fmt, flags, manifest_len = HEADER.unpack(header)
    if fmt != FORMAT_VERSION:
        raise ImageError(f"{source}: image format version {fmt} is not supported "
                         f"(this tincapp reads {FORMAT_VERSION})")
    if flags != 0:
        raise ImageError(f"{source}: unknown header flags {flags:#x}")
    if not 1 <= manifest_len <= MAX_MANIFEST_LEN:
        raise ImageError(f"{source}: invalid manifest length {manifest_len}")
    raw_manifest = _read_exact(f, manifest_len, "manifest", HEADER_LEN)
    sig_block = _read_exact(f, SIG_BLOCK_LEN, "signature block", HEADER_LEN + manifest_len)
    try:
        manifest = parse_manifest(raw_manifest)
    except ImageError as e:
        raise ImageError(f"{source}: {e}") from None
    return ImageHead(header + raw_manifest + sig_block, manifest,
                     sig_block[:SIGNER_LEN], sig_block[SIGNER_LEN:])


def check_signature(head: ImageHead, trusted: dict, source="image") -> str:
    """The trusted key file name that signed head, or ImageError."""
    if head.signer == bytes(SIGNER_LEN) and head.signature == bytes(SIGNATURE_LEN):
        raise ImageError(f"{source}: image is not signed")
    name = trusted.get(head.signer)
    if name is None:
        raise ImageError(f"{source}: signed by an untrusted key {key_id(head.signer)}")
    if not crypto.verify(head.signer, SIGNED_DOMAIN + head.signed_part, head.signature):
        raise ImageError(f"{source}: bad signature (image altered or corrupted)")
    return name


def check_compatible(manifest: Manifest, arch=None, installed_version=None,
                     allow_downgrade=False, source="image") -> None:
    """Refuse an image for another CPU, or older than installed_version."""
    if arch is not None and not arch_compatible(manifest.arch, arch):
        raise ImageError(f"{source}: image is for architecture {manifest.arch}, "
                         f"this machine is {arch}")
    if installed_version is not None and not allow_downgrade \
            and version_key(manifest.version) < version_key(installed_version):
        raise ImageError(f"{source}: version {manifest.version} is older than the installed "
                         f"{installed_version} (use --allow-downgrade)")


def stream_members(f, head: ImageHead, sink=None, progress=None, source="image"):
    """Read every member after the head from f, checking its size and SHA-256.

    sink(member) -> a writable file object or None, called before each member; it is
    written chunk by chunk (and not closed here). Raises ImageError on a mismatch, a short
    member or bytes after the last member; what a sink received up to then is not valid.
    """
    offset = len(head.raw)
    for member in head.manifest.members:
        out = sink(member) if sink else None
        digest = hashlib.sha256()
        left = member.size
        while left:
            chunk = f.read(min(CHUNK_LEN, left))
            if not chunk:
                raise ImageError(f"{source}: image truncated in member {member.name!r} "
                                 f"({member.size - left} of {member.size} bytes)")
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
            left -= len(chunk)
            if progress:
                progress(len(chunk))
        if digest.hexdigest() != member.sha256:
            raise ImageError(f"{source}: member {member.name!r} does not match its SHA-256 "
                             f"(image altered or corrupted)")
        offset += member.size
    if f.read(1):
        raise ImageError(f"{source}: unexpected data after the last member at offset {offset}")


def verify_file(path, trusted: dict, *, arch=None, installed_version=None,
                allow_downgrade=False) -> ImageHead:
    """Check an image completely without writing anything: structure, signature by a trusted
    key, compatibility, and every member's size and hash. Returns the head."""
    try:
        with open(path, "rb") as f:
            return verify_stream(f, trusted, arch=arch, installed_version=installed_version,
                                 allow_downgrade=allow_downgrade, source=str(path))
    except OSError as e:
        raise ImageError(f"{path}: cannot read image: {e.strerror or e}") from e


def verify_stream(f, trusted: dict, *, arch=None, installed_version=None,
                  allow_downgrade=False, source="image") -> ImageHead:
    """verify_file() for an open binary file object."""
    head = read_head(f, source)
    check_signature(head, trusted, source)
    check_compatible(head.manifest, arch, installed_version, allow_downgrade, source)
    stream_members(f, head, source=source)
    return head


# ---------------------------------------------------------------------------------------------
# Building

@dataclass(frozen=True)
class Source:
    """One file to put in an image."""
    name: str
    path: str
    role: str = "data"
    mode: int = 0o644


def hash_file(path):
    """(size, SHA-256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_LEN):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def make_manifest(sources, version, arch, build_time) -> Manifest:
    members = []
    for s in sources:
        size, digest = hash_file(s.path)
        members.append(Member(s.name, s.role, s.mode, size, digest))
    manifest = Manifest(PRODUCT, check_version(version), arch, int(build_time), tuple(members))
    parse_manifest(manifest.encode())            # the same checks a reader applies
    return manifest


def encode_head(manifest: Manifest, key) -> bytes:
    """Header, manifest and signature block; key None makes an unsigned image (tests)."""
    raw = manifest.encode()
    if len(raw) > MAX_MANIFEST_LEN:
        raise ImageError("manifest too large")
    signed = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(raw)) + raw
    if key is None:
        return signed + bytes(SIG_BLOCK_LEN)
    return signed + key.public + key.sign(SIGNED_DOMAIN + signed)


def build(out_path, sources, *, version, arch, key, build_time=0, progress=None) -> Manifest:
    """Write a signed image of sources to out_path atomically (fileio.atomic_output).

    progress(done_bytes_delta) is called as member bytes are copied.
    """
    manifest = make_manifest(sources, version, arch, build_time)
    with fileio.atomic_output(out_path) as out:
        out.write(encode_head(manifest, key))
        for s, member in zip(sources, manifest.members):
            digest = hashlib.sha256()
            with open(s.path, "rb") as f:
                while chunk := f.read(CHUNK_LEN):
                    digest.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
            if digest.hexdigest() != member.sha256:
                raise ImageError(f"{s.path} changed while the image was being built")
    return manifest
