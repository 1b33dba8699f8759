"""Where localnet publishes the DNS-01 TXT records nodes ask for through ``/machine/set-dns`` (20a).

Two sinks, one interface (``publish(name, value)``, awaited on localnet's loop):

- ``ChallTestSrv``: pebble-challtestsrv's management API (``--dns01-api URL``): ``POST /set-txt
  {"host": "<name>.", "value": "<value>"}``, as Let's Encrypt's test tooling does.
- ``LocalDnsServer``: localnet's own small authoritative server (UDP on loopback, dnspython) that
  answers TXT queries for the published names and REFUSED for everything else; the ACME server
  resolves challenges there (pebble ``-dnsserver 127.0.0.1:PORT``). Records are bounded
  (``MAX_RECORDS`` names, ``MAX_VALUES`` values each, oldest dropped) so a node cannot grow it
  without limit; only control writes them (after its checks), never a DNS client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections import OrderedDict
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["MAX_RECORDS", "MAX_VALUES", "ChallTestSrv", "Dns01Error", "Dns01Sink", "LocalDnsServer"]

MAX_RECORDS = 1024
MAX_VALUES = 4
TTL = 60
log = logging.getLogger("pytsnet.localnet.dns01")


class Dns01Error(Exception):
    """The sink could not publish the record (answered 502 to the node)."""


class Dns01Sink(Protocol):
    async def publish(self, name: str, value: str) -> None: ...


class ChallTestSrv:
    """pebble-challtestsrv's management API at ``url`` (``http://127.0.0.1:8055``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def publish(self, name: str, value: str) -> None:
        body = json.dumps({"host": name.rstrip(".") + ".", "value": value}).encode()
        req = urllib.request.Request(f"{self.url}/set-txt", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})

        def post() -> int:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        try:
            status = await asyncio.get_running_loop().run_in_executor(None, post)
        except OSError as e:
            raise Dns01Error(f"challtestsrv {self.url}: {type(e).__name__}") from None
        if status != 200:
            raise Dns01Error(f"challtestsrv {self.url}: HTTP {status}")


class LocalDnsServer(asyncio.DatagramProtocol):
    """TXT records by name (lower-case, with the trailing dot), served over UDP."""

    def __init__(self) -> None:
        self.records: OrderedDict[str, list[str]] = OrderedDict()
        self.transport: asyncio.DatagramTransport | None = None
        self.stats = {"queries": 0, "answered": 0, "refused": 0, "bad_queries": 0}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.transport = transport
        addr = transport.get_extra_info("sockname")
        return str(addr[0]), int(addr[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def publish(self, name: str, value: str) -> None:
        key = name.lower().rstrip(".") + "."
        values = self.records.pop(key, [])
        if value not in values:
            values = [*values, value][-MAX_VALUES:]
        self.records[key] = values
        while len(self.records) > MAX_RECORDS:
            self.records.popitem(last=False)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stats["queries"] += 1
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError):
            self.stats["bad_queries"] += 1
            return
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        q = query.question[0] if len(query.question) == 1 else None
        values = self.records.get(q.name.to_text().lower()) if q is not None else None
        if q is None or values is None:
            self.stats["refused"] += 1
            resp.set_rcode(dns.rcode.REFUSED if q is None else dns.rcode.NXDOMAIN)
        elif q.rdtype == dns.rdatatype.TXT:
            self.stats["answered"] += 1
            rrset = dns.rrset.from_text_list(q.name, TTL, dns.rdataclass.IN, dns.rdatatype.TXT,
                                             [f'"{v}"' for v in values])
            resp.answer.append(rrset)
        # another type for a published name: NOERROR with no answer (NODATA)
        if self.transport is not None:
            self.transport.sendto(resp.to_wire(), addr)
