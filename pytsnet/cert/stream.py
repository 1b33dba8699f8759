"""``TlsStream``: a tailnet connection whose TLS is terminated on its first use, in the task that
serves it (Go's ``tls.NewListener``: ``Accept`` returns at once, the handshake runs on the first
``Read``/``Write``).

Why: a listener that handshakes inside ``accept`` lets one client that stalls its handshake hold up
every connection behind it. Here a stalled client holds up only its own task; one that sends no TLS
or does not finish within ``handshake_timeout`` gets its connection closed and
``anyio.BrokenResourceError`` in that task, and the listener's ``on_failed`` counts it. Used by
``listen_tls`` (``TlsListener``) and ``listen_funnel`` (``FunnelStream``).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

__all__ = ["HANDSHAKE_TIMEOUT", "ContextSource", "TlsStream"]

HANDSHAKE_TIMEOUT = 10.0

ContextSource = Callable[[], Awaitable[ssl.SSLContext]]
"""The server context for the next handshake (the device's: the node's cert as it is now)."""


class TlsStream(ByteStream):
    """Plaintext both ways once its TLS handshake is done (on first use, or an explicit
    ``handshake()``); ``peer`` names the other end in errors."""

    def __init__(self, raw: ByteStream, context: ContextSource, *, peer: object,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 on_failed: Callable[[], None] | None = None) -> None:
        self._raw = raw
        self._context = context
        self._tls: TLSStream | None = None
        self._lock = anyio.Lock()
        self._timeout = handshake_timeout
        self._on_failed = on_failed
        self._peer = peer

    async def handshake(self) -> TLSStream:
        """Terminate TLS (once); ``anyio.BrokenResourceError`` (the connection closed) if the client
        sends no TLS or does not finish within the handshake timeout, or no certificate can be had."""
        async with self._lock:
            if self._tls is None:
                try:
                    ctx = await self._context()  # the node's cert as it is now (bounded by its source)
                    with anyio.fail_after(self._timeout):
                        self._tls = await TLSStream.wrap(self._raw, server_side=True, ssl_context=ctx,
                                                         standard_compatible=False)
                except (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, TimeoutError,
                        OSError, ValueError) as e:  # (a cert error is an OSError or ValueError)
                    if self._on_failed is not None:
                        self._on_failed()
                    with anyio.CancelScope(shield=True):
                        await self._raw.aclose()
                    raise anyio.BrokenResourceError(f"TLS handshake with {self._peer} failed: {e!r}") from e
            return self._tls

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await (await self.handshake()).receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await (await self.handshake()).send(item)

    async def send_eof(self) -> None:
        await (await self.handshake()).send_eof()

    async def aclose(self) -> None:
        if self._tls is not None:
            await self._tls.aclose()
        else:
            await self._raw.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._tls.extra_attributes if self._tls is not None else self._raw.extra_attributes
