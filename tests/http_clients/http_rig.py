"""Two devices on a LocalTailnet over loopback: ``web`` (the server side) and ``app`` (the client)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytsnet import ActorDevice, Config
from pytsnet.localnet.server import LocalTailnet


@dataclass
class Pair:
    net: LocalTailnet
    web: ActorDevice
    app: ActorDevice


def wait_for_peer(dev: ActorDevice, name: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not any(p.hostname == name for p in dev.peers()):
        if time.monotonic() > end:
            raise TimeoutError(f"{dev.state.name} never saw {name}")
        time.sleep(0.05)


def device(net: LocalTailnet, tmp: Path, name: str, key: str) -> ActorDevice:
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url,
                              bind_host="127.0.0.1", backoff_max=1.0))


@contextmanager
def web_and_app(tmp: Path) -> Iterator[Pair]:
    with LocalTailnet(tmp / "control", listen="127.0.0.1:0") as net:
        key = net.create_authkey(reusable=True)
        devs = [device(net, tmp, name, key) for name in ("web", "app")]
        try:
            for d in devs:
                d.start()
            for d in devs:
                d.up_blocking(30)
            wait_for_peer(devs[1], "web")
            wait_for_peer(devs[0], "app")
            yield Pair(net, devs[0], devs[1])
        finally:
            for d in devs:
                d.close()
