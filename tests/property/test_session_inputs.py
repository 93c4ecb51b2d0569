"""Whatever bytes arrive, in whatever session state, a session raises only the project's typed
errors (or returns events), and a datagram session keeps working afterwards."""
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tincapp.errors import TincappError
from tincapp.sptps import crypto
from tincapp.sptps.session import RecordReceived, SptpsSession

KEY_A = crypto.PrivateKey.from_seed(bytes(32))
KEY_B = crypto.PrivateKey.from_seed(bytes([1]) * 32)


def make_pair(datagram):
    n = itertools.count()
    rng = lambda size: next(n).to_bytes(size, "big")  # noqa: E731
    a = SptpsSession(initiator=True, datagram=datagram, label=b"fuzz", my_key=KEY_A,
                     peer_public=KEY_B.public, rng=rng)
    b = SptpsSession(initiator=False, datagram=datagram, label=b"fuzz", my_key=KEY_B,
                     peer_public=KEY_A.public, rng=rng)
    return a, b


def pump(a, b, steps):
    """Run up to `steps` deliveries of the handshake (0 = just started)."""
    a.start()
    b.start()
    for _ in range(steps):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for _t, data in src.pop_outgoing():
                dst.receive(data)
                moved = True
        if not moved:
            break


def feed(session, data):
    try:
        session.receive(data)
    except TincappError:
        pass


def mutate(data, flips):
    buf = bytearray(data)
    for pos, bit in flips:
        if buf:
            buf[pos % len(buf)] ^= 1 << (bit % 8)
    return bytes(buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagram=st.booleans(), steps=st.integers(0, 3), junk=st.binary(max_size=300))
def test_random_bytes_in_any_state(datagram, steps, junk):
    a, b = make_pair(datagram)
    pump(a, b, steps)
    feed(b, junk)
    feed(a, junk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rekey=st.booleans(),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), min_size=1,
                      max_size=4),
       cut=st.integers(0, 200))
def test_mutated_records_never_break_a_datagram_session(rekey, flips, cut):
    a, b = make_pair(True)
    pump(a, b, 4)
    if rekey:
        a.force_kex()
    a.send_record(0, b"payload " * 10)
    for _t, data in a.pop_outgoing():
        feed(b, mutate(data, flips))
        feed(b, data[:cut])
    # the session still works: a fresh genuine record after the rekey (if any) settles
    for _ in range(4):
        for src, dst in ((a, b), (b, a)):
            for _t, data in src.pop_outgoing():
                feed(dst, data)
    if a.state.name == "IDLE" and b.state.name == "IDLE":
        a.send_record(0, b"still alive")
        (_t, data), = a.pop_outgoing()
        assert b.receive(data) == [RecordReceived(0, b"still alive")]
