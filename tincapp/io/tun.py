"""Linux TUN/TAP devices: open one through /dev/net/tun and read its MAC address.

Owns nothing after returning: open_tun hands back a non-blocking, close-on-exec fd that the
caller closes; packets move through tincapp.accel.batchio.read_burst/write_burst. Addresses,
MTU and link state are left to the tinc-up script, as in tinc.
"""
import errno
import fcntl
import os
import socket
import struct

TUN_PATH = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
# <linux/sockios.h>
SIOCGIFHWADDR = 0x8927

IFNAMSIZ = 16
# struct ifreq: char ifr_name[IFNAMSIZ]; then a 24-byte union (flags: short; hwaddr: sockaddr)
_IFREQ_LEN = 40


class TunError(OSError):
    """The device could not be opened; the message says why in words an operator can act on."""


def open_tun(name, *, tap, multi_queue=False):
    """Open (creating if needed) TUN or TAP interface `name` (None or "": the kernel picks
    tunN/tapN). Returns (fd, ifname); the fd is non-blocking and close-on-exec.

    A TUN fd carries bare IP packets, a TAP fd Ethernet frames."""
    # DEVIATION: tinc opens TUN devices with the 4-byte packet-information header and reads at
    # frame offset 10 (data-path.md 1.1); we use IFF_NO_PI for both kinds and let the data path
    # place the packet where it wants (read_burst's offset). The IP version is in the packet.
    flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI
    if multi_queue:
        flags |= IFF_MULTI_QUEUE
    encoded = (name or "").encode()
    if len(encoded) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} bytes")
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise TunError(e.errno, f"{TUN_PATH} does not exist: load the tun kernel module "
                                f"(modprobe tun) or give the container the device") from e
    except PermissionError as e:
        raise TunError(e.errno, f"cannot open {TUN_PATH}: permission denied "
                                f"(needs root or CAP_NET_ADMIN)") from e
    try:
        ifr = struct.pack(f"{IFNAMSIZ}sH", encoded, flags).ljust(_IFREQ_LEN, b"\0")
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            raise TunError(e.errno, _tunsetiff_reason(e.errno, name, tap, multi_queue)) from e
        ifname = ifr[:IFNAMSIZ].split(b"\0", 1)[0].decode()
    except BaseException:
        os.close(fd)
        raise
    return fd, ifname


def _tunsetiff_reason(err, name, tap, multi_queue):
    kind = "TAP" if tap else "TUN"
    what = f"{kind} interface {name!r}" if name else f"a {kind} interface"
    if err == errno.EPERM:
        return f"cannot create {what}: operation not permitted (needs root or CAP_NET_ADMIN)"
    if err == errno.EBUSY:
        return f"cannot create {what}: the name is busy (another process has it open)"
    if err == errno.EINVAL:
        return (f"cannot create {what}: invalid request (does {name!r} already exist as "
                f"another type of device{', or without multi-queue' if multi_queue else ''}?)")
    return f"cannot create {what}: {os.strerror(err)}"


def hardware_address(ifname):
    """The MAC address (6 bytes) of interface `ifname`, e.g. a TAP device's."""
    ifr = struct.pack(f"{IFNAMSIZ}s", ifname.encode()).ljust(_IFREQ_LEN, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, ifr)
    # after the name: struct sockaddr { sa_family_t sa_family; char sa_data[14]; }
    return ifr[IFNAMSIZ + 2:IFNAMSIZ + 8]
