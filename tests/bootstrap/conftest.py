"""A local tailnet per test, a device factory, and an ID-token issuer (a P-256 key localnet trusts)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from idtoken_issuer import Issuer

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalTailnet]:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as n:
        yield n


@pytest.fixture
def make_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ActorDevice]]:
    for var in ("TS_AUTHKEY", "TS_AUTH_KEY", "TS_CLIENT_SECRET", "TS_CLIENT_ID", "TS_ID_TOKEN", "TS_AUDIENCE",
                "TS_BASE_URL", "TSNET_FORCE_LOGIN"):
        monkeypatch.delenv(var, raising=False)
    made: list[ActorDevice] = []

    def make(name: str, net: LocalTailnet, **kw: Any) -> ActorDevice:
        kw.setdefault("backoff_max", 1.0)
        kw.setdefault("dir", tmp_path / name)
        dev = ActorDevice(Config(hostname=name, control_url=net.control_url, bind_host="127.0.0.1", **kw))
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.close()


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()
