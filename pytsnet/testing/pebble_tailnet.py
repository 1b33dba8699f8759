"""A tailnet whose nodes get real certificates, and a ``curl`` that verifies them from a peer.

``pebble_tailnet(ns, tmp)``: pebble (``pytsnet.testing.acme``) and a ``LocalTailnet`` with HTTPS on
(DNS-01 records through challtestsrv), both in the namespace ``ns`` (no route out); devices made
with ``rig.device(...)`` order their certificates from pebble and are closed with the rig.
``socks_curl(dev, ...)`` runs ``curl`` through ``dev``'s SOCKS5 loopback proxy, so a MagicDNS name
resolves on the tailnet; pass ``--cacert rig.root`` (pebble's issuing root) for a verified fetch.
The rig of Serve's and the services' pebble tests (HTTPS with the node's own certificate).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.acme import PebbleStack, pebble_available, pebble_stack
from pytsnet.testing.netns import Netns
from pytsnet.testing.tailnet import RIG_DEFAULTS, wait_for_peers

__all__ = ["PebbleTailnet", "pebble_tailnet", "socks_curl"]


@dataclass
class PebbleTailnet:
    ca: PebbleStack
    net: LocalTailnet
    tmp: Path
    root: Path
    """Pebble's issuing root (it makes a new one every start): what ``curl --cacert`` must trust."""
    stack: ExitStack

    def device(self, hostname: str, *, tags: Sequence[str] = (), **config: Any) -> ActorDevice:
        """A started device (closed with the rig; state in ``tmp/HOSTNAME``) whose ACME client uses
        pebble; ``tags``: its auth key's (a service host must be tagged)."""
        acme = {"acme_directory_url": self.ca.directory_url, "acme_ca_file": str(self.ca.tls_ca_file)}
        dev = ActorDevice(Config(dir=self.tmp / hostname, hostname=hostname, control_url=self.net.control_url,
                                 auth_key=self.net.create_authkey(tags=list(tags) or None),
                                 **(RIG_DEFAULTS | acme | config)))
        self.stack.callback(dev.close)
        return dev.start()

    @staticmethod
    def running(*devices: ActorDevice, timeout: float = 30.0) -> None:
        """Return once every device is Running and sees every other one."""
        for dev in devices:
            dev.wait_until_running_blocking(timeout)
        for dev in devices:
            wait_for_peers(dev, {d.config.hostname or "" for d in devices if d is not dev}, timeout)


@contextmanager
def pebble_tailnet(ns: Netns, tmp: Path, **net_options: Any) -> Iterator[PebbleTailnet]:
    """Pebble and a ``LocalTailnet(https=True)`` in ``ns`` (entered for the whole block: its nodes'
    sockets are there); ``net_options``: more ``LocalTailnet`` keywords (``services``, ``funnel``).
    Skips the test when pebble is not installed."""
    reason = pebble_available()
    if reason:
        pytest.skip(reason)
    with ns.entered(), ExitStack() as stack:
        ca = stack.enter_context(pebble_stack(ns, tmp / "pebble"))
        net = stack.enter_context(LocalTailnet(tmp / "control", https=True, dns01_api=ca.dns01_api,
                                               **net_options))
        root = tmp / "pebble-root.pem"
        root.write_bytes(ca.issuer_root())
        with ExitStack() as devices:  # closed before the tailnet and pebble
            yield PebbleTailnet(ca=ca, net=net, tmp=tmp, root=root, stack=devices)


def socks_curl(via: ActorDevice, *args: str, max_time: int = 90) -> tuple[int, str, str]:
    """``curl ARGS`` through ``via``'s SOCKS5 proxy (names resolved on the tailnet): its exit code,
    stdout and stderr (60: the peer's certificate did not verify)."""
    addr, cred, _ = via.loopback()
    out = anyio.run(lambda: anyio.run_process(
        ["curl", "-sS", "--max-time", str(max_time), "--socks5-hostname", addr,
         "--proxy-user", f"tsnet:{cred}", *args], check=False))
    return out.returncode, out.stdout.decode(errors="replace"), out.stderr.decode(errors="replace")
