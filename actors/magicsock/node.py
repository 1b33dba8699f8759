"""One node's magicsock actors as a one-for-one supervisor spec (UDP first: others send through it)."""

from __future__ import annotations

from pytsnet.actors.magicsock.derp_client import DerpClient
from pytsnet.actors.magicsock.disco import DiscoPinger
from pytsnet.actors.magicsock.stun import StunProber
from pytsnet.actors.magicsock.udp import MagicsockUdp
from pytsnet.actors.portmap.mapper import PortMapper
from pytsnet.actors.runtime import ActorRef, ActorSystem, ChildSpec, MailboxConfig, supervisor_spec
from pytsnet.messages.magicsock import DerpRegion, MagicsockKeys, MagicsockSpawn

__all__ = ["DATA_MAILBOX", "first_home", "magicsock_spec", "spawn_magicsock"]

DATA_MAILBOX = MailboxConfig(4096, max_bytes=2 << 20)
"""Reads, sends and DERP frames waiting for a magicsock actor: at most 2 MiB, then the sender waits
(the UDP reader: the kernel drops at the socket, as a NIC ring would)."""


def first_home(regions: tuple[DerpRegion, ...]) -> int:
    """Home until netcheck measures: the lowest region id (0: no DERP)."""
    return min((r.region_id for r in regions), default=0)


def magicsock_spec(spawn: MagicsockSpawn, keys: MagicsockKeys, max_restarts: int = 20,
                   within: float = 10.0) -> ChildSpec:
    """The UDP router, DiscoPinger, StunProber and one DerpClient per configured region (each connects
    only while it is home or in use). A home given in ``spawn`` is fixed; else the lowest region id is
    home until netcheck measures. Each actor gets only the keys it uses."""
    if spawn.home_region:
        spawn = spawn.model_copy(update={"home_fixed": True})
    elif spawn.regions:
        spawn = spawn.model_copy(update={"home_region": first_home(spawn.regions)})
    disco_keys = MagicsockKeys(disco_private=keys.disco_private)
    derp_keys = MagicsockKeys(node_private=keys.node_private)
    specs = [
        ChildSpec(MagicsockUdp, spawn.name("udp"), args=(spawn,), mailbox=DATA_MAILBOX),
        ChildSpec(DiscoPinger, spawn.name("disco"), args=(spawn, disco_keys), mailbox=DATA_MAILBOX),
        ChildSpec(StunProber, spawn.name("stun"), args=(spawn,)),
        *(ChildSpec(DerpClient, spawn.derp_name(r.region_id), args=(spawn, r, derp_keys),
                    mailbox=DATA_MAILBOX)
          for r in spawn.regions),
    ]
    if spawn.portmap is not None:
        pm = spawn.portmap.model_copy(update={"udp": spawn.name("udp"), "stun": spawn.name("stun")})
        specs.append(ChildSpec(PortMapper, spawn.name("portmap"), args=(pm,)))
    return supervisor_spec(spawn.name("sup"), specs, max_restarts=max_restarts, within=within)


def spawn_magicsock(system: ActorSystem, spawn: MagicsockSpawn, keys: MagicsockKeys,
                    parent: ActorRef | None = None) -> ActorRef:
    """``magicsock_spec`` started alone (test rigs; a device builds it into its data-plane tree)."""
    return system.spawn_spec(magicsock_spec(spawn, keys), parent)
