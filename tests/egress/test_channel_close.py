"""Closing one end of a ``WorkerChannel`` is an EOF for the other end at once, even while a thread of
the closing side is blocked in ``recv`` (the front's slot reader, a test rig's): without it, the worker
learns that the front is gone only when its next heartbeat fails."""

from __future__ import annotations

import threading
import time

import pytest

from pytsnet.egress.channel import ChannelClosed, WorkerChannel


def test_close_is_an_eof_for_the_peer_while_our_reader_is_blocked() -> None:
    front, theirs = WorkerChannel.pair()
    worker = WorkerChannel(theirs)
    ended = threading.Event()

    def reader() -> None:
        with pytest.raises(ChannelClosed):
            front.recv()  # blocked: no timeout
        ended.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.2)
    front.close()
    t0 = time.monotonic()
    with pytest.raises(ChannelClosed):
        while worker.recv(timeout=0.1) is None:
            assert time.monotonic() - t0 < 3.0, "no EOF at the other end 3 s after close"
    assert ended.wait(3.0), "our own blocked reader was not woken"
    worker.close()
