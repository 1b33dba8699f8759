"""A worker's heartbeat follows its ``WorkerReady`` at once: the front's status (``exit_ok``, counters)
is fresh when the worker turns ready, not one heartbeat interval old — the last beat before it was
built while the node was still logging in (``exit_ok`` false with an exit node configured)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from worker_rig import Rig, worker, worker_rig

from pytsnet.messages.egress import WorkerHeartbeat, WorkerReady


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with worker_rig(tmp_path_factory.mktemp("egress-beat")) as r:
        yield r


def test_a_heartbeat_follows_ready_at_once(rig: Rig) -> None:
    with worker(rig, "egress-beat", heartbeat_interval=10.0) as w:
        w.ready()
        t0 = time.monotonic()

        def after_ready() -> list[WorkerHeartbeat]:
            with w.cond:
                i = next(i for i, m in enumerate(w.frames) if isinstance(m, WorkerReady))
                return [m for m in w.frames[i:] if isinstance(m, WorkerHeartbeat)]

        while not after_ready() and time.monotonic() - t0 < 5.0:
            time.sleep(0.02)
        beats = after_ready()
        assert beats, "no heartbeat within 5 s of WorkerReady (the interval is 10 s)"
        assert beats[0].exit_ok and beats[0].exit_node is None
