"""The device's peerAPI server (Go ``ipn/ipnlocal/peerapi.go``): its port, listener and subtree.

Every Tailscale node serves HTTP to its peers on its tailnet addresses; peers find the port in our
Hostinfo ``Services`` (``peerapi4``/``peerapi6``). The listener is an ordinary device listener
(``Bindings``) on the node's own netstack, never a host socket, so it follows the netstack across
restarts and rebuilds, and serves every tailnet address (IPv4, and IPv6 when the node has one) on the
one port. Go picks ``32768 | crc32(low bytes of the IP)`` once the IP is known; the port is in our
first register request here, before any IP, so it is drawn at random from the same range, and an app
listener already on it makes us draw again. The actors are in ``actors/peerapi``.
"""

from __future__ import annotations

import random

from pytsnet.actors.peerapi import peerapi_spec
from pytsnet.actors.peerapi.ingress import IngressRoutes
from pytsnet.actors.runtime import ActorSystem
from pytsnet.actors.taildrop.store import TaildropStore
from pytsnet.errors import AddressInUse
from pytsnet.messages.peerapi import PeerApiSpawn
from pytsnet.net.bindings import Bindings
from pytsnet.net.stream import TcpListener

__all__ = ["PEERAPI", "PeerApi"]

PEERAPI = "peerapi"
_TRIES = 16


class PeerApi:
    """The port and listener, taken at the device's start; ``start`` spawns the server on them."""

    def __init__(self, bindings: Bindings, rng: random.Random | None = None) -> None:
        rng = rng or random.SystemRandom()
        for _ in range(_TRIES):
            port = 32768 | rng.getrandbits(15)
            try:
                self.listener: TcpListener = bindings.listen(port, None)
            except AddressInUse:
                continue
            self.port = port
            return
        raise AddressInUse(98, f"no free peerAPI port after {_TRIES} tries in 32768-65535")

    @property
    def services(self) -> tuple[tuple[str, int], ...]:
        """Hostinfo ``Services`` entries: one listener serves both families on the same port."""
        return (("peerapi4", self.port), ("peerapi6", self.port))

    def start(self, system: ActorSystem, *, exit_dns: bool = False,
              ingress: IngressRoutes | None = None, taildrop: TaildropStore | None = None) -> None:
        """``exit_dns``: we offer an exit node, so permitted clients' DNS is answered (Hostinfo's
        ``peerapi-dns-proxy`` service says so). ``ingress``: the device's Funnel listeners, which
        ``/v0/ingress`` hands public connections to (none: every ingress request is refused).
        ``taildrop``: where ``/v0/put/`` writes received files (none: Taildrop refused, as Go)."""
        spawn = PeerApiSpawn(port=self.port, server=PEERAPI, conns=f"{PEERAPI}.conns", exit_dns=exit_dns)
        system.spawn_spec(peerapi_spec(system, spawn, self.listener, ingress=ingress, taildrop=taildrop))
