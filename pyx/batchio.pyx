# cython: language_level=3
"""Batched device and UDP I/O over PacketBatch bursts: read()/write() loops for TUN/TAP fds,
recvmmsg()/sendmmsg() for UDP sockets, and UdpAddresses, the per-slot peer addresses.

Owns no fd: callers pass non-blocking descriptors they opened (tincapp/io/tun.py, the UDP
listeners) and keep them open for the duration of a call. Each call is one C loop with the GIL
released around the system calls; nothing allocates a Python object per packet, and per-packet
failures become slot statuses or a returned errno, never an exception.

Slot convention: a packet starts at slot offset 0 and lengths[i] counts bytes from offset 0.
The `offset` parameters place received data `offset` bytes into the slot (headroom for a prefix
the caller fills, e.g. tinc's 12-byte node-ID prefix) and send/write bytes [offset, lengths[i]).

Segmentation offload, both optional and measured in bench/bench_batchio.py: send_to_one(gso=
True) sends runs of equal-size datagrams to one destination as UDP_SEGMENT super-datagrams
(~3x less send-side time per datagram on loopback); UdpGroReceiver reads a socket with UDP_GRO
enabled and cuts coalesced runs back into datagrams. recv_burst expects one datagram per
message: never use it on a socket with UDP_GRO enabled.

Linux only (recvmmsg/sendmmsg). Not thread-safe: a batch and its UdpAddresses belong to one
thread. Only tincapp.accel imports this module.
"""
from libc.errno cimport errno, EAGAIN, EINTR, EMSGSIZE, EBADF, EFAULT, EPIPE, ENOBUFS
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset, memcmp
from posix.unistd cimport read, write
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize

from slotstatus cimport *


cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct timespec:
        pass
    int AF_INET, AF_INET6
    int MSG_DONTWAIT, MSG_TRUNC
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr* CMSG_FIRSTHDR(msghdr* m)
    cmsghdr* CMSG_NXTHDR(msghdr* m, cmsghdr* c)
    unsigned char* CMSG_DATA(cmsghdr* c)
    size_t CMSG_SPACE(size_t n)
    size_t CMSG_LEN(size_t n)
    int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout)
    ssize_t sendmsg(int fd, const msghdr* msg, int flags)
    int sendmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags)


cdef extern from "<netinet/in.h>" nogil:
    ctypedef uint32_t in_addr_t
    ctypedef uint16_t in_port_t
    struct in_addr:
        in_addr_t s_addr
    struct in6_addr:
        uint8_t s6_addr[16]
    struct sockaddr_in:
        sa_family_t sin_family
        in_port_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        in_port_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)


cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char* src, void* dst)
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)


cdef extern from "<net/if.h>" nogil:
    unsigned int if_nametoindex(const char* ifname)


cdef extern from "<netinet/udp.h>" nogil:
    int SOL_UDP, UDP_SEGMENT, UDP_GRO


cdef enum:
    _GSO_MAX_SEGMENTS = 64      # UDP_MAX_SEGMENTS of older kernels (newer ones allow more)
    _GSO_MAX_BYTES = 65507      # payload of the largest IPv4 UDP datagram
    _CTRL_LEN = 32              # >= CMSG_SPACE(sizeof(int)): room for one UDP_SEGMENT/UDP_GRO
    _UIO_MAXIOV = 1024          # the kernel caps one recvmmsg/sendmmsg at this many messages
    _ADDR_LEN = sizeof(sockaddr_in6)

# ::ffff:0:0/96, IPv4 addresses as seen by a dual-stack IPv6 socket
cdef uint8_t _V4MAPPED_PREFIX[12]
_V4MAPPED_PREFIX[:] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]


cdef inline bint _is_v4mapped(const sockaddr_in6* a) noexcept nogil:
    return memcmp(a.sin6_addr.s6_addr, _V4MAPPED_PREFIX, 12) == 0


cdef int _parse_addr(host, int port, bint map_v4, sockaddr_in6* out) except -1:
    # `host` as text ("192.0.2.1", "2001:db8::1", "fe80::1%eth0") into *out, which holds a
    # sockaddr_in (IPv4, or a v4-mapped sockaddr_in6 if map_v4) or a sockaddr_in6.
    cdef bytes h
    cdef bytes scope = None
    cdef sockaddr_in* a4 = <sockaddr_in*>out
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if isinstance(host, str):
        h = (<str>host).encode("ascii")
    else:
        h = bytes(host)
    if b"%" in h:
        h, scope = h.split(b"%", 1)
    memset(out, 0, _ADDR_LEN)
    if scope is None and inet_pton(AF_INET, h, &a4.sin_addr) == 1:
        if map_v4:
            memcpy(out.sin6_addr.s6_addr + 12, &a4.sin_addr, 4)
            memset(&a4.sin_addr, 0, 4)
            memcpy(out.sin6_addr.s6_addr, _V4MAPPED_PREFIX, 12)
            out.sin6_family = AF_INET6
            out.sin6_port = htons(port)
        else:
            a4.sin_family = AF_INET
            a4.sin_port = htons(port)
        return 0
    if inet_pton(AF_INET6, h, &out.sin6_addr) == 1:
        out.sin6_family = AF_INET6
        out.sin6_port = htons(port)
        if scope is not None:
            if scope.isdigit():
                out.sin6_scope_id = int(scope)
            else:
                out.sin6_scope_id = if_nametoindex(scope)
                if out.sin6_scope_id == 0:
                    raise ValueError(f"unknown interface {scope.decode(errors='replace')!r}")
        return 0
    raise ValueError(f"not a numeric IPv4 or IPv6 address: {host!r}")


cdef tuple _format_addr(const sockaddr_in6* a):
    # (host, port); v4-mapped IPv6 comes back as plain IPv4. Unset/unknown family: ("", 0).
    cdef char text[64]
    cdef const sockaddr_in* a4 = <const sockaddr_in*>a
    cdef bytes host
    if a.sin6_family == AF_INET:
        inet_ntop(AF_INET, &a4.sin_addr, text, sizeof(text))
        return text.decode("ascii"), ntohs(a4.sin_port)
    if a.sin6_family == AF_INET6:
        if _is_v4mapped(a):
            inet_ntop(AF_INET, a.sin6_addr.s6_addr + 12, text, sizeof(text))
            return text.decode("ascii"), ntohs(a.sin6_port)
        inet_ntop(AF_INET6, a.sin6_addr.s6_addr, text, sizeof(text))
        host = text
        if a.sin6_scope_id:
            host += b"%" + str(a.sin6_scope_id).encode("ascii")
        return host.decode("ascii"), ntohs(a.sin6_port)
    return "", 0


cdef inline Py_ssize_t _key_into(const sockaddr_in6* a, uint8_t* k) noexcept nogil:
    # Compact key: 4 | addr(4) | port(2), or 6 | addr(16) | port(2) | scope(4). Ports in
    # network order. v4-mapped IPv6 keys as IPv4, so one peer has one key whichever socket
    # family it arrived on. Returns the key length (1, a lone 0, for an unset slot).
    cdef const sockaddr_in* a4 = <const sockaddr_in*>a
    if a.sin6_family == AF_INET:
        k[0] = 4
        memcpy(k + 1, &a4.sin_addr, 4)
        memcpy(k + 5, &a4.sin_port, 2)
        return 7
    if a.sin6_family == AF_INET6:
        if _is_v4mapped(a):
            k[0] = 4
            memcpy(k + 1, a.sin6_addr.s6_addr + 12, 4)
            memcpy(k + 5, &a.sin6_port, 2)
            return 7
        k[0] = 6
        memcpy(k + 1, a.sin6_addr.s6_addr, 16)
        memcpy(k + 17, &a.sin6_port, 2)
        memcpy(k + 19, &a.sin6_scope_id, 4)
        return 23
    k[0] = 0
    return 1


cdef class UdpAddresses:
    """One socket address (IPv4 or IPv6) per batch slot: the source of received datagrams
    (recv_burst) or the destination of sent ones (send_burst). Slot i goes with batch slot i."""
    cdef sockaddr_in6* addrs
    cdef readonly Py_ssize_t capacity

    def __cinit__(self, Py_ssize_t capacity):
        if capacity < 1:
            raise ValueError("UdpAddresses needs at least one slot")
        self.addrs = <sockaddr_in6*>calloc(capacity, _ADDR_LEN)
        if self.addrs == NULL:
            raise MemoryError()
        self.capacity = capacity

    def __dealloc__(self):
        free(self.addrs)

    cdef inline int _check(self, Py_ssize_t i) except -1:
        if not 0 <= i < self.capacity:
            raise IndexError(f"address slot {i} out of range 0..{self.capacity - 1}")
        return 0

    def get(self, Py_ssize_t i):
        """(host, port) of slot i; IPv4-mapped IPv6 addresses come back as plain IPv4."""
        self._check(i)
        return _format_addr(&self.addrs[i])

    def set(self, Py_ssize_t i, host, int port, *, bint map_v4=False):
        """Set slot i from numeric text. map_v4: store IPv4 as ::ffff:a.b.c.d, the form a
        dual-stack AF_INET6 socket needs to send to it."""
        self._check(i)
        _parse_addr(host, port, map_v4, &self.addrs[i])

    def set_all(self, host, int port, Py_ssize_t start=0, Py_ssize_t stop=-1, *,
                bint map_v4=False):
        """Set slots [start, stop) (stop -1: to the end) to one address."""
        cdef sockaddr_in6 a
        cdef Py_ssize_t i
        if stop < 0 or stop > self.capacity:
            stop = self.capacity
        if start < 0:
            start = 0
        _parse_addr(host, port, map_v4, &a)
        for i in range(start, stop):
            self.addrs[i] = a

    def copy(self, Py_ssize_t dst, UdpAddresses src not None, Py_ssize_t i):
        """Slot dst = src's slot i (e.g. reply to where a datagram came from)."""
        self._check(dst)
        src._check(i)
        self.addrs[dst] = src.addrs[i]

    def key(self, Py_ssize_t i):
        """A compact bytes key of slot i's address for dict lookups: equal for equal
        addresses however they were set (set() or received, IPv4 or v4-mapped)."""
        cdef uint8_t k[24]
        cdef Py_ssize_t n
        self._check(i)
        n = _key_into(&self.addrs[i], k)
        return PyBytes_FromStringAndSize(<char*>k, n)

    def run_end(self, Py_ssize_t start, Py_ssize_t stop):
        """The first index in (start, stop) whose address differs from slot start's, or stop:
        slots [start, run_end) go to/came from one peer."""
        cdef uint8_t k0[24]
        cdef uint8_t k[24]
        cdef Py_ssize_t n0, i
        self._check(start)
        if stop > self.capacity:
            stop = self.capacity
        n0 = _key_into(&self.addrs[start], k0)
        for i in range(start + 1, stop):
            if _key_into(&self.addrs[i], k) != n0 or memcmp(k, k0, n0) != 0:
                return i
        return max(stop, start + 1)


cdef struct _Slots:
    # Raw pointers into a PacketBatch's buffers, pinned (their owners cannot resize) from
    # _open_slots to _close_slots. Py_buffer rather than typed memoryviews: acquiring three
    # memoryviews costs ~0.7 us per call, as much as a sendmmsg of one datagram.
    uint8_t* buf
    uint32_t* lens
    uint8_t* stat
    Py_buffer vbuf
    Py_buffer vlens
    Py_buffer vstat
    int held


cdef int _open_slots(batch, _Slots* s) except -1:
    cdef Py_ssize_t capacity = batch.capacity
    cdef Py_ssize_t stride = batch.slot_size
    s.held = 0
    try:
        PyObject_GetBuffer(batch.buf, &s.vbuf, PyBUF_SIMPLE | PyBUF_WRITABLE)
        s.held = 1
        PyObject_GetBuffer(batch.lengths, &s.vlens, PyBUF_SIMPLE | PyBUF_WRITABLE)
        s.held = 2
        PyObject_GetBuffer(batch.status, &s.vstat, PyBUF_SIMPLE | PyBUF_WRITABLE)
        s.held = 3
        if (s.vbuf.len < capacity * stride or s.vlens.len < capacity * 4
                or s.vlens.itemsize != 4 or s.vstat.len < capacity):
            raise ValueError("batch buffers are smaller than capacity x slot_size says")
    except BaseException:
        _close_slots(s)
        raise
    s.buf = <uint8_t*>s.vbuf.buf
    s.lens = <uint32_t*>s.vlens.buf
    s.stat = <uint8_t*>s.vstat.buf
    return 0


cdef void _close_slots(_Slots* s) noexcept:
    if s.held >= 3:
        PyBuffer_Release(&s.vstat)
    if s.held >= 2:
        PyBuffer_Release(&s.vlens)
    if s.held >= 1:
        PyBuffer_Release(&s.vbuf)
    s.held = 0


cdef inline Py_ssize_t _clamp_stop(Py_ssize_t stop, Py_ssize_t limit) noexcept:
    return limit if stop < 0 or stop > limit else stop


cdef inline int _check_offset(size_t offset, Py_ssize_t slot_size) except -1:
    if offset > <size_t>slot_size:
        raise ValueError(f"offset {offset} is past the end of a {slot_size}-byte slot")
    return 0


# --- devices (TUN/TAP, or any packet fd) --------------------------------------------------

def read_burst(int fd, batch, size_t offset=0, Py_ssize_t max_packets=-1):
    """read() packets from non-blocking `fd` into batch slots batch.count on, each `offset`
    bytes into its slot, until EAGAIN, the batch is full or max_packets were read (-1: no
    limit). Sets lengths (offset + size) and status OK, advances batch.count and returns the
    number read. A read() of 0 (end of file) ends the burst too. Other errors raise OSError
    only if nothing was read in this call; otherwise they are left for the next call."""
    cdef _Slots sl
    cdef uint8_t* buf
    cdef uint32_t* lens
    cdef uint8_t* stat
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t first = batch.count
    cdef Py_ssize_t end = batch.capacity
    cdef Py_ssize_t i
    cdef ssize_t r = 0
    cdef size_t room
    cdef int err = 0
    _open_slots(batch, &sl)
    buf, lens, stat = sl.buf, sl.lens, sl.stat
    try:
        _check_offset(offset, stride)
        if max_packets >= 0 and first + max_packets < end:
            end = first + max_packets
        room = stride - offset
        i = first
        with nogil:  # buf/lens/stat pinned by _open_slots
            while i < end:
                r = read(fd, &buf[i * stride] + offset, room)
                if r > 0:
                    lens[i] = <uint32_t>(offset + r)
                    stat[i] = SLOT_OK
                    i += 1
                elif r == 0:
                    break
                elif errno == EINTR:
                    continue
                else:
                    err = errno
                    break
        batch.count = i
        if i == first and err != 0 and err != EAGAIN and err != EWOULDBLOCK:
            raise OSError(err, _strerror(err))
        return i - first
    finally:
        _close_slots(&sl)


def write_burst(int fd, batch, Py_ssize_t start=0, Py_ssize_t stop=-1, size_t offset=0):
    """write() bytes [offset, lengths[i]) of each OK slot in [start, stop) (stop -1:
    batch.count) to `fd`, one packet per write. Returns the number written. EAGAIN stops the
    burst (the rest are not written; the caller may drop them). A packet the device refuses
    (EINVAL, EIO, EMSGSIZE, ...) is dropped: its status becomes EMPTY and the burst goes on.
    A broken fd (EBADF, EFAULT, EPIPE) raises OSError."""
    cdef _Slots sl
    cdef uint8_t* buf
    cdef uint32_t* lens
    cdef uint8_t* stat
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t i, written = 0
    cdef ssize_t r
    cdef size_t n
    cdef int err = 0
    _open_slots(batch, &sl)
    buf, lens, stat = sl.buf, sl.lens, sl.stat
    try:
        _check_offset(offset, stride)
        stop = _clamp_stop(stop, batch.count)
        if start < 0:
            start = 0
        i = start
        with nogil:  # buf/lens/stat pinned by _open_slots
            while i < stop:
                if stat[i] != SLOT_OK:
                    i += 1
                    continue
                if lens[i] <= offset:          # nothing after the headroom: not a packet
                    stat[i] = SLOT_EMPTY
                    i += 1
                    continue
                n = lens[i] - offset
                r = write(fd, &buf[i * stride] + offset, n)
                if r >= 0:
                    written += 1
                elif errno == EINTR:
                    continue
                elif errno == EAGAIN or errno == EWOULDBLOCK:
                    break
                elif errno == EBADF or errno == EFAULT or errno == EPIPE:
                    err = errno
                    break
                else:
                    stat[i] = SLOT_EMPTY
                i += 1
        if err:
            raise OSError(err, _strerror(err))
        return written
    finally:
        _close_slots(&sl)


# --- UDP ----------------------------------------------------------------------------------

def recv_burst(int fd, batch, UdpAddresses addrs not None, size_t offset=0,
               Py_ssize_t max_packets=-1):
    """recvmmsg() datagrams from non-blocking UDP socket `fd` into batch slots batch.count on
    (each `offset` bytes into its slot), the source of slot i into addrs slot i. Truncated
    datagrams (larger than the slot) get status TOO_BIG, the others OK. Advances batch.count
    and returns the number received; 0 if nothing was waiting. Other errors raise OSError
    only if nothing was received."""
    cdef _Slots sl
    cdef uint8_t* buf
    cdef uint32_t* lens
    cdef uint8_t* stat
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t first = batch.count
    cdef Py_ssize_t end = batch.capacity
    cdef Py_ssize_t n, j, got = 0, chunk
    cdef int r, err = 0
    cdef mmsghdr* msgs
    cdef iovec* iov
    _open_slots(batch, &sl)
    buf, lens, stat = sl.buf, sl.lens, sl.stat
    try:
        _check_offset(offset, stride)
        if max_packets >= 0 and first + max_packets < end:
            end = first + max_packets
        if end > addrs.capacity:
            raise ValueError(f"batch slots up to {end} but only {addrs.capacity} addresses")
        n = end - first
        if n <= 0:
            return 0
        msgs = <mmsghdr*>calloc(n, sizeof(mmsghdr))
        iov = <iovec*>calloc(n, sizeof(iovec))
        if msgs == NULL or iov == NULL:
            free(msgs)
            free(iov)
            raise MemoryError()
        try:
            with nogil:  # buf/lens/stat pinned by _open_slots, addrs by the argument
                for j in range(n):
                    iov[j].iov_base = &buf[(first + j) * stride] + offset
                    iov[j].iov_len = stride - offset
                    msgs[j].msg_hdr.msg_name = &addrs.addrs[first + j]
                    msgs[j].msg_hdr.msg_namelen = _ADDR_LEN
                    msgs[j].msg_hdr.msg_iov = &iov[j]
                    msgs[j].msg_hdr.msg_iovlen = 1
                # One call normally; a second only when the first filled its request (the
                # kernel takes at most UIO_MAXIOV messages per call).
                while got < n:
                    chunk = n - got
                    if chunk > _UIO_MAXIOV:
                        chunk = _UIO_MAXIOV
                    r = recvmmsg(fd, msgs + got, <unsigned int>chunk, MSG_DONTWAIT, NULL)
                    if r < 0:
                        if errno == EINTR:
                            continue
                        err = errno
                        break
                    for j in range(got, got + r):
                        lens[first + j] = <uint32_t>(offset + msgs[j].msg_len)
                        if msgs[j].msg_hdr.msg_namelen == 0:     # unnamed sender (AF_UNIX)
                            addrs.addrs[first + j].sin6_family = 0
                        if msgs[j].msg_hdr.msg_flags & MSG_TRUNC:
                            stat[first + j] = SLOT_TOO_BIG
                        else:
                            stat[first + j] = SLOT_OK
                    got += r
                    if r < chunk:
                        break
        finally:
            free(msgs)
            free(iov)
        batch.count = first + got
        if got == 0 and err != 0 and err != EAGAIN and err != EWOULDBLOCK:
            raise OSError(err, _strerror(err))
        return got
    finally:
        _close_slots(&sl)


cdef enum:
    _GRO_BUF_LEN = 65536        # a coalesced UDP payload is at most 65535 bytes


cdef class UdpGroReceiver:
    """recvmmsg for a UDP socket with UDP_GRO enabled (setsockopt(SOL_UDP, UDP_GRO, 1), Linux
    >= 5.0): the kernel may hand over a run of datagrams from one source as one coalesced
    buffer; receive() cuts it back into datagrams, one per batch slot. Owns `messages` bounce
    buffers of 64 KiB and the datagrams received but not yet delivered (a run that did not
    fit the batch), which the next receive() delivers first."""
    cdef uint8_t* bufs
    cdef mmsghdr* msgs
    cdef iovec* iov
    cdef sockaddr_in6* names
    cdef uint8_t* ctrl
    cdef size_t* segs
    cdef readonly Py_ssize_t messages
    cdef Py_ssize_t received      # messages in the bounce buffers
    cdef Py_ssize_t cur           # the one being delivered
    cdef size_t pos               # how far into it

    def __cinit__(self, Py_ssize_t messages=8):
        if messages < 1:
            raise ValueError("UdpGroReceiver needs at least one message buffer")
        self.messages = messages
        self.bufs = <uint8_t*>calloc(messages, _GRO_BUF_LEN)
        self.msgs = <mmsghdr*>calloc(messages, sizeof(mmsghdr))
        self.iov = <iovec*>calloc(messages, sizeof(iovec))
        self.names = <sockaddr_in6*>calloc(messages, _ADDR_LEN)
        self.ctrl = <uint8_t*>calloc(messages, _CTRL_LEN)
        self.segs = <size_t*>calloc(messages, sizeof(size_t))
        if (self.bufs == NULL or self.msgs == NULL or self.iov == NULL or self.names == NULL
                or self.ctrl == NULL or self.segs == NULL):
            raise MemoryError()

    def __dealloc__(self):
        free(self.bufs); free(self.msgs); free(self.iov); free(self.names); free(self.ctrl)
        free(self.segs)

    @property
    def pending(self):
        """True if datagrams from the last recvmmsg wait for the next receive()."""
        return self.cur < self.received

    cdef Py_ssize_t _deliver(self, uint8_t* buf, uint32_t* lens, uint8_t* stat,
                             sockaddr_in6* addrs, Py_ssize_t stride, size_t offset,
                             Py_ssize_t i, Py_ssize_t end) noexcept nogil:
        # Copy pending datagrams into slots [i, end); returns the next free slot.
        cdef size_t room = stride - offset, total, n
        cdef const uint8_t* src
        while i < end and self.cur < self.received:
            total = self.msgs[self.cur].msg_len
            n = total - self.pos
            if n > self.segs[self.cur]:
                n = self.segs[self.cur]
            src = self.bufs + self.cur * _GRO_BUF_LEN + self.pos
            if n <= room:
                memcpy(buf + i * stride + offset, src, n)
                lens[i] = <uint32_t>(offset + n)
                stat[i] = SLOT_OK
            else:
                memcpy(buf + i * stride + offset, src, room)
                lens[i] = <uint32_t>stride
                stat[i] = SLOT_TOO_BIG
            addrs[i] = self.names[self.cur]
            i += 1
            self.pos += n
            if self.pos >= total:        # also ends a zero-length datagram
                self.cur += 1
                self.pos = 0
        return i

    def receive(self, int fd, batch, UdpAddresses addrs not None, size_t offset=0,
                Py_ssize_t max_packets=-1):
        """Like recv_burst: datagrams into batch slots batch.count on, sources into addrs,
        status OK (or TOO_BIG if larger than the slot room), at most one recvmmsg per call.
        Returns the number delivered; 0 if nothing was waiting."""
        cdef _Slots sl
        cdef uint8_t* buf
        cdef uint32_t* lens
        cdef uint8_t* stat
        cdef Py_ssize_t stride = batch.slot_size
        cdef Py_ssize_t first = batch.count
        cdef Py_ssize_t end = batch.capacity
        cdef Py_ssize_t i, j, want
        cdef int r = 0, err = 0
        cdef cmsghdr* c
        _open_slots(batch, &sl)
        buf, lens, stat = sl.buf, sl.lens, sl.stat
        try:
            _check_offset(offset, stride)
            if max_packets >= 0 and first + max_packets < end:
                end = first + max_packets
            if end > addrs.capacity:
                raise ValueError(f"batch slots up to {end} but only {addrs.capacity} addresses")
            with nogil:  # batch pinned by _open_slots, addrs by the argument, bounce by self
                # first what is left over from the last call, then at most one recvmmsg
                i = self._deliver(buf, lens, stat, addrs.addrs, stride, offset, first, end)
                if i < end and self.cur >= self.received:
                    # each message yields at least one datagram: ask for no more than fit
                    want = end - i
                    if want > self.messages:
                        want = self.messages
                    for j in range(want):
                        self.iov[j].iov_base = self.bufs + j * _GRO_BUF_LEN
                        self.iov[j].iov_len = _GRO_BUF_LEN
                        memset(&self.msgs[j], 0, sizeof(mmsghdr))
                        self.msgs[j].msg_hdr.msg_name = &self.names[j]
                        self.msgs[j].msg_hdr.msg_namelen = _ADDR_LEN
                        self.msgs[j].msg_hdr.msg_iov = &self.iov[j]
                        self.msgs[j].msg_hdr.msg_iovlen = 1
                        self.msgs[j].msg_hdr.msg_control = self.ctrl + j * _CTRL_LEN
                        self.msgs[j].msg_hdr.msg_controllen = _CTRL_LEN
                    while True:
                        r = recvmmsg(fd, self.msgs, <unsigned int>want, MSG_DONTWAIT, NULL)
                        if r < 0 and errno == EINTR:
                            continue
                        break
                    if r < 0:
                        err = errno
                        r = 0
                    for j in range(r):
                        # no UDP_GRO control message: a plain datagram, one segment
                        self.segs[j] = self.msgs[j].msg_len
                        c = CMSG_FIRSTHDR(&self.msgs[j].msg_hdr)
                        while c != NULL:
                            if c.cmsg_level == SOL_UDP and c.cmsg_type == UDP_GRO:
                                # the segment size, as an int
                                self.segs[j] = (<int*>CMSG_DATA(c))[0]
                            c = CMSG_NXTHDR(&self.msgs[j].msg_hdr, c)
                        if self.segs[j] == 0 and self.msgs[j].msg_len:
                            self.segs[j] = self.msgs[j].msg_len
                        if self.msgs[j].msg_hdr.msg_namelen == 0:
                            self.names[j].sin6_family = 0
                    self.received = r
                    self.cur = 0
                    self.pos = 0
                    i = self._deliver(buf, lens, stat, addrs.addrs, stride, offset, i, end)
            batch.count = i
            if i == first and err != 0 and err != EAGAIN and err != EWOULDBLOCK:
                raise OSError(err, _strerror(err))
            return i - first
        finally:
            _close_slots(&sl)


cdef inline socklen_t _addr_len(const void* a) noexcept nogil:
    if (<const sockaddr*>a).sa_family == AF_INET:
        return sizeof(sockaddr_in)
    return sizeof(sockaddr_in6)


cdef inline bint _ends_burst(int e) noexcept nogil:
    # errors about the socket rather than one datagram: a full buffer, a dead fd
    return e == EAGAIN or e == EWOULDBLOCK or e == ENOBUFS or e == EBADF


cdef tuple _send(int fd, batch, sockaddr_in6* addrs, bint one_dest, bint connected,
                 bint gso, Py_ssize_t start, Py_ssize_t stop, size_t offset):
    # sendmmsg() the OK slots of [start, stop): to addrs[i] for slot i, or to addrs[0] for
    # all if one_dest, or to the connected peer. Returns (sent, errno of the first failure).
    # gso (one destination only): each run of consecutive OK slots of one size (the run's
    # last may be shorter) goes out as one UDP_SEGMENT super-datagram that the kernel (or the
    # NIC) cuts into the same datagrams. A run the kernel refuses is resent one datagram at a
    # time, so per-datagram errors (EMSGSIZE) are reported as without gso.
    cdef _Slots sl
    cdef uint8_t* buf
    cdef uint32_t* lens
    cdef uint8_t* stat
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t i, j, k, m = 0, g = 0, done = 0, sent = 0, chunk
    cdef size_t n, seg = 0, total = 0
    cdef int r, e, first_err = 0
    cdef bint open_run = False, stopped = False
    cdef mmsghdr* msgs
    cdef iovec* iov
    cdef Py_ssize_t* slot
    cdef Py_ssize_t* first_iov
    cdef uint8_t* ctrl = NULL
    cdef cmsghdr* c
    cdef msghdr one
    gso = gso and one_dest
    _open_slots(batch, &sl)
    buf, lens, stat = sl.buf, sl.lens, sl.stat
    try:
        _check_offset(offset, stride)
        stop = _clamp_stop(stop, batch.count)
        if start < 0:
            start = 0
        if stop <= start:
            return 0, 0
        msgs = <mmsghdr*>calloc(stop - start, sizeof(mmsghdr))
        iov = <iovec*>calloc(stop - start, sizeof(iovec))
        slot = <Py_ssize_t*>calloc(stop - start, sizeof(Py_ssize_t))
        first_iov = <Py_ssize_t*>calloc(stop - start + 1, sizeof(Py_ssize_t))
        if gso:
            ctrl = <uint8_t*>calloc(stop - start, _CTRL_LEN)
        if (msgs == NULL or iov == NULL or slot == NULL or first_iov == NULL
                or (gso and ctrl == NULL)):
            free(msgs); free(iov); free(slot); free(first_iov); free(ctrl)
            raise MemoryError()
        try:
            with nogil:  # buf/lens/stat pinned by _open_slots, addrs by the caller
                # group the OK slots into messages: iov[first_iov[g] : first_iov[g + 1]] is
                # message g, one datagram each unless gso makes runs
                for i in range(start, stop):
                    if stat[i] != SLOT_OK:
                        continue
                    if lens[i] < offset:       # shorter than its headroom: not a datagram
                        stat[i] = SLOT_EMPTY
                        continue
                    n = lens[i] - offset
                    if not (open_run and n > 0 and n <= seg and total + n <= _GSO_MAX_BYTES
                            and m - first_iov[g - 1] < _GSO_MAX_SEGMENTS):
                        first_iov[g] = m
                        g += 1
                        seg = n
                        total = 0
                        open_run = gso and n > 0  # a zero-length datagram cannot be a segment
                    elif n < seg:
                        open_run = False      # only a run's last segment may be shorter
                    total += n
                    iov[m].iov_base = <void*>(&buf[i * stride] + offset)
                    iov[m].iov_len = n
                    slot[m] = i
                    m += 1
                first_iov[g] = m
                for k in range(g):
                    if not connected:
                        msgs[k].msg_hdr.msg_name = (&addrs[0] if one_dest
                                                    else &addrs[slot[first_iov[k]]])
                        msgs[k].msg_hdr.msg_namelen = _addr_len(msgs[k].msg_hdr.msg_name)
                    msgs[k].msg_hdr.msg_iov = &iov[first_iov[k]]
                    msgs[k].msg_hdr.msg_iovlen = first_iov[k + 1] - first_iov[k]
                    if msgs[k].msg_hdr.msg_iovlen > 1:
                        msgs[k].msg_hdr.msg_control = ctrl + k * _CTRL_LEN
                        msgs[k].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
                        c = CMSG_FIRSTHDR(&msgs[k].msg_hdr)
                        c.cmsg_level = SOL_UDP
                        c.cmsg_type = UDP_SEGMENT
                        c.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                        (<uint16_t*>CMSG_DATA(c))[0] = <uint16_t>iov[first_iov[k]].iov_len
                # sendmmsg stops at the first message that fails; it reports that error only
                # when it is the first of the call. Skip a datagram the network refuses
                # (marking its slot) and go on; a full buffer (EAGAIN/ENOBUFS) ends the burst.
                while done < g and not stopped:
                    chunk = g - done
                    if chunk > _UIO_MAXIOV:
                        chunk = _UIO_MAXIOV
                    r = sendmmsg(fd, msgs + done, <unsigned int>chunk, MSG_DONTWAIT)
                    if r > 0:
                        sent += first_iov[done + r] - first_iov[done]
                        done += r
                        continue
                    if r == 0:
                        break
                    e = errno
                    if e == EINTR:
                        continue
                    if _ends_burst(e):
                        if first_err == 0:
                            first_err = e
                        break
                    if msgs[done].msg_hdr.msg_iovlen == 1:     # a lone datagram failed
                        if first_err == 0:
                            first_err = e
                        stat[slot[first_iov[done]]] = SLOT_TOO_BIG if e == EMSGSIZE else SLOT_EMPTY
                        done += 1
                        continue
                    # the kernel refused a super-datagram: resend the run datagram by datagram
                    one = msgs[done].msg_hdr
                    one.msg_control = NULL
                    one.msg_controllen = 0
                    one.msg_iovlen = 1
                    j = first_iov[done]
                    while j < first_iov[done + 1]:
                        one.msg_iov = &iov[j]
                        if sendmsg(fd, &one, MSG_DONTWAIT) >= 0:
                            sent += 1
                        else:
                            e = errno
                            if e == EINTR:
                                continue
                            if first_err == 0:
                                first_err = e
                            if _ends_burst(e):
                                stopped = True
                                break
                            stat[slot[j]] = SLOT_TOO_BIG if e == EMSGSIZE else SLOT_EMPTY
                        j += 1
                    done += 1
        finally:
            free(msgs); free(iov); free(slot); free(first_iov); free(ctrl)
        return sent, first_err
    finally:
        _close_slots(&sl)


def send_burst(int fd, batch, UdpAddresses addrs not None, Py_ssize_t start=0,
               Py_ssize_t stop=-1, size_t offset=0):
    """sendmmsg() bytes [offset, lengths[i]) of each OK slot in [start, stop) (stop -1:
    batch.count) from non-blocking UDP socket `fd` to addrs slot i; other slots are skipped.
    Returns (sent, errno): errno is 0, or that of the first datagram that failed. A datagram
    refused by the network is marked (status TOO_BIG for EMSGSIZE, the PMTU signal; EMPTY
    otherwise) and the burst goes on; EAGAIN/ENOBUFS (socket buffer full) end the burst and
    mark nothing: the OK slots after the `sent` sent ones were not sent."""
    cdef Py_ssize_t end = _clamp_stop(stop, batch.count)
    if end > addrs.capacity:
        raise ValueError(f"batch slots up to {end} but only {addrs.capacity} addresses")
    return _send(fd, batch, addrs.addrs, False, False, False, start, stop, offset)


def send_to_one(int fd, batch, host, int port, Py_ssize_t start=0, Py_ssize_t stop=-1,
                size_t offset=0, *, bint map_v4=False, bint gso=False):
    """send_burst with one destination (host, port) for every slot; host None sends on a
    connected socket. map_v4: send to an IPv4 host through a dual-stack AF_INET6 socket.
    gso: send runs of equal-size datagrams as UDP_SEGMENT super-datagrams (Linux >= 4.18);
    same results and statuses, fewer trips through the stack."""
    cdef sockaddr_in6 a
    if host is not None:
        _parse_addr(host, port, map_v4, &a)
    return _send(fd, batch, &a, True, host is None, gso, start, stop, offset)


def _strerror(int err):
    import os
    return os.strerror(err)
