"""The ``Splice`` on one thread, against a bare ``FlowChannel`` driven by the test (no flow actor).

What the selector loop must keep from the two-thread copy: every notify wakes it at once (never the
0.5 s check slice: no lost wake-up, on either direction), half-closes carried both ways, back-pressure
(a full flow stops the socket reads; room resumes them), a reset of the flow reported as one, and a
clean end closing the socket and the flow; one thread in all.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.splice import Splice, SpliceLimits

pytestmark = pytest.mark.timeout(60)

PROMPT = 0.25
"""Well under the splice's 0.5 s check slice: a wake-up that came only from that slice fails."""


def _channel(capacity: int = 1 << 20) -> FlowChannel:
    return FlowChannel("t", ("100.64.0.1", 1), ("100.64.0.2", 2), capacity)


def _deliver(ch: FlowChannel, data: bytes = b"", *, eof: bool = False) -> None:
    """What the flow actor does for a segment from the peer: bytes into ``rx`` (or its FIN), a notify."""
    if data:
        ch.rx.push(data)
    if eof:
        with ch.lock:
            ch.rx_eof = True
    ch.notify()


def _sent(ch: FlowChannel, n: int, bound: float) -> bytes:
    """The first ``n`` bytes the splice wrote into the flow (within ``bound`` seconds)."""
    end = time.monotonic() + bound
    while len(ch.tx) < n:
        assert time.monotonic() < end, f"only {len(ch.tx)} of {n} bytes reached the flow"
        time.sleep(0.005)
    return ch.tx.peek()[:n]


Spliced = Iterator[tuple[socket.socket, list[str | None]]]


@contextmanager
def spliced(ch: FlowChannel, limits: SpliceLimits | None = None) -> Spliced:
    """Run a splice on its own thread, and fail if that thread starts any other.

    Threads are told apart by who started them (not by the process's thread count, which other
    tests' lingering threads change at any moment): both directions must stay on the one thread.
    """
    ours, theirs = socket.socketpair()
    splice = Splice(theirs, ch, limits or SpliceLimits())
    result: list[str | None] = []
    t = threading.Thread(target=lambda: result.append(splice.run()), daemon=True)
    started_by_splice: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if threading.current_thread() is t:
            started_by_splice.append(self)
        real_start(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(threading.Thread, "start", start)
        t.start()
        try:
            yield ours, result
        finally:
            splice.stop.set()
            ours.close()
            t.join(5)
            assert not t.is_alive()
    assert started_by_splice == []  # both directions on the one thread


def test_every_notify_wakes_it_at_once_both_ways() -> None:
    ch = _channel()
    with spliced(ch) as (ours, _):
        ours.settimeout(PROMPT)
        for i in range(30):
            time.sleep(0.01 * (i % 4))  # sometimes while it sleeps, sometimes while it is busy
            msg = b"down %d" % i
            _deliver(ch, msg)
            assert ours.recv(100) == msg  # flow → socket within PROMPT: woken by the notify
            up = b"up %d" % i
            ours.sendall(up)
            assert _sent(ch, len(up), PROMPT) == up  # socket → flow
            ch.tx.ack_to(ch.tx.end)  # the peer acknowledged it: the send buffer is empty again


def test_half_closes_carried_and_a_clean_end_closes_both() -> None:
    ch = _channel()
    with spliced(ch) as (ours, result):
        ours.settimeout(PROMPT)
        _deliver(ch, b"last", eof=True)
        assert ours.recv(100) == b"last"
        assert ours.recv(100) == b""  # the flow's FIN: the socket's write side shut
        ours.sendall(b"still flowing")  # the other direction goes on
        assert _sent(ch, 13, PROMPT) == b"still flowing"
        assert not ch.tx_eof
        ours.shutdown(socket.SHUT_WR)
        end = time.monotonic() + PROMPT
        while not result:
            assert time.monotonic() < end, "the splice did not end after both FINs"
            time.sleep(0.005)
        assert result == [None] and ch.tx_eof and ch.app_closed


def test_a_full_flow_stops_the_reads_and_room_resumes_them() -> None:
    ch = _channel(capacity=1000)
    with spliced(ch, SpliceLimits(buffer=4096)) as (ours, _):
        ours.sendall(b"x" * 5000)
        assert _sent(ch, 1000, PROMPT) == b"x" * 1000
        time.sleep(0.1)
        assert len(ch.tx) == 1000  # bounded: no more than the flow's room taken
        ch.tx.ack_to(ch.tx.end)
        ch.notify()  # what the flow does when an ACK frees room
        assert len(_sent(ch, 1000, PROMPT)) == 1000  # resumed at once


def test_a_reset_flow_is_reported() -> None:
    ch = _channel()
    with spliced(ch) as (_ours, result):
        with ch.lock:
            ch.error = ConnectionResetError("reset by peer")
        ch.notify()
        end = time.monotonic() + PROMPT
        while not result:
            assert time.monotonic() < end, "the reset did not end the splice"
            time.sleep(0.005)
        assert result[0] is not None and "tailnet side reset" in result[0]


class _LateNotify(FlowChannel):
    """A flow whose bytes arrive just after the splice found nothing to read and before it sleeps:
    the window where a wake-up is lost unless a notify while busy is remembered."""

    def __init__(self) -> None:
        super().__init__("late", ("100.64.0.1", 1), ("100.64.0.2", 2), 1 << 20)
        self.arriving: list[bytes] = []

    def try_recv(self, max_bytes: int) -> bytes | None:
        got = super().try_recv(max_bytes)
        if got is None and self.arriving:
            _deliver(self, self.arriving.pop(0))  # after the attempt, on the splice's own thread
        return got


def test_a_notify_between_the_attempts_and_the_sleep_is_not_lost() -> None:
    ch = _LateNotify()
    with spliced(ch) as (ours, _):
        ours.settimeout(PROMPT)
        for i in range(5):
            msg = b"late %d" % i
            ch.arriving.append(msg)
            _deliver(ch)  # wake it: its attempt finds nothing, then the bytes arrive
            assert ours.recv(100) == msg


def test_what_the_host_wrote_before_it_went_away_reaches_the_flow_before_the_reset() -> None:
    """A host app writes its answer and closes with bytes unread (an HTTP server's 501 to a POST
    whose body it never read): its socket is then reset. A write to it fails at once, but what it
    wrote before it went is still queued on our end, and the flow must get it before the reset, as
    the peer of a kernel socket gets what it sent before its RST. The flow's own bytes are waiting
    first, so the failed write comes before any read of the answer."""
    ours, theirs = socket.socketpair()
    answer = b"HTTP/1.1 501 Unsupported method\r\nContent-Length: 357\r\n\r\n" + b"<html>" * 59 + b"!!!"
    theirs.sendall(b"x")  # the request body the host app never reads
    ours.sendall(answer)
    ours.close()  # with "x" unread: our end is reset
    ch = _channel()
    _deliver(ch, b"more from the tailnet peer")  # flow -> socket is tried first in each turn
    why = Splice(theirs, ch, SpliceLimits()).run()
    assert why is not None and why.startswith("up:"), why  # the write failed: a reset all the same
    assert ch.tx.peek() == answer
