"""The control performer's SSH-action thread (check mode, 22d) with several held fetches: it sleeps
until one is answered (the response's headers hook wakes it) or the nearest deadline passes — no
polling, and a long-held check never delays another's answer."""

from __future__ import annotations

import threading
import time
from typing import cast

import pytest

from pytsnet.actors.control.performer import ControlPerformer
from pytsnet.actors.control.transport import Noise2Client, Response
from pytsnet.messages.ssh import IoSshActionAnswer
from pytsnet.wire.keys import MachinePrivate

pytestmark = pytest.mark.timeout(30)


class _Client:
    """What the SSH-action thread needs of a ``Noise2Client``: ``cancel`` of a stream it gives up."""

    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def cancel(self, resp: Response) -> None:
        self.cancelled.append(resp.stream_id)


def _hold(p: ControlPerformer, token: int, stream: int, client: _Client, timeout: float) -> Response:
    """What ``SendSshActionFetch`` does once the request is on the wire."""
    resp = Response(stream_id=stream)
    resp.on_headers = p._ssh_wake
    p._ssh_new.put((token, cast("Noise2Client", client), resp, time.monotonic() + timeout))
    return resp


def _answer(resp: Response, body: bytes) -> None:
    """What the connection's reader thread does for a 200 with a body."""
    resp.status = 200
    resp.chunks.put(body)
    resp.chunks.put(None)
    resp.mark_headers()


def test_the_second_check_is_answered_while_the_first_is_still_held() -> None:
    p = ControlPerformer("http://127.0.0.1:1", MachinePrivate.generate(), request_timeout=5, watchdog=5)
    client = _Client()
    _hold(p, 1, 11, client, timeout=60)
    second = _hold(p, 2, 13, client, timeout=60)
    assert p.step_ssh_actions() is None  # took in the first
    assert p.step_ssh_actions() is None  # and the second; both held now
    threading.Timer(0.5, _answer, (second, b'{"Accept": true}')).start()
    t0 = time.monotonic()
    got = p.step_ssh_actions()  # one call: it sleeps until the answer (a poll would return None)
    assert isinstance(got, IoSshActionAnswer)
    assert (got.token, got.status, got.body) == (2, 200, b'{"Accept": true}')
    assert time.monotonic() - t0 < 5  # woken by the answer, not by the first check's 60 s deadline


def test_a_held_check_ends_at_its_deadline_and_its_stream_is_cancelled() -> None:
    p = ControlPerformer("http://127.0.0.1:1", MachinePrivate.generate(), request_timeout=5, watchdog=5)
    client = _Client()
    _hold(p, 7, 21, client, timeout=0.3)
    t0 = time.monotonic()
    got = None
    while got is None:
        got = p.step_ssh_actions()
    assert isinstance(got, IoSshActionAnswer) and got.token == 7 and got.error
    assert 0.25 <= time.monotonic() - t0 < 5 and client.cancelled == [21]


def test_a_cancel_drops_the_held_check() -> None:
    p = ControlPerformer("http://127.0.0.1:1", MachinePrivate.generate(), request_timeout=5, watchdog=5)
    client = _Client()
    _hold(p, 3, 31, client, timeout=60)
    assert p.step_ssh_actions() is None
    p.cancel_ssh_action(3)
    assert p.step_ssh_actions() is None
    assert client.cancelled == [31] and p._ssh_waiting == []
