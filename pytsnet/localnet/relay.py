"""Attach the DERP relay and the STUN server to a running :class:`LocalTailnet`.

DERP is mounted on the control server's own HTTP listener (``/derp``, ``/derp/probe``,
``/derp/latency-check``, ``/generate_204``); STUN listens on UDP on the same host. The DERP map
handed to the control server has one region pointing at both.

Plain HTTP, and what Go needs for it: Go's ``derphttp`` client dials a DERP-map node with
``https://HostName[:DERPPort]/derp`` unless the environment has ``TS_DEBUG_USE_DERP_HTTP=1``
(``useHTTPS``/``urlString``), in which case it speaks plain HTTP to ``IPv4``/``DERPPort``. The
control listener is plain HTTP, so **Go nodes using this relay must run with
``TS_DEBUG_USE_DERP_HTTP=1``** (the Go tests do). ``IPv4`` is set so no DNS lookup happens,
``IPv6: "none"`` disables that family, and ``InsecureForTests`` is set so a TLS front end could be
added later without changing the map.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pytsnet.localnet.derp_server import DerpServer
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.stun_server import StunServer
from pytsnet.wire.keys import NodePublic

GO_PLAIN_HTTP_ENV = {"TS_DEBUG_USE_DERP_HTTP": "1"}  # environment a Go node needs for this relay


def derp_map(host: str, derp_port: int, stun_port: int, region_id: int = 900) -> dict[str, Any]:
    """A one-region DERP map (``tailcfg.DERPMap`` JSON) for a relay on ``host``."""
    return {"Regions": {str(region_id): {
        "RegionID": region_id, "RegionCode": "local", "RegionName": "pytsnet localnet",
        "Nodes": [{"Name": f"{region_id}a", "RegionID": region_id, "HostName": host, "IPv4": host,
                   "IPv6": "none", "STUNPort": stun_port, "DERPPort": derp_port,
                   "InsecureForTests": True}]}}}


@dataclass
class Relay:
    net: LocalTailnet
    derp: DerpServer
    stun: StunServer
    derp_map: dict[str, Any]

    def close(self) -> None:
        """Stop STUN and drop every DERP client (the control listener stays up)."""
        async def stop() -> None:
            self.stun.close()
            await self.derp.close()

        asyncio.run_coroutine_threadsafe(stop(), self.net.loop).result(timeout=10)


def attach_relay(net: LocalTailnet, *, stun_port: int = 0, region_id: int = 900,
                 require_known_keys: bool = True) -> Relay:
    """Start DERP + STUN on ``net``'s loop and publish them in its DERP map. Call from another thread."""
    assert net.control is not None, "start the LocalTailnet first"
    host = str(net.control.host)

    def is_known(key: NodePublic) -> bool:
        node = net.store.node_by_key(key.to_text())
        return node is not None and node.authorized and not node.logged_out

    async def build() -> tuple[DerpServer, StunServer]:
        derp = DerpServer(is_known=is_known if require_known_keys else None)
        stun = StunServer()
        await stun.start(host, stun_port)  # on the server thread: same network namespace
        return derp, stun

    derp, stun = asyncio.run_coroutine_threadsafe(build(), net.loop).result(timeout=30)
    for path, handler in derp.routes().items():
        net.mount(path, handler)
    dm = derp_map(host, net.port, stun.port, region_id)
    net.set_derp_map(dm)
    return Relay(net, derp, stun, dm)
