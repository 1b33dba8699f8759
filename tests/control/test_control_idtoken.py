"""The ControlRunner's ``IdToken``: ``POST /machine/id-token`` on the live Noise connection, answered by a
deferred reply, so the actor keeps answering while control takes its time."""

from __future__ import annotations

import asyncio
import json
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
from pytsnet.messages.control import GetState, IdToken, IdTokenAnswer
from pytsnet.state import MemoryStore
from pytsnet.testing.polling import wait_until

pytestmark = pytest.mark.timeout(60)
REQUEST_TIMEOUT = 3.0


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    s = ActorSystem("control-idtoken")
    yield s
    s.shutdown()


def test_no_session_is_no_netmap_at_once(system: ActorSystem) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as srv:  # never answers
        cfg = RunnerConfig(control_url=f"http://127.0.0.1:{srv.getsockname()[1]}", hostname="me")
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        t0 = time.monotonic()
        assert ref.ask(IdToken(audience="a"), timeout=1.0) == IdTokenAnswer(status=503, error="no netmap")
        assert time.monotonic() - t0 < 1.0


def test_id_token_waits_for_control_off_the_actor_thread(tmp_path: Path, system: ActorSystem) -> None:
    with LocalTailnet(tmp_path / "control") as net:
        control = net.control
        assert control is not None
        cfg = RunnerConfig(control_url=net.control_url, hostname="me", auth_key=net.create_authkey(),
                           request_timeout=REQUEST_TIMEOUT)
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        wait_until(lambda: ref.ask(GetState(), timeout=1).state == "Running", 15, "runner Running")
        real = control._serve_machine
        held: list[float] = []

        async def slow_id_tokens(req: Any, resp: Any, machine: str) -> None:
            if req.path == "/machine/id-token":
                held.append(time.monotonic())
                await asyncio.sleep(REQUEST_TIMEOUT / 2)  # slow, but inside the request timeout
            await real(req, resp, machine)

        control._serve_machine = slow_id_tokens  # type: ignore[method-assign]
        try:
            answers: list[IdTokenAnswer] = []
            asker = threading.Thread(
                target=lambda: answers.append(ref.ask(IdToken(audience="aud-1"), timeout=10)))
            asker.start()
            wait_until(lambda: bool(held), 5, "control holds the id-token request")
            t0 = time.monotonic()
            for _ in range(5):
                assert ref.ask(GetState(), timeout=0.5).state == "Running"
            assert time.monotonic() - t0 < 1.0
            assert asker.is_alive()  # waiting for control, not on the actor thread
            asker.join(10)
            assert len(answers) == 1 and answers[0].status == 200 and not answers[0].error
            token = json.loads(answers[0].body)["id_token"]
            assert token.count(".") == 2 and token not in repr(answers[0])
        finally:
            del control._serve_machine


def test_a_pending_id_token_fails_fast_when_the_runner_stops(tmp_path: Path, system: ActorSystem) -> None:
    with LocalTailnet(tmp_path / "control") as net:
        control = net.control
        assert control is not None
        cfg = RunnerConfig(control_url=net.control_url, hostname="me", auth_key=net.create_authkey(),
                           request_timeout=30.0)
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        wait_until(lambda: ref.ask(GetState(), timeout=1).state == "Running", 15, "runner Running")
        real = control._serve_machine

        async def never(req: Any, resp: Any, machine: str) -> None:
            if req.path == "/machine/id-token":
                await asyncio.sleep(60)
            await real(req, resp, machine)

        control._serve_machine = never  # type: ignore[method-assign]
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                ref.ask(IdToken(audience="a"), timeout=20)
            except (ActorStopped, HandlerError) as e:
                errors.append(e)

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        system.stop_actor(ref)
        asker.join(5)
        del control._serve_machine
        assert not asker.is_alive() and len(errors) == 1, errors
        assert time.monotonic() - t0 < 5
