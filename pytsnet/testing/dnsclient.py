"""dnspython over a node's tailnet sockets: an app's queries to 100.100.100.100, and a tiny DNS server.

``udp_query``/``tcp_query`` run dnspython's own ``dns.asyncquery.udp``/``tcp`` on a ``UdpSocket`` /
``TcpStream`` of an ``ActorDevice`` (adapters to dnspython's async socket interface), so the query,
the source check and the answer parsing are dnspython's, and the packets go through the node's
netstack like any app's. ``TailnetDnsServer`` answers A queries from a table on a node's tailnet UDP
port (an upstream for split DNS and fallback tests, reachable only through the tailnet).
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import dns._asyncbackend
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import dns.rcode
import dns.rrset

from pytsnet.device import ActorDevice
from pytsnet.net import TcpStream, UdpSocket

__all__ = ["SERVICE", "TailnetDnsServer", "tcp_query", "udp_query"]

SERVICE = "100.100.100.100"


class _Datagram(dns._asyncbackend.DatagramSocket):
    def __init__(self, sock: UdpSocket, family: int) -> None:
        super().__init__(family, socket.SOCK_DGRAM)
        self.sock = sock

    async def sendto(self, what: bytes, destination: Any, timeout: float | None) -> int:
        await self.sock.sendto(what, (destination[0], destination[1]))
        return len(what)

    async def recvfrom(self, size: int, timeout: float | None) -> tuple[bytes, tuple[str, int]]:
        with anyio.move_on_after(timeout if timeout is not None else 30.0):
            data, (ip, port) = await self.sock.recvfrom()
            return data, ((ip, port) if self.family == socket.AF_INET else (ip, port, 0, 0))  # type: ignore[return-value]
        raise dns.exception.Timeout

    async def close(self) -> None:
        await self.sock.aclose()


class _Stream(dns._asyncbackend.StreamSocket):
    def __init__(self, stream: TcpStream, peer: tuple[str, int]) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.stream, self.peer = stream, peer

    async def getpeername(self) -> tuple[str, int]:
        return self.peer

    async def sendall(self, what: bytes, timeout: float | None) -> None:
        await self.stream.send(what)

    async def recv(self, size: int, timeout: float | None) -> bytes:
        with anyio.move_on_after(timeout if timeout is not None else 30.0):
            try:
                return bytes(await self.stream.receive(size))
            except anyio.EndOfStream:
                return b""
        raise dns.exception.Timeout

    async def close(self) -> None:
        await self.stream.aclose()


async def udp_query(dev: ActorDevice, name: str, rdtype: str = "A", *, where: str = SERVICE, port: int = 53,
                    timeout: float = 10.0) -> dns.message.Message:
    """dnspython's UDP query for ``name`` to ``where:port``, sent from an app socket on ``dev``."""
    sock = await dev.listen_packet()
    try:
        q = dns.message.make_query(name, rdtype)
        adapter = _Datagram(sock, dns.inet.af_for_address(where))
        return await dns.asyncquery.udp(q, where, timeout=timeout, port=port, sock=adapter)
    finally:
        await sock.aclose()


async def tcp_query(dev: ActorDevice, name: str, rdtype: str = "A", *, where: str = SERVICE, port: int = 53,
                    timeout: float = 10.0) -> dns.message.Message:
    """dnspython's TCP query (RFC 7766 framing) over a tailnet ``tcp_connect`` from ``dev``."""
    stream = await dev.tcp_connect(where, port)
    try:
        q = dns.message.make_query(name, rdtype)
        sock = _Stream(stream, (where, port))
        return await dns.asyncquery.tcp(q, where, timeout=timeout, port=port, sock=sock)
    finally:
        await stream.aclose()


class TailnetDnsServer:
    """Answers A queries for ``records`` (name → IP), NXDOMAIN otherwise, on ``dev``'s tailnet UDP
    ``port``; ``seen`` lists the names asked (what reached this upstream)."""

    def __init__(self, dev: ActorDevice, records: dict[str, str], port: int = 53) -> None:
        self.dev, self.port = dev, port
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.seen: list[str] = []

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sock = await self.dev.listen_packet(self.port)
        task_status.started()
        try:
            while True:
                data, src = await sock.recvfrom()
                try:
                    q = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    continue
                name = q.question[0].name.to_text().lower().rstrip(".")
                self.seen.append(name)
                r = dns.message.make_response(q)
                ip = self.records.get(name)
                if ip is None:
                    r.set_rcode(dns.rcode.NXDOMAIN)
                else:
                    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", ip))
                await sock.sendto(r.to_wire(), src)
        finally:
            await sock.aclose()
