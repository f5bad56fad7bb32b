"""The pieces of an overlapped reduction, moved on by step(): how many start at each step
boundary, and how the rest is run at the end (fake collectives, no processes)."""

import pytest

from hvd_hier.reduce import pieces as piece_module


class FakeHorovod:
    """Handles are ints; a test says which are done."""

    def __init__(self):
        self.done, self.started, self.next = set(), [], 0

    def start(self, tag):
        self.next += 1
        self.started.append((tag, self.next))
        return self.next

    def poll(self, handle):
        return handle in self.done

    def wait(self, handle, deadline):
        self.done.add(handle)  # waiting completes it
        return f"out{handle}"


@pytest.fixture
def fake(monkeypatch):
    f = FakeHorovod()
    monkeypatch.setattr(piece_module.hvd, "poll", f.poll)
    return f


def pieces(fake, n, outputs, stages=1):
    def piece(i):
        for s in range(stages):
            outputs.append((i, s, (yield fake.start((i, s)), fake.wait)))

    return [lambda i=i: piece(i) for i in range(n)]


def test_one_piece_first_then_one_more_while_the_link_idles(fake):
    out = []
    p = piece_module.Pipeline(pieces(fake, 6, out))
    p.pump(submit=True)  # the start: one piece
    assert [t for t, _ in fake.started] == [(0, 0)]
    fake.done.add(1)
    p.pump(submit=False)  # collected at the next step's start, nothing new submitted
    assert out == [(0, 0, "out1")] and not p.active
    p.pump(submit=True)  # nothing was left running: one more than before
    assert [t for t, _ in fake.started][1:] == [(1, 0), (2, 0)]
    fake.done.add(2)  # one of two finished by the next boundary: the batch is that many
    p.pump(submit=True)
    assert [t for t, _ in fake.started][3:] == []  # one still running, budget 1: no new one
    assert p.budget == 1
    p.drain(None)  # the rest, at most two at a time, oldest first
    assert [i for i, _, _ in out] == [0, 1, 2, 3, 4, 5] and p.done


def test_pieces_of_two_collectives_and_the_cap(fake):
    out = []
    p = piece_module.Pipeline(pieces(fake, 3, out, stages=2), most=1)
    p.pump(submit=True)
    fake.done.add(1)
    p.pump(submit=False)  # the first collective done: the piece starts its second
    assert [t for t, _ in fake.started] == [(0, 0), (0, 1)] and len(p.active) == 1
    fake.done.add(2)
    p.pump(submit=True)  # finished; the link idled, but one at a time at most
    assert p.budget == 1 and [t for t, _ in fake.started][2:] == [(1, 0)]
    p.drain(None)
    assert [(i, s) for i, s, _ in out] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
