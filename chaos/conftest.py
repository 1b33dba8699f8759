"""Chaos fixtures: a fresh actor system per dispatcher mode with a seeded fault injector installed.

``chaos_system`` runs each test on both dispatchers; ``faults`` is the system's ``FaultInjector``
(seed from ``--chaos-seed``, default 1234, printed on failure so a run can be reproduced).
``device_config`` makes configs of devices on a fresh local tailnet (one reusable auth key). The
``netns`` fixture and the public-control guard come from ``pytsnet.testing.fixtures``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytsnet.actors.runtime import ActorSystem, FaultInjector
from pytsnet.config import Config
from pytsnet.localnet.server import LocalTailnet


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-seed", type=int, default=1234, help="seed of the chaos fault injector")


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--chaos-seed"))


@pytest.fixture(params=["thread", "pool"])
def chaos_system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    system = ActorSystem(f"chaos-{request.param}", dispatcher=request.param)
    yield system
    assert system.shutdown(10)


@pytest.fixture
def faults(chaos_system: ActorSystem, chaos_seed: int) -> FaultInjector:
    return FaultInjector(seed=chaos_seed).install(chaos_system)


@pytest.fixture
def eventually() -> Callable[..., None]:
    """Wait for a condition with a deadline (polling, no fixed sleeps)."""

    def wait(pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met within timeout")
            time.sleep(0.002)

    return wait


@pytest.fixture
def device_config(tmp_path: Path) -> Iterator[Callable[[str], Config]]:
    """``device_config(name)``: the config of a device on a local tailnet started for this test."""
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        key = net.create_authkey(reusable=True)

        def make(name: str) -> Config:
            return Config(dir=tmp_path / name, hostname=name, auth_key=key, control_url=net.control_url,
                          backoff_max=1.0, bind_host="127.0.0.1")

        yield make
