"""A LocalTailnet on loopback per test, and a device factory that closes what it made."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalTailnet]:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as n:
        yield n


@pytest.fixture
def make_device(tmp_path: Path) -> Iterator[Callable[..., ActorDevice]]:
    made: list[ActorDevice] = []

    def make(name: str, control_url: str, auth_key: str = "", *, dir_name: str | None = None,
             ephemeral: bool = False, **kw: Any) -> ActorDevice:
        d = None if ephemeral and dir_name is None else tmp_path / (dir_name or name)
        kw.setdefault("backoff_max", 1.0)
        logger = kw.pop("logger", None)  # the one ActorDevice keyword; every other knob is a Config field
        dev = ActorDevice(Config(dir=d, hostname=name, auth_key=auth_key, control_url=control_url,
                                 ephemeral=ephemeral, **kw), logger=logger)
        made.append(dev)
        return dev.start()

    yield make
    for dev in made:
        dev.close()
