"""The rig for tests/http_servers: two devices on a LocalTailnet over loopback (``alpha`` serves, ``beta``
calls); ``conftest`` shares one pair per test module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until


@dataclass
class Pair:
    net: LocalTailnet
    a: ActorDevice
    b: ActorDevice

    def name(self, dev: ActorDevice) -> str:
        return dev.state.name

    def ip(self, dev: ActorDevice) -> str:
        return dev.tailscale_ips()[0]


@contextmanager
def tailnet_pair(tmp: Path, names: tuple[str, str] = ("alpha", "beta")) -> Iterator[Pair]:
    with LocalTailnet(tmp / "control", listen="127.0.0.1:0") as net:
        devs = [ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=net.create_authkey(),
                                   control_url=net.control_url, backoff_max=1.0, bind_host="127.0.0.1"))
                for name in names]
        try:
            for d in devs:
                d.start()
            for d in devs:
                d.wait_until_running_blocking(20)
            wait_until(lambda: all(len(d.status().peers) == 1 for d in devs), 20, "each sees the other")
            yield Pair(net, *devs)
        finally:
            for d in devs:
                d.close()
