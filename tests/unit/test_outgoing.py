"""Outgoing connections (mesh.outgoing; tinc's do_outgoing_connection, retry_outgoing, retry)
driven with a fake clock: the shell's connects are played by the test."""
from tincapp.io.daemon import TARPIT_PITS, Tarpit
from tincapp.mesh.outgoing import RETRY_STEP_S, Abandon, Connect, Outgoings, State

CONNECT_TIMEOUT_S = 2


class Mesh:
    """What the shell would supply: address lists and the active connections."""

    def __init__(self, addresses=None, max_timeout_s=900):
        self.addresses = addresses or {}
        self.active = {}                        # name -> conn
        self.lines = []
        self.candidate_calls = 0
        self.out = Outgoings(candidates=self.candidates, connection_for=self.active.get,
                             log=lambda level, text: self.lines.append(text),
                             max_timeout_s=max_timeout_s,
                             connect_timeout_s=CONNECT_TIMEOUT_S)

    def candidates(self, name):
        self.candidate_calls += 1
        return list(self.addresses.get(name, ()))

    def connects(self):
        acts = self.out.pop_actions()
        return [a for a in acts if isinstance(a, Connect)], [a for a in acts
                                                              if isinstance(a, Abandon)]

    def fail_all(self, now, reason="Connection refused"):
        """Refuse every connect until the entries back off; returns the hosts tried."""
        tried = []
        while True:
            connects, _ = self.connects()
            if not connects:
                return tried
            for c in connects:
                tried.append(c.host)
                self.out.connect_failed(c.name, c.attempt, now, reason)

    def advance_to_deadline(self):
        now = self.out.next_deadline()
        self.out.handle_deadline(now)
        return now


def test_first_attempt_is_immediate_and_failures_try_the_next_address():
    m = Mesh({"b": [("10.0.0.1", "655"), ("10.0.0.2", "656")]})
    assert m.out.add("b", now=100)
    connects, _ = m.connects()
    assert connects == [Connect("b", "10.0.0.1", "655", CONNECT_TIMEOUT_S, connects[0].attempt)]
    m.out.connect_failed("b", connects[0].attempt, 100.5, "Connection refused")
    assert "Could not connect to b (10.0.0.1 port 655): Connection refused" in m.lines
    [second], _ = m.connects()
    assert (second.host, second.port) == ("10.0.0.2", "656")
    m.out.connect_failed("b", second.attempt, 101, "Connection refused")
    # Round exhausted: back off 5 s.
    assert m.connects() == ([], [])
    assert m.out.next_deadline() == 101 + RETRY_STEP_S
    assert m.lines[-1] == "Trying to re-establish outgoing connection in 5 seconds"


def test_back_off_grows_by_five_seconds_per_round_up_to_max_timeout():
    m = Mesh({"b": [("10.0.0.1", "655")]}, max_timeout_s=17)
    m.out.add("b", now=0)
    now, waits = 0, []
    for _ in range(6):
        assert m.fail_all(now) == ["10.0.0.1"]
        deadline = m.out.next_deadline()
        waits.append(deadline - now)
        m.out.handle_deadline(deadline - 0.01)      # not yet
        assert m.connects() == ([], [])
        now = deadline
        m.out.handle_deadline(now)
    assert waits == [5, 10, 15, 17, 17, 17]
    # The address list is re-read at the start of every round (the cache may have changed).
    assert m.candidate_calls == 7


def test_no_address_backs_off_and_says_so():
    m = Mesh({})
    m.out.add("b", now=0)
    assert m.connects() == ([], [])
    assert "Could not set up a meta connection to b: no known address" in m.lines
    assert m.out.next_deadline() == 5


def test_connect_timeout_abandons_and_goes_on():
    m = Mesh({"b": [("10.0.0.1", "655"), ("10.0.0.2", "655")]})
    m.out.add("b", now=0)
    [first], _ = m.connects()
    assert m.out.next_deadline() == CONNECT_TIMEOUT_S
    m.advance_to_deadline()
    [second], [abandon] = m.connects()
    assert abandon == Abandon("b", first.attempt)
    assert second.host == "10.0.0.2"
    assert "Could not connect to b (10.0.0.1 port 655): timed out" in m.lines
    # A late success of the abandoned attempt does not count.
    assert not m.out.connected("b", first.attempt, "late-conn")
    assert m.out.carried_by("late-conn") is None


def test_connection_end_reconnects_at_once_with_the_next_address():
    m = Mesh({"b": [("10.0.0.1", "655"), ("10.0.0.2", "655")]})
    m.out.add("b", now=0)
    [c], _ = m.connects()
    assert m.out.connected("b", c.attempt, "conn1")
    assert m.out.carried_by("conn1") == "b" and m.out.in_progress("b")
    assert m.out.next_deadline() is None
    m.out.connection_ended("conn1", now=50)
    [c2], _ = m.connects()
    assert c2.host == "10.0.0.2"          # COMPAT: the address cache walk goes on
    m.out.connect_failed("b", c2.attempt, 50, "refused")
    assert m.out.next_deadline() == 55
    # A connection that carries nothing ending changes nothing.
    m.out.connection_ended("other", now=51)
    assert m.connects() == ([], [])


def test_pong_after_a_retry_resets_the_back_off_and_the_address_walk():
    m = Mesh({"b": [("10.0.0.1", "655"), ("10.0.0.2", "655")]})
    m.out.add("b", now=0)
    m.fail_all(0)
    m.advance_to_deadline()               # t=5: second round
    m.fail_all(5)
    now = m.advance_to_deadline()         # t=15: third round
    assert now == 15
    [c], _ = m.connects()
    m.out.connected("b", c.attempt, "conn")
    assert m.out.entry("b").timeout_s == 10
    assert m.out.pong("conn")             # the caller now caches the address
    assert m.out.entry("b").timeout_s == 0
    assert not m.out.pong("conn")         # only the first PONG after a retry counts
    m.out.connection_ended("conn", now=20)
    [c2], _ = m.connects()
    assert c2.host == "10.0.0.1"          # candidates start over
    m.out.connect_failed("b", c2.attempt, 20, "refused")
    assert m.fail_all(20) == ["10.0.0.2"]
    assert m.out.next_deadline() == 25    # back-off starts at 5 again


def test_pong_without_back_off_keeps_the_address_walk():
    m = Mesh({"b": [("10.0.0.1", "655"), ("10.0.0.2", "655")]})
    m.out.add("b", now=0)
    [c], _ = m.connects()
    m.out.connected("b", c.attempt, "conn")
    assert not m.out.pong("conn")
    assert m.out.entry("b").index == 1


def test_retry_connects_waiting_entries_now_and_resets_the_back_off():
    m = Mesh({"b": [("10.0.0.1", "655")], "c": [("10.0.0.3", "655")]})
    m.out.add("b", now=0)
    m.out.add("c", now=0)
    m.fail_all(0)
    m.advance_to_deadline()
    m.fail_all(5)                          # both wait 10 s now
    assert m.out.next_deadline() == 15
    m.out.retry(now=6)
    connects, _ = m.connects()
    assert sorted(c.name for c in connects) == ["b", "c"]
    for c in connects:
        m.out.connect_failed(c.name, c.attempt, 6, "refused")
    assert m.out.next_deadline() == 11     # 5 s again


def test_retry_abandons_a_connect_in_progress_and_starts_over():
    m = Mesh({"b": [("10.0.0.1", "655"), ("10.0.0.2", "655")]})
    m.out.add("b", now=0)
    m.connects()
    m.out.connect_failed("b", m.out.entry("b").attempt, 0.1, "refused")
    [second], _ = m.connects()
    assert second.host == "10.0.0.2"
    m.out.retry(now=1)
    [again], [abandon] = m.connects()
    # DEVIATION (see the module): start over at the first address, not back off.
    assert abandon == Abandon("b", second.attempt)
    assert again.host == "10.0.0.1" and again.attempt != second.attempt
    assert "Abandoned connecting to b (10.0.0.2 port 655)" in m.lines
    assert m.candidate_calls == 2
    # The abandoned attempt's failure, if it still arrives, is ignored.
    m.out.connect_failed("b", second.attempt, 1.1, "refused")
    assert m.connects() == ([], [])
    assert m.out.entry("b").state is State.AWAIT_CONNECT


def test_retry_leaves_connected_entries_alone():
    m = Mesh({"b": [("10.0.0.1", "655")]})
    m.out.add("b", now=0)
    [c], _ = m.connects()
    m.out.connected("b", c.attempt, "conn")
    m.out.retry(now=3)
    assert m.connects() == ([], [])
    assert m.out.carried_by("conn") == "b"


def test_existing_connection_takes_the_entry_instead_of_a_connect():
    m = Mesh({"b": [("10.0.0.1", "655")]})
    m.active["b"] = "incoming"
    m.out.add("b", now=0)
    assert m.connects() == ([], [])
    assert "Already connected to b" in m.lines
    assert m.out.carried_by("incoming") == "b"
    # It ending makes the entry connect (the incoming one is gone from the node too).
    del m.active["b"]
    m.out.connection_ended("incoming", now=1)
    [c], _ = m.connects()
    assert c.name == "b"


def test_connection_carrying_another_entry_leaves_this_one_idle():
    # One connection found under two names (a node that renamed itself, say).
    m = Mesh({"b": [("10.0.0.1", "655")]})
    m.active["x"] = m.active["b"] = "conn"
    m.out.add("x", now=0)
    m.out.add("b", now=0)
    assert m.connects() == ([], [])
    assert m.out.carried_by("conn") == "x"
    assert m.out.next_deadline() is None and not m.out.in_progress("b")


def test_incoming_connection_takes_over_the_entry():
    m = Mesh({"b": [("10.0.0.1", "655")]})
    m.out.add("b", now=0)
    [c], _ = m.connects()
    m.out.connected("b", c.attempt, "old")
    m.out.adopt("b", "new")
    assert m.out.carried_by("new") == "b" and m.out.carried_by("old") is None
    m.out.connection_ended("old", now=1)          # the node closed the old one
    assert m.connects() == ([], [])
    m.out.connection_ended("new", now=2)
    # Its only address was used: that round is over, back off.
    assert m.connects() == ([], [])
    assert m.out.next_deadline() == 7


def test_adopt_during_a_connect_abandons_it():
    m = Mesh({"b": [("10.0.0.1", "655")]})
    m.out.add("b", now=0)
    [c], _ = m.connects()
    m.out.adopt("b", "incoming")
    assert m.connects() == ([], [Abandon("b", c.attempt)])
    assert m.out.next_deadline() is None


def test_reload_keeps_listed_entries_drops_others_and_adds_new_ones():
    m = Mesh({n: [("10.0.0.1", "655")] for n in "bcd"})
    m.out.add("b", now=0)
    m.out.add("c", now=0)
    cb, cc = m.connects()[0]
    m.out.connected("c", cc.attempt, "conn-c")
    m.out.connect_failed("b", cb.attempt, 0, "refused")
    assert m.out.entry("b").timeout_s == 5
    dropped = m.out.reload(["b", "d"], now=1)
    assert dropped == ["conn-c"]
    assert m.out.carried_by("conn-c") is None and "c" not in m.out
    # COMPAT: a kept entry's back-off is reset but it is not dialled at once.
    assert m.out.entry("b").timeout_s == 0 and m.out.entry("b").retry_at == 5
    [cd], _ = m.connects()
    assert cd.name == "d"
    # The dropped connection ending does not reconnect.
    m.out.connection_ended("conn-c", now=2)
    assert m.connects() == ([], [])


def test_remove_abandons_a_connect_in_progress():
    m = Mesh({"b": [("10.0.0.1", "655")]})
    m.out.add("b", now=0)
    [c], _ = m.connects()
    assert m.out.remove("b") is None
    assert m.connects() == ([], [Abandon("b", c.attempt)])
    assert m.out.next_deadline() is None
    assert m.out.add("c", now=0) and "c" in m.out
    assert not m.out.add("c", now=0)       # already there


def test_max_timeout_change_applies_to_the_next_back_off():
    m = Mesh({"b": [("10.0.0.1", "655")]}, max_timeout_s=900)
    m.out.add("b", now=0)
    m.fail_all(0)
    m.advance_to_deadline()
    m.out.max_timeout_s = 7
    m.fail_all(5)
    assert m.out.next_deadline() == 12


# --- the accept side's burst counters (io.daemon.Tarpit: no I/O in its decisions) ----------

def test_tarpit_counts_bursts_per_whole_second_and_spares_loopback():
    t = Tarpit(max_burst=10)
    hosts = [f"192.0.2.{i}" for i in range(1, 13)]
    # COMPAT: from different hosts, the 10th connection within the window is tarpitted.
    assert [t.check(h, 100.1) for h in hosts] == [False] * 9 + [True] * 3
    assert t.check("127.0.0.1", 100.2) is False and t.check("::1", 100.2) is False
    assert t.check("::ffff:127.0.0.5", 100.2) is False
    assert t.check("192.0.2.50", 101.9) is True        # one second later: 10 - 1 + 1
    assert t.check("192.0.2.51", 103.0) is False       # two more: 10 - 2 + 1


def test_tarpit_same_address_in_a_row():
    t = Tarpit(max_burst=3)
    # The 3rd connection trips the global counter (3 >= 3), which then stays at 3; the
    # same-address counter goes on growing with each connection in a row.
    assert [t.check("192.0.2.1", 10) for _ in range(8)] == [False, False] + [True] * 6
    # Two seconds on, the global count would admit one (3 - 2 + 1 < 3), but this address
    # made 7 in a row: 7 - 2 + 1 > 3.
    assert t.check("192.0.2.1", 12) is True
    assert t.check("192.0.2.9", 12) is False


class FakeTransport:
    def __init__(self):
        self.paused = self.closed = False

    def pause_reading(self):
        self.paused = True

    def close(self):
        self.closed = True


def test_tarpit_holds_ten_sockets_unread_and_closes_the_oldest():
    t = Tarpit(max_burst=10)
    held = [FakeTransport() for _ in range(TARPIT_PITS + 2)]
    for tr in held:
        t.hold(tr)
    assert all(tr.paused for tr in held)
    assert [tr.closed for tr in held] == [True, True] + [False] * TARPIT_PITS
    t.close()
    assert all(tr.closed for tr in held)
