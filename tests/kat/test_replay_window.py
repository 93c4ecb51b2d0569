"""replay_window.json: tinc 1.1's datagram replay decisions, for the compiled window and the
plain-Python reference. Every step checks the decision and the whole state after it."""
import pytest

from tests.reference import replay as reference
from tests.vectors import load
from tincapp import accel
from tincapp.datapath.batch import SLOT_FUTURE, SLOT_OK, SLOT_REPLAYED, PacketBatch

IMPLS = {"reference": reference, "compiled": accel.replay}
SEQUENCES = load("replay_window.json")["sequences"]


@pytest.fixture(params=sorted(IMPLS), ids=sorted(IMPLS))
def impl(request):
    return IMPLS[request.param]


def fresh(impl, seq):
    w = impl.ReplayWindow(seq["replaywin"])
    w.inseqno = seq["initial_inseqno"]     # the bitmap starts all zero, the counters at 0
    return w


def state(w):
    return w.inseqno, w.farfuture, w.received, w.late.hex()


def test_vector_count():
    assert len(SEQUENCES) == 28
    assert {s["replaywin"] for s in SEQUENCES} == {16, 32}


@pytest.mark.parametrize("seq", SEQUENCES, ids=[s["name"] for s in SEQUENCES])
def test_sequence_step_by_step(impl, seq):
    w = fresh(impl, seq)
    assert w.size == seq["replaywin"]
    assert w.late == bytes(seq["replaywin"])
    for n, step in enumerate(seq["steps"]):
        before = state(w)
        # A look without update (tinc's sptps_verify_datagram) agrees and changes nothing.
        peek = w.check(step["seqno"], update=False)
        assert state(w) == before, f"step {n}: check(update=False) changed state"
        status = w.check(step["seqno"])
        assert status in (SLOT_OK, SLOT_REPLAYED, SLOT_FUTURE)
        assert (status == SLOT_OK) == step["accept"], f"step {n}: seqno {step['seqno']}"
        assert peek == status, f"step {n}: verify-only said {peek}, check said {status}"
        expected = (step["inseqno_after"], step["farfuture_after"], step["received_after"],
                    step["late_after"])
        assert state(w) == expected, f"step {n}: seqno {step['seqno']}"
    assert (w.inseqno, w.farfuture, w.received) == (
        seq["final_inseqno"], seq["final_farfuture"], seq["final_received"])


@pytest.mark.parametrize("seq", SEQUENCES, ids=[s["name"] for s in SEQUENCES])
def test_sequence_as_one_batch(impl, seq):
    steps = seq["steps"]
    batch = PacketBatch(len(steps), slot_size=1)
    for step in steps:
        batch.append(b"", seqno=step["seqno"])
    w = fresh(impl, seq)
    accepted = w.accept_batch(batch)
    assert [batch.status[i] == SLOT_OK for i in range(len(steps))] == \
        [s["accept"] for s in steps]
    assert accepted == sum(s["accept"] for s in steps)
    last = steps[-1]
    assert state(w) == (last["inseqno_after"], last["farfuture_after"], last["received_after"],
                        last["late_after"])


@pytest.mark.parametrize("seq", SEQUENCES, ids=[s["name"] for s in SEQUENCES])
def test_rejections_say_why(impl, seq):
    # Far-future drops (the only rejection that moves farfuture) are SLOT_FUTURE.
    w = fresh(impl, seq)
    for step in seq["steps"]:
        before = w.farfuture
        status = w.check(step["seqno"])
        if status == SLOT_FUTURE:
            assert w.farfuture == before + 1
        elif status == SLOT_REPLAYED:
            assert w.farfuture == before
