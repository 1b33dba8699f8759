"""Test rig: a TUN in a namespace, a TunLinkActor, a NetstackActor and the app-facing ``Netstack``."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from pytsnet.actors.runtime import ActorRef, ActorSystem, FaultInjector, MailboxConfig
from pytsnet.net import Netstack
from pytsnet.net.link import TunLinkActor
from pytsnet.netstack.config import StackConfig
from pytsnet.testing.netns import Netns
from pytsnet.testing.tun import TunDevice, open_tun

KERNEL = "10.77.0.1"
STACK = "10.77.0.2"


@dataclass
class Rig:
    ns: Netns
    tun: TunDevice
    system: ActorSystem
    link: ActorRef
    net: Netstack


@contextlib.contextmanager
def netstack_rig(ns: Netns, faults: FaultInjector | None = None, **config: object) -> Iterator[Rig]:
    tun = open_tun(ns, local=KERNEL, peer=STACK)
    system = ActorSystem("ns-test", dispatcher="thread", pool_workers=2)
    if faults is not None:
        faults.install(system)
    try:
        link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link",
                            mailbox=MailboxConfig(65536))
        cfg = StackConfig(addresses=(ipaddress.ip_address(STACK),), **config)  # type: ignore[arg-type]
        net = Netstack.start(system, cfg, link)
        yield Rig(ns, tun, system, link, net)
    finally:
        system.shutdown()
        tun.close()
