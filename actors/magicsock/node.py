"""Spawn one node's magicsock actors under a one-for-one supervisor (UDP first: others send through it)."""

from __future__ import annotations

from pytsnet.actors.magicsock.config import MagicsockConfig
from pytsnet.actors.magicsock.derp_client import DerpClient
from pytsnet.actors.magicsock.disco import DiscoPinger
from pytsnet.actors.magicsock.stun import StunProber
from pytsnet.actors.magicsock.udp import MagicsockUdp
from pytsnet.actors.runtime import ActorRef, ActorSystem, ChildSpec, MailboxConfig, supervisor_spec

DATA_MAILBOX = MailboxConfig(4096, max_bytes=2 << 20)
"""Reads, sends and DERP frames waiting for a magicsock actor: at most 2 MiB, then the sender waits
(the UDP reader: the kernel drops at the socket, as a NIC ring would)."""


def spawn_magicsock(system: ActorSystem, config: MagicsockConfig, parent: ActorRef | None = None,
                    max_restarts: int = 20, within: float = 10.0) -> ActorRef:
    """Start the UDP router, DiscoPinger, StunProber and one DerpClient per configured region
    (each connects only while it is home or in use)."""
    config.home_fixed = bool(config.home_region)
    if not config.home_region and config.regions:
        config.home_region = min(r.region_id for r in config.regions)  # until netcheck measures
    specs = [
        ChildSpec(MagicsockUdp, config.name("udp"), args=(config,), mailbox=DATA_MAILBOX),
        ChildSpec(DiscoPinger, config.name("disco"), args=(config,), mailbox=DATA_MAILBOX),
        ChildSpec(StunProber, config.name("stun"), args=(config,)),
        *(ChildSpec(DerpClient, config.derp_name(r.region_id), args=(config, r), mailbox=DATA_MAILBOX)
          for r in config.regions),
    ]
    return system.spawn_spec(
        supervisor_spec(config.name("sup"), specs, max_restarts=max_restarts, within=within), parent)
