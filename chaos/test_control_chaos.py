"""Chaos: ControlRunner killed mid-map-stream restarts, resumes, and the peer table converges."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.actors.runtime import FaultInjector
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until as _wait


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalTailnet]:
    with LocalTailnet(tmp_path / "control") as n:
        yield n



def test_control_runner_killed_mid_stream_converges(
    net: LocalTailnet, tmp_path: Path, chaos_seed: int
) -> None:
    key = net.create_authkey(reusable=True)

    def dev(name: str) -> ActorDevice:
        return ActorDevice(Config(dir=tmp_path / name, hostname=name, auth_key=key,
                                  control_url=net.control_url, backoff_max=0.5)).start()

    watcher = dev("watcher")
    others = [dev("p1")]
    try:
        watcher.wait_until_running_blocking(10)
        others[0].wait_until_running_blocking(10)
        assert watcher.system is not None
        faults = FaultInjector(seed=chaos_seed).install(watcher.system)
        control = watcher.system.lookup("control")
        assert control is not None
        first = control.incarnation
        # Kill the runner on its next handled message: the map frame announcing the next change.
        faults.kill_after(0, name="control")
        others.append(dev("p2"))
        others[1].wait_until_running_blocking(10)
        _wait(lambda: faults.killed.is_set())
        _wait(lambda: control.incarnation > first and control.is_alive)
        # While it was down more changed: one peer logs out, another joins.
        assert others[0].logout_blocking().ok
        others.append(dev("p3"))
        others[2].wait_until_running_blocking(10)

        def converged() -> bool:
            server = {n.id for n in net.nodes() if not n.logged_out and n.id != watcher.state.node_id}
            return {p.node_id for p in watcher.peers()} == server

        _wait(converged)
        assert watcher.state.state == "Running"
        assert {p.hostname for p in watcher.peers()} == {"p2", "p3"}
        assert faults.kills and faults.kills[0][0] == "control"
    finally:
        for d in [*others, watcher]:
            d.close()
