"""The seen-requests cache for flooded requests (tinc's past_request tree, src/protocol.c).

Owns the set of request texts seen recently and their first-seen times. It does not decide
which requests are flooded (messages.FLOODED; the daemon asks after a request parsed) and never
reads a clock: `now` (monotonic seconds) is an argument. One cache per daemon, shared by all
connections. Not thread-safe.

Key: the complete request text without the trailing newline, exactly as received (the nonce
makes every newly generated request unique). Requests we originate are not entered.

tinc removes an entry once `firstseen + PingInterval <= now`, in a sweep every 10 s while the
cache is not empty.
DEVIATION: tinc re-arms that sweep on every insert, so under steady traffic it is postponed
and entries live on indefinitely; and between sweeps an expired entry still counts as seen.
Here an entry stops counting exactly `lifetime_s` after it was first seen, and the sweep (which
only frees memory) runs at most every SWEEP_INTERVAL_S.
"""
from collections import OrderedDict

SWEEP_INTERVAL_S = 10.0


class SeenRequests:
    """Answers "seen this flooded request before?" and remembers it if not."""

    def __init__(self, lifetime_s: float):
        if lifetime_s <= 0:
            raise ValueError("lifetime_s must be positive (PingInterval < 1 means 86400)")
        self.lifetime_s = float(lifetime_s)
        # Insertion order is first-seen order because `now` never goes backwards; the oldest
        # entry is first.
        self._first_seen = OrderedDict()
        self._last_sweep_at = None

    def __len__(self):
        return len(self._first_seen)

    def __contains__(self, line):
        return bytes(line) in self._first_seen

    def seen(self, line: bytes, now: float) -> bool:
        """True if `line` was seen less than lifetime_s ago; otherwise remember it (first seen
        now) and return False. tinc's seen_request()."""
        line = bytes(line)
        first = self._first_seen.get(line)
        if first is not None and first + self.lifetime_s > now:
            return True
        self._first_seen.pop(line, None)     # an expired copy goes to the back as new
        self._first_seen[line] = now
        if self._last_sweep_at is None:
            self._last_sweep_at = now
        return False

    def next_deadline(self) -> float | None:
        """When handle_deadline should run next, or None while the cache is empty."""
        if not self._first_seen:
            return None
        oldest = next(iter(self._first_seen.values()))
        return max(oldest + self.lifetime_s, self._last_sweep_at + SWEEP_INTERVAL_S)

    def handle_deadline(self, now: float) -> int:
        """Called when next_deadline() has passed: drop expired entries; return how many."""
        deleted = 0
        while self._first_seen:
            line, first = next(iter(self._first_seen.items()))
            if first + self.lifetime_s > now:
                break
            del self._first_seen[line]
            deleted += 1
        self._last_sweep_at = now
        return deleted
