"""Two userspace netstacks joined back to back in one actor system: no TUN, no root, no sockets.

Each side's outbound IP packets (``LinkPacketOut``) are told to the other side as ``LinkPacketIn`` by a
``Wire`` actor, so both ends of every TCP connection are pytsnet's own stack and flow actors (a rig for
tests that kill or restart netstack actors mid-transfer).
"""

from __future__ import annotations

import ipaddress

from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.messages.netstack import LinkPacketIn, LinkPacketOut
from pytsnet.net.netstack import Netstack
from pytsnet.netstack.config import StackConfig

__all__ = ["Wire", "netstack_pair"]


class Wire(Actor):
    """One direction of the link: what one netstack emits, the actor named ``to`` receives."""

    def __init__(self, to: str) -> None:
        self.to = to
        self._peer: ActorRef | None = None

    @handles(LinkPacketOut)
    def on_out(self, msg: LinkPacketOut) -> None:
        if self._peer is None:
            self._peer = self.ctx.lookup(self.to)
        if self._peer is not None:  # none yet (or never): a packet on an unplugged cable is lost
            self._peer.tell(LinkPacketIn(data=msg.data))


def netstack_pair(system: ActorSystem, a: tuple[str, str], b: tuple[str, str]) -> tuple[Netstack, Netstack]:
    """Start netstacks ``a`` and ``b`` (each ``(name, address)``) wired to each other."""
    nets = []
    for (name, addr), (peer, _) in ((a, b), (b, a)):
        wire = system.spawn(Wire, peer, name=f"wire-to-{peer}")
        nets.append(Netstack.start(system, StackConfig(addresses=(ipaddress.ip_address(addr),)), wire,
                                   name=name))
    return nets[0], nets[1]
