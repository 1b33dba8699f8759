"""The ControlRunner's handlers never wait on the network: Logout and LiteUpdate hand the work to
the I/O threads and answer (a deferred reply) when it is done.

The control server here is a black hole: a loopback socket that accepts TCP (the kernel's backlog)
and never answers, so every request blocks its I/O thread until the request timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pytsnet.actors.control.runner import ControlRunner, RunnerConfig
from pytsnet.actors.runtime import ActorStopped, ActorSystem
from pytsnet.actors.runtime.errors import HandlerError
from pytsnet.messages.control import GetState, LiteUpdate, LiteUpdateDone, Logout, LogoutDone
from pytsnet.state import MemoryStore

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
