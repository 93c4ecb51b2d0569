"""Full SPTPS sessions recorded from tinc 1.1 with fixed randomness, reproduced byte for byte.

Each vector file has a script (start, send, force_kex, deliver_one, deliver_all) run against two
endpoints sharing one FIFO; every record either side emits must equal the recorded wire bytes,
and everything handed to the application must equal the recorded `received` list.
"""
from collections import deque

import pytest

from tests.vectors import load
from tincapp.sptps import crypto
from tincapp.sptps.session import HandshakeCompleted, RecordReceived, SptpsSession, State

TRANSCRIPTS = ["sptps_stream_rw16.json", "sptps_stream_rw32.json",
               "sptps_datagram_rw16.json", "sptps_datagram_rw32.json"]


def recorded_rng(draws):
    """The random source: hands out the recorded draws in order, checking the sizes."""
    queue = deque(bytes.fromhex(d["bytes"]) for d in draws)

    def rng(n):
        assert queue, "the session drew more randomness than tinc did"
        value = queue.popleft()
        assert len(value) == n
        return value
    rng.remaining = queue
    return rng


class Transcript:
    """Runs one vector file's script; records what went over the wire and what came up."""

    def __init__(self, vec):
        self.vec = vec
        label = bytes.fromhex(vec["label"])
        keys = {side: crypto.PrivateKey.from_seed(bytes.fromhex(vec[side]["ed25519_seed"]))
                for side in ("initiator", "responder")}
        self.rngs = {side: recorded_rng(vec["rng"][side]) for side in keys}
        self.sessions = {
            side: SptpsSession(
                initiator=(side == "initiator"), datagram=(vec["mode"] == "datagram"),
                label=label, my_key=keys[side], peer_public=keys[other].public,
                rng=self.rngs[side], replay_window=vec["replaywin"])
            for side, other in (("initiator", "responder"), ("responder", "initiator"))}
        self.fifo = deque()
        self.wire = []        # (from, bytes) in emission order
        self.received = []    # (wire_index, by, type, data)

    def _collect(self, side):
        for _type, data in self.sessions[side].pop_outgoing():
            self.fifo.append((len(self.wire), side))
            self.wire.append((side, data))

    def _deliver_one(self):
        index, sender = self.fifo.popleft()
        receiver = "responder" if sender == "initiator" else "initiator"
        for ev in self.sessions[receiver].receive(self.wire[index][1]):
            if isinstance(ev, HandshakeCompleted):
                self.received.append((index, receiver, 128, b""))
            else:
                assert isinstance(ev, RecordReceived)
                self.received.append((index, receiver, ev.type, ev.data))
        self._collect(receiver)

    def run(self):
        for step in self.vec["script"]:
            action = step["action"]
            if action == "start":
                self.sessions[step["side"]].start()
                self._collect(step["side"])
            elif action == "send":
                self.sessions[step["side"]].send_record(step["type"], bytes.fromhex(step["data"]))
                self._collect(step["side"])
            elif action == "force_kex":
                self.sessions[step["side"]].force_kex()
                self._collect(step["side"])
            elif action == "deliver_one":
                self._deliver_one()
            elif action == "deliver_all":
                while self.fifo:
                    self._deliver_one()
            else:
                assert action == "phase", action
        return self


@pytest.fixture(params=TRANSCRIPTS)
def transcript(request):
    return Transcript(load(request.param)).run()


def test_wire_bytes_match_tinc(transcript):
    expected = transcript.vec["wire"]
    assert len(transcript.wire) == len(expected)
    for (side, data), rec in zip(transcript.wire, expected):
        assert side == rec["from"], f"record {rec['index']}"
        assert data.hex() == rec["bytes"], f"record {rec['index']} ({rec['phase']})"


def test_received_records_match_tinc(transcript):
    expected = [(r["wire_index"], r["by"], r["type"], bytes.fromhex(r["data"]))
                for r in transcript.vec["received"]]
    assert transcript.received == expected


def test_all_randomness_used_and_sessions_idle(transcript):
    for side, rng in transcript.rngs.items():
        assert not rng.remaining, f"{side} drew less randomness than tinc"
        s = transcript.sessions[side]
        assert s.state is State.IDLE and s.in_encrypted and s.out_encrypted


def test_sequence_numbers_match_tinc(transcript):
    last = {}
    for rec in transcript.vec["wire"]:
        last[rec["from"]] = rec["seqno"]
    for side, seqno in last.items():
        assert transcript.sessions[side].out_seqno == seqno + 1
