"""A restarted ControlRunner is not a restarted node: an authorized, unexpired node stays Running.

Go keeps ``ipn.Running`` across a map-stream reconnect; the data plane never stopped. Before this,
a new incarnation published ``Starting`` until its first netmap, which apps (and an e2e test that
raced it) saw as the node going down.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pytsnet.actors.control.runner import ControlRunner, RunnerConfig
from pytsnet.actors.control.store import MACHINE_KEY, NETMAP, NODE
from pytsnet.actors.runtime import ActorRef, ActorSystem, FaultInjector
from pytsnet.messages.base import Message
from pytsnet.messages.control import DeviceState
from pytsnet.state import MemoryStore
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import MachinePrivate, NodePrivate
from pytsnet.wire.tailcfg import Node

DEAD_CONTROL = "http://127.0.0.1:9"  # nothing listens: the new incarnation never gets a netmap


def _store(*, authorized: bool, expires_in: timedelta) -> MemoryStore:
    store = MemoryStore()
    node = NodePrivate.generate()
    store.write_state(MACHINE_KEY, MachinePrivate.generate().to_text().encode())
    store.write_state(NODE, json.dumps({"NodePrivate": node.to_text(), "LoggedIn": True,
                                        "OldNodeKey": "", "ControlURL": DEAD_CONTROL}).encode())
    me = Node(ID=7, Name="me.example.ts.net.", Key=node.public(), Addresses=["100.64.0.7/32"],
              MachineAuthorized=authorized, KeyExpiry=datetime.now(UTC) + expires_in)
    store.write_state(NETMAP, json.dumps({"Node": me.model_dump(mode="json", by_alias=True)}).encode())
    return store


@pytest.mark.parametrize(("authorized", "expires_in", "after_restart"), [
    (True, timedelta(days=1), "Running"),
    (True, timedelta(seconds=-1), "Starting"),  # our key ran out: no resuming on a stale netmap
    (False, timedelta(days=1), "Starting"),
])
def test_restarted_runner_resumes_only_a_usable_node(
    authorized: bool, expires_in: timedelta, after_restart: str
) -> None:
    published: list[DeviceState] = []
    second: list[DeviceState] = []  # published by the second incarnation (the first may still speak)
    refs: list[ActorRef] = []

    def publish(m: Message) -> None:
        if isinstance(m, DeviceState):
            published.append(m)
            if refs and refs[0].incarnation == 2:
                second.append(m)

    system = ActorSystem("restart-test")
    try:
        cfg = RunnerConfig(control_url=DEAD_CONTROL, hostname="me", backoff_min=5, backoff_max=5,
                           request_timeout=0.5)
        ref = system.spawn(ControlRunner, cfg, _store(authorized=authorized, expires_in=expires_in),
                           publish, name="control")
        refs.append(ref)
        wait_until(lambda: ref.is_alive and bool(published), 5, "first incarnation started")
        assert published[0].state == "Starting"  # a fresh start always waits for a netmap
        FaultInjector.kill_now(ref)
        wait_until(lambda: ref.incarnation == 2 and ref.is_alive and bool(second), 5,
                   "second incarnation published its state")
        assert second[0].state == after_restart
        if after_restart == "Running":
            assert second[0].addresses == ["100.64.0.7/32"] and second[0].node_id == 7
    finally:
        system.shutdown()
