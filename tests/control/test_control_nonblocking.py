"""The ControlRunner's handlers never wait on the network: Logout and LiteUpdate hand the work to
the I/O threads and answer (a deferred reply) when it is done.

The control server here is a black hole: a loopback socket that accepts TCP (the kernel's backlog)
and never answers, so every request blocks its I/O thread until the request timeout.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytsnet.actors.control.runner import ControlRunner, RunnerConfig
from pytsnet.actors.runtime import ActorStopped, ActorSystem
from pytsnet.actors.runtime.errors import HandlerError
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.control import GetState, LiteUpdate, LiteUpdateDone, Logout, LogoutDone
from pytsnet.state import MemoryStore
from pytsnet.testing.polling import wait_until

REQUEST_TIMEOUT = 2.0


@pytest.fixture
def black_hole() -> Iterator[str]:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as srv:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    s = ActorSystem("control-nonblocking")
    yield s
    s.shutdown()



def _config(url: str, request_timeout: float) -> RunnerConfig:
    return RunnerConfig(control_url=url, hostname="me", request_timeout=request_timeout)


def test_logout_and_lite_update_handlers_return_while_the_transport_is_blocked(
    black_hole: str, system: ActorSystem
) -> None:
    ref = system.spawn(ControlRunner, _config(black_hole, REQUEST_TIMEOUT), MemoryStore(), name="control")
    time.sleep(0.2)  # the I/O thread is now inside GET /key, which the black hole never answers
    t0 = time.monotonic()
    ref.tell(Logout())
    assert ref.ask(GetState(), timeout=1.0).state == "Starting"  # the mailbox did not wait on logout
    done = ref.ask(LiteUpdate(endpoints=["192.0.2.1:41641"], endpoint_types=[1]), timeout=1.0)
    assert done == LiteUpdateDone(ok=False)  # no connection: answered at once, nothing blocked
    assert time.monotonic() - t0 < 1.0


def test_logout_replies_once_the_io_side_gave_up(black_hole: str, system: ActorSystem) -> None:
    ref = system.spawn(ControlRunner, _config(black_hole, REQUEST_TIMEOUT), MemoryStore(), name="control")
    done = ref.ask(Logout(), timeout=4 * REQUEST_TIMEOUT + 2)
    assert isinstance(done, LogoutDone) and not done.ok and done.error.startswith("logout:")
    st = ref.ask(GetState(), timeout=1.0)
    assert st.state == "NeedsLogin" and st.error == done.error


def test_a_pending_logout_fails_fast_when_the_runner_stops(black_hole: str, system: ActorSystem) -> None:
    ref = system.spawn(ControlRunner, _config(black_hole, 30.0), MemoryStore(), name="control")
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            ref.ask(Logout(), timeout=20)
        except (ActorStopped, HandlerError) as e:
            errors.append(e)

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    system.stop_actor(ref)
    asker.join(5)
    assert not asker.is_alive() and len(errors) == 1, errors
    assert time.monotonic() - t0 < 5


def test_lite_update_waits_for_control_off_the_actor_thread(tmp_path: Path, system: ActorSystem) -> None:
    """A live connection whose lite update control never answers: the ask is answered (not ok) after
    the request timeout, and meanwhile the runner keeps answering and keeps its map stream."""
    with LocalTailnet(tmp_path / "control") as net:
        assert net.control is not None
        control = net.control
        cfg = RunnerConfig(control_url=net.control_url, hostname="me", auth_key=net.create_authkey(),
                           request_timeout=REQUEST_TIMEOUT)
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        wait_until(lambda: ref.ask(GetState(), timeout=1).state == "Running", 15, "runner Running")
        real = control._serve_map
        held: list[float] = []

        async def hang_lite_updates(req: Any, machine: str, resp: Any) -> None:
            if req.get("Stream"):
                await real(req, machine, resp)
                return
            held.append(time.monotonic())
            await asyncio.sleep(3 * REQUEST_TIMEOUT)  # the transport is stuck on this request

        control._serve_map = hang_lite_updates  # type: ignore[method-assign]
        try:
            answers: list[LiteUpdateDone] = []
            asker = threading.Thread(target=lambda: answers.append(
                ref.ask(LiteUpdate(endpoints=["192.0.2.1:41641"], endpoint_types=[1]), timeout=10)))
            asker.start()
            wait_until(lambda: bool(held), 5, "control holds the lite update")
            t0 = time.monotonic()
            for _ in range(5):
                assert ref.ask(GetState(), timeout=0.5).state == "Running"
            assert time.monotonic() - t0 < 1.0
            assert asker.is_alive()  # still waiting for control, but not on the actor thread
            asker.join(10)
            assert answers == [LiteUpdateDone(ok=False)]
            assert ref.ask(GetState(), timeout=1).state == "Running"
        finally:
            del control._serve_map
