"""Attach the DERP relay and the STUN server to a running :class:`LocalTailnet`.

Plain HTTP (the default): DERP is mounted on the control server's own HTTP listener (``/derp``,
``/derp/probe``, ``/derp/latency-check``, ``/generate_204``). Go's ``derphttp`` client dials a
DERP-map node with ``https://HostName[:DERPPort]/derp`` unless the environment has
``TS_DEBUG_USE_DERP_HTTP=1`` (``useHTTPS``/``urlString``), so **Go nodes using a plain relay must
run with** :data:`GO_PLAIN_HTTP_ENV` (``Relay.go_env``). Python nodes need nothing: they speak plain
HTTP to an ``InsecureForTests`` node at their own plain control URL's host and port.

TLS (``tls=True``): the same routes on a separate TLS listener with a self-signed certificate kept in
the state dir (:mod:`pytsnet.localnet.derp_tls`). Go dials ``IPv4:DERPPort``, sends SNI =
``HostName`` and, because the node has ``InsecureForTests``, skips verification
(``derphttp_client.go`` ``dialNode``/``tlsClient``); no environment knob is needed. The chain carries
Go's meta cert, so Go uses fast start.

Either way STUN listens on UDP on the same host, and the DERP map has one region naming both;
``IPv4`` is set so no DNS lookup happens and ``IPv6: "none"`` disables that family.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pytsnet.localnet.control_server import derp_node_addrs  # 24d
from pytsnet.localnet.derp_admit import node_admitted  # 24b
from pytsnet.localnet.derp_server import DerpServer
from pytsnet.localnet.derp_tls import ensure_certificate, meta_certificate, server_context
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.stun_server import StunServer
from pytsnet.wire.derp.frames import PROTOCOL_VERSION
from pytsnet.wire.keys import NodePublic

GO_PLAIN_HTTP_ENV = {"TS_DEBUG_USE_DERP_HTTP": "1"}  # environment a Go node needs for this relay


def derp_map(host: str, derp_port: int, stun_port: int, region_id: int = 900) -> dict[str, Any]:
    """A one-region DERP map (``tailcfg.DERPMap`` JSON) for a relay on ``host``."""
    return {"Regions": {str(region_id): {
        "RegionID": region_id, "RegionCode": "local", "RegionName": "pytsnet localnet",
        "Nodes": [{"Name": f"{region_id}a", "RegionID": region_id, "HostName": host,
                   **derp_node_addrs(host),  # 24d: an IPv6 listener is the node's IPv6
                   "STUNPort": stun_port, "DERPPort": derp_port, "InsecureForTests": True}]}}}


@dataclass
class Relay:
    net: LocalTailnet
    derp: DerpServer
    stun: StunServer
    derp_map: dict[str, Any]
    tls: bool = False

    @property
    def go_env(self) -> dict[str, str]:
        """Environment a Go tsnet node needs to use this relay."""
        return {} if self.tls else dict(GO_PLAIN_HTTP_ENV)

    @property
    def derp_port(self) -> int:
        return int(self.derp_map["Regions"][next(iter(self.derp_map["Regions"]))]["Nodes"][0]["DERPPort"])

    def close(self) -> None:
        """Stop STUN and drop every DERP client (the control listener stays up)."""
        async def stop() -> None:
            self.stun.close()
            await self.derp.close()

        asyncio.run_coroutine_threadsafe(stop(), self.net.loop).result(timeout=10)


def attach_relay(net: LocalTailnet, *, stun_port: int = 0, region_id: int = 900,
                 require_known_keys: bool = True, tls: bool = False, tls_port: int = 0) -> Relay:
    """Start DERP + STUN on ``net``'s loop and publish them in its DERP map. Call from another thread.

    ``tls`` serves DERP on its own TLS listener (``tls_port``, 0: any) instead of the control listener.
    """
    assert net.control is not None, "start the LocalTailnet first"
    host = str(net.control.host)

    def is_known(key: NodePublic) -> bool:
        """Admitted: a registered, authorized, logged-in node whose key has not expired."""
        return node_admitted(net.store, key)  # 24b: one rule for the relay and /derp/admit

    async def build() -> tuple[DerpServer, StunServer]:
        derp = DerpServer(is_known=is_known if require_known_keys else None)
        stun = StunServer()
        await stun.start(host, stun_port)  # on the server thread: same network namespace
        if tls:
            try:
                meta = meta_certificate(derp.public.raw, PROTOCOL_VERSION)
                ctx = server_context(*ensure_certificate(net.state_dir, host), meta)
                await derp.start(host, tls_port, ssl=ctx)
            except BaseException:
                stun.close()
                raise
        return derp, stun

    derp, stun = asyncio.run_coroutine_threadsafe(build(), net.loop).result(timeout=30)
    if require_known_keys:  # an expired (or deleted) key loses its open connection at once
        net.add_control_listener(derp.recheck)
    if not tls:
        for path, handler in derp.routes().items():
            net.mount(path, handler)
    dm = derp_map(host, derp.port if tls else net.port, stun.port, region_id)
    net.set_derp_map(dm)
    return Relay(net, derp, stun, dm, tls)
