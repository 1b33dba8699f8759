"""Two devices on a LocalTailnet over loopback: ``web`` (the server side) and ``app`` (the client)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytsnet import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.tailnet import local_tailnet


@dataclass
class Pair:
    net: LocalTailnet
    web: ActorDevice
    app: ActorDevice


@contextmanager
def web_and_app(tmp: Path) -> Iterator[Pair]:
    with local_tailnet(tmp, ["web", "app"]) as tn:
        yield Pair(tn.net, tn["web"], tn["app"])
