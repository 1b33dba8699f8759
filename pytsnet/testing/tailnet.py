"""A LocalTailnet on loopback with named devices on it, for tests and rigs that need a few nodes
talking to each other (``local_tailnet(tmp, ["web", "app"])``).

Starting the nodes is the slow part of such a test (seconds; a request takes milliseconds), so a rig
starts them once, waits until every node is Running and has every other one in its peer list (a
dial before that is refused: the name is not on the tailnet yet), and closes all of them, then the
tailnet, on the way out, whatever happened in between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until

__all__ = ["GrowingRig", "Tailnet", "growing_tailnet", "local_tailnet", "new_device", "wait_for_peers"]

RIG_DEFAULTS: dict[str, Any] = {"bind_host": "127.0.0.1", "backoff_max": 1.0}
"""Config fields every rig device gets unless told otherwise: bound to loopback, quick to retry."""


@dataclass
class Tailnet:
    """The tailnet's control server (``net``) and its devices by hostname, in the order asked for."""

    net: LocalTailnet
    devices: dict[str, ActorDevice] = field(default_factory=dict)

    def __getitem__(self, hostname: str) -> ActorDevice:
        return self.devices[hostname]

    @staticmethod
    def name(dev: ActorDevice) -> str:
        """``dev``'s MagicDNS name (FQDN with the trailing dot), as a peer's ``whois`` reports it."""
        return dev.state.name

    @staticmethod
    def ip(dev: ActorDevice) -> str:
        """``dev``'s first tailnet address (IPv4)."""
        return dev.tailscale_ips()[0]


def new_device(net: LocalTailnet, tmp: Path, hostname: str, **config: Any) -> ActorDevice:
    """A device (not started; the caller closes it) for ``net`` with its own auth key, its state in
    ``tmp/HOSTNAME``; ``config``: more ``Config`` fields over ``RIG_DEFAULTS``."""
    return ActorDevice(Config(dir=tmp / hostname, hostname=hostname, auth_key=net.create_authkey(),
                              control_url=net.control_url, **(RIG_DEFAULTS | config)))


def _sees(dev: ActorDevice, hostnames: set[str]) -> bool:
    return hostnames <= {p.hostname for p in dev.status().peers}


def wait_for_peers(dev: ActorDevice, hostnames: Iterable[str], timeout: float = 30.0) -> None:
    """Return once ``dev`` has every one of ``hostnames`` in its peer list (``AssertionError`` after
    ``timeout`` seconds)."""
    want = set(hostnames)
    wait_until(lambda: _sees(dev, want), timeout, f"{dev.state.name or 'the device'} sees {sorted(want)}",
               interval=0.05)


@contextmanager
def local_tailnet(tmp: Path, hostnames: Sequence[str], *, timeout: float = 30.0,
                  net_options: Mapping[str, Any] | None = None,
                  on_start: Callable[[ActorDevice], object] | None = None,
                  **config: Any) -> Iterator[Tailnet]:
    """A ``LocalTailnet`` on 127.0.0.1 (its state in ``tmp/control``; ``net_options`` are more of its
    keywords, e.g. ``derp_tls``) and one started device per name in ``hostnames`` (state in
    ``tmp/NAME``), yielded once each is Running and sees all the others. ``config``: more ``Config``
    fields for every device (over ``RIG_DEFAULTS``); ``on_start(dev)`` runs right after each device
    starts, before the wait (e.g. to cut its UDP)."""
    if len(set(hostnames)) != len(hostnames):
        raise ValueError(f"hostnames must differ: {list(hostnames)}")
    with LocalTailnet(tmp / "control", listen="127.0.0.1:0", **dict(net_options or {})) as net, \
            ExitStack() as stack:
        tn = Tailnet(net)
        for hostname in hostnames:
            dev = new_device(net, tmp, hostname, **config)
            stack.callback(dev.close)  # closed in reverse order, before the tailnet
            tn.devices[hostname] = dev.start()
            if on_start is not None:
                on_start(dev)
        for dev in tn.devices.values():
            dev.wait_until_running_blocking(timeout)
        names = set(tn.devices)
        wait_until(lambda: all(_sees(d, names - {h}) for h, d in tn.devices.items()), timeout,
                   "every device sees every other", interval=0.05)
        yield tn


@contextmanager
def tagged_host_and_peer(tmp: Path, host_tags: Sequence[str] = ("tag:web",),
                         **net_options: Any) -> Iterator[tuple[LocalTailnet, ActorDevice, ActorDevice]]:
    """A ``LocalTailnet`` on 127.0.0.1 (``net_options``: more of its keywords, e.g. ``services``) with a
    node ``host`` tagged ``host_tags`` and an untagged ``peer``, yielded once both are Running and see
    each other: the rig of the ListenService tests (only tagged nodes may host a service)."""
    with LocalTailnet(tmp / "control", listen="127.0.0.1:0", **net_options) as net:
        host = ActorDevice(Config(dir=tmp / "host", hostname="host", control_url=net.control_url,
                                  auth_key=net.create_authkey(tags=list(host_tags)), **RIG_DEFAULTS))
        peer = ActorDevice(Config(dir=tmp / "peer", hostname="peer", control_url=net.control_url,
                                  auth_key=net.create_authkey(), **RIG_DEFAULTS))
        try:
            host.up_blocking(30)
            peer.up_blocking(30)
            wait_for_peers(host, ["peer"])
            wait_for_peers(peer, ["host"])
            yield net, host, peer
        finally:
            peer.close()
            host.close()


GrowingRig = tuple[LocalTailnet, str, list[ActorDevice]]
"""A tailnet, a reusable auth key, and the devices the test started on it (``growing_tailnet``)."""


@contextmanager
def growing_tailnet(tmp: Path) -> Iterator[GrowingRig]:
    """A LocalTailnet in ``tmp/ctl``, a reusable auth key, and a list the test appends each device it
    starts to, for tests whose nodes join at different moments (after a lock, a policy change…); every
    device in the list, then the tailnet, is closed on the way out, whatever happened in between."""
    net = LocalTailnet(tmp / "ctl").start()
    devs: list[ActorDevice] = []
    try:
        yield net, net.create_authkey(reusable=True), devs
    finally:
        for d in devs:
            with contextlib.suppress(Exception):
                d.close()
        net.close()
