"""sptps_test: an SPTPS session between two hosts, with stdin/stdout (or a tun device) as the
application. Same arguments, messages and behaviour as tinc 1.1's sptps_test, so either side can
be real tinc.

    sptps_test [options] my_ed25519_key_file his_ed25519_key_file [host] port

With a host it connects and is the initiator; without one it listens, prints
"Listening on PORT..." on stderr and is the responder. Label "sptps_test". Stream mode over
TCP, or datagram mode (-d) over UDP.

Differences from tinc's program (DEVIATION): a datagram that fails to decode is dropped and
reported with -v instead of spinning; -R is accepted as an alias of -W (tinc's help text names
-R, its code takes -W); --verbose takes no argument.
"""
import errno
import fcntl
import getopt
import os
import random
import select
import socket
import struct
import sys

from tincapp import keys
from tincapp.errors import KeyFileError, SptpsError, WireError
from tincapp.sptps import wire
from tincapp.sptps.session import DEFAULT_REPLAY_WINDOW, RecordReceived, SptpsSession

STREAM_READ_SIZE = 65535     # tinc's buffer
DATAGRAM_READ_SIZE = 1460    # tinc reads at most this much from stdin in datagram mode

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001


def usage(prog):
    sys.stderr.write(
        f"Usage: {prog} [options] my_ed25519_key_file his_ed25519_key_file [host] port\n"
        "\n"
        "Valid options are:\n"
        "  -d, --datagram          Enable datagram mode.\n"
        "  -q, --quit              Quit when EOF occurs on stdin.\n"
        "  -r, --readonly          Only send data from the socket to stdout.\n"
        "  -t, --tun               Use a tun device instead of stdio.\n"
        "  -w, --writeonly         Only send data from stdin to the socket.\n"
        "  -L, --packet-loss RATE  Fake packet loss of RATE percent.\n"
        "  -W, --replay-window N   Set replay window to N bytes.\n"
        "  -s, --special           Enable special handling of lines starting with #, ^ and $.\n"
        "  -v, --verbose           Display debug messages.\n"
        "  -4                      Use IPv4.\n"
        "  -6                      Use IPv6.\n"
        "\n"
        "Report bugs to tinc@tinc-vpn.org.\n")


def c_atoi(text):
    """C's atoi: leading whitespace, optional sign, digits; anything else ends it (0 if none)."""
    text = text.lstrip()
    n = 0
    for i, ch in enumerate(text):
        if ch.isdigit():
            continue
        if i == 0 and ch in "+-":
            continue
        text = text[:i]
        break
    try:
        n = int(text)
    except ValueError:
        n = 0
    return n


class Options:
    datagram = False
    quit = False
    readonly = False
    writeonly = False
    tun = False
    packet_loss = 0
    replay_window = DEFAULT_REPLAY_WINDOW
    special = False
    verbose = False
    family = socket.AF_UNSPEC


def parse_args(argv):
    """(Options, positional args), or an int exit code when the program should stop."""
    prog = argv[0]
    opt = Options()
    try:
        opts, args = getopt.gnu_getopt(
            argv[1:], "dqrstwL:W:R:v46",
            ["datagram", "quit", "readonly", "writeonly", "packet-loss=", "replay-window=",
             "special", "tun", "verbose", "help"])
    except getopt.GetoptError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        usage(prog)
        return 1
    for o, a in opts:
        if o in ("-d", "--datagram"):
            opt.datagram = True
        elif o in ("-q", "--quit"):
            opt.quit = True
        elif o in ("-r", "--readonly"):
            opt.readonly = True
        elif o in ("-w", "--writeonly"):
            opt.writeonly = True
        elif o in ("-t", "--tun"):
            opt.tun = True
        elif o in ("-L", "--packet-loss"):
            opt.packet_loss = c_atoi(a)
        elif o in ("-W", "-R", "--replay-window"):
            opt.replay_window = c_atoi(a)
        elif o in ("-s", "--special"):
            opt.special = True
        elif o in ("-v", "--verbose"):
            opt.verbose = True
        elif o == "-4":
            opt.family = socket.AF_INET
        elif o == "-6":
            opt.family = socket.AF_INET6
        elif o == "--help":
            usage(prog)
            return 0
    if not 3 <= len(args) <= 4:
        sys.stderr.write("Wrong number of arguments.\n")
        usage(prog)
        return 1
    if opt.replay_window < 0:
        sys.stderr.write(f"Invalid replay window {opt.replay_window}.\n")
        return 1
    return opt, args


def open_tun():
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    # COMPAT: like tinc's program, a plain IFF_TUN device, packet information header included.
    ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"", IFF_TUN))
    name = ifr[:16].split(b"\0", 1)[0].decode()
    sys.stderr.write(f"Using tun interface {name}\n")
    return fd


def open_socket(opt, args, initiator):
    """The connected socket, as tinc's program sets it up; None after printing an error."""
    host = args[2] if initiator else None
    port = args[3] if initiator else args[2]
    socktype = socket.SOCK_DGRAM if opt.datagram else socket.SOCK_STREAM
    proto = socket.IPPROTO_UDP if opt.datagram else socket.IPPROTO_TCP
    try:
        ai = socket.getaddrinfo(host, port, opt.family, socktype, proto,
                                0 if initiator else socket.AI_PASSIVE)[0]
    except (socket.gaierror, IndexError) as e:
        sys.stderr.write(f"getaddrinfo() failed: {e}\n")
        return None
    try:
        sock = socket.socket(ai[0], ai[1], ai[2])
    except OSError as e:
        sys.stderr.write(f"Could not create socket: {e.strerror}\n")
        return None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if initiator:
            try:
                sock.connect(ai[4])
            except OSError as e:
                sys.stderr.write(f"Could not connect to peer: {e.strerror}\n")
                return None
        else:
            try:
                sock.bind(ai[4])
            except OSError as e:
                sys.stderr.write(f"Could not bind socket: {e.strerror}\n")
                return None
            if not opt.datagram:
                sock.listen(1)
                print_listening(sock)
                listener, (sock, _) = sock, sock.accept()
                listener.close()
            else:
                print_listening(sock)
                # The first datagram tells who the peer is; leave it queued for the session.
                _, addr = sock.recvfrom(65536, socket.MSG_PEEK)
                sock.connect(addr)
        sys.stderr.write("Connected\n")
        return sock
    except OSError as e:
        sys.stderr.write(f"Could not accept connection: {e.strerror}\n")
        return None


def print_listening(sock):
    sys.stderr.write(f"Listening on {sock.getsockname()[1]}...\n")
    sys.stderr.flush()


class Peer:
    """Glue between the session, the socket and the application fds."""

    def __init__(self, opt, sock, session, out_fd):
        self.opt = opt
        self.sock = sock
        self.session = session
        self.out_fd = out_fd

    def flush(self):
        """Send everything the session queued. False if the socket failed."""
        for _type, data in self.session.pop_outgoing():
            if self.opt.verbose:
                sys.stderr.write(f"Sending {len(data)} bytes of data:\n{data.hex()}\n")
            try:
                if self.opt.datagram:
                    self.sock.send(data)
                else:
                    self.sock.sendall(data)
            except OSError as e:
                sys.stderr.write(f"Error sending data: {e.strerror}\n")
                return False
        return True

    def deliver(self, events):
        for ev in events:
            if not isinstance(ev, RecordReceived):
                continue
            if self.opt.verbose:
                sys.stderr.write(f"Received type {ev.type} record of {len(ev.data)} bytes:\n")
            if self.opt.writeonly:
                continue
            view = memoryview(ev.data)
            while view:
                try:
                    view = view[os.write(self.out_fd, view):]
                except BlockingIOError:
                    select.select([], [self.out_fd], [])
                except OSError as e:
                    sys.stderr.write(f"Error writing received data: {e.strerror}\n")
                    # DEVIATION: a tun device that refuses a packet (EIO while it is down)
                    # drops it, as a NIC would; tinc's program gives up. stdout failing is
                    # fatal in both.
                    if not self.opt.tun:
                        return False
                    break
        return True

    def send_line(self, buf):
        """Turn one read from stdin into records, honouring -s. False on a fatal error."""
        s, opt = self.session, self.opt
        if opt.special and buf[:1] == b"#":
            s.out_seqno = c_atoi(buf[1:].decode("latin-1")) & 0xFFFFFFFF
        if opt.special and buf[:1] == b"^":
            # COMPAT: tinc tries to send an empty handshake record through the application
            # API, which refuses it; nothing goes out.
            if opt.verbose:
                sys.stderr.write("Refusing to send a handshake record as application data\n")
        elif opt.special and buf[:1] == b"$":
            try:
                s.force_kex()
            except SptpsError as e:
                if opt.verbose:
                    sys.stderr.write(f"{e}\n")
            if len(buf) > 1:
                s.send_record(0, buf)
        else:
            rtype = 1 if buf[:1] == b"!" else 0
            if buf == b"\n":
                data = b""
            elif buf[:1] == b"*":
                # COMPAT: a line starting with '*' sends tinc's whole 65535-byte buffer.
                data = buf + bytes(STREAM_READ_SIZE - len(buf))
            else:
                data = buf
            try:
                s.send_record(rtype, data)
            except SptpsError as e:
                sys.stderr.write(f"{e}\n")
                return False
        return self.flush()

    def receive(self, data):
        """Feed bytes from the socket. False if the session can not go on."""
        opt = self.opt
        try:
            events = self.session.receive(data)
        except (SptpsError, WireError) as e:
            if opt.datagram:
                if opt.verbose:
                    sys.stderr.write(f"Dropped datagram: {e}\n")
                return self.flush()
            sys.stderr.write(f"Error: {e}\n")
            return False
        return self.deliver(events) and self.flush()


def main(argv):
    parsed = parse_args(argv)
    if isinstance(parsed, int):
        return parsed
    opt, args = parsed
    initiator = len(args) == 4
    in_fd, out_fd = 0, 1
    if opt.tun:
        try:
            in_fd = out_fd = open_tun()
        except OSError as e:
            sys.stderr.write(f"Could not open tun device: {e.strerror}\n")
            return 1
    sock = open_socket(opt, args, initiator)
    if sock is None:
        return 1
    try:
        my_key = keys.read_private_key(args[0])
        peer_public = keys.read_public_key(args[1])
    except KeyFileError as e:
        sys.stderr.write(f"{e}\n")
        sock.close()
        return 1
    if opt.verbose:
        sys.stderr.write("Keys loaded\n")
    session = SptpsSession(initiator=initiator, datagram=opt.datagram,
                           label=wire.SPTPS_TEST_LABEL, my_key=my_key,
                           peer_public=peer_public, rng=os.urandom,
                           replay_window=opt.replay_window)
    session.start()
    peer = Peer(opt, sock, session, out_fd)
    try:
        return run(opt, sock, session, peer, in_fd)
    except KeyboardInterrupt:
        return 1
    finally:
        sock.close()


def run(opt, sock, session, peer, in_fd):
    if not peer.flush():
        return 1
    read_size = DATAGRAM_READ_SIZE if opt.datagram else STREAM_READ_SIZE
    readonly = opt.readonly
    drop = random.Random()
    while not (opt.writeonly and readonly):
        fds = [sock]
        if not readonly and session.in_encrypted:
            fds.append(in_fd)
        try:
            ready, _, _ = select.select(fds, [], [])
        except InterruptedError:
            continue
        if in_fd in ready:
            try:
                buf = os.read(in_fd, read_size)
            except BlockingIOError:
                buf = None
            except OSError as e:
                sys.stderr.write(f"Could not read from stdin: {e.strerror}\n")
                return 1
            if buf == b"":
                if opt.quit:
                    break
                readonly = True
            elif buf is not None and not peer.send_line(buf):
                return 1
        if sock in ready:
            try:
                data = sock.recv(STREAM_READ_SIZE)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                # COMPAT: a datagram refused by a peer that is not (yet) listening is not fatal
                if opt.datagram and e.errno == errno.ECONNREFUSED:
                    continue
                sys.stderr.write(f"Could not read from socket: {e.strerror}\n")
                return 1
            if not data:
                sys.stderr.write("Connection terminated by peer.\n")
                break
            if opt.verbose:
                sys.stderr.write(f"Received {len(data)} bytes of data:\n{data.hex()}\n")
            if opt.packet_loss and drop.randrange(100) < opt.packet_loss:
                if opt.verbose:
                    sys.stderr.write("Dropped.\n")
                continue
            if not peer.receive(data):
                return 1
    return 0
