"""A local tailnet with HTTPS enabled and a real ACME CA (pebble), all inside one namespace with no
route out: localnet, pebble (+ challtestsrv, or localnet's own DNS-01 server), and in-process nodes
whose ACME client is pointed at pebble (``Config.acme_directory_url``/``acme_ca_file``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.acme import PebbleStack, pebble_available, pebble_stack
from pytsnet.testing.netns import Netns
from pytsnet.testing.tailnet import new_device, wait_for_peers


@dataclass
class CertRig:
    ns: Netns
    net: LocalTailnet
    ca: PebbleStack
    tmp: Path
    devices: dict[str, ActorDevice] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    def device(self, hostname: str, **config: Any) -> ActorDevice:
        """A started device (closed with the rig) that gets its certs from pebble."""
        dev = new_device(self.net, self.tmp, hostname, acme_directory_url=self.ca.directory_url,
                         acme_ca_file=str(self.ca.tls_ca_file), **config)
        self.stack.callback(dev.close)
        self.devices[hostname] = dev.start()
        return dev

    def running(self, *hostnames: str, timeout: float = 30.0) -> None:
        for h in hostnames:
            self.devices[h].wait_until_running_blocking(timeout)
        for h in hostnames:
            wait_for_peers(self.devices[h], set(hostnames) - {h}, timeout)


@contextmanager
def cert_rig(ns: Netns, tmp: Path, *, own_dns: bool = False,
             validity: int | None = None) -> Iterator[CertRig]:
    """``own_dns``: localnet serves the DNS-01 records itself (pebble ``-dnsserver`` at it); else
    localnet writes them through challtestsrv's API (``--dns01-api``)."""
    reason = pebble_available()
    if reason:
        pytest.skip(reason)
    with ns.entered(), ExitStack() as outer:
        if own_dns:
            net = outer.enter_context(LocalTailnet(tmp / "control", https=True))
            ca = outer.enter_context(pebble_stack(ns, tmp / "pebble", dns_server=net.dns01_address,
                                                  validity=validity))
        else:
            ca = outer.enter_context(pebble_stack(ns, tmp / "pebble", validity=validity))
            net = outer.enter_context(LocalTailnet(tmp / "control", https=True, dns01_api=ca.dns01_api))
        rig = CertRig(ns=ns, net=net, ca=ca, tmp=tmp)
        with rig.stack:
            yield rig
