"""The ControlRunner's Tailnet Lock plumbing over a real Noise connection to localnet: a
``TkaControlCall`` goes out as Go sends ``tkaDoSyncOffer`` and its siblings (GET with a JSON body,
``:authority`` ``unused``), is answered by a deferred reply, and each netmap is told to the TKA actor
as ``TkaNetmapInfo``."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytsnet.actors.control.runner import ControlRunner, RunnerConfig
from pytsnet.actors.runtime import Actor, ActorSystem, handles
from pytsnet.actors.runtime.faults import FaultInjector
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.control import GetState
from pytsnet.messages.tka import (
    TkaAuthorityUpdate,
    TkaAuthorityWanted,
    TkaControlAnswer,
    TkaControlCall,
    TkaNetmapInfo,
)
from pytsnet.state import MemoryStore
from pytsnet.testing.polling import wait_until

pytestmark = pytest.mark.timeout(60)
REQUEST_TIMEOUT = 3.0


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    s = ActorSystem("control-tka")
    yield s
    s.shutdown()


class TkaProbe(Actor):
    """Stands in for the TKA actor: keeps what the runner tells it."""

    def __init__(self) -> None:
        self.infos: list[TkaNetmapInfo] = []

    @handles(TkaNetmapInfo)
    def on_info(self, msg: TkaNetmapInfo) -> None:
        self.infos.append(msg)

    @handles(TkaAuthorityWanted)
    def on_wanted(self, msg: TkaAuthorityWanted) -> None:
        """Holds no authority yet: nothing to tell."""



def _record_map_heads(control: Any) -> tuple[list[tuple[bool, str]], Callable[[], None]]:
    """Record (Stream, TKAHead) of every map request localnet's control serves; and the undo."""
    real = control._serve_machine
    heads: list[tuple[bool, str]] = []

    async def record_maps(req: Any, resp: Any, machine: str) -> None:
        if req.path == "/machine/map":
            body = json.loads(bytes(req.body))
            heads.append((bool(body.get("Stream")), body.get("TKAHead", "")))
        await real(req, resp, machine)

    control._serve_machine = record_maps

    def restore() -> None:
        del control._serve_machine  # the instance attribute: the class's handler again

    return heads, restore

def test_no_session_is_no_netmap_at_once(system: ActorSystem) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as srv:  # never answers
        cfg = RunnerConfig(control_url=f"http://127.0.0.1:{srv.getsockname()[1]}", hostname="me")
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        t0 = time.monotonic()
        answer = ref.ask(TkaControlCall(path="/machine/tka/bootstrap", body=b"{}"), timeout=1.0)
        assert answer == TkaControlAnswer(status=503, error="no netmap")
        assert time.monotonic() - t0 < 1.0


def test_only_tka_paths_are_sent(system: ActorSystem) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as srv:
        cfg = RunnerConfig(control_url=f"http://127.0.0.1:{srv.getsockname()[1]}", hostname="me")
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        for path in ("/machine/register", "/machine/tka/../register", "/key"):
            answer = ref.ask(TkaControlCall(path=path, body=b"{}"), timeout=1.0)
            assert answer.status == 400 and "not a TKA call" in answer.error


def test_tka_call_is_a_get_with_a_json_body_to_unused(tmp_path: Path, system: ActorSystem) -> None:
    with LocalTailnet(tmp_path / "control") as net:
        control = net.control
        assert control is not None
        system.spawn(TkaProbe, name="tka")
        cfg = RunnerConfig(control_url=net.control_url, hostname="me", auth_key=net.create_authkey(),
                           request_timeout=REQUEST_TIMEOUT, tka_name="tka")
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        wait_until(lambda: ref.ask(GetState(), timeout=1).state == "Running", 15, "runner Running")
        real = control._serve_machine
        seen: list[tuple[str, str, str, bytes]] = []
        answer_body = json.dumps({"Head": "x" * 52, "Ancestors": ["a", "b"]}).encode()
        gate = threading.Event()

        async def tka_answers(req: Any, resp: Any, machine: str) -> None:
            if req.path.startswith("/machine/tka/"):
                seen.append((req.method, req.path, req.headers.get(":authority", ""), bytes(req.body)))
                gate.wait(5)
                await resp.simple(200, answer_body, "application/json")
                return
            await real(req, resp, machine)

        control._serve_machine = tka_answers  # type: ignore[method-assign]
        try:
            body = json.dumps({"Version": 1, "NodeKey": "nodekey:" + "00" * 32, "Head": "h"}).encode()
            answers: list[TkaControlAnswer] = []
            asker = threading.Thread(target=lambda: answers.append(
                ref.ask(TkaControlCall(path="/machine/tka/sync/offer", body=body), timeout=10)))
            asker.start()
            wait_until(lambda: bool(seen), 5, "control got the TKA call")
            assert ref.ask(GetState(), timeout=0.5).state == "Running"  # the runner is not blocked
            gate.set()
            asker.join(10)
        finally:
            del control._serve_machine
        assert seen == [("GET", "/machine/tka/sync/offer", "unused", body)]
        assert answers == [TkaControlAnswer(status=200, body=answer_body)]
        # An error status and its body come back as they came (the TKA actor decides what it means).
        answer = ref.ask(TkaControlCall(path="/machine/tka/nonesuch", body=b"not json"), timeout=10)
        assert answer.status == 400 and b"bad request" in answer.body


def test_every_netmap_tells_the_tka_actor(tmp_path: Path, system: ActorSystem) -> None:
    with LocalTailnet(tmp_path / "control") as net:
        probe = system.spawn(TkaProbe, name="tka")
        cfg = RunnerConfig(control_url=net.control_url, hostname="me", auth_key=net.create_authkey(),
                           request_timeout=REQUEST_TIMEOUT, tka_name="tka")
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        wait_until(lambda: ref.ask(GetState(), timeout=1).state == "Running", 15, "runner Running")
        actor = probe._cell.actor
        assert isinstance(actor, TkaProbe)
        wait_until(lambda: bool(actor.infos), 5, "TkaNetmapInfo told")
        info = actor.infos[-1]
        # localnet without a lock: no TKAInfo, so the lock is off; our own key rides along.
        assert (info.enabled, info.head, info.disabled, info.self_key_signature) == (False, "", False, b"")
        assert info.self_node_key.startswith("nodekey:") and len(info.self_node_key) == 8 + 64


def test_adopted_head_goes_to_control_in_a_lite_update(tmp_path: Path, system: ActorSystem) -> None:
    """Go ``Auto.SetTKAHead``: the TKA actor's new head is sent at once (a non-streaming map request
    with ``TKAHead``) and rides in later map requests; an unchanged head sends nothing."""
    with LocalTailnet(tmp_path / "control") as net:
        control = net.control
        assert control is not None
        cfg = RunnerConfig(control_url=net.control_url, hostname="me", auth_key=net.create_authkey(),
                           request_timeout=REQUEST_TIMEOUT)
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        wait_until(lambda: ref.ask(GetState(), timeout=1).state == "Running", 15, "runner Running")
        heads, restore = _record_map_heads(control)
        try:
            head = "A" * 52
            ref.tell(TkaAuthorityUpdate(enabled=True, head=head, seq=1))
            wait_until(lambda: (False, head) in heads, 5, "a lite update with the head")
            ref.tell(TkaAuthorityUpdate(enabled=True, head=head, seq=2))
            ref.ask(GetState(), timeout=1)
            time.sleep(0.3)
            assert heads.count((False, head)) == 1  # unchanged: not sent again
            ref.tell(TkaAuthorityUpdate(enabled=False, seq=3))  # lock off locally: no head
            wait_until(lambda: heads[-1] == (False, ""), 5, "a lite update without a head")
        finally:
            restore()


class HeadKeeper(Actor):
    """Stands in for the TKA actor holding an authority: answers ``TkaAuthorityWanted``."""

    def __init__(self, head: str, asked: list[str]) -> None:
        self.head, self.asked = head, asked

    @handles(TkaAuthorityWanted)
    def on_wanted(self, msg: TkaAuthorityWanted) -> None:
        self.asked.append(msg.reply_to)
        self.tell_named(msg.reply_to, TkaAuthorityUpdate(enabled=True, head=self.head, seq=1))

    @handles(TkaNetmapInfo)
    def on_info(self, msg: TkaNetmapInfo) -> None:
        """Already in sync: nothing to do."""


def test_restarted_runner_asks_the_tka_actor_for_its_head(tmp_path: Path, system: ActorSystem) -> None:
    with LocalTailnet(tmp_path / "control") as net:
        control = net.control
        assert control is not None
        head, asked = "C" * 52, []
        system.spawn(HeadKeeper, head, asked, name="tka")
        cfg = RunnerConfig(control_url=net.control_url, hostname="me", auth_key=net.create_authkey(),
                           request_timeout=REQUEST_TIMEOUT, tka_name="tka")
        ref = system.spawn(ControlRunner, cfg, MemoryStore(), name="control")
        wait_until(lambda: ref.ask(GetState(), timeout=1).state == "Running", 15, "runner Running")
        assert asked == ["control"]
        heads, restore = _record_map_heads(control)
        try:
            FaultInjector.kill_now(ref, "chaos: the control runner")
            wait_until(lambda: len(asked) == 2 and any(h == head for _, h in heads), 15,
                       "the restarted runner asked and sent the head")
        finally:
            restore()
