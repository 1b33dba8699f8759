"""DERP client admission by URL: Go's ``tailcfg.DERPAdmitClientRequest``/``Response`` and the client
derper uses to ask (``derpserver.verifyClient`` with ``--verify-client-url``).

Per connecting client, derper POSTs ``{"NodePublic": "nodekey:…", "Source": "192.0.2.1"}`` and admits
it only on a 200 whose JSON body (first 4 KiB) says ``{"Allow": true}``; anything else (other status,
bad JSON, ``Allow`` false or absent) refuses. An unreachable controller or one slower than 5 s
(Go's timeout) refuses too: **we fail closed by default**, where Go's ``--verify-client-url-fail-open``
defaults to true; ``fail_open=True`` restores Go's behaviour for that one case (transport errors
and timeouts only, as Go).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from pytsnet.wire.keys import NodePublic

log = logging.getLogger(__name__)

VERIFY_TIMEOUT = 5.0  # Go verifyClient: context.WithTimeout(ctx, 5*time.Second)
MAX_RESPONSE = 4 << 10  # Go: io.LimitReader(res.Body, 4<<10)
MAX_CONCURRENT = 64  # admission requests in flight; more wait their turn (within the timeout)


class AdmitFormatError(ValueError):
    """An admission request or response body that is not the JSON Go's types describe."""


def request_body(key: NodePublic, source: str) -> bytes:
    """The JSON of ``tailcfg.DERPAdmitClientRequest``."""
    return json.dumps({"NodePublic": key.to_text(), "Source": source}).encode()


def parse_request(body: bytes) -> tuple[NodePublic, str]:
    """``(node key, source IP text)`` from a ``DERPAdmitClientRequest`` body (AdmitFormatError)."""
    try:
        doc = json.loads(body)
        key = NodePublic.from_text(doc["NodePublic"])
        source = doc.get("Source", "")
        if not isinstance(source, str):
            raise TypeError("Source is not a string")
        if source:
            ipaddress.ip_address(source)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise AdmitFormatError(f"bad DERPAdmitClientRequest: {type(e).__name__}: {str(e)[:100]}") from None
    return key, source


def response_body(allow: bool) -> bytes:
    """The JSON of ``tailcfg.DERPAdmitClientResponse``."""
    return json.dumps({"Allow": allow}).encode()


def parse_response(body: bytes) -> bool:
    """``Allow`` from a ``DERPAdmitClientResponse`` body; only a JSON ``true`` admits (AdmitFormatError
    for anything that is not such an object)."""
    try:
        doc: Any = json.loads(body)
    except ValueError as e:
        raise AdmitFormatError(f"bad DERPAdmitClientResponse: {str(e)[:100]}") from None
    if not isinstance(doc, dict):
        raise AdmitFormatError("bad DERPAdmitClientResponse: not a JSON object")
    return doc.get("Allow") is True


@dataclass
class AdmitStats:
    allowed: int = 0
    denied: int = 0  # the controller answered, and not with Allow: true
    errors: int = 0  # unreachable, timed out, non-200 or malformed: refused unless fail-open applies
    failed_open: int = 0  # admitted because the controller was unreachable and fail_open is set


class AdmissionClient:
    """``await client(key, source_ip)`` → admit? One per derper, on its event loop."""

    def __init__(self, url: str, *, fail_open: bool = False, timeout: float = VERIFY_TIMEOUT) -> None:
        self.url = url
        self.fail_open = fail_open
        self.timeout = timeout
        self.stats = AdmitStats()
        self._limit = asyncio.Semaphore(MAX_CONCURRENT)
        # trust_env=False: an admission check never goes through a proxy from the environment
        self._http = httpx.AsyncClient(trust_env=False, timeout=timeout, follow_redirects=False,
                                       limits=httpx.Limits(max_connections=MAX_CONCURRENT))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __call__(self, key: NodePublic, source: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                async with self._limit:
                    allow = await self._ask(key, source)
        except (httpx.TransportError, TimeoutError, OSError) as e:
            self.stats.errors += 1
            if self.fail_open:
                self.stats.failed_open += 1
                log.warning("derper: admission controller unreachable (%s); allowing client %s",
                            type(e).__name__, key.to_text())
                return True
            log.warning("derper: admission controller unreachable (%s); refusing client %s",
                        type(e).__name__, key.to_text())
            return False
        except (AdmitFormatError, httpx.HTTPError) as e:
            self.stats.errors += 1
            log.warning("derper: admission controller: %s; refusing client %s", str(e)[:200], key.to_text())
            return False
        if allow:
            self.stats.allowed += 1
        else:
            self.stats.denied += 1
        return allow

    async def _ask(self, key: NodePublic, source: str) -> bool:
        async with self._http.stream("POST", self.url, content=request_body(key, source),
                                     headers={"Content-Type": "application/json"}) as res:
            if res.status_code != 200:
                raise AdmitFormatError(f"status {res.status_code}")
            body = bytearray()
            async for chunk in res.aiter_bytes():
                body += chunk[:MAX_RESPONSE - len(body)]
                if len(body) >= MAX_RESPONSE:
                    break
            return parse_response(bytes(body))
