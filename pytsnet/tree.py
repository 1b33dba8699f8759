"""The device's supervision tree, declared in one place.

    system root
    └── node (one-for-one, 5 restarts / 10 s)
        ├── peers    PeerTracker   permanent  (started first: control tells it netmaps by name)
        └── control  ControlRunner permanent  (a crash restarts it; it re-registers and re-polls)

The data plane (next issue) adds its actors here.
"""

from __future__ import annotations

from collections.abc import Callable

from pytsnet.actors.control import ControlRunner, RunnerConfig, StateStore
from pytsnet.actors.peers import PeerTracker
from pytsnet.actors.runtime import ChildSpec, Restart, Strategy, supervisor_spec
from pytsnet.messages.base import Message

__all__ = ["CONTROL", "NODE", "PEERS", "device_tree"]

NODE, PEERS, CONTROL = "node", "peers", "control"


def device_tree(runner: RunnerConfig, store: StateStore, publish: Callable[[Message], None]) -> ChildSpec:
    return supervisor_spec(NODE, [
        ChildSpec(PeerTracker, PEERS, args=(publish,), restart=Restart.PERMANENT),
        ChildSpec(ControlRunner, CONTROL, args=(runner, store, publish), restart=Restart.PERMANENT),
    ], strategy=Strategy.ONE_FOR_ONE, max_restarts=5, within=10.0)
