"""The restart policy of one peer's UDP-tunnel SPTPS session: when to start it over, and why.

tinc 1.1 restarts a peer's tunnel (a new REQ_KEY, we become initiator) on any receive failure
if its last key request is more than 10 s old, and starts over a handshake that has not
finished after 10 s (meta-protocol.md 6.5, 7). This object makes those decisions, and more
careful ones, for one peer. The tunnel core (tincapp.datapath.tunnels) reports what happened
and acts on the returned Decision; this module sends nothing.

Owns: the peer's restart timing (last start, last restart, backoff), its pending-error and
handshake-watchdog deadlines, and its counters (snapshot() for `dump nodes`/`info`/`dump
tunnels`). No I/O, no clock (`now`, monotonic seconds, is an argument), randomness only through
the injected `rng(n)`. Not thread-safe.

The rules, exactly (B = min_interval_s, 10 by default; L = liveness_s; G = grace_s; T =
handshake_timeout_s; W = crossed_window_s):

1. Bound. A restart is allowed at `now` only if now >= S + B, S being the last session start
   of either side (ours, a restart, or the peer's REQ_SPTPS_START: tinc's last_req_key), and
   now >= R + D, R being our last restart and D the current backoff delay (rule 5). Never two
   restarts less than B apart (D >= B). reachability_changed() clears S, R and the backoff
   (COMPAT: tinc zeroes last_req_key; a restart is allowed at once).
2. Grace. For G seconds after any session change (our start, the peer's start, a completed
   handshake or rekey) receive errors are counted (`grace_errors`) and otherwise ignored:
   they are records still in flight under the previous session or key.
3. Liveness (DEVIATION, beyond tinc). A receive error leads to a restart only if the tunnel
   shows no sign of life: no valid record (data or handshake, accepted by the session) from the
   peer in the last L seconds, counting only records of the current session. Otherwise the
   error is counted as suppressed. An outsider who spoofs the peer's address cannot make us
   renegotiate a tunnel that carries the peer's traffic, whatever the rate of its forgeries.
   Exception: an authentic handshake failure ("handshake" kind on the ans_key path, which
   only a mesh member can send) proves the two sessions disagree and restarts as soon as
   rule 1 allows, like tinc.
4. Pending error. An error that may not restart now (rule 1 or 3) stays pending until a valid
   record arrives. next_deadline() is then the first time the restart would be allowed
   (max of rule 1's times and last valid record + L); handle_deadline() restarts if the error
   is still pending. So a stuck tunnel restarts at its first error if rule 1 allows, else as
   soon as it does, without waiting for a later error: its traffic resumes within B plus one
   handshake of the fault (12 s with the defaults, given L <= B).
5. Backoff. Our restarts that do not lead to a completed handshake before the next one form a
   streak n (1 after a restart that follows a completed handshake). The delay before the next
   restart is B for n <= 1 and min(cap, B * 2**(n-1)) * (1 - jitter * u) for larger n, u drawn
   from rng, never below B: 10, 16-20, 32-40, 48-60, 48-60 ... s with the defaults. A completed
   handshake ends the streak. Two peers whose handshakes cannot succeed cost one REQ_KEY each
   per minute at most, and jitter keeps them from synchronising.
6. Watchdog. A handshake (first or rekey) not completed T seconds after it began restarts the
   session ("No key from NAME after 10 seconds, restarting SPTPS"), subject to rule 1, if the
   tunnel was wanted (wanted(), i.e. tinc's try_sptps, or a rekey) since that handshake began:
   like tinc, an unused tunnel is not retried on a timer forever. wanted() also restarts an
   overdue handshake at once.
7. The peer's start. peer_started() is not a restart of ours: it never counts against the
   bound as a restart, but it is a session start (rule 1's S), clears pending errors and begins
   a grace period. We follow it at once, whatever our state, except in a crossing (rule 8).
8. Crossed starts. If the peer's REQ_SPTPS_START arrives while our own initiator handshake,
   started less than W seconds ago, has not completed, the two starts crossed. tinc yields to
   every start, so with tinc on both sides each becomes the responder of a session the other
   dropped and both wait for the 10 s timeout. Here the node whose name sorts first keeps its
   own session and ignores the peer's start (Decision.follow False); the other follows it.
   Why this converges:
     - both tincapp: exactly one side (the lower name) keeps, the other answers its KEX;
     - we are lower, the peer is tinc: we keep, tinc yields to our start (it always does);
     - we are higher, the peer is tinc: we yield and so does tinc; each side's responder then
       receives the other's responder KEX, which fails (seqno 0 again, or a second KEX). An
       error of that kind on the ans_key path within W of our yielding shows that the peer
       yielded too: we restart at once (rule 1's session-start bound does not apply to this one
       restart, the restart bound R + D does) and tinc yields to that start as well. If R + D
       forbids it, the error stays pending (rule 4): no worse than tinc.
9. Logging. Each decision carries at most one log line, in tinc's wording and at tinc's levels
   (3 for "Failed to decode ... restarting SPTPS", 0 for "No key from ..."); suppressed
   restarts are logged at most once per B seconds; single packets are never logged here.

10. Silence (DEVIATION, beyond tinc). A peer that lost its state without anyone noticing
   (killed and restarted with new keys) drops what we send as coming from an unknown source
   and says nothing, so no receive error ever reaches us. When the key is valid, we sent data
   after the last sign of life and nothing valid came from the peer for S seconds
   (silence_s), the Decision asks for one UDP probe (probe=True); a live peer answers it and
   its reply is a valid record. If nothing valid arrives within P seconds (silence_probe_s)
   the silence counts as a receive error of kind "silent" on the udp path, under rules 1-4.
   Forged records are never valid, so a flood cannot fake life or cause silence.

Known limit of rule 3: a tunnel that carries no traffic from the peer at all cannot be told
from a stuck one, so forged records into an idle tunnel still restart it at most once per B
(as tinc does continuously); rule 10's probe makes such a tunnel show its life at least.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tincapp.datapath import batch
from tincapp.errors import (DecryptError, HandshakeError, HandshakeOrderError, ReplayError,
                            WireError)

# Receive paths (meta-protocol.md 7): what the caller passes as `path`.
PATH_UDP = "udp"                  # a UDP datagram (direct or relayed)
PATH_TCP_RAW = "tcp-raw"          # binary SPTPS_PACKET (21) on a meta connection
PATH_REQ_KEY_21 = "req_key-21"    # REQ_KEY subtype SPTPS_PACKET, base64
PATH_ANS_KEY = "ans_key"          # a handshake record in ANS_KEY
META_PATHS = frozenset({PATH_TCP_RAW, PATH_REQ_KEY_21, PATH_ANS_KEY})

# COMPAT: the words tinc logs per path ("Failed to decode %s from %s (%s), restarting SPTPS");
# tinc says "raw TCP packet" for UDP datagrams too.
_WHAT = {PATH_UDP: "raw TCP packet", PATH_TCP_RAW: "raw TCP packet",
         PATH_REQ_KEY_21: "TCP packet", PATH_ANS_KEY: "handshake TCP packet"}

# Error kinds (any string is accepted; these are the ones the tunnel core uses).
KIND_BAD_TAG = "bad tag"
KIND_SHORT = "short"
KIND_REPLAYED = "replayed"
KIND_LATE = "late"
KIND_FUTURE = "future"
KIND_HANDSHAKE = "handshake"
KIND_STATE = "state"
KIND_BAD_TYPE = "bad type"
KIND_DECOMPRESS = "decompress"
KIND_TOO_BIG = "too big"
KIND_NO_SESSION = "no session"
KIND_BAD_DATA = "bad data"       # base64 that decodes to nothing
KIND_UNKNOWN_SOURCE = "unknown source id"
KIND_SILENT = "silent"           # rule 10: we send, the peer answers nothing, not even a probe

LOG_PROTOCOL = 3                 # tinc's DEBUG_PROTOCOL
LOG_ALWAYS = 0


def classify(error) -> str:
    """The kind of an exception raised by SptpsSession.receive_datagram."""
    if isinstance(error, DecryptError):
        return KIND_BAD_TAG
    if isinstance(error, HandshakeOrderError):  # the plaintext first handshake, out of order
        return KIND_HANDSHAKE
    if isinstance(error, ReplayError):
        return KIND_FUTURE if error.future else KIND_REPLAYED
    if isinstance(error, HandshakeError):
        return KIND_HANDSHAKE
    if isinstance(error, WireError):
        return KIND_SHORT
    return KIND_STATE


_SLOT_KINDS = {batch.SLOT_BAD_TAG: KIND_BAD_TAG, batch.SLOT_SHORT: KIND_SHORT,
               batch.SLOT_REPLAYED: KIND_REPLAYED, batch.SLOT_FUTURE: KIND_FUTURE,
               batch.SLOT_TOO_BIG: KIND_TOO_BIG, batch.SLOT_BAD_TYPE: KIND_BAD_TYPE}


def kind_of_slot(status: int) -> Optional[str]:
    """The kind for a PacketBatch slot status after SptpsSession.open_batch (None: not an
    error)."""
    return _SLOT_KINDS.get(status)


@dataclass(frozen=True)
class RestartConfig:
    min_interval_s: float = 10.0         # B: tinc's bound
    handshake_timeout_s: float = 10.0    # T: tinc's "no key after 10 seconds"
    liveness_s: float = 5.0              # L: a valid record this recent means alive
    grace_s: float = 2.0                 # G: errors right after a session change are ignored
    crossed_window_s: float = 2.0        # W: how close two starts must be to have crossed
    backoff_cap_s: float = 60.0
    backoff_jitter: float = 0.2          # the delay is shortened by up to this fraction
    silence_s: float = 4.0               # S: rule 10, no valid record while we send
    silence_probe_s: float = 1.5         # P: how long the silence probe may take
    allow_short_interval: bool = False   # tests only: permit min_interval_s < 10

    def __post_init__(self):
        if self.min_interval_s < 10 and not self.allow_short_interval:
            raise ValueError("min_interval_s below 10 s needs allow_short_interval")
        if self.min_interval_s <= 0 or self.backoff_cap_s < self.min_interval_s:
            raise ValueError("need 0 < min_interval_s <= backoff_cap_s")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError("backoff_jitter must be in [0, 1)")


@dataclass(frozen=True)
class Decision:
    """What the tunnel core should do. restart: start a new session as initiator now
    (send_req_key); the policy has already counted it. follow (peer_started only): answer the
    peer's REQ_SPTPS_START as responder. log: (level, text) to log once, or None."""
    restart: bool = False
    reason: Optional[str] = None
    log: Optional[tuple] = None
    follow: bool = True
    probe: bool = False              # rule 10: send the peer one UDP probe request now


NOTHING = Decision()


@dataclass(frozen=True)
class RestartSnapshot:
    """The policy's state for `dump nodes`, `info NODE` and `dump tunnels`."""
    restarts: int
    last_restart_reason: Optional[str]
    last_restart_at: Optional[float]
    decode_errors: int
    errors_by_kind: tuple            # ((kind, count), ...) sorted by kind
    replayed: int
    late: int
    grace_errors: int
    suppressed: int                  # errors that did not restart a live tunnel
    failed_restarts: int             # the current backoff streak
    crossed_starts: int
    pending_error_since: Optional[float]
    next_restart_at: Optional[float]
    handshake_pending_since: Optional[float]


@dataclass
class _Pending:
    since: float
    kind: str
    path: str
    detail: str
    host: str
    evidence: bool                   # rule 3's exception: restart even if alive


class RestartPolicy:
    """The restart decisions for one peer. Every method is called by the tunnel core with the
    current monotonic time."""

    def __init__(self, peer: str, myself: str, rng, config: RestartConfig = RestartConfig()):
        self.peer = peer
        self.myself = myself
        self.config = config
        self._rng = rng
        # timing (None: never / cleared)
        self._last_start_at: Optional[float] = None      # S: any session start
        self._last_restart_at: Optional[float] = None    # R: our last restart
        self._delay = config.min_interval_s              # D
        self._streak = 0
        self._grace_until = float("-inf")
        self._last_valid_at: Optional[float] = None      # current session only
        self._pending: Optional[_Pending] = None
        self._handshake_since: Optional[float] = None    # a handshake (or rekey) is running
        self._wanted_at: Optional[float] = None
        self._own_start_at: Optional[float] = None       # our initiator handshake, not done
        self._yielded_at: Optional[float] = None         # we followed a crossed start
        self._suppressed_logged_at: Optional[float] = None
        self._valid = False                              # the current session completed
        self._sent_at: Optional[float] = None            # we last sent data through it
        self._silence_probe_at: Optional[float] = None   # rule 10's probe went out
        # counters
        self.restarts = 0
        self.last_restart_reason: Optional[str] = None
        self.errors_by_kind: dict = {}
        self.grace_errors = 0
        self.suppressed = 0
        self.crossed_starts = 0

    # --- what happened ------------------------------------------------------------------

    def receive_failed(self, now: float, kind: str, path: str, detail: str = "",
                       host: str = "unknown port unknown", count: int = 1) -> Decision:
        """Called when `count` records from the peer failed on `path` (one call per burst and
        kind is enough)."""
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + count
        # Checked before the grace period: this error comes right after the session change.
        if self._crossed_too(now, kind, path):
            self._yielded_at = None
            if self._restart_allowed_at(ignore_starts=True) <= now:
                return self._restart(now, "crossed session start: the peer yielded too",
                                     (LOG_PROTOCOL, f"Crossed REQ_SPTPS_START with {self.peer} "
                                      f"({host}), restarting SPTPS"))
            self._pending = _Pending(now, kind, path, str(detail), host, True)
            return self._decide(now, from_deadline=False)
        if now < self._grace_until:
            self.grace_errors += count
            return NOTHING
        evidence = kind == KIND_HANDSHAKE and path == PATH_ANS_KEY
        if self._pending is None:
            self._pending = _Pending(now, kind, path, str(detail), host, evidence)
        elif evidence:
            self._pending.evidence = True
        return self._decide(now, from_deadline=False)

    def record_accepted(self, now: float) -> None:
        """Called when the peer's session accepted a record (data or handshake). Cheap: call
        it once per burst, before reporting the burst's failures."""
        self._last_valid_at = now
        self._pending = None
        self._silence_probe_at = None

    def data_sent(self, now: float) -> None:
        """Called when we sent data records through the tunnel (once per burst is enough)."""
        self._sent_at = now

    def wanted(self, now: float) -> Decision:
        """Called when we want to send through the tunnel (tinc's try_sptps, also when the key
        is valid). Restarts a handshake that is overdue (rule 6)."""
        self._wanted_at = now
        return self._watchdog(now)

    def started(self, now: float) -> None:
        """Called when we started a session as initiator (send_req_key), for whatever reason."""
        self._session_changed(now)
        self._own_start_at = now
        self._yielded_at = None

    def peer_started(self, now: float) -> Decision:
        """Called for the peer's REQ_SPTPS_START (we have its key). follow=True: drop our
        session and answer as responder; False: ignore the start (rule 8)."""
        crossed = (self._own_start_at is not None
                   and now - self._own_start_at <= self.config.crossed_window_s)
        if crossed:
            self.crossed_starts += 1
            if self.myself < self.peer:
                return Decision(follow=False, log=(
                    LOG_PROTOCOL, f"Crossed REQ_SPTPS_START from {self.peer}: keeping our own "
                    "session (our name sorts first)"))
        self._session_changed(now)
        self._own_start_at = None
        self._yielded_at = now if crossed else None
        return NOTHING

    def handshake_completed(self, now: float) -> None:
        """Called for the session's HandshakeCompleted (first handshake or rekey)."""
        self._last_valid_at = now
        self._pending = None
        self._handshake_since = None
        self._own_start_at = None
        self._yielded_at = None
        self._grace_until = now + self.config.grace_s
        self._streak = 0
        self._delay = self.config.min_interval_s
        self._valid = True

    def rekey_started(self, now: float) -> None:
        """Called when a rekey begins on a valid session: ours (KeyExpire, force_kex) or the
        peer's (the session's handshake_pending became true while the key is valid)."""
        if self._handshake_since is None:
            self._handshake_since = now
        self._wanted_at = now

    def reachability_changed(self, now: float) -> None:
        """Called when the peer became reachable or unreachable: the session is gone.
        COMPAT: tinc zeroes last_req_key, so a restart is allowed at once."""
        self._last_start_at = self._last_restart_at = None
        self._streak = 0
        self._delay = self.config.min_interval_s
        self._grace_until = float("-inf")
        self._last_valid_at = None
        self._pending = None
        self._handshake_since = None
        self._own_start_at = self._yielded_at = None
        self._valid = False
        self._sent_at = self._silence_probe_at = None

    # --- timers -------------------------------------------------------------------------

    def next_deadline(self) -> Optional[float]:
        times = []
        if self._pending is not None:
            times.append(self._pending_due())
        w = self._watchdog_due()
        if w is not None:
            times.append(w)
        s = self._silence_due()
        if s is not None:
            times.append(s)
        return min(times) if times else None

    def handle_deadline(self, now: float) -> Decision:
        """Called when next_deadline() has passed: a pending error or the watchdog may restart
        the session now; rule 10 may ask for a probe or report silence."""
        if self._pending is not None:
            d = self._decide(now, from_deadline=True)
            if d.restart:
                return d
        d = self._watchdog(now)
        if d.restart:
            return d
        return self._silence(now)

    # --- state for the control interface --------------------------------------------------

    def snapshot(self) -> RestartSnapshot:
        by_kind = tuple(sorted(self.errors_by_kind.items()))
        return RestartSnapshot(
            restarts=self.restarts, last_restart_reason=self.last_restart_reason,
            last_restart_at=self._last_restart_at,
            decode_errors=sum(self.errors_by_kind.values()), errors_by_kind=by_kind,
            replayed=self.errors_by_kind.get(KIND_REPLAYED, 0),
            late=self.errors_by_kind.get(KIND_LATE, 0) + self.errors_by_kind.get(KIND_FUTURE, 0),
            grace_errors=self.grace_errors, suppressed=self.suppressed,
            failed_restarts=max(self._streak - 1, 0), crossed_starts=self.crossed_starts,
            pending_error_since=self._pending.since if self._pending else None,
            next_restart_at=self._pending_due() if self._pending else None,
            handshake_pending_since=self._handshake_since)

    # --- the rules ----------------------------------------------------------------------

    def _session_changed(self, now):
        self._valid = False
        self._silence_probe_at = None
        self._last_start_at = now
        self._handshake_since = now
        self._grace_until = now + self.config.grace_s
        self._last_valid_at = None        # records of the old session say nothing now
        self._pending = None

    def _restart_allowed_at(self, ignore_starts=False) -> float:
        """Rule 1 (and 5): the earliest time a restart of ours is allowed."""
        t = float("-inf")
        if self._last_start_at is not None and not ignore_starts:
            t = self._last_start_at + self.config.min_interval_s
        if self._last_restart_at is not None:
            t = max(t, self._last_restart_at + self._delay)
        return t

    def _alive_until(self) -> float:
        if self._last_valid_at is None:
            return float("-inf")
        return self._last_valid_at + self.config.liveness_s

    def _pending_due(self) -> float:
        p = self._pending
        due = max(self._restart_allowed_at(), self._grace_until, p.since)
        return due if p.evidence else max(due, self._alive_until())

    def _decide(self, now, from_deadline) -> Decision:
        """Rules 1, 3 and 4 for the pending error."""
        p = self._pending
        what = _WHAT.get(p.path, p.path)
        alive = not p.evidence and now < self._alive_until()
        if not alive and now >= self._restart_allowed_at():
            return self._restart(now, f"{what}: {p.kind}" + (f": {p.detail}" if p.detail else ""),
                                 (LOG_PROTOCOL, f"Failed to decode {what} from {self.peer} "
                                  f"({p.host}), restarting SPTPS"))
        if from_deadline:
            return NOTHING
        self.suppressed += alive
        if alive:
            why = "valid records still arriving"
        elif self._streak > 1:
            why = f"backing off after {self._streak - 1} failed restarts"
        else:
            why = f"next restart allowed in {self._restart_allowed_at() - now:.0f} s"
        return Decision(log=self._suppressed_log(
            now, f"Failed to decode {what} from {self.peer} ({p.host}), not restarting "
            f"SPTPS: {why}"))

    def _suppressed_log(self, now, text):
        last = self._suppressed_logged_at
        if last is not None and now - last < self.config.min_interval_s:
            return None
        self._suppressed_logged_at = now
        return (LOG_PROTOCOL, text)

    def _last_life(self) -> float:
        """The last sign of life of the current session: a valid record, else its start."""
        times = [t for t in (self._last_valid_at, self._last_start_at) if t is not None]
        return max(times) if times else float("-inf")

    def _silence_due(self) -> Optional[float]:
        """Rule 10's next step: when to probe, or when the probe has had its time."""
        if not self._valid or self._sent_at is None or self._sent_at <= self._last_life():
            return None
        if self._silence_probe_at is not None:
            return self._silence_probe_at + self.config.silence_probe_s
        # After a quiet spell the first data sent starts the watch: probe S after the last
        # life, but not before there was something to answer.
        return max(self._last_life() + self.config.silence_s, self._sent_at)

    def _silence(self, now) -> Decision:
        due = self._silence_due()
        if due is None or now < due:
            return NOTHING
        if self._silence_probe_at is None:
            self._silence_probe_at = now
            return Decision(probe=True)
        # The probe went unanswered: count the silence as an error (rules 1-4 decide).
        self._silence_probe_at = None
        self._sent_at = None              # the next data sent starts a new watch
        since = self._last_life()
        return self.receive_failed(now, KIND_SILENT, PATH_UDP,
                                   f"nothing for {now - since:.0f} s, probe unanswered")

    def silence_unprobeable(self) -> None:
        """Rule 10 asked for a probe the tunnel cannot send by UDP (TCPOnly, or a relay
        without node IDs): drop this watch; the next data sent starts a new one."""
        self._silence_probe_at = None
        self._sent_at = None

    def _watchdog_due(self) -> Optional[float]:
        since = self._handshake_since
        if since is None or self._wanted_at is None or self._wanted_at < since:
            return None
        return max(since + self.config.handshake_timeout_s, self._restart_allowed_at())

    def _watchdog(self, now) -> Decision:
        due = self._watchdog_due()
        if due is None or now < due:
            return NOTHING
        timeout = f"{self.config.handshake_timeout_s:g}"
        # COMPAT: tinc's wording and level (DEBUG_ALWAYS).
        return self._restart(now, "handshake timeout",
                             (LOG_ALWAYS, f"No key from {self.peer} after {timeout} seconds, "
                              "restarting SPTPS"))

    def _crossed_too(self, now, kind, path) -> bool:
        """Rule 8: after we followed a crossed start, the peer's responder KEX for our dropped
        start fails on our responder session: the peer yielded as well (tinc does)."""
        return (self._yielded_at is not None and path == PATH_ANS_KEY
                and kind in (KIND_HANDSHAKE, KIND_REPLAYED)
                and now - self._yielded_at <= self.config.crossed_window_s)

    def _restart(self, now, reason, log) -> Decision:
        """Count a restart of ours and set the delay before the next one (rule 5)."""
        # A restart while the previous one of ours has not completed extends the streak.
        self._streak = self._streak + 1 if self._last_restart_at is not None and \
            self._handshake_since is not None and self._streak > 0 else 1
        self._delay = self._backoff(self._streak)
        self.restarts += 1
        self.last_restart_reason = reason
        self._last_restart_at = now
        self._pending = None
        self.started(now)
        return Decision(restart=True, reason=reason, log=log)

    def _backoff(self, streak) -> float:
        b = self.config.min_interval_s
        if streak <= 1:
            return b
        base = min(self.config.backoff_cap_s, b * 2 ** (streak - 1))
        u = int.from_bytes(self._rng(2), "big") / 65535
        return max(b, base * (1 - self.config.backoff_jitter * u))
