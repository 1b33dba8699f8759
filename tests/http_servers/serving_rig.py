"""The rig for tests/http_servers: two devices on a LocalTailnet over loopback (``alpha`` serves, ``beta``
calls); ``conftest`` shares one pair per test module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.tailnet import Tailnet, local_tailnet


@dataclass
class Pair:
    net: LocalTailnet
    a: ActorDevice
    b: ActorDevice

    name = staticmethod(Tailnet.name)
    ip = staticmethod(Tailnet.ip)


@contextmanager
def tailnet_pair(tmp: Path, names: tuple[str, str] = ("alpha", "beta")) -> Iterator[Pair]:
    with local_tailnet(tmp, names) as tn:
        yield Pair(tn.net, *tn.devices.values())
