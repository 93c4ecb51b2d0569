"""One SPTPS session, sans-I/O: bytes in, records and events out; records in, bytes out.

Owns the handshake state, the keys of both directions, the sequence counters and (datagram
mode) the replay window. Follows tinc 1.1's src/sptps.c byte for byte on the wire; where tinc
leaves a session in a muddled state after an error, this one stays in a defined state (see
DEVIATION notes). No I/O, no clock, no global randomness: `rng(n)` is injected. Not
thread-safe.

Use:
    s = SptpsSession(initiator=True, datagram=False, label=..., my_key=..., peer_public=...,
                     rng=os.urandom)
    s.start()                          # queues our KEX
    events = s.receive(data)           # RecordReceived / HandshakeCompleted
    s.send_record(0, b"hello")         # queues an encrypted record
    for type, data in s.pop_outgoing(): transport.send(data)

Rekeys in datagram mode (DEVIATION, tolerate_reordering=True, the default; nothing on the wire
changes). tinc's UDP tunnels carry handshake records over the meta mesh and data over UDP, so
records of a rekey overtake each other. tinc fails each such record; this session instead:
  * keeps the previous receive key after the switch and tries it for a datagram that fails
    under the current key, if its seqno lies before the switch (records the peer sealed before
    its ACK). Records under either key share one replay window (datagram sequence numbers
    continue across rekeys), so none is delivered twice. The previous key is dropped once the
    window has moved `span` numbers past the switch (no record under it could pass the replay
    check any more; span = the window size in numbers, 1024 without a window), or at the next
    switch. A count- or first-new-record-based bound would either drop it while late records
    can still be accepted or keep it longer than useful; the window bound is exact.
  * in AWAIT_ACK, tries the derived-but-not-installed new key: the peer seals with it only after
    sending its ACK, so an authentic record under it is proof of that ACK. The session completes
    the rekey there (HandshakeCompleted) and swallows the real ACK once it arrives late.
  * holds one handshake record that arrives one step early (the peer's SIG before its KEX, its
    ACK before its SIG: each pair is sent back to back) and processes it right after the
    record it overtook. Only authentic records reach this (a rekey runs under the old key).
What still ends stuck: a lost handshake record (no retransmission in SPTPS). `handshake_pending`
and `state` show it; the owner's watchdog (tincapp.datapath.restart) restarts the session.
"""
import enum
from dataclasses import dataclass

from tincapp.accel import record as _record
from tincapp.accel import replay as _replay
from tincapp.datapath.batch import SLOT_EMPTY, SLOT_OK
from tincapp.errors import (DecryptError, HandshakeError, HandshakeOrderError, ReplayError,
                            SequenceExhaustedError, SptpsError, WireError)
from tincapp.sptps import crypto, wire

# DEVIATION: tinc's default SPTPS replay window is 16 bytes (128 packets). Batched, multi-queue
# sending reorders whole 64-packet bursts: bench/bench_replay.py drops 5-53% of good packets at
# 16 bytes when a queue lags 4+ bursts, 7.6% at 64 bytes under its stress model, none at 128.
# Larger buys nothing and costs more after a long loss (size/4 packets dropped to resync: 32
# here). The window is local; the wire does not change.
DEFAULT_REPLAY_WINDOW = 128

# A nonce must never repeat under one key. The nonce is the 32-bit sequence number, which tinc
# lets wrap; we start a rekey after REKEY_AFTER_RECORDS records under one key and refuse to
# send once MAX_RECORDS_PER_KEY is reached (the margin leaves room for the rekey to finish).
MAX_RECORDS_PER_KEY = (1 << 32) - (1 << 16)
REKEY_AFTER_RECORDS = 1 << 31
# The last records of a key's budget are kept for handshake records, so that a rekey can still
# finish (KEX, SIG and ACK go out under the old key) when data used up the rest.
HANDSHAKE_RESERVE = 16
# How many sequence numbers past a key switch the previous key is kept when the replay window
# is disabled (size 0); with a window, its size in numbers.
PREVIOUS_KEY_SPAN_NO_WINDOW = 1024


class State(enum.Enum):
    """What the session awaits. The values are tinc's SPTPS_* state numbers."""
    NEW = 0             # start() not yet called (tinc: "Invalid session state zero")
    AWAIT_KEX = 1       # our KEX is out, the peer's is awaited        (tinc: SPTPS_KEX)
    IDLE = 2            # keys in place; a KEX starts a rekey          (tinc: SPTPS_SECONDARY_KEX)
    AWAIT_SIG = 3       # both KEX exchanged, the peer's SIG awaited   (tinc: SPTPS_SIG)
    AWAIT_ACK = 4       # new keys derived, the peer's ACK awaited     (tinc: SPTPS_ACK)
    FAILED = 5          # a stream session after an error: unusable (tinc closes the connection)


@dataclass(slots=True)
class RecordReceived:
    # Not frozen: one is made per received record, and a frozen dataclass costs 0.5 us to
    # build (object.__setattr__ per field) against 0.15 us for this. Treat it as read-only.
    type: int
    data: bytes


@dataclass(frozen=True)
class HandshakeCompleted:
    """New keys are in use for receiving. rekey=False for the first handshake."""
    rekey: bool


class SptpsSession:
    """An SPTPS endpoint. Initiator and responder roles never change, also across rekeys."""

    def __init__(self, *, initiator, datagram, label, my_key, peer_public, rng,
                 replay_window=DEFAULT_REPLAY_WINDOW,
                 max_records_per_key=MAX_RECORDS_PER_KEY,
                 rekey_after_records=REKEY_AFTER_RECORDS, tolerate_reordering=True):
        if len(peer_public) != 32:
            raise ValueError("peer public key must be 32 bytes")
        if not 0 < rekey_after_records < max_records_per_key - HANDSHAKE_RESERVE:
            raise ValueError("need 0 < rekey_after_records < max_records_per_key - "
                             f"{HANDSHAKE_RESERVE}")
        self.initiator = bool(initiator)
        self.datagram = bool(datagram)
        self.label = bytes(label)
        self._my_key = my_key
        self._peer_public = bytes(peer_public)
        self._rng = rng
        self._max_records_per_key = max_records_per_key
        self._rekey_after_records = rekey_after_records
        self.tolerate_reordering = bool(tolerate_reordering) and self.datagram

        self.state = State.NEW
        self.out_encrypted = False     # tinc: outstate
        self.in_encrypted = False      # tinc: instate
        self._out_key = None           # accel.record.RecordKey
        self._in_key = None
        self.out_seqno = 0             # next sequence number we send (32-bit, wraps)
        self._out_key_records = 0      # records sent under the current out key
        self._my_kex = None            # our KEX body while a handshake is running
        self._peer_kex = None
        self._ecdh = None              # our ephemeral key for the running handshake
        self._new_keys = None          # (send, receive) RecordKeys derived, not yet installed

        # Receive side. Stream: implicit counter plus a buffer for a partial record.
        # Datagram: the replay window owns in_seqno.
        self._stream_in_seqno = 0
        self._inbuf = bytearray()
        self.replay = _replay.ReplayWindow(replay_window) if self.datagram else None
        self._outgoing = []

        # Datagram rekeys (see the module docstring): the receive key before the last switch,
        # the first sequence number after it, and whether the peer's ACK is still to come
        # (we switched on an authentic record under the new key instead).
        self._prev_in_key = None
        self._prev_boundary = 0
        self._prev_span = 0
        if self.datagram:
            self._prev_span = replay_window * 8 if replay_window else PREVIOUS_KEY_SPAN_NO_WINDOW
        self._ack_outstanding = False
        self._rx_seqno = 0             # seqno of the handshake record being processed
        self._held = None              # one handshake body that arrived a step early
        self.previous_key_records = 0  # records accepted under the previous key
        self.early_records = 0         # records accepted under the new key before the ACK
        self.held_records = 0          # handshake records held because they came early

    # --- properties ------------------------------------------------------------------

    @property
    def in_seqno(self):
        """Next expected incoming sequence number."""
        return self.replay.inseqno if self.datagram else self._stream_in_seqno

    @property
    def handshake_done(self):
        """True once application records can be sent (the first handshake completed)."""
        return self.out_encrypted

    @property
    def handshake_pending(self):
        """True while a handshake (the first one or a rekey) has not completed: the session
        waits for a KEX, SIG or ACK. A watchdog uses it: SPTPS never retransmits, so a lost
        handshake record leaves this True until the session is replaced."""
        return self.state is not State.IDLE

    @property
    def has_previous_key(self):
        return self._prev_in_key is not None

    def __repr__(self):
        role = "initiator" if self.initiator else "responder"
        mode = "datagram" if self.datagram else "stream"
        return f"<SptpsSession {role} {mode} {self.state.name} out={self.out_seqno}>"

    # --- output ----------------------------------------------------------------------

    def pop_outgoing(self):
        """Everything queued for the transport since the last call, as (record_type, bytes).
        Stream mode: bytes to append to the stream. Datagram mode: one datagram each. tinc sends
        UDP-tunnel handshake records (type 128) over the meta connection instead of UDP."""
        out, self._outgoing = self._outgoing, []
        return out

    def start(self):
        """Called once by the owner: send our KEX (both sides send one immediately)."""
        if self.state is not State.NEW:
            raise SptpsError("session already started")
        self.state = State.AWAIT_KEX
        self._send_kex()

    def send_record(self, type, data):
        """Queue one application record (type 0..127)."""
        self._outgoing.append((type, self._seal_application(type, data)))
        self._maybe_rekey()

    def seal_record(self, type, data):
        """The bytes of one application record, for callers that send at once. Send them,
        then drain pop_outgoing(): an automatic rekey may have queued a KEX after it."""
        out = self._seal_application(type, data)
        self._maybe_rekey()
        return out

    def _seal_application(self, type, data):
        if not self.out_encrypted:
            raise SptpsError("Handshake phase not finished yet")
        if not 0 <= type <= wire.APPLICATION_TYPE_MAX:
            raise SptpsError(f"Invalid application record type {type}")
        return self._seal(type, data)

    def seal_batch(self, src, dst, headroom=0, src_offset=0, sealable=None):
        """Seal the OK slots of `src` (types in src.types, data from src_offset on) into
        datagram records in dst, after `headroom` bytes left to the caller. dst.status tells
        per slot what happened. `sealable`: the number of OK slots, if the caller counted them
        and made sure every type is an application type (saves two passes over the burst)."""
        if not self.datagram:
            raise SptpsError("seal_batch needs a datagram session")
        if not self.out_encrypted:
            raise SptpsError("Handshake phase not finished yet")
        if sealable is None:
            for i in range(src.count):
                if src.types[i] > wire.APPLICATION_TYPE_MAX:
                    raise SptpsError(f"Invalid application record type {src.types[i]}")
            sealable = sum(1 for i in range(src.count) if src.status[i] == SLOT_OK)
        self._reserve(sealable, HANDSHAKE_RESERVE)
        nxt = _record.seal_batch(self._out_key, self.out_seqno, src, dst, headroom, src_offset)
        self.out_seqno = nxt & 0xFFFFFFFF
        self._out_key_records += sealable
        self._maybe_rekey()

    def force_kex(self):
        """Start a rekey (tinc's sptps_force_kex): only when idle after a handshake."""
        if not self.out_encrypted or self.state is not State.IDLE:
            raise SptpsError("Cannot force KEX in current state")
        self.state = State.AWAIT_KEX
        self._send_kex()

    def _seal(self, type, data):
        if len(data) > wire.MAX_RECORD_DATA:
            raise SptpsError(f"record of {len(data)} bytes exceeds {wire.MAX_RECORD_DATA}")
        if self.out_encrypted:
            self._reserve(1, 0 if type == wire.HANDSHAKE else HANDSHAKE_RESERVE)
        seqno = self.out_seqno
        self.out_seqno = (seqno + 1) & 0xFFFFFFFF
        if not self.out_encrypted:
            if self.datagram:
                return seqno.to_bytes(4, "big") + bytes((type,)) + data
            return len(data).to_bytes(2, "big") + bytes((type,)) + data
        self._out_key_records += 1
        if self.datagram:
            return _record.seal_datagram(self._out_key, seqno, type, data)
        return _record.seal_stream(self._out_key, seqno, type, data)

    def _reserve(self, n, keep):
        # DEVIATION: tinc lets the sequence number wrap under one key (nonce reuse). We refuse.
        left = self._max_records_per_key - keep - self._out_key_records
        if n > left:
            raise SequenceExhaustedError(
                f"only {left} records left under the current key; a rekey must finish first")

    def _maybe_rekey(self):
        # Called after a record is queued, so that the KEX follows it in sequence order. A
        # handshake already under way installs a fresh send key anyway.
        if self._out_key_records >= self._rekey_after_records and self.state is State.IDLE:
            self.force_kex()

    def _queue_handshake(self, body):
        self._outgoing.append((wire.HANDSHAKE, self._seal(wire.HANDSHAKE, body)))

    # --- handshake -------------------------------------------------------------------

    def _send_kex(self):
        if self._my_kex is not None:
            raise HandshakeError("a KEX of ours is already pending")
        # COMPAT: tinc draws the nonce first, then the ephemeral key's seed.
        nonce = self._rng(wire.KEX_NONCE_LEN)
        self._ecdh = crypto.EcdhKey.from_seed(self._rng(32))
        self._my_kex = bytes((wire.SPTPS_VERSION,)) + nonce + self._ecdh.public
        self._queue_handshake(self._my_kex)

    def _send_sig(self):
        flag = b"\x01" if self.initiator else b"\x00"
        msg = flag + self._my_kex + self._peer_kex + self.label
        self._queue_handshake(self._my_key.sign(msg))

    def _receive_handshake(self, body):
        """Called for every authentic type-128 record; returns the events it causes."""
        if self.tolerate_reordering and self.in_encrypted and self._held is None:
            # DEVIATION: during a datagram rekey the peer sends SIG right after its KEX (when
            # it answers our KEX) and ACK right after its SIG; each may overtake the other.
            # tinc fails the early one and ends stuck; we hold it for one step.
            if (self.state is State.AWAIT_KEX and len(body) == wire.SIG_LEN) or \
                    (self.state is State.AWAIT_SIG and len(body) == wire.ACK_LEN):
                self._held = bytes(body)
                self.held_records += 1
                return []
        events = self._handshake_step(body)
        while self._held is not None and self._held_fits():
            body, self._held = self._held, None
            events = events + self._handshake_step(body)
        return events

    def _held_fits(self):
        n = len(self._held)
        return (self.state is State.AWAIT_SIG and n == wire.SIG_LEN) or \
            (self.state is State.AWAIT_ACK and n == wire.ACK_LEN)

    def _handshake_step(self, body):
        """One handshake record through the state machine."""
        if self.state is State.IDLE:
            # The peer starts a rekey: answer with our own KEX first.
            # DEVIATION: tinc stays in SECONDARY_KEX if the received KEX then turns out bad,
            # with our KEX pending, and can never send another; we move to AWAIT_KEX, which
            # is what that situation is.
            self.state = State.AWAIT_KEX
            self._send_kex()
        if self.state is State.AWAIT_KEX:
            self._receive_kex(body)                     # consumes KEX; initiator emits SIG
            self.state = State.AWAIT_SIG
            return []
        if self.state is State.AWAIT_SIG:
            self._receive_sig(body)                     # consumes SIG; emits SIG (responder), ACK
            if self.out_encrypted:
                self.state = State.AWAIT_ACK            # rekey: the peer's ACK switches in-key
                return []
            self.out_encrypted = True                   # first handshake: both keys at once
            self._install_in_key(None)
            self.state = State.IDLE
            return [HandshakeCompleted(rekey=False)]
        if self.state is State.AWAIT_ACK:
            if len(body) != wire.ACK_LEN:                # consumes ACK
                raise HandshakeError("Invalid ACK record length")
            self._install_in_key((self._rx_seqno + 1) & 0xFFFFFFFF)
            self.state = State.IDLE
            return [HandshakeCompleted(rekey=True)]
        raise SptpsError(f"Invalid session state {self.state.value}")

    def _receive_kex(self, body):
        if len(body) != wire.KEX_LEN:
            raise HandshakeError("Invalid KEX record length")
        # COMPAT: tinc 1.1 head rejects a non-zero version; 1.1pre18 ignored it.
        if body[wire.KEX_VERSION_OFFSET] != wire.SPTPS_VERSION:
            raise HandshakeError(f"Received incorrect version {body[0]}")
        if self._peer_kex is not None:
            raise HandshakeError("Received a second KEX message before first has been processed")
        self._peer_kex = bytes(body)
        if self.initiator:
            self._send_sig()

    def _receive_sig(self, body):
        if len(body) != wire.SIG_LEN:
            # COMPAT: tinc's message says KEX here too.
            raise HandshakeError("Invalid KEX record length")
        flag = b"\x00" if self.initiator else b"\x01"   # the peer's role
        msg = flag + self._peer_kex + self._my_kex + self.label
        if not crypto.verify(self._peer_public, msg, bytes(body)):
            raise HandshakeError("Failed to verify SIG record")
        shared = self._ecdh.shared_secret(
            self._peer_kex[wire.KEX_ECDH_OFFSET:wire.KEX_ECDH_OFFSET + wire.ECDH_PUBLIC_LEN])
        if self.initiator:
            nonces = (self._my_kex[1:33], self._peer_kex[1:33])
        else:
            nonces = (self._peer_kex[1:33], self._my_kex[1:33])
        seed = wire.KEY_EXPANSION + nonces[0] + nonces[1] + self.label
        material = crypto.prf(shared, seed, wire.KEY_MATERIAL_LEN)
        key0 = _record.RecordKey(material[:wire.KEY_LEN])     # responder -> initiator
        key1 = _record.RecordKey(material[wire.KEY_LEN:])     # initiator -> responder
        self._new_keys = (key1, key0) if self.initiator else (key0, key1)
        if not self.initiator:
            self._send_sig()
        self._my_kex = self._peer_kex = self._ecdh = None
        if self.out_encrypted:
            self._queue_handshake(b"")        # ACK, still under the old send key
        # Everything we send from here on uses the new key.
        self._out_key = self._new_keys[0]
        self._out_key_records = 0

    def _install_in_key(self, boundary):
        """Switch the receive key. `boundary` (datagram rekeys): the first sequence number the
        peer may have sealed with the new key (the ACK's plus one, or that of the first record
        found under the new key); everything before it was sealed with the old key."""
        if self.tolerate_reordering and self.in_encrypted and boundary is not None:
            self._prev_in_key = self._in_key
            self._prev_boundary = boundary
        else:
            self._prev_in_key = None
        self._ack_outstanding = False
        self._held = None
        self._in_key = self._new_keys[1]
        self._new_keys = None
        self.in_encrypted = True

    # --- datagram rekeys: other keys for records that fail the current one -------------------

    def _other_keys(self, tried, seqno):
        """(key, is_new) pairs to try for an authentic-looking datagram `seqno` that failed
        under `tried`, best guess first."""
        keys = []
        if self._in_key is not tried:
            keys.append((self._in_key, False))      # switched during this burst
        prev = self._prev_in_key
        if prev is not None and prev is not tried and \
                0 < ((self._prev_boundary - seqno) & 0xFFFFFFFF) <= self._prev_span:
            keys.append((prev, False))
        if self.state is State.AWAIT_ACK and self._new_keys is not None:
            keys.append((self._new_keys[1], True))
        return keys

    def _switch_early(self, seqno):
        """Called when a record under the new key arrives before the peer's ACK. The peer
        seals with the new key only after sending that ACK, so the record proves it."""
        self._install_in_key(seqno)
        self.state = State.IDLE
        self._ack_outstanding = True
        self.early_records += 1
        return HandshakeCompleted(rekey=True)

    def _maybe_forget_previous_key(self):
        # No record under the previous key can pass the replay check once the window has
        # moved span numbers past the switch; the late ACK we switched without still can.
        if ((self.replay.inseqno - self._prev_boundary) & 0xFFFFFFFF) >= self._prev_span \
                and not self._ack_outstanding:
            self._prev_in_key = None

    def _receive_under_other_key(self, datagram):
        """Called when a datagram failed to authenticate under the current receive key."""
        seqno = int.from_bytes(datagram[:4], "big")
        for key, is_new in self._other_keys(self._in_key, seqno):
            try:
                seqno, type, body = _record.open_datagram(key, datagram)
            except DecryptError:
                continue
            if is_new:
                verdict = self.replay.check(seqno, False)
                if verdict != SLOT_OK:
                    raise self._replay_error(seqno, verdict)
                events = [self._switch_early(seqno)]
                self.replay.check(seqno, True)
                self._rx_seqno = seqno
                return events + self._dispatch(type, body)
            if type == wire.HANDSHAKE and len(body) == wire.ACK_LEN and self._ack_outstanding:
                # The ACK we already switched without. It may be older than the window, so the
                # verdict does not matter; the check marks it received for its duplicates.
                self._ack_outstanding = False
                self.replay.check(seqno, True)
                self._maybe_forget_previous_key()
                return []
            verdict = self.replay.check(seqno, True)
            if verdict != SLOT_OK:
                raise self._replay_error(seqno, verdict)
            if type > wire.APPLICATION_TYPE_MAX:
                raise SptpsError(f"Stale record of type {type} under the previous key")
            self.previous_key_records += 1
            return [RecordReceived(type, body)]
        raise DecryptError("failed to decrypt and verify packet")

    def _open_under_other_keys(self, tried, src, dst, start, stop, offset, events):
        """Called after a burst slice [start, stop) was opened under `tried`: give each slot
        that failed authentication a chance under the other keys. Handshake records found
        this way are refused (they travel by the meta mesh, not in UDP bursts). Returns the
        slots opened under the previous key."""
        from tincapp.datapath.batch import SLOT_BAD_TAG, SLOT_BAD_TYPE
        previous = []
        for k in range(start, stop):
            if dst.status[k] != SLOT_BAD_TAG:
                continue
            for key, is_new in self._other_keys(tried, dst.seqnos[k]):
                dst.status[k] = SLOT_OK          # open_batch skips slots not OK (src may be dst)
                _record.open_batch(key, src, dst, k, offset, k + 1)
                if dst.status[k] != SLOT_OK:
                    dst.status[k] = SLOT_BAD_TAG
                    continue
                if dst.types[k] > wire.APPLICATION_TYPE_MAX:
                    dst.status[k] = SLOT_BAD_TYPE
                elif is_new:
                    events.append(self._switch_early(dst.seqnos[k]))
                elif key is self._prev_in_key:
                    previous.append(k)
                break
        return previous

    # --- receiving -------------------------------------------------------------------

    def receive(self, data):
        """Consume bytes from the transport and return the events they cause.
        Stream mode: any number of bytes, partial records are buffered. Datagram mode: exactly
        one datagram. Errors raise SptpsError subclasses; a stream session is FAILED after one,
        a datagram session drops the datagram and keeps its state."""
        if self.datagram:
            return self.receive_datagram(data)
        events = []
        view = memoryview(data)
        while view:
            used, evs = self.receive_stream_record(view)
            events.extend(evs)
            view = view[used:]
        return events

    def receive_stream_record(self, data):
        """Consume at most one stream record from `data`; return (bytes used, events).
        The meta protocol needs this: raw bytes that are not SPTPS may follow a record."""
        if self.state is State.NEW:
            raise SptpsError("Invalid session state zero")
        if self.state is State.FAILED:
            raise SptpsError("session failed earlier")
        buf = self._inbuf
        if not buf and len(data) >= wire.STREAM_HEADER_LEN:
            # Fast path: a whole record at the start of data; open it where it lies.
            need = ((data[0] << 8) | data[1]) + (
                wire.STREAM_OVERHEAD if self.in_encrypted else wire.STREAM_PLAIN_OVERHEAD)
            if len(data) >= need:
                return need, self._receive_stream_body(data[2:need])
        used = 0
        if len(buf) < wire.STREAM_HEADER_LEN:
            take = min(wire.STREAM_HEADER_LEN - len(buf), len(data))
            buf += data[:take]
            used = take
            if len(buf) < wire.STREAM_HEADER_LEN:
                return used, []
        reclen = (buf[0] << 8) | buf[1]
        need = reclen + (wire.STREAM_OVERHEAD if self.in_encrypted else wire.STREAM_PLAIN_OVERHEAD)
        take = min(need - len(buf), len(data) - used)
        buf += data[used:used + take]
        used += take
        if len(buf) < need:
            return used, []
        record = bytes(buf)
        buf.clear()
        return used, self._receive_stream_body(memoryview(record)[2:])

    def _receive_stream_body(self, body):
        """Called with one complete stream record after its length field."""
        seqno = self._stream_in_seqno
        self._stream_in_seqno = (seqno + 1) & 0xFFFFFFFF
        try:
            if self.in_encrypted:
                type, data = _record.open_stream(self._in_key, seqno, body)
            else:
                type, data = body[0], bytes(body[1:])
            return self._dispatch(type, data)
        except (SptpsError, WireError):
            self.state = State.FAILED
            raise

    def receive_datagram(self, datagram):
        """Consume one datagram; return its events. Raises WireError (short), DecryptError,
        ReplayError or HandshakeError; the datagram is then dropped."""
        if self.state is State.NEW:
            raise SptpsError("Invalid session state zero")
        n = len(datagram)
        if not self.in_encrypted:
            if n < wire.DATAGRAM_PLAIN_OVERHEAD:
                raise WireError("Received short packet")
            seqno = int.from_bytes(datagram[:4], "big")
            # COMPAT: the plaintext first handshake must arrive exactly in order, and tinc
            # advances the counter before it looks at the type.
            if seqno != self.replay.inseqno:
                raise HandshakeOrderError(
                    f"Invalid packet seqno: {seqno} != {self.replay.inseqno}")
            self.replay.inseqno = (seqno + 1) & 0xFFFFFFFF
            if datagram[4] != wire.HANDSHAKE:
                raise SptpsError("Application record received before handshake finished")
            self._rx_seqno = seqno
            return self._receive_handshake(bytes(datagram[5:]))
        if n < wire.DATAGRAM_OVERHEAD:
            raise WireError("Received short packet")
        # Authenticate first: forged datagrams never touch the replay window.
        try:
            seqno, type, body = _record.open_datagram(self._in_key, datagram)
        except DecryptError:
            if self.tolerate_reordering and (self._prev_in_key is not None
                                             or self.state is State.AWAIT_ACK):
                return self._receive_under_other_key(datagram)
            raise
        verdict = self.replay.check(seqno, True)
        if verdict != SLOT_OK:
            raise self._replay_error(seqno, verdict)
        if self._prev_in_key is not None:
            self._maybe_forget_previous_key()
        if type > wire.APPLICATION_TYPE_MAX:
            self._rx_seqno = seqno
        return self._dispatch(type, body)

    def verify_datagram(self, datagram):
        """True iff the datagram is authentic and fresh for this session; changes nothing
        (tinc's sptps_verify_datagram, used to identify the sender of a UDP packet)."""
        if not self.in_encrypted or len(datagram) < wire.DATAGRAM_OVERHEAD:
            return False
        seqno = int.from_bytes(datagram[:4], "big")
        if self.replay.check(seqno, False) != SLOT_OK:
            return False
        if _record.verify_datagram(self._in_key, datagram):
            return True
        return self.tolerate_reordering and any(
            _record.verify_datagram(key, datagram) for key, _new in
            self._other_keys(self._in_key, seqno))

    def open_batch(self, src, dst, offset=0, start=0, stop=-1):
        """Open a burst of datagrams (src slots [start, stop), each `offset` bytes into its
        slot) into the same slots of dst. Data
        records are left in dst with status OK; slots that failed carry their SLOT_* status
        (bad tag, replayed, future, short); handshake records are processed in order and
        their slots marked EMPTY. Returns the events (handshake completions, and HandshakeError
        instances for handshake records that failed). Never raises per packet."""
        if not self.datagram or not self.in_encrypted:
            raise SptpsError("open_batch needs a datagram session after its first handshake")
        events = []
        end = src.count if stop < 0 or stop > src.count else stop
        i = max(start, 0)
        # Retrying under other keys needs the source slots intact (not so when opened in place).
        retry = self.tolerate_reordering and src is not dst
        while i < end:
            key = self._in_key
            stop = _record.open_batch(key, src, dst, i, offset, end)
            previous = ()
            if retry and (self._prev_in_key is not None or self.state is State.AWAIT_ACK):
                previous = self._open_under_other_keys(key, src, dst, i, stop, offset, events)
            self.replay.accept_batch(dst, i, stop)
            for k in previous:
                self.previous_key_records += dst.status[k] == SLOT_OK
            if self._prev_in_key is not None:
                self._maybe_forget_previous_key()
            last = stop - 1
            if dst.status[last] == SLOT_OK and dst.types[last] >= wire.HANDSHAKE:
                dst.status[last] = SLOT_EMPTY
                body = bytes(dst.view(last))
                try:
                    if dst.types[last] != wire.HANDSHAKE:
                        raise SptpsError(f"Invalid record type {dst.types[last]}")
                    self._rx_seqno = dst.seqnos[last]
                    events.extend(self._receive_handshake(body))
                except SptpsError as e:
                    events.append(e)
            i = stop
        return events

    def _dispatch(self, type, body):
        if type <= wire.APPLICATION_TYPE_MAX:
            if not self.in_encrypted:
                raise SptpsError("Application record received before handshake finished")
            return [RecordReceived(type, body)]
        if type == wire.HANDSHAKE:
            return self._receive_handshake(body)
        raise SptpsError(f"Invalid record type {type}")

    def _replay_error(self, seqno, verdict):
        from tincapp.datapath.batch import SLOT_FUTURE
        inseqno = self.replay.inseqno
        if verdict == SLOT_FUTURE:
            return ReplayError(f"Packet is {(seqno - inseqno) & 0xFFFFFFFF} seqs in the "
                               f"future, dropped", future=True)
        return ReplayError(f"Received late or replayed packet, seqno {seqno}, last received "
                           f"{inseqno}")
