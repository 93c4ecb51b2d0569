"""The seen-requests cache with a hand-advanced clock."""
import pytest

from tincapp.meta.dedup import SWEEP_INTERVAL_S, SeenRequests


def test_first_sight_then_seen():
    cache = SeenRequests(60)
    assert not cache.seen(b"14 1 carol", now=0.0)
    assert cache.seen(b"14 1 carol", now=59.9)
    assert not cache.seen(b"14 2 carol", now=1.0)      # another nonce is another request
    assert len(cache) == 2


def test_expiry_is_exact_and_restarts_the_entry():
    cache = SeenRequests(60)
    cache.seen(b"x", now=0.0)
    assert not cache.seen(b"x", now=60.0)              # firstseen + lifetime <= now: expired
    assert cache.seen(b"x", now=119.0)                 # re-entered at 60
    assert not cache.seen(b"x", now=120.0)


def test_deadline_sweeps_and_empties():
    cache = SeenRequests(60)
    assert cache.next_deadline() is None
    cache.seen(b"a", now=0.0)
    cache.seen(b"b", now=30.0)
    assert cache.next_deadline() == 60.0
    assert cache.handle_deadline(60.0) == 1
    assert b"a" not in cache and b"b" in cache
    assert cache.next_deadline() == 90.0
    assert cache.handle_deadline(90.0) == 1
    assert cache.next_deadline() is None


def test_sweeps_are_rate_limited():
    cache = SeenRequests(1)
    for i in range(5):
        cache.seen(bytes([i]), now=i * 0.5)
    cache.handle_deadline(1.0)
    # The next expiry is at 1.5, but sweeps run at most every SWEEP_INTERVAL_S.
    assert cache.next_deadline() == 1.0 + SWEEP_INTERVAL_S
    assert not cache.seen(b"\x01", now=1.6)            # lookups expire exactly all the same


def test_early_handle_deadline_deletes_nothing_fresh():
    cache = SeenRequests(60)
    cache.seen(b"a", now=0.0)
    assert cache.handle_deadline(10.0) == 0
    assert cache.seen(b"a", now=10.0)


def test_lifetime_must_be_positive():
    with pytest.raises(ValueError):
        SeenRequests(0)
