"""A UDP STUN server for netcheck: answer Tailscale Binding requests with XOR-MAPPED-ADDRESS.

Like Go's ``net/stun/stunserver``: anything that is not a well-formed Tailscale Binding request
(SOFTWARE "tailnode", valid FINGERPRINT) is counted and ignored, so garbage never stops the server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from pytsnet.wire import stun

log = logging.getLogger(__name__)


@dataclass
class StunStats:
    requests: int = 0  # answered Binding requests
    bad: int = 0  # datagrams that were not a Tailscale Binding request
    busy: int = 0  # valid requests dropped unanswered while the socket's send queue was full


class StunServer(asyncio.DatagramProtocol):
    """Bind with :meth:`start` on the running loop; ``port`` is the bound UDP port."""

    def __init__(self) -> None:
        self.stats = StunStats()
        self.transport: asyncio.DatagramTransport | None = None
        self.host = ""
        self.port = 0
        self._paused = False  # asyncio queues unsent datagrams without bound; stop answering instead

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.transport = transport
        self.host, self.port = transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            tx_id = stun.parse_binding_request(data)
            ip = ipaddress.ip_address(str(addr[0]).split("%")[0])
        except (stun.StunParseError, ValueError):
            self.stats.bad += 1
            return
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self._paused:
            self.stats.busy += 1
            return
        self.stats.requests += 1
        assert self.transport is not None
        self.transport.sendto(stun.response(tx_id, ip, int(addr[1])), addr)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def error_received(self, exc: Exception) -> None:
        log.debug("stun: %r", exc)  # e.g. ICMP port unreachable from a past client; keep serving
